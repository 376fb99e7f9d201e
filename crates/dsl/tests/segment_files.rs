//! The shipped segment files parse, resolve and partition users as their
//! comments promise; library errors (cycles, unknown and duplicate names) point
//! at the right text.

use tenure_dsl::{
    Catalog, CompileContext, DslError, Feature, FeatureRow, Metric, Resolver, SegmentLibrary,
    SegmentLibraryBuilder, compile, eval, features,
};

const CLASSIC: &str = include_str!("../../../queries/rfm_classic.seg");
const ENGLISH: &str = include_str!("../../../queries/rfm_segments.seg");

fn load(file: &str, text: &str) -> SegmentLibrary {
    SegmentLibrary::from_sources([(file, text)], &Catalog::default())
        .unwrap_or_else(|e| panic!("{}", e.render("")))
}

#[test]
fn classic_eight_resolve_and_partition_by_means() {
    let library = load("rfm_classic.seg", CLASSIC);
    let names: Vec<&str> = library.names().collect();
    assert_eq!(
        names,
        [
            "important_value",
            "important_develop",
            "important_keep",
            "important_retain",
            "general_value",
            "general_develop",
            "general_keep",
            "general_retain"
        ]
    );
    let ctx = CompileContext::new(0);
    for segment in library.segments() {
        compile(&segment.expr, &ctx).expect("compiles");
        let used = features(&segment.expr);
        assert!(used.contains(&Feature::Mean(Metric::Monetary)));
        assert!(!used.iter().any(|f| matches!(f, Feature::EventCount { .. })));
    }
    // Every user with a purchase is in exactly one segment, also on the means.
    for r in [0, 9, 10, 11] {
        for f in [1, 2, 3] {
            // In hundredths: 99.99, 100.00 (the mean) and 100.01.
            for m in [9_999, 10_000, 10_001] {
                let row = FeatureRow {
                    recency: Some(r),
                    frequency: Some(f),
                    monetary: Some(m),
                    mean_recency: Some(10.0),
                    mean_frequency: Some(2.0),
                    mean_monetary: Some(100_000_000),
                    ..FeatureRow::default()
                };
                let hits: Vec<&str> = library
                    .segments()
                    .iter()
                    .filter(|s| eval(&s.expr, &row, &ctx))
                    .map(|s| s.name.as_str())
                    .collect();
                assert_eq!(hits.len(), 1, "R={r} F={f} M={m}: {hits:?}");
            }
        }
    }
    let best = FeatureRow {
        recency: Some(1),
        frequency: Some(9),
        monetary: Some(100_000),
        mean_recency: Some(10.0),
        mean_frequency: Some(2.0),
        mean_monetary: Some(100_000_000),
        ..FeatureRow::default()
    };
    let important_value = library.get("important_value").unwrap();
    assert!(eval(important_value, &best, &ctx));
}

#[test]
fn english_segments_partition_the_score_grid() {
    let library = load("rfm_segments.seg", ENGLISH);
    assert_eq!(library.segments().len(), 11);
    let ctx = CompileContext::new(0);
    for r in 1..=5 {
        for f in 1..=5 {
            let row = FeatureRow {
                r_score: Some(r),
                f_score: Some(f),
                m_score: Some(3),
                ..FeatureRow::default()
            };
            let hits: Vec<&str> = library
                .segments()
                .iter()
                .filter(|s| eval(&s.expr, &row, &ctx))
                .map(|s| s.name.as_str())
                .collect();
            assert_eq!(hits.len(), 1, "r_score={r} f_score={f}: {hits:?}");
        }
    }
    let champion = FeatureRow {
        r_score: Some(5),
        f_score: Some(5),
        ..FeatureRow::default()
    };
    assert!(eval(library.get("champions").unwrap(), &champion, &ctx));
}

#[test]
fn expressions_use_segments_from_files() {
    let library = load("rfm_segments.seg", ENGLISH);
    let catalog = Catalog::default();
    let resolver = Resolver::new(&catalog).with_library(&library);
    let resolved = resolver
        .parse("@champions and did purchase within 30d")
        .unwrap();
    let used: Vec<String> = features(&resolved)
        .iter()
        .map(Feature::column_name)
        .collect();
    assert_eq!(used, ["r_score", "f_score", "count_30d:purchase"]);
}

fn build_error(files: &[(&str, &str)]) -> (DslError, String) {
    let mut builder = SegmentLibraryBuilder::default();
    let mut result = Ok(());
    for (file, text) in files {
        if let Err(e) = builder.add_source(file, text) {
            result = Err(e);
            break;
        }
    }
    let error = match result {
        Err(e) => e,
        Ok(()) => builder
            .build(&Catalog::default())
            .expect_err("the library must not build"),
    };
    let rendered = error.render("");
    (error, rendered)
}

#[test]
fn cycles_are_reported_at_the_closing_reference() {
    let (error, rendered) = build_error(&[(
        "loop.seg",
        "segment a = F > 1 and @b\nsegment b = @c or R < 3\nsegment c = not @a\n",
    )]);
    let DslError::InFile { error, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(
        matches!(&**error, DslError::SegmentCycle { cycle, .. } if cycle == &["a", "b", "c", "a"]),
        "{error:?}"
    );
    assert!(
        rendered.contains("loop.seg:3:18") && rendered.contains("segment c = not @a\n"),
        "{rendered}"
    );
    let (_, self_loop) = build_error(&[("self.seg", "segment a = @a")]);
    assert!(self_loop.contains("a -> a"), "{self_loop}");
}

#[test]
fn unknown_references_suggest_names_across_files() {
    let (_, rendered) = build_error(&[
        ("one.seg", "segment champions = r_score = 5"),
        (
            "two.seg",
            "# uses one.seg\nsegment best = @champs and F > 3",
        ),
    ]);
    assert!(rendered.contains("two.seg:2:17"), "{rendered}");
    assert!(rendered.contains("did you mean `champions`?"), "{rendered}");
}

#[test]
fn duplicates_and_syntax_errors_name_their_file() {
    let (_, rendered) = build_error(&[
        ("one.seg", "segment x = F > 1"),
        ("two.seg", "segment x = F > 2"),
    ]);
    assert!(
        rendered.contains("defined twice (first in one.seg)") && rendered.contains("two.seg:1:9"),
        "{rendered}"
    );
    let (_, rendered) = build_error(&[("bad.seg", "segment a = F > 1\nsegment b = F >")]);
    assert!(rendered.contains("bad.seg:2:16"), "{rendered}");
}

#[test]
fn deep_reference_chains_are_refused() {
    let text: String = (0..40)
        .map(|i| format!("segment s{i} = @s{}\n", i + 1))
        .chain(["segment s40 = F > 1\n".to_owned()])
        .collect();
    let (error, _) = build_error(&[("deep.seg", &text)]);
    assert!(
        matches!(&error, DslError::InFile { error, .. } if matches!(**error, DslError::Limit { .. })),
        "{error:?}"
    );
}

/// 16 lines, each segment ORing 8 copies of the one before: 8^15 conditions
/// once expanded (this file reached 11.8 GB before it was refused).
fn fan_out_file() -> String {
    let copies = |prev: usize| vec![format!("@s{prev}"); 8].join(" or ");
    std::iter::once("segment s0 = F >= 1\n".to_owned())
        .chain((1..16).map(|i| format!("segment s{i} = {}\n", copies(i - 1))))
        .collect()
}

#[test]
fn reference_fan_out_is_refused_at_the_reference_that_crosses_the_limit() {
    let text = fan_out_file();
    assert_eq!(text.lines().count(), 16);
    let (error, rendered) = build_error(&[("fan.seg", &text)]);
    assert!(
        matches!(&error, DslError::InFile { error, .. } if matches!(**error, DslError::Limit { .. })),
        "{error:?}"
    );
    // s4 stands for 4681 nodes (1 + 8 * 585): the third `@s4` of s5 crosses
    // 10,000. The caret is under it.
    let line = "segment s5 = @s4 or @s4 or @s4 or @s4 or @s4 or @s4 or @s4 or @s4";
    let want = format!(
        "error: with `@s4` this expression stands for more than 10000 conditions (`@s4` alone is 4681)\n \
         --> fan.seg:6:28\n  |\n6 | {line}\n  |                            ^^^\n  \
         = expected: a simpler expression\n  \
         = help: each `@name` is a full copy of its definition, so references multiply; \
         refer to a segment once (`@a or @a` is `@a`) or write the condition out\n"
    );
    assert_eq!(rendered, want);
}

#[test]
fn wide_but_bounded_references_resolve_compile_and_evaluate() {
    // s0..s4 of the fan-out file: s4 is 4681 nodes, two copies of it fit.
    let text: String = fan_out_file()
        .lines()
        .take(5)
        .map(|l| format!("{l}\n"))
        .collect();
    let library = load("fan.seg", &text);
    let catalog = Catalog::default();
    let resolver = Resolver::new(&catalog).with_library(&library);
    let ctx = CompileContext::new(0);
    let resolved = resolver.parse("@s4 or @s4").expect("within the limit");
    assert_eq!(
        features(&resolved).into_iter().collect::<Vec<_>>(),
        [Feature::Frequency]
    );
    let expr = compile(&resolved, &ctx).expect("compiles");
    assert_eq!(
        expr.to_string().matches("frequency >= Int64(1)").count(),
        2 * 8usize.pow(4)
    );
    for (f, want) in [(0, false), (1, true)] {
        let row = FeatureRow {
            frequency: Some(f),
            ..FeatureRow::default()
        };
        assert_eq!(eval(&resolved, &row, &ctx), want);
    }
    // One more copy is refused, at the third reference.
    let error = resolver.parse("@s4 or @s4 or @s4").unwrap_err();
    assert!(matches!(error, DslError::Limit { .. }), "{error:?}");
    assert_eq!(error.span().start, 14);
}
