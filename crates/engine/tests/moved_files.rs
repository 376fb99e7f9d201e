//! A reader keeps its snapshot while commits and compactions move files:
//! files that move after the reader listed them (a compaction retiring them
//! under `_tenure/retired/`) are still read, by DataFusion plans and by the
//! direct Parquet passes alike, with the same answers; a committed file that
//! is nowhere is an error naming it, a runtime failure (never a bad request,
//! never a smaller answer).

mod common;

use common::*;
use object_store::ObjectStoreExt;
use tenure_engine::funnel::{self, FunnelSpec, Modes, Step};
use tenure_engine::userstats::{self, PurchaseSpec};
use tenure_engine::{EngineError, Events, OpenOptions};
use tenure_schema::StoreLayout;

fn evs() -> Vec<Ev> {
    (0..60i64)
        .map(|i| Ev {
            user: (i % 7) as u8,
            name: ["a", "b", "purchase"][(i % 3) as usize],
            ts: BASE + (i % 12) * DAY + i * 60_000_000,
            revenue: (i % 3 == 2).then_some(100 + i),
        })
        .collect()
}

/// Rows counted by a DataFusion plan.
async fn rows(events: &Events) -> Result<i64, String> {
    use datafusion::arrow::array::AsArray;
    let batches = events
        .ctx
        .sql("select count(*) from events")
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(batches[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .value(0))
}

/// Users per funnel step, by the direct funnel pass.
async fn steps(events: &Events) -> Result<Vec<u64>, String> {
    let spec = FunnelSpec {
        steps: ["a", "b", "purchase"]
            .iter()
            .map(|s| Step::named(s))
            .collect(),
        window_us: 3 * DAY,
        modes: Modes::default(),
        exclusions: vec![],
        by: None,
        user_groups: None,
        hold: None,
        entry_from: None,
        entry_to: None,
    };
    let (rows, _) = funnel::funnel(events, &spec)
        .await
        .map_err(|e| failure(&e))?;
    Ok(rows.iter().map(|r| r.users).collect())
}

/// Buyers and their purchases, by the direct purchases pass.
async fn buyers(events: &Events) -> Result<(Vec<u32>, u64), String> {
    let buyers = userstats::scan_buyers(events, &PurchaseSpec::default(), true)
        .await
        .map_err(|e| failure(&e))?;
    let purchases = buyers.stats.purchases.iter().map(|&n| n as u64).sum();
    Ok((buyers.keys, purchases))
}

type Answers = (
    Result<i64, String>,
    Result<Vec<u64>, String>,
    Result<(Vec<u32>, u64), String>,
);

async fn answers(events: &Events) -> Answers {
    (
        rows(events).await,
        steps(events).await,
        buyers(events).await,
    )
}

/// An engine error as text, checked to be a runtime failure.
fn failure(e: &EngineError) -> String {
    assert!(
        !e.is_bad_request(),
        "a damaged store is not a bad request: {e}"
    );
    e.to_string()
}

#[test]
fn files_moved_after_a_reader_listed_them_are_read_and_missing_ones_fail_naming_them() {
    let url = fresh_store(&evs(), "moved-files");
    let store = tenure_store::Store::open(&url).unwrap();
    block(async {
        let events = Events::open(&url, OpenOptions::default()).await.unwrap();
        let files = events.snapshot.files.clone();
        assert!(files.len() >= 10, "{} files", files.len());
        let want = answers(&events).await;
        assert_eq!(want.0, Ok(60));
        assert!(want.1.is_ok() && want.2.is_ok(), "{want:?}");
        // A compaction retires every file after this reader listed them.
        for f in &files {
            let retired = StoreLayout::retired_file(&f.path);
            store
                .inner
                .rename(&store.path(&f.path), &store.path(&retired))
                .await
                .unwrap();
        }
        assert_eq!(answers(&events).await, want, "opened before");
        let fresh = Events::open(&url, OpenOptions::default()).await.unwrap();
        assert_eq!(answers(&fresh).await, want, "opened after");
        // One of them is then deleted: every pass fails naming it.
        let gone = &files[3];
        store
            .inner
            .delete(&store.path(&StoreLayout::retired_file(&gone.path)))
            .await
            .unwrap();
        let (a, b, c) = answers(&events).await;
        for err in [a.map(|_| ()), b.map(|_| ()), c.map(|_| ())] {
            let err = err.unwrap_err();
            assert!(err.contains(&gone.path), "{err}");
        }
        let err = match Events::open(&url, OpenOptions::default()).await {
            Ok(_) => panic!("opened a store missing {}", gone.path),
            Err(e) => failure(&e),
        };
        assert!(err.contains(&gone.path), "{err}");
    });
}
