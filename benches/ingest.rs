//! Criterion benches for the ingest hot path: decoding + validating NDJSON lines,
//! and a whole ingest (decode, users dictionary, sort, encode, commit) into an
//! in-memory store.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tenure_ingest::decode::json::parse_event;
use tenure_ingest::generator::GenSpec;
use tenure_ingest::generator_write::{gen_config, write_ndjson};
use tenure_ingest::validate::{PropertyNames, TimeBounds, validate};
use tenure_ingest::{Ingest, IngestOptions, Store};

fn sample(users: u64) -> Vec<u8> {
    let spec = GenSpec {
        users,
        days: 30,
        seed: 1,
        start_day: GenSpec::DEFAULT_START,
    };
    let mut out = Vec::new();
    write_ndjson(&spec, &mut out).unwrap();
    out
}

fn decode_validate(c: &mut Criterion) {
    let data = sample(5_000);
    let lines: Vec<&str> = std::str::from_utf8(&data).unwrap().lines().collect();
    let declared = gen_config().properties;
    let names = PropertyNames::from_declared(&declared);
    let bounds = TimeBounds::now();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("decode_validate_ndjson_line", |b| {
        b.iter(|| {
            let mut ok = 0;
            for l in &lines {
                let raw = parse_event(l, &names).unwrap();
                ok += validate(&raw, &declared, bounds).is_ok() as usize;
            }
            black_box(ok)
        })
    });
    g.finish();
}

fn whole_ingest(c: &mut Criterion) {
    let data = sample(20_000);
    let dir = std::env::temp_dir().join(format!("tenure-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("events.ndjson");
    std::fs::write(&input, &data).unwrap();
    let events = data.iter().filter(|&&b| b == b'\n').count() as u64;
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events));
    let mut n = 0;
    g.bench_function("ndjson_to_parquet_memory_store", |b| {
        b.iter(|| {
            n += 1;
            let store = Store::open(&format!("memory://bench-{n}")).unwrap();
            let opts = IngestOptions {
                config: gen_config(),
                ..Default::default()
            };
            let mut ing = Ingest::begin(store, opts).unwrap();
            ing.add_file(&input).unwrap();
            black_box(ing.commit().unwrap())
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, decode_validate, whole_ingest);
criterion_main!(benches);
