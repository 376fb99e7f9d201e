//! Criterion benches for the retention aggregate: the cell computation over
//! per-user bitmaps (1M users, 13 weekly periods), and weekly retention end to
//! end (scan + fold + cells) over a generated in-memory store.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tenure_engine::activity::Activity;
use tenure_engine::calendar::{Calendar, DAY_MICROS, Period};
use tenure_engine::retention::{Mode, RetentionSpec, from_activity, retention};
use tenure_ingest::generator::GenSpec;

mod common;

fn cells(c: &mut Criterion) {
    let start = GenSpec::DEFAULT_START * DAY_MICROS;
    let cal = Calendar::new(
        Period::Week,
        chrono_tz::Tz::UTC,
        start,
        start + 90 * DAY_MICROS,
    )
    .unwrap();
    let users = 1_000_000;
    let mut act = Activity::new(users, cal.periods(), false);
    let mut x: u64 = 1;
    for u in 0..users {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let first = (x >> 33) as usize % cal.periods();
        act.set(u, first);
        for p in first + 1..cal.periods() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (x >> 60) < 4 {
                act.set(u, p);
            }
        }
    }
    let mut g = c.benchmark_group("retention");
    g.throughput(Throughput::Elements(users as u64));
    g.bench_function("cells_1m_users_13_weeks", |b| {
        b.iter(|| black_box(from_activity(&act, &cal, &Mode::NDay, i64::MAX)))
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let (rt, events, written) = common::memory_store("memory://bench-retention", 50_000);
    let req = RetentionSpec {
        period: Period::Week,
        tz: chrono_tz::Tz::UTC,
        start: None,
        ret: None,
        mode: Mode::NDay,
        as_of: None,
        by: None,
        read: None,
        revenue: false,
    };
    let mut g = c.benchmark_group("retention");
    g.sample_size(20);
    g.throughput(Throughput::Elements(written));
    g.bench_function("weekly_end_to_end_memory_store", |b| {
        b.iter(|| black_box(rt.block_on(retention(&events, &req)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, cells, end_to_end);
criterion_main!(benches);
