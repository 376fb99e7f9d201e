//! Cumulative lifetime value per cohort and period: revenue of a cohort's users
//! from their cohort period through period k, divided by the cohort's size.
//! Cohorts are defined as in retention (first start event). Revenue sums are
//! exact (decimal cents), only the per-user ratio is a float.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Decimal128Type, TimestampMicrosecondType, UInt32Type};
use datafusion::logical_expr::col;
use futures::StreamExt;

use crate::activity::{self, ActivitySpec, first_bit};
use crate::calendar::Calendar;
use crate::retention::RetentionSpec;
use crate::table::Events;
use crate::userstats::cents;
use crate::{EngineError, Result};

/// One row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LtvRow {
    /// `cohort` or `average`.
    pub kind: &'static str,
    /// Cohort period start (ISO date); `None` on average rows.
    pub cohort: Option<String>,
    /// Period k.
    pub period: u32,
    /// Users in the cohort (average rows: total of the cohorts averaged).
    pub cohort_size: u64,
    /// Cumulative revenue through period k, exact (`123.45`); `None` if incomplete.
    pub revenue: Option<String>,
    /// Cumulative revenue per cohort user; `None` if incomplete or empty.
    pub ltv: Option<f64>,
    /// Has period k of the cohort fully elapsed?
    pub complete: bool,
}

/// Computes LTV; `spec.ret` and `spec.mode` are ignored (all revenue counts).
pub async fn ltv(events: &Events, spec: &RetentionSpec) -> Result<Vec<LtvRow>> {
    let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
    let cal = Calendar::new(spec.period, spec.tz, min_ts, max_ts)?;
    let act = activity::scan(
        events,
        &cal,
        &ActivitySpec {
            start: spec.start.clone(),
            ret: None,
        },
    )
    .await?;
    let n = cal.periods();
    let cohort: Vec<u32> = (0..act.users)
        .map(|u| first_bit(act.start_of(u)).map_or(u32::MAX, |c| c as u32))
        .collect();
    let mut sizes = vec![0u64; n];
    for &c in &cohort {
        if c != u32::MAX {
            sizes[c as usize] += 1;
        }
    }
    let df = events
        .in_range()
        .await?
        .filter(col("revenue").is_not_null())?
        .select(vec![col("user_key"), col("ts"), col("revenue")])?;
    let mut cells = vec![0i128; n * n];
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).as_primitive::<UInt32Type>().values();
        let ts = batch
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let rev = batch.column(2).as_primitive::<Decimal128Type>();
        for i in 0..batch.num_rows() {
            let u = keys[i] as usize;
            let c = *cohort.get(u).ok_or_else(|| {
                EngineError::Unreadable("user_key beyond the users dictionary".into())
            })?;
            if c == u32::MAX || !rev.is_valid(i) {
                continue;
            }
            let Some(p) = cal.period_of(ts[i]) else {
                continue;
            };
            if p >= c {
                cells[c as usize * n + (p - c) as usize] += rev.value(i);
            }
        }
    }
    let as_of = spec.as_of.unwrap_or_else(|| cal.end_of_day(max_ts));
    let mut rows = Vec::new();
    let mut avg_rev = vec![0i128; n];
    let mut avg_size = vec![0u64; n];
    for c in 0..n {
        let mut cum = 0i128;
        for k in 0..n - c {
            cum += cells[c * n + k];
            let complete = cal.end_utc(c + k) <= as_of;
            if complete {
                avg_rev[k] += cum;
                avg_size[k] += sizes[c];
            }
            rows.push(LtvRow {
                kind: "cohort",
                cohort: Some(cal.start_date(c).to_string()),
                period: k as u32,
                cohort_size: sizes[c],
                revenue: complete.then(|| cents(cum)),
                ltv: (complete && sizes[c] > 0).then(|| cum as f64 / 100.0 / sizes[c] as f64),
                complete,
            });
        }
    }
    for k in 0..n {
        rows.push(LtvRow {
            kind: "average",
            cohort: None,
            period: k as u32,
            cohort_size: avg_size[k],
            revenue: (avg_size[k] > 0).then(|| cents(avg_rev[k])),
            ltv: (avg_size[k] > 0).then(|| avg_rev[k] as f64 / 100.0 / avg_size[k] as f64),
            complete: avg_size[k] > 0,
        });
    }
    Ok(rows)
}
