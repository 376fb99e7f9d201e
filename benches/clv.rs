//! Predictive CLV: fitting BG/NBD and Gamma-Gamma over 1M customers (target:
//! under 5 s on 2 threads), and predicting every customer's purchases.
//!
//!   cargo bench -p tenure-stats --bench clv

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tenure_stats::clv::{BgNbd, Spender, fit_bgnbd, fit_gamma_gamma, simulate};

fn bench(c: &mut Criterion) {
    let truth = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    // Days as the unit (t_x and T on a day grid), as `tenure clv --period day`
    // sees them; weeks (days / 7) have as many distinct values.
    let customers: Vec<_> = simulate(&truth, 1_000_000, 42)
        .into_iter()
        .map(|mut c| {
            c.t_x = (c.t_x * 7.0).floor();
            c.t = (c.t * 7.0).floor().max(c.t_x);
            c
        })
        .collect();
    let spenders: Vec<Spender> = customers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.x > 0)
        .map(|(i, c)| Spender {
            x: c.x,
            mean: 5.0 + (i % 997) as f64 * 0.37,
        })
        .collect();
    let mut g = c.benchmark_group("clv");
    g.sample_size(10);
    g.bench_function("fit_bgnbd_1m_customers", |b| {
        b.iter(|| fit_bgnbd(black_box(&customers)).expect("fits"))
    });
    g.bench_function(format!("fit_gamma_gamma_{}_repeat", spenders.len()), |b| {
        b.iter(|| fit_gamma_gamma(black_box(&spenders)).expect("fits"))
    });
    let fit = fit_bgnbd(&customers).expect("fits").params;
    g.bench_function("predict_1m_customers_52_units", |b| {
        b.iter(|| {
            customers
                .iter()
                .map(|c| fit.p_alive(c) + fit.expected_purchases(c, 52.0))
                .sum::<f64>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
