//! Predictive customer lifetime value over the store: who is still alive and
//! what they will be worth (BG/NBD and Gamma-Gamma, see [`tenure_stats::clv`]).
//!
//! One fold reads each buyer's purchase events in time order and keeps their
//! purchase *days* (in the request's time zone; purchases on the same day
//! count once, as in the 2005 paper): the first, the last before the end of
//! the calibration period, the number of repeat days `x`, the revenue of the
//! repeat days, and the purchase days after the calibration period (the
//! holdout). With the unit of time `u` (a week by default, or a day):
//!
//! - `t_x = (last day - first day) / u` and `T = (end day - first day) / u`,
//!   the end day being the last day of the calibration period: the day
//!   before `--calibration-end`'s exclusive end, else the as-of day;
//! - a customer is a user whose first purchase falls in the calibration
//!   period; BG/NBD is fitted over every customer, Gamma-Gamma over those
//!   with a repeat purchase day and a positive average value of their repeat
//!   days (each day's revenue summed, the first day left out);
//! - per customer: `p_alive` at the end of the calibration period, the
//!   purchases expected in the `horizon` after it, the expected average value
//!   (Gamma-Gamma's conditional mean, the population mean for `x = 0`) and
//!   `clv` = expected purchases x expected value, or with a discount rate `d`
//!   per unit, `Σ_k (E[Y(k)] - E[Y(k-1)]) x value / (1 + d)^k` over the
//!   horizon's units `k`;
//! - with a calibration end, the holdout check of the paper: per calibration
//!   frequency (0 to 6, then 7 and more), customers, the actual mean number
//!   of holdout purchase days, and the mean BG/NBD prediction for the holdout
//!   length (the as-of day minus the calibration's end day).
//!
//! Example (CDNOW, `--calibration-end 1997-09-30`, weeks): a customer who
//! first bought on 1997-01-01 and again on 01-18 and 08-02 has `x = 2`,
//! `t_x = 213 / 7 = 30.43`, `T = 272 / 7 = 38.86`, and a repeat average of
//! (29.73 + 14.96) / 2 = 22.35.

use std::ops::Range;
use std::sync::Arc;

use chrono_tz::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Schema, SchemaRef};
use datafusion::common::exec_err;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{col, lit};
use tenure_stats::clv::{self as model, BgNbd, Customer, Fit, GammaGamma, Spender};

use crate::calendar::{Calendar, Period};
use crate::fold::{FoldInput, Rows, UserFold};
use crate::table::Events;
use crate::{EngineError, Result};

/// A CLV request.
#[derive(Debug, Clone)]
pub struct ClvSpec {
    /// Name of the purchase event.
    pub purchase_event: String,
    /// Time zone of days.
    pub tz: Tz,
    /// Days per unit of time (7: weeks, the papers' unit; 1: days).
    pub unit_days: u32,
    /// Exclusive end of the calibration period (UTC µs); `None`: no holdout,
    /// the whole history calibrates.
    pub calibration_end: Option<i64>,
    /// Exclusive end of the history (UTC µs); `None`: the end of the day of
    /// the newest event.
    pub as_of: Option<i64>,
    /// Prediction horizon, in units.
    pub horizon: f64,
    /// Discount rate per unit (0: none).
    pub discount: f64,
}

/// A buyer's purchase days, as read.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Facts {
    /// User key.
    pub key: u32,
    /// Day (index of the fold's calendar) of the first purchase.
    pub first_day: u32,
    /// Day of the last purchase in the calibration period.
    pub last_day: u32,
    /// Repeat purchase days in the calibration period.
    pub x: u32,
    /// Revenue of the repeat days, in cents.
    pub repeat_cents: i128,
    /// Purchase days after the calibration period.
    pub holdout: u32,
}

/// The fold: [`Facts`] of every buyer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ClvFold {
    days: Calendar,
    purchase_event: String,
    /// Exclusive end of the calibration period.
    calibration_end: i64,
    /// Exclusive end of the history.
    until: i64,
    revenue: bool,
}

impl ClvFold {
    /// The fold over `events` (opened up to the as-of).
    pub fn new(events: &Events, spec: &ClvSpec) -> Result<Self> {
        let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        let probe = Calendar::new(Period::Day, spec.tz, min_ts, max_ts)?;
        let until = spec.as_of.unwrap_or_else(|| probe.end_of_day(max_ts));
        let calibration_end = spec.calibration_end.unwrap_or(until);
        if calibration_end > until {
            return Err(EngineError::BadRequest(
                "the calibration period ends after the as-of: --calibration-end must be before --as-of (default: the last day of data)".into(),
            ));
        }
        if calibration_end <= min_ts {
            return Err(EngineError::BadRequest(
                "the calibration period ends before the first event: nothing to fit".into(),
            ));
        }
        let days = Calendar::new(Period::Day, spec.tz, min_ts, (until - 1).max(min_ts))?;
        Ok(Self {
            days,
            purchase_event: spec.purchase_event.clone(),
            calibration_end,
            until,
            revenue: events.has_column("revenue"),
        })
    }

    /// The local day index of an instant (clamped to the calendar).
    fn day(&self, ts: i64) -> u32 {
        match self.days.local_day(ts) {
            Some(d) => d as u32,
            None if ts < self.days.day_start(0) => 0,
            None => self.days.periods() as u32 - 1,
        }
    }

    /// The last day of the calibration period and of the history.
    fn end_days(&self) -> (u32, u32) {
        (self.day(self.calibration_end - 1), self.day(self.until - 1))
    }
}

/// Per range: the buyers' facts, in key order.
pub struct FactsState {
    facts: Vec<Facts>,
}

impl UserFold for ClvFold {
    type State = FactsState;
    type Partial = Vec<Facts>;

    fn name(&self) -> &'static str {
        "clv"
    }

    fn input(&self) -> FoldInput {
        FoldInput {
            columns: if self.revenue {
                vec!["revenue".into()]
            } else {
                Vec::new()
            },
            flags: vec![col("event").eq(lit(self.purchase_event.clone()))],
            until: Some(self.until),
            ordered: true,
            any_flag: true,
            ..Default::default()
        }
    }

    fn schema(&self) -> SchemaRef {
        facts_schema()
    }

    fn start(&self, _keys: Range<u32>) -> FactsState {
        FactsState { facts: Vec::new() }
    }

    fn update(&self, st: &mut FactsState, rows: &Rows<'_>) -> DfResult<()> {
        let ts = rows.ts();
        let purchase = rows.flag(0);
        let rev = if self.revenue {
            match rows.column(0).as_primitive_opt::<Decimal128Type>() {
                Some(r) => Some(r),
                None => return exec_err!("column `revenue` is not a decimal"),
            }
        } else {
            None
        };
        let value = |i: usize| rev.map_or(0, |r| if r.is_valid(i) { r.value(i) } else { 0 });
        for (key, range) in rows.users() {
            let mut f: Option<Facts> = None;
            // The last purchase day seen, in or after the calibration period.
            let mut last = u32::MAX;
            for i in range {
                if !purchase.value(i) || ts[i] >= self.until {
                    continue;
                }
                let day = self.day(ts[i]);
                let calibration = ts[i] < self.calibration_end;
                match &mut f {
                    None if !calibration => break, // first purchase after calibration
                    None => {
                        f = Some(Facts {
                            key,
                            first_day: day,
                            last_day: day,
                            x: 0,
                            repeat_cents: 0,
                            holdout: 0,
                        });
                        last = day;
                    }
                    Some(f) => {
                        if day != last {
                            if calibration {
                                f.x += 1;
                                f.last_day = day;
                            } else {
                                f.holdout += 1;
                            }
                            last = day;
                        }
                        if calibration && day != f.first_day {
                            f.repeat_cents += value(i);
                        }
                    }
                }
            }
            st.facts.extend(f);
        }
        Ok(())
    }

    fn finish(&self, st: FactsState) -> DfResult<Vec<Facts>> {
        Ok(st.facts)
    }

    fn merge(&self, into: &mut Vec<Facts>, other: Vec<Facts>) -> DfResult<()> {
        into.extend(other);
        Ok(())
    }

    fn emit(&self, mut facts: Vec<Facts>) -> DfResult<RecordBatch> {
        facts.sort_unstable_by_key(|f| f.key);
        let (end, _) = self.end_days();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(facts.iter().map(|f| f.key))),
            Arc::new(UInt32Array::from_iter_values(facts.iter().map(|f| f.x))),
            Arc::new(UInt32Array::from_iter_values(
                facts.iter().map(|f| f.last_day - f.first_day),
            )),
            Arc::new(UInt32Array::from_iter_values(
                facts.iter().map(|f| end - f.first_day),
            )),
            Arc::new(Float64Array::from_iter_values(
                facts.iter().map(|f| f.repeat_cents as f64 / 100.0),
            )),
            Arc::new(UInt32Array::from_iter_values(
                facts.iter().map(|f| f.holdout),
            )),
        ];
        Ok(RecordBatch::try_new(facts_schema(), cols)?)
    }
}

/// What [`ClvFold`] emits: per buyer, the key, `x`, the days from the first
/// to the last calibration purchase and to the calibration's end, the repeat
/// days' revenue and the holdout purchase days.
pub fn facts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_key", DataType::UInt32, false),
        Field::new("x", DataType::UInt32, false),
        Field::new("t_x_days", DataType::UInt32, false),
        Field::new("t_days", DataType::UInt32, false),
        Field::new("repeat_revenue", DataType::Float64, false),
        Field::new("holdout", DataType::UInt32, false),
    ]))
}

/// The fitted models and every customer's predictions.
#[derive(Debug, Clone)]
pub struct ClvResult {
    /// BG/NBD over every customer.
    pub bgnbd: Fit<BgNbd>,
    /// Gamma-Gamma over repeat customers with a positive average value;
    /// `None` when the store has no revenue or too few such customers.
    pub gamma_gamma: Option<Fit<GammaGamma>>,
    /// Per customer, in key order.
    pub customers: Vec<Prediction>,
    /// The holdout check (with a calibration end).
    pub validation: Option<Vec<ValidationRow>>,
}

/// One customer's data and predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// User key.
    pub key: u32,
    /// The model's view of the customer (`x`, `t_x`, `T` in units).
    pub customer: Customer,
    /// Average value of the repeat purchase days (0 without any).
    pub mean_value: f64,
    /// Purchase days after the calibration period.
    pub holdout: u32,
    /// Probability of being alive at the end of the calibration period.
    pub p_alive: f64,
    /// Purchases expected in the horizon.
    pub expected_purchases: f64,
    /// Expected average order value (`None` without Gamma-Gamma).
    pub expected_value: Option<f64>,
    /// Expected value over the horizon (`None` without Gamma-Gamma).
    pub clv: Option<f64>,
}

/// One row of the holdout check.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ValidationRow {
    /// Repeat purchases in the calibration period (`7+` for the last row).
    pub frequency: String,
    /// Customers with that frequency.
    pub customers: u64,
    /// Their mean number of holdout purchase days.
    pub actual: f64,
    /// BG/NBD's mean prediction for the holdout.
    pub predicted: f64,
}

/// Fits the models over `events` (opened up to the as-of) and predicts.
pub async fn clv(events: &Events, spec: &ClvSpec) -> Result<ClvResult> {
    if !(spec.horizon.is_finite() && spec.horizon >= 0.0) {
        return Err(EngineError::BadRequest(format!(
            "horizon {}: expected a duration of 0 or more",
            spec.horizon
        )));
    }
    if !(spec.discount.is_finite() && spec.discount >= 0.0) {
        return Err(EngineError::BadRequest(format!(
            "discount rate {}: expected 0 or more (0.01 = 1% per {})",
            spec.discount,
            if spec.unit_days == 7 { "week" } else { "day" }
        )));
    }
    let fold = ClvFold::new(events, spec)?;
    let (end, last) = fold.end_days();
    let holdout_units = (last - end) as f64 / spec.unit_days as f64;
    let has_holdout = spec.calibration_end.is_some();
    let mut facts = crate::fold::partial(events, fold).await?;
    facts.sort_unstable_by_key(|f| f.key);
    if facts.is_empty() {
        return Err(EngineError::BadRequest(format!(
            "no `{}` event in the calibration period: nobody to fit (is --purchase-event right?)",
            spec.purchase_event
        )));
    }
    let unit = spec.unit_days as f64;
    let customers: Vec<Customer> = facts
        .iter()
        .map(|f| Customer {
            x: f.x,
            t_x: (f.last_day - f.first_day) as f64 / unit,
            t: (end - f.first_day) as f64 / unit,
        })
        .collect();
    let means: Vec<f64> = facts
        .iter()
        .map(|f| {
            if f.x > 0 {
                f.repeat_cents as f64 / 100.0 / f.x as f64
            } else {
                0.0
            }
        })
        .collect();
    let bgnbd = model::fit_bgnbd(&customers).map_err(|e| {
        EngineError::BadRequest(format!(
            "cannot fit BG/NBD: {e} (every buyer bought on one day only?)"
        ))
    })?;
    let spenders: Vec<Spender> = facts
        .iter()
        .zip(&means)
        .filter(|(f, m)| f.x > 0 && **m > 0.0)
        .map(|(f, &mean)| Spender { x: f.x, mean })
        .collect();
    let revenue = events.has_column("revenue");
    let gamma_gamma = if revenue && spenders.len() >= 2 {
        Some(
            model::fit_gamma_gamma(&spenders)
                .map_err(|e| EngineError::BadRequest(format!("cannot fit Gamma-Gamma: {e}")))?,
        )
    } else {
        None
    };
    let m = bgnbd.params;
    let predictions: Vec<Prediction> = facts
        .iter()
        .zip(&customers)
        .zip(&means)
        .map(|((f, c), &mean)| {
            let expected = m.expected_purchases(c, spec.horizon);
            let value = gamma_gamma
                .as_ref()
                .map(|g| g.params.expected_average_value(c.x, mean))
                .filter(|v| v.is_finite());
            let clv = value.map(|v| lifetime_value(&m, c, spec, expected, v));
            Prediction {
                key: f.key,
                customer: *c,
                mean_value: mean,
                holdout: f.holdout,
                p_alive: m.p_alive(c),
                expected_purchases: expected,
                expected_value: value,
                clv,
            }
        })
        .collect();
    let validation = has_holdout.then(|| validate(&m, &predictions, holdout_units));
    Ok(ClvResult {
        bgnbd,
        gamma_gamma,
        customers: predictions,
        validation,
    })
}

/// Expected value over the horizon, discounted per unit; `expected` is the
/// customer's expected purchases over the whole horizon.
fn lifetime_value(m: &BgNbd, c: &Customer, spec: &ClvSpec, expected: f64, value: f64) -> f64 {
    let (horizon, discount) = (spec.horizon, spec.discount);
    if discount == 0.0 {
        return expected * value;
    }
    let (mut total, mut before, mut k) = (0.0, 0.0, 1.0);
    while k - 1.0 < horizon {
        let now = m.expected_purchases(c, k.min(horizon));
        total += (now - before) * value / (1.0 + discount).powf(k);
        before = now;
        k += 1.0;
    }
    total
}

/// The paper's holdout check: by calibration frequency 0..=6 and 7+.
fn validate(m: &BgNbd, customers: &[Prediction], holdout: f64) -> Vec<ValidationRow> {
    let mut sums = [(0u64, 0u64, 0.0f64); 8];
    for p in customers {
        let s = &mut sums[(p.customer.x as usize).min(7)];
        s.0 += 1;
        s.1 += p.holdout as u64;
        s.2 += m.expected_purchases(&p.customer, holdout);
    }
    sums.iter()
        .enumerate()
        .filter(|(_, s)| s.0 > 0)
        .map(|(x, &(n, actual, predicted))| ValidationRow {
            frequency: if x == 7 { "7+".into() } else { x.to_string() },
            customers: n,
            actual: actual as f64 / n as f64,
            predicted: predicted / n as f64,
        })
        .collect()
}

/// The model table's schema: `model`, `parameter`, `value`.
pub fn model_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("parameter", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// The fitted parameters, log-likelihoods and customer counts as rows of
/// [`model_schema`].
pub fn model_batch(r: &ClvResult) -> DfResult<RecordBatch> {
    let mut rows: Vec<(&str, &str, f64)> = Vec::new();
    let b = &r.bgnbd;
    rows.extend([
        ("bg_nbd", "r", b.params.r),
        ("bg_nbd", "alpha", b.params.alpha),
        ("bg_nbd", "a", b.params.a),
        ("bg_nbd", "b", b.params.b),
        ("bg_nbd", "log_likelihood", b.log_likelihood),
        ("bg_nbd", "customers", b.customers as f64),
    ]);
    if let Some(g) = &r.gamma_gamma {
        rows.extend([
            ("gamma_gamma", "p", g.params.p),
            ("gamma_gamma", "q", g.params.q),
            ("gamma_gamma", "gamma", g.params.gamma),
            ("gamma_gamma", "log_likelihood", g.log_likelihood),
            ("gamma_gamma", "customers", g.customers as f64),
        ]);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    Ok(RecordBatch::try_new(model_schema(), cols)?)
}

/// The holdout check's schema.
pub fn validation_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("frequency", DataType::Utf8, false),
        Field::new("customers", DataType::UInt64, false),
        Field::new("actual", DataType::Float64, false),
        Field::new("predicted", DataType::Float64, false),
    ]))
}

/// The holdout check as a batch of [`validation_schema`].
pub fn validation_batch(rows: &[ValidationRow]) -> DfResult<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.frequency.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.customers),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.actual),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.predicted),
        )),
    ];
    Ok(RecordBatch::try_new(validation_schema(), cols)?)
}

/// The report's summary: `view` (`p_alive`, `clv` or `holdout`), `bucket`,
/// `customers`, `value`, `predicted`. Per tenth of p_alive (`0.0-0.1` ..
/// `0.9-1.0`): customers and their share (`value`); per CLV decile (`1` =
/// the tenth of customers with the lowest CLV .. `10`): customers and their
/// mean CLV; per calibration frequency of the holdout check: customers, the
/// actual mean and the prediction.
pub fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("bucket", DataType::Utf8, false),
        Field::new("customers", DataType::UInt64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("predicted", DataType::Float64, true),
    ]))
}

/// The summary of [`summary_schema`].
pub fn summary_batch(r: &ClvResult) -> DfResult<RecordBatch> {
    /// view, bucket, customers, value, predicted
    type Row<'a> = (&'a str, String, u64, Option<f64>, Option<f64>);
    let mut rows: Vec<Row> = Vec::new();
    let n = r.customers.len().max(1) as f64;
    let mut tenths = [0u64; 10];
    for p in &r.customers {
        tenths[((p.p_alive * 10.0) as usize).min(9)] += 1;
    }
    for (i, &c) in tenths.iter().enumerate() {
        let bucket = format!("{:.1}-{:.1}", i as f64 / 10.0, (i + 1) as f64 / 10.0);
        rows.push(("p_alive", bucket, c, Some(c as f64 / n), None));
    }
    let mut clv: Vec<f64> = r.customers.iter().filter_map(|p| p.clv).collect();
    clv.sort_by(f64::total_cmp);
    if !clv.is_empty() {
        for d in 0..10 {
            let part = &clv[d * clv.len() / 10..(d + 1) * clv.len() / 10];
            let mean = (!part.is_empty()).then(|| part.iter().sum::<f64>() / part.len() as f64);
            rows.push(("clv", (d + 1).to_string(), part.len() as u64, mean, None));
        }
    }
    for v in r.validation.iter().flatten() {
        rows.push((
            "holdout",
            v.frequency.clone(),
            v.customers,
            Some(v.actual),
            Some(v.predicted),
        ));
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.1.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.3))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.4))),
    ];
    Ok(RecordBatch::try_new(summary_schema(), cols)?)
}

/// The per-customer table's schema: the customer's data in the model's unit
/// (`frequency` = x, `recency` = t_x, `t` = T, `monetary_value` = average
/// value of the repeat days), the predictions, and the holdout purchase days
/// (null without a calibration end).
pub fn customers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("frequency", DataType::UInt32, false),
        Field::new("recency", DataType::Float64, false),
        Field::new("t", DataType::Float64, false),
        Field::new("monetary_value", DataType::Float64, false),
        Field::new("p_alive", DataType::Float64, false),
        Field::new("expected_purchases", DataType::Float64, false),
        Field::new("expected_value", DataType::Float64, true),
        Field::new("clv", DataType::Float64, true),
        Field::new("holdout_purchases", DataType::UInt32, true),
    ]))
}

/// Customers `rows` as a batch of [`customers_schema`], with their ids.
pub fn customers_batch(
    rows: &[Prediction],
    ids: StringArray,
    holdout: bool,
) -> DfResult<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(ids),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|p| p.customer.x),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|p| p.customer.t_x),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|p| p.customer.t),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|p| p.mean_value),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|p| p.p_alive),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|p| p.expected_purchases),
        )),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|p| p.expected_value),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|p| p.clv))),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|p| holdout.then_some(p.holdout)),
        )),
    ];
    Ok(RecordBatch::try_new(customers_schema(), cols)?)
}

/// Every customer's row, ids read from the users dictionary a slice at a time.
pub async fn customers_batches(events: &Events, r: &ClvResult) -> Result<Vec<RecordBatch>> {
    let mut ids = crate::user_ids::UserIds::open(events).await?;
    let mut out = Vec::new();
    for chunk in r.customers.chunks(65_536) {
        let keys = UInt32Array::from_iter_values(chunk.iter().map(|p| p.key));
        let names = ids.of(&keys).await?;
        out.push(customers_batch(chunk, names, r.validation.is_some())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Float64Type, UInt64Type};

    /// The report's summary, worked by hand: 20 customers with p_alive 0,
    /// 0.05, ..., 0.95 (two per tenth) and CLV 0, 1, ..., 19 (deciles of two:
    /// means 0.5, 2.5, ..., 18.5), and one holdout row.
    #[test]
    fn summary_buckets_and_deciles() {
        let fit = |params| Fit {
            params,
            log_likelihood: 0.0,
            customers: 20,
            iterations: 1,
            converged: true,
        };
        let customers = (0..20)
            .map(|i| Prediction {
                key: i,
                customer: Customer {
                    x: 0,
                    t_x: 0.0,
                    t: 1.0,
                },
                mean_value: 0.0,
                holdout: 0,
                p_alive: f64::from(i) / 20.0,
                expected_purchases: 0.0,
                expected_value: Some(1.0),
                clv: Some(f64::from(19 - i)),
            })
            .collect();
        let r = ClvResult {
            bgnbd: fit(BgNbd {
                r: 1.0,
                alpha: 1.0,
                a: 1.0,
                b: 1.0,
            }),
            gamma_gamma: None,
            customers,
            validation: Some(vec![ValidationRow {
                frequency: "7+".into(),
                customers: 3,
                actual: 6.5,
                predicted: 6.25,
            }]),
        };
        let b = summary_batch(&r).unwrap();
        let view = b.column(0).as_string::<i32>();
        let bucket = b.column(1).as_string::<i32>();
        let users = b.column(2).as_primitive::<UInt64Type>();
        let value = b.column(3).as_primitive::<Float64Type>();
        let predicted = b.column(4).as_primitive::<Float64Type>();
        assert_eq!(b.num_rows(), 21);
        for t in 0..10 {
            assert_eq!(view.value(t), "p_alive");
            assert_eq!(
                bucket.value(t),
                format!("{:.1}-{:.1}", t as f64 / 10.0, (t + 1) as f64 / 10.0)
            );
            assert_eq!(users.value(t), 2);
            assert_eq!(value.value(t), 0.1);
        }
        for d in 0..10 {
            let row = 10 + d;
            assert_eq!(view.value(row), "clv");
            assert_eq!(bucket.value(row), (d + 1).to_string());
            assert_eq!(users.value(row), 2);
            assert_eq!(value.value(row), 2.0 * d as f64 + 0.5);
        }
        assert_eq!(
            (view.value(20), bucket.value(20), users.value(20)),
            ("holdout", "7+", 3)
        );
        assert_eq!((value.value(20), predicted.value(20)), (6.5, 6.25));
        assert!(predicted.is_null(0));
    }
}
