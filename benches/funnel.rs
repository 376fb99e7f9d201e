//! Criterion benches for the passes that read the stored files directly: a
//! 4-step, 7-day funnel by variant (scan into per-file runs, blocked gather,
//! windowFunnel fold, report rows) and the purchases-only pass behind segment
//! counts and RFM (buyers' facts), over a generated in-memory store.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tenure_engine::funnel::{FunnelSpec, Modes, Step, funnel};
use tenure_engine::userstats::{PurchaseSpec, scan_buyers};

mod common;

fn direct_scans(c: &mut Criterion) {
    let (rt, events, written) = common::memory_store("memory://bench-funnel", 50_000);
    let steps = ["view_item", "add_to_cart", "checkout", "purchase"];
    let spec = FunnelSpec {
        steps: steps.iter().map(|s| Step::named(s)).collect(),
        window_us: 7 * 86_400_000_000,
        modes: Modes::default(),
        exclusions: vec![],
        by: Some("variant".into()),
        user_groups: None,
        hold: None,
        entry_from: None,
        entry_to: None,
    };
    let mut g = c.benchmark_group("direct");
    g.sample_size(20);
    g.throughput(Throughput::Elements(written));
    g.bench_function("funnel_4_steps_by_variant_memory_store", |b| {
        b.iter(|| black_box(rt.block_on(funnel(&events, &spec)).unwrap()))
    });
    let purchase = PurchaseSpec::default();
    g.bench_function("buyers_facts_memory_store", |b| {
        b.iter(|| black_box(rt.block_on(scan_buyers(&events, &purchase, false)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, direct_scans);
criterion_main!(benches);
