//! Parse + compile stays linear: a 1 KB expression and pathological inputs
//! (deep unclosed nesting, long operator chains) finish quickly even in a debug
//! build. The criterion bench target for release builds is 1 ms per 1 KB; the
//! bounds here are loose so they only catch exponential behaviour.

use std::time::{Duration, Instant};

use tenure_dsl::{Catalog, CompileContext, Resolver, compile, parse};

mod common;
use common::one_kb_expression;

fn time<F: FnMut()>(mut f: F) -> Duration {
    let start = Instant::now();
    for _ in 0..10 {
        f();
    }
    start.elapsed() / 10
}

#[test]
fn one_kb_parses_and_compiles_quickly() {
    let src = one_kb_expression();
    assert!(src.len() >= 1024);
    let catalog = Catalog::default();
    let resolver = Resolver::new(&catalog);
    let ctx = CompileContext::new(0);
    let elapsed = time(|| {
        let resolved = resolver.parse(&src).expect("valid");
        compile(&resolved, &ctx).expect("compiles");
    });
    eprintln!(
        "parse + resolve + compile of {} bytes: {elapsed:?}",
        src.len()
    );
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
}

#[test]
fn pathological_inputs_fail_fast() {
    let unclosed = format!("{}R <", "(".repeat(60));
    let nots = format!("{}(R < 1) and", "not (".repeat(30));
    let chain = format!("{} and", vec!["F > 1"; 500].join(" and "));
    let soup = "( ( did x >= ( @a in ( ".repeat(40);
    for src in [unclosed, nots, chain, soup] {
        let elapsed = time(|| {
            let _ = parse(&src);
        });
        assert!(
            elapsed < Duration::from_millis(200),
            "{elapsed:?} for {src:.40}"
        );
    }
}
