//! No input may panic: arbitrary strings, and strings built from the
//! language's own tokens (which reach much deeper into the parser), go through
//! parse, resolve, compile, evaluation and error rendering. Also checks that
//! valid expressions behave like boolean logic under the reference evaluator.

use proptest::prelude::*;
use tenure_dsl::{
    Catalog, CompileContext, FeatureRow, Resolver, SegmentLibrary, compile, evaluate, features,
    parse,
};

const TOKENS: &[&str] = &[
    "R",
    "F",
    "M",
    "r",
    "recency",
    "frequency",
    "monetary",
    "first_seen",
    "last_seen",
    "lifecycle",
    "r_score",
    "f_score",
    "m_score",
    "country",
    "prop.x",
    "prop.\"a b\"",
    "silent",
    "new",
    "did",
    "purchase",
    "\"Order Completed\"",
    "within",
    "times",
    "7d",
    "30d",
    "36h",
    "2w",
    "3m",
    "30",
    "0",
    "-1",
    "19.99",
    "10.001",
    "99999999999999999999",
    "999999999w",
    "\"CN\"",
    "\"2024-01-31\"",
    "\"bad\\q\"",
    "\"",
    "(",
    ")",
    ",",
    "and",
    "or",
    "not",
    "in",
    "between",
    "=",
    "==",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "=>",
    "=<",
    "&&",
    "&",
    "||",
    "|",
    "!",
    "@champions",
    "@nope",
    "@",
    "mean(R)",
    "avg(",
    "mean",
    "segment",
    "#c\n",
    "'",
    "[",
    "é",
    "\t",
    "\n",
];

fn tokens() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|t| t.join(" "))
}

fn library() -> SegmentLibrary {
    SegmentLibrary::from_sources(
        [("t.seg", "segment champions = r_score >= 4")],
        &Catalog::default(),
    )
    .expect("library")
}

/// Runs every stage on `src`; only panics are failures.
fn exercise(src: &str) {
    let catalog = Catalog::default();
    let library = library();
    let resolver = Resolver::new(&catalog).with_library(&library);
    match parse(src) {
        Err(e) => {
            let _ = e.render(src);
        }
        Ok(ast) => {
            let _ = ast.to_string();
            match resolver.resolve(&ast) {
                Err(e) => {
                    let _ = e.render(src);
                }
                Ok(resolved) => {
                    let _ = features(&resolved);
                    let _ = resolved.to_string();
                    for as_of in [0, i64::MIN, i64::MAX] {
                        let ctx = CompileContext::new(as_of);
                        if let Err(e) = compile(&resolved, &ctx) {
                            let _ = e.render(src);
                        }
                        let _ = evaluate(&resolved, &FeatureRow::default(), &ctx);
                    }
                }
            }
        }
    }
    let _ = SegmentLibrary::from_sources([("p.seg", src)], &catalog).map_err(|e| e.render(src));
}

/// Valid conditions, combined below into random valid expressions.
const CONDITIONS: &[&str] = &[
    "R < 30d",
    "R >= 7",
    "F >= 3",
    "F = 0",
    "M > 19.99",
    "M <= mean(M)",
    "R < mean(R)",
    "F > avg(F)",
    "country in (\"CN\", \"JP\")",
    "country != \"US\"",
    "lifecycle = silent",
    "lifecycle in (new, churned)",
    "lifecycle not in (active)",
    "R between 31d and 90d",
    "F not between 2 and 4",
    "did purchase >= 2 times within 30d",
    "did add_to_cart",
    "first_seen within 7d",
    "last_seen < \"2024-02-01\"",
    "r_score >= 4",
    "@champions",
];

fn valid_expr() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(CONDITIONS).prop_map(str::to_owned);
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

fn row() -> impl Strategy<Value = FeatureRow> {
    let day = 86_400_000_000i64;
    (
        prop::option::of(0i64..200),
        prop::option::of(0i64..6),
        prop::option::of(0i128..100_000),
        prop::option::of(0i64..60),
        prop::option::of(prop::sample::select(&["new", "veteran"][..])),
        prop::option::of(prop::sample::select(&["active", "silent", "churned"][..])),
        prop::option::of(1i64..=5),
        prop::option::of(prop::sample::select(&["CN", "JP", "US"][..])),
        0i64..4,
    )
        .prop_map(
            move |(recency, frequency, monetary, seen, tenure, activity, score, country, count)| {
                let mut row = FeatureRow {
                    recency,
                    frequency,
                    monetary,
                    first_seen: seen.map(|d| 19_750 * day - d * day),
                    last_seen: seen.map(|d| 19_750 * day - d * day / 2),
                    lifecycle_tenure: tenure.map(str::to_owned),
                    lifecycle_activity: activity.map(str::to_owned),
                    r_score: score,
                    mean_recency: Some(40.5),
                    mean_frequency: Some(2.0),
                    mean_monetary: Some(500_000_000),
                    ..FeatureRow::default()
                };
                if let Some(c) = country {
                    row.properties.insert("country".into(), c.into());
                }
                let month = tenure_dsl::ast::Duration::from_hours(30 * 24);
                row.event_counts.insert(("purchase".into(), month), count);
                row
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(src in "\\PC{0,64}") {
        exercise(&src);
    }

    #[test]
    fn token_soup_never_panics(src in tokens()) {
        exercise(&src);
    }

    #[test]
    fn valid_expressions_follow_boolean_logic(src in valid_expr(), row in row()) {
        let catalog = Catalog::default();
        let library = library();
        let resolver = Resolver::new(&catalog).with_library(&library);
        let ctx = CompileContext::new(19_750 * 86_400_000_000);
        let e = resolver.parse(&src).map_err(|e| TestCaseError::fail(e.render(&src)))?;
        compile(&e, &ctx).map_err(|e| TestCaseError::fail(e.render(&src)))?;
        let not_e = resolver.parse(&format!("not ({src})")).unwrap();
        prop_assert_eq!(evaluate(&not_e, &row, &ctx), evaluate(&e, &row, &ctx).map(|b| !b));
        let twice = resolver.parse(&format!("({src}) and ({src})")).unwrap();
        prop_assert_eq!(evaluate(&twice, &row, &ctx), evaluate(&e, &row, &ctx));
    }
}
