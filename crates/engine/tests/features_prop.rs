//! Property test: segment counts over the engine's feature table, both the one
//! row per user table and the collapsed count (one row for all users who never
//! bought), equal a naive count: R, F, M, scores and means computed straight
//! from random events, and the expression run by the DSL's own evaluator.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, UInt32Type};
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use tenure_dsl::{Catalog, CompileContext, FeatureRow, Resolver, Segment, evaluate};
use tenure_engine::features::{
    FeatureSpec, count_matching, count_matching_split, feature_table, matching_users_by,
};
use tenure_engine::lifecycle::Thresholds;
use tenure_engine::userstats::PurchaseSpec;
use tenure_engine::{Events, OpenOptions};

fn expressions() -> impl Strategy<Value = String> {
    (0usize..9, 0i64..70, 0i64..4, 0i64..20_000, 1i64..6).prop_map(|(t, a, b, m, s)| match t {
        0 => format!("R < {a}d and F >= {b}"),
        1 => format!("not F >= {b}"),
        2 => format!("M <= {m} or R > {a}"),
        3 => format!("r_score = {s} or f_score >= {s}"),
        4 => format!("m_score <= {s} and not r_score = {s}"),
        5 => "R < mean(R) and F > mean(F)".to_string(),
        6 => "M <= mean(M) or F = 0".to_string(),
        7 => format!("lifecycle = active or lifecycle = silent or F < {b}"),
        _ => format!("(R >= {a}d or M > {m}) and not f_score = {s}"),
    })
}

/// The score of `v` among `all`: the distinct values in order are runs
/// 0..m; cut k (k = 1..4) sits at the run of the value of 1-based rank
/// ceil(k n / 5); with five or more runs, cut k is the greatest of
/// `cut_j + k - j` over j <= k, capped at run m + k - 6 (each cut a run past the one
/// before, a run left for every higher score). `v` scores 1 plus the number
/// of cuts its run is past.
fn naive_score(all: &[i128], v: i128) -> i64 {
    let mut s = all.to_vec();
    s.sort();
    let n = s.len();
    let mut runs = s.clone();
    runs.dedup();
    let m = runs.len();
    let run = |x: i128| runs.iter().position(|&r| r == x).unwrap();
    let placed: Vec<usize> = (1..5).map(|k| run(s[(k * n).div_ceil(5) - 1])).collect();
    let cuts: Vec<usize> = (0..4)
        .map(|k| {
            if m < 5 {
                return placed[k];
            }
            let pushed = (0..=k).map(|j| placed[j] + k - j).max().unwrap();
            pushed.min(m + k + 1 - 6)
        })
        .collect();
    1 + cuts.iter().filter(|&&c| run(v) > c).count() as i64
}

fn naive_rows(evs: &[Ev], as_of: i64) -> Vec<FeatureRow> {
    let users: BTreeSet<u8> = evs.iter().map(|e| e.user).collect();
    let buys = |u: u8| {
        evs.iter()
            .filter(move |e| e.user == u && e.name == "purchase")
    };
    let recency = |u: u8| {
        buys(u)
            .map(|e| e.ts)
            .max()
            .map(|l| (as_of - l).div_euclid(DAY))
    };
    let freq = |u: u8| buys(u).count() as i64;
    let money = |u: u8| buys(u).map(|e| e.revenue.unwrap() as i128).sum::<i128>();
    let buyers: Vec<u8> = users.iter().copied().filter(|&u| freq(u) > 0).collect();
    let r_all: Vec<i128> = buyers
        .iter()
        .map(|&u| -(recency(u).unwrap() as i128))
        .collect();
    let f_all: Vec<i128> = buyers.iter().map(|&u| freq(u) as i128).collect();
    let m_all: Vec<i128> = buyers.iter().map(|&u| money(u)).collect();
    let n = users.len();
    let rec: Vec<i64> = users.iter().filter_map(|&u| recency(u)).collect();
    let mean_r = (!rec.is_empty()).then(|| rec.iter().sum::<i64>() as f64 / rec.len() as f64);
    let mean_f = users.iter().map(|&u| freq(u) as f64).sum::<f64>() / n as f64;
    let mean_m = users.iter().map(|&u| money(u)).sum::<i128>() * 10_000 / n as i128;
    let t = Thresholds::default();
    users
        .iter()
        .map(|&u| {
            let bought = freq(u) > 0;
            FeatureRow {
                recency: recency(u),
                frequency: Some(freq(u)),
                monetary: Some(money(u)),
                lifecycle_activity: recency(u).map(|d| {
                    let i = t.activity.iter().position(|b| d <= *b).unwrap_or(3);
                    ["active", "cooling", "silent", "churned"][i].to_string()
                }),
                r_score: bought.then(|| naive_score(&r_all, -(recency(u).unwrap() as i128))),
                f_score: bought.then(|| naive_score(&f_all, freq(u) as i128)),
                m_score: bought.then(|| naive_score(&m_all, money(u))),
                mean_recency: mean_r,
                mean_frequency: Some(mean_f),
                mean_monetary: Some(mean_m),
                ..Default::default()
            }
        })
        .collect()
}

/// Counts `src` over the store `url` opened up to `to` (exclusive), as of
/// `as_of`, three ways (the collapsed count, also split among threads; the
/// feature table filtered in DataFusion; the naive rows of `seen`, the events
/// up to `as_of`, run by the DSL's evaluator) and checks they agree, with
/// one table row per user seen.
fn check_counts(
    url: &str,
    to: Option<i64>,
    seen: &[Ev],
    src: &str,
    as_of: i64,
) -> Result<(), TestCaseError> {
    let options = OpenOptions {
        threads: 2,
        to,
        ..Default::default()
    };
    let events = block(Events::open(url, options)).unwrap();
    let catalog = Catalog {
        properties: None,
        events: None,
    };
    let ctx = CompileContext::new(as_of);
    let seg = Segment::new(src, &Resolver::new(&catalog), &ctx).unwrap();
    let spec = FeatureSpec {
        as_of,
        purchase: PurchaseSpec::default(),
        thresholds: Thresholds::default(),
        buyers_only: false,
        scoring: Default::default(),
    };
    let (got, total) = block(count_matching(&events, &seg.features, &seg.expr, &spec)).unwrap();
    // The same count with the rows split among threads (as big stores are).
    let split = block(count_matching_split(
        &events,
        &seg.features,
        &seg.expr,
        &spec,
        1,
    ))
    .unwrap();
    prop_assert_eq!(split, (got, total));
    let table = block(feature_table(&events, &seg.features, &spec)).unwrap();
    let (filtered, rows) = block(async {
        let sc = SessionContext::new();
        sc.register_batch("features", table).unwrap();
        let f = sc
            .table("features")
            .await
            .unwrap()
            .filter(seg.expr.clone())
            .unwrap()
            .count()
            .await
            .unwrap();
        (
            f as u64,
            sc.table("features").await.unwrap().count().await.unwrap() as u64,
        )
    });
    let naive = naive_rows(seen, as_of);
    let want = naive
        .iter()
        .filter(|r| evaluate(&seg.resolved, r, &ctx) == Some(true))
        .count() as u64;
    let per_user: BTreeMap<&str, u64> =
        [("collapsed", got), ("table", filtered), ("naive", want)].into();
    prop_assert_eq!(
        per_user.values().collect::<BTreeSet<_>>().len(),
        1,
        "{} {:?}",
        src,
        per_user
    );
    prop_assert_eq!(total, naive.len() as u64);
    prop_assert_eq!(rows, naive.len() as u64);
    // The listing: the same users, by id, in key order, each id the one its
    // key has in the users dictionary; in slices of 1-3 rows, so that ids are
    // looked up over many calls and across the dictionary's segments.
    let ids: BTreeMap<u32, String> = block(async {
        let users = tenure_engine::features::users_table(&events).await.unwrap();
        let batches = users.collect().await.unwrap();
        let mut ids = BTreeMap::new();
        for b in &batches {
            let keys = b.column(0).as_primitive::<UInt32Type>();
            let names = datafusion::arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            for i in 0..b.num_rows() {
                ids.insert(keys.value(i), names.as_string::<i32>().value(i).to_string());
            }
        }
        ids
    });
    // The dictionary's segments listed in reverse: the reader orders them.
    let mut reversed = events.clone();
    reversed.snapshot.users.segments.reverse();
    for (slice, events) in [(1, &events), (3, &reversed), (1 << 16, &events)] {
        let listed = block(async {
            let stream = matching_users_by(events, &seg.features, Some(&seg.expr), &spec, slice)
                .await
                .unwrap();
            datafusion::physical_plan::common::collect(stream)
                .await
                .unwrap()
        });
        let mut pairs = Vec::new();
        for b in &listed {
            let schema = b.schema();
            prop_assert_eq!(schema.field(0).name(), "user_key");
            prop_assert_eq!(schema.field(1).name(), "user_id");
            let keys = b.column(0).as_primitive::<UInt32Type>();
            let names = b.column(1).as_string::<i32>();
            for i in 0..b.num_rows() {
                pairs.push((keys.value(i), names.value(i).to_string()));
            }
        }
        prop_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0), "{:?}", pairs);
        for (k, id) in &pairs {
            prop_assert_eq!(Some(id), ids.get(k));
        }
        let listed_ids: BTreeSet<String> = pairs.into_iter().map(|(_, id)| id).collect();
        let users: BTreeSet<u8> = seen.iter().map(|e| e.user).collect();
        let want_ids: BTreeSet<String> = users
            .iter()
            .zip(&naive)
            .filter(|(_, r)| evaluate(&seg.resolved, r, &ctx) == Some(true))
            .map(|(u, _)| format!("user{u}"))
            .collect();
        prop_assert_eq!(listed_ids, want_ids, "{} slice {}", src, slice);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn segment_counts_match_naive(evs in events(), src in expressions()) {
        let url = fresh_store(&evs, "features-prop");
        let as_of = evs.iter().map(|e| e.ts).max().unwrap();
        check_counts(&url, None, &evs, &src, as_of)?;
    }

    /// The same over a store of two ingests: two users dictionary segments
    /// and two files a day.
    #[test]
    fn two_ingests_count_and_list_as_naive(evs in events(), src in expressions()) {
        let url = fresh_store_in_two(&evs, "features-two-prop");
        let as_of = evs.iter().map(|e| e.ts).max().unwrap();
        check_counts(&url, None, &evs, &src, as_of)?;
    }

    /// As of a past date (the store opened up to it, as `tenure segment
    /// --as-of` does): the collapsed count counts only users seen by then.
    #[test]
    fn past_as_of_counts_match_naive(evs in events(), src in expressions(), cut in 0.0f64..1.0) {
        let (min, max) = (
            evs.iter().map(|e| e.ts).min().unwrap(),
            evs.iter().map(|e| e.ts).max().unwrap(),
        );
        let as_of = min + ((max - min) as f64 * cut) as i64;
        let before: Vec<Ev> = evs.iter().filter(|e| e.ts <= as_of).cloned().collect();
        let url = fresh_store(&evs, "features-past-prop");
        check_counts(&url, Some(as_of + 1), &before, &src, as_of)?;
    }
}
