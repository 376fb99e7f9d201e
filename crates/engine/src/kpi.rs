//! KPIs per reporting period (week or month) and over the whole range.
//!
//! Per period P (a user is active on a day with any event):
//! - `active_users`: distinct users active in P (WAU for weeks, MAU for months);
//! - `dau`: mean over P's days of the users active that day;
//! - `stickiness`: dau / active_users (DAU/MAU for months);
//! - `revenue`, `orders` (purchase events), `purchasers` (distinct);
//! - `arpu` = revenue / active_users; `arppu` = revenue / purchasers;
//!   `aov` = revenue / orders;
//! - `churn_rate`: of users active in P-1, the share not active in P;
//! - `reactivation_rate`: of users active before P-1 but not in P-1, the share
//!   active in P.
//!
//! Over the range: `repurchase_rate` (purchasers with two or more purchases /
//! purchasers) and `first_order_conversion` (users whose first purchase came
//! within N days of their first event / users first seen at least N days
//! before the as-of time, so everyone counted had the full N days).

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Decimal128Type, TimestampMicrosecondType};
use datafusion::logical_expr::{col, lit};
use futures::StreamExt;

use crate::Result;
use crate::activity::{self, ActivitySpec, bit};
use crate::calendar::{Calendar, DAY_MICROS, Period};
use crate::table::Events;
use crate::userstats::{self, NEVER, PurchaseSpec};

/// One KPI value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KpiRow {
    /// Metric name.
    pub metric: String,
    /// Period start (ISO date), or `all` for range-wide metrics.
    pub period: String,
    /// The value; `None` when its denominator is zero.
    pub value: Option<f64>,
    /// Numerator.
    pub numerator: f64,
    /// Denominator (1 for plain counts and sums).
    pub denominator: f64,
    /// Has the period fully elapsed?
    pub complete: bool,
}

/// A KPI request.
#[derive(Debug, Clone)]
pub struct KpiSpec {
    /// Reporting period.
    pub period: Period,
    /// Time zone.
    pub tz: chrono_tz::Tz,
    /// Purchase event.
    pub purchase: PurchaseSpec,
    /// Window of first-order conversion, in days.
    pub conversion_days: i64,
}

fn row(metric: &str, period: &str, num: f64, den: f64, complete: bool) -> KpiRow {
    KpiRow {
        metric: metric.into(),
        period: period.into(),
        value: (den != 0.0).then(|| num / den),
        numerator: num,
        denominator: den,
        complete,
    }
}

/// Computes the KPIs.
pub async fn kpis(events: &Events, spec: &KpiSpec) -> Result<Vec<KpiRow>> {
    let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
    let days = Calendar::new(Period::Day, spec.tz, min_ts, max_ts)?;
    let rep = Calendar::new(spec.period, spec.tz, min_ts, max_ts)?;
    let is_purchase = col("event").eq(lit(spec.purchase.event.clone()));
    let act = activity::scan(
        events,
        &days,
        &ActivitySpec {
            start: None,
            ret: Some(is_purchase.clone()),
        },
    )
    .await?;
    let nd = days.periods();
    let np = rep.periods();
    let day_rep: Vec<usize> = (0..nd)
        .map(|d| rep.period_of(days.day_start(d)).unwrap_or(0) as usize)
        .collect();
    let mut dau = vec![0u64; nd];
    let mut active = vec![0u64; np];
    let mut purchasers = vec![0u64; np];
    let mut churn_base = vec![0u64; np];
    let mut churned = vec![0u64; np];
    let mut pool = vec![0u64; np];
    let mut reactivated = vec![0u64; np];
    let mut rp = vec![false; np];
    let mut pp = vec![false; np];
    for u in 0..act.users {
        let a = act.start_of(u);
        if a.iter().all(|w| *w == 0) {
            continue;
        }
        rp.iter_mut().for_each(|x| *x = false);
        pp.iter_mut().for_each(|x| *x = false);
        let b = act.return_of(u);
        for d in 0..nd {
            if bit(a, d) {
                dau[d] += 1;
                rp[day_rep[d]] = true;
            }
            if bit(b, d) {
                pp[day_rep[d]] = true;
            }
        }
        let mut seen_before_prev = false;
        for p in 0..np {
            active[p] += rp[p] as u64;
            purchasers[p] += pp[p] as u64;
            if p > 0 {
                if rp[p - 1] {
                    churn_base[p] += 1;
                    churned[p] += !rp[p] as u64;
                } else if seen_before_prev {
                    pool[p] += 1;
                    reactivated[p] += rp[p] as u64;
                }
                seen_before_prev |= rp[p - 1];
            }
        }
    }
    // Revenue and orders per reporting period.
    let mut revenue = vec![0i128; np];
    let mut orders = vec![0u64; np];
    let df = events
        .in_range()
        .await?
        .filter(is_purchase)?
        .select(vec![col("ts"), col("revenue")])?;
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let ts = batch
            .column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let rev = batch.column(1).as_primitive::<Decimal128Type>();
        for i in 0..batch.num_rows() {
            let Some(p) = rep.period_of(ts[i]) else {
                continue;
            };
            orders[p as usize] += 1;
            if rev.is_valid(i) {
                revenue[p as usize] += rev.value(i);
            }
        }
    }
    let as_of = days.end_of_day(max_ts);
    let mut rows = Vec::new();
    for p in 0..np {
        let label = rep.start_date(p).to_string();
        let complete = rep.end_utc(p) <= as_of;
        let day_range: Vec<usize> = (0..nd).filter(|d| day_rep[*d] == p).collect();
        let dau_sum: u64 = day_range.iter().map(|d| dau[*d]).sum();
        let n_days = day_range.len() as f64;
        let rev = revenue[p] as f64 / 100.0;
        let act_p = active[p] as f64;
        rows.push(row("active_users", &label, act_p, 1.0, complete));
        rows.push(row("dau", &label, dau_sum as f64, n_days, complete));
        let dau_mean = if n_days > 0.0 {
            dau_sum as f64 / n_days
        } else {
            0.0
        };
        rows.push(row("stickiness", &label, dau_mean, act_p, complete));
        rows.push(row("revenue", &label, rev, 1.0, complete));
        rows.push(row("orders", &label, orders[p] as f64, 1.0, complete));
        rows.push(row(
            "purchasers",
            &label,
            purchasers[p] as f64,
            1.0,
            complete,
        ));
        rows.push(row("arpu", &label, rev, act_p, complete));
        rows.push(row("arppu", &label, rev, purchasers[p] as f64, complete));
        rows.push(row("aov", &label, rev, orders[p] as f64, complete));
        if p > 0 {
            rows.push(row(
                "churn_rate",
                &label,
                churned[p] as f64,
                churn_base[p] as f64,
                complete,
            ));
            rows.push(row(
                "reactivation_rate",
                &label,
                reactivated[p] as f64,
                pool[p] as f64,
                complete,
            ));
        }
    }
    let stats = userstats::scan(events, &spec.purchase).await?;
    let (mut buyers, mut repeat, mut eligible, mut converted) = (0u64, 0u64, 0u64, 0u64);
    let window = spec.conversion_days * DAY_MICROS;
    for u in 0..stats.len() {
        if stats.purchases[u] >= 1 {
            buyers += 1;
            repeat += (stats.purchases[u] >= 2) as u64;
        }
        let f = stats.first_seen[u];
        if f != NEVER && f + window <= max_ts {
            eligible += 1;
            let fp = stats.first_purchase[u];
            converted += (fp != NEVER && fp - f <= window) as u64;
        }
    }
    rows.push(row(
        "repurchase_rate",
        "all",
        repeat as f64,
        buyers as f64,
        true,
    ));
    rows.push(row(
        &format!("first_order_conversion_{}d", spec.conversion_days),
        "all",
        converted as f64,
        eligible as f64,
        true,
    ));
    Ok(rows)
}
