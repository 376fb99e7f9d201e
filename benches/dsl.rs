//! Segment language: parse + resolve + compile to a DataFusion `Expr` of a
//! 1 KB expression (target: under 1 ms), and of a typical short one.
//!
//!   cargo bench -p tenure-dsl --bench dsl

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tenure_dsl::{Catalog, CompileContext, Resolver, compile};

#[path = "../crates/dsl/tests/common/mod.rs"]
mod common;
use common::one_kb_expression;

fn bench(c: &mut Criterion) {
    let catalog = Catalog::default();
    let resolver = Resolver::new(&catalog);
    let ctx = CompileContext::new(1_767_225_600_000_000);
    let long = one_kb_expression();
    let mut g = c.benchmark_group("dsl");
    g.bench_function(format!("parse_compile_{}_bytes", long.len()), |b| {
        b.iter(|| {
            let resolved = resolver.parse(black_box(&long)).expect("valid");
            compile(&resolved, &ctx).expect("compiles")
        })
    });
    let short = "R < 30d and F >= 3";
    g.bench_function("parse_compile_short", |b| {
        b.iter(|| {
            let resolved = resolver.parse(black_box(short)).expect("valid");
            compile(&resolved, &ctx).expect("compiles")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
