//! Cumulative lifetime value per cohort and period: revenue of a cohort's users
//! from their cohort period through period k, divided by the cohort's size.
//! Cohorts are defined as in retention (first start event). Revenue sums are
//! exact (decimal cents), only the per-user ratio is a float.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Schema, SchemaRef};
use datafusion::common::exec_err;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;

use crate::Result;
use crate::activity::first_bit;
use crate::calendar::Calendar;
use crate::fold::{FoldInput, Rows, UserFold};
use crate::retention::RetentionSpec;
use crate::table::Events;
use crate::userstats::cents;

/// One row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LtvRow {
    /// `cohort` or `average`.
    pub kind: &'static str,
    /// Breakdown value (with `by`), else `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
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
    let fold = LtvFold::new(events, spec)?;
    let batches = crate::fold::run(events, fold).await?;
    Ok(batches.iter().flat_map(rows_of_batch).collect())
}

/// The output schema (the columns of [`LtvRow`]).
pub fn schema() -> SchemaRef {
    schema_of(false)
}

/// The output schema; with a breakdown a `group` column after `kind`.
pub fn schema_of(by: bool) -> SchemaRef {
    let mut fields = vec![Field::new("kind", DataType::Utf8, false)];
    if by {
        fields.push(Field::new("group", DataType::Utf8, true));
    }
    fields.extend([
        Field::new("cohort", DataType::Utf8, true),
        Field::new("period", DataType::UInt32, false),
        Field::new("cohort_size", DataType::UInt64, false),
        Field::new("revenue", DataType::Utf8, true),
        Field::new("ltv", DataType::Float64, true),
        Field::new("complete", DataType::Boolean, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Rows of a batch of [`schema`].
pub fn rows_of_batch(b: &RecordBatch) -> Vec<LtvRow> {
    use datafusion::arrow::datatypes::{Float64Type, UInt32Type, UInt64Type};
    let column = |name: &str| b.column_by_name(name).expect("an LTV column");
    let text = |name: &str| column(name).as_string::<i32>();
    let (kind, cohort, revenue) = (text("kind"), text("cohort"), text("revenue"));
    let group = b.column_by_name("group").map(|g| g.as_string::<i32>());
    let period = column("period").as_primitive::<UInt32Type>();
    let size = column("cohort_size").as_primitive::<UInt64Type>();
    let ltv = column("ltv").as_primitive::<Float64Type>();
    let complete = column("complete").as_boolean();
    (0..b.num_rows())
        .map(|i| LtvRow {
            kind: if kind.value(i) == "cohort" {
                "cohort"
            } else {
                "average"
            },
            group: group.and_then(|g| g.is_valid(i).then(|| g.value(i).to_string())),
            cohort: cohort.is_valid(i).then(|| cohort.value(i).to_string()),
            period: period.value(i),
            cohort_size: size.value(i),
            revenue: revenue.is_valid(i).then(|| revenue.value(i).to_string()),
            ltv: ltv.is_valid(i).then(|| ltv.value(i)),
            complete: complete.value(i),
        })
        .collect()
}

/// LTV as a [`UserFold`]: per user, the periods with a start event. Revenue
/// goes to its cohort and period offset as soon as the user's cohort cannot
/// change any more (files are read earliest first: a cohort whose period
/// started before the current file's first event is final); otherwise it
/// waits per user and period until the range is finished. Per range: cohort
/// sizes and revenue per cohort and period offset.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LtvFold {
    cal: Calendar,
    #[serde(with = "crate::codec::opt_expr")]
    start: Option<Expr>,
    as_of: i64,
    /// Break down by this value at each user's first start event: users are
    /// then read whole and in time order.
    #[serde(default, with = "crate::codec::opt_expr")]
    by: Option<Expr>,
}

impl LtvFold {
    /// The fold of `spec` over the events in range.
    pub fn new(events: &Events, spec: &RetentionSpec) -> Result<Self> {
        let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        let cal = Calendar::new(spec.period, spec.tz, min_ts, max_ts)?;
        Ok(Self {
            as_of: spec.as_of.unwrap_or_else(|| cal.end_of_day(max_ts)),
            cal,
            start: spec.start.clone(),
            by: spec
                .by
                .as_deref()
                .map(|b| crate::breakdown::by_expr(events, b))
                .transpose()?,
        })
    }

    /// With a breakdown: each user whole and in time order; the cohort is
    /// the period of the first start event, the group its value (at equal
    /// times the smallest), revenue from the cohort period on.
    fn update_by(&self, st: &mut LtvState, rows: &Rows<'_>) -> DfResult<()> {
        let ts = rows.ts();
        let Some(rev) = rows.column(0).as_primitive_opt::<Decimal128Type>() else {
            return exec_err!("column `revenue` is not a decimal");
        };
        let values = datafusion::arrow::compute::cast(rows.column(1), &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let is_start = self.start.is_some().then(|| rows.flag(0));
        let n = self.cal.periods();
        for (_, range) in rows.users() {
            let mut first: Option<(i64, Option<&str>)> = None;
            for i in range.clone() {
                if is_start.is_some_and(|s| !s.value(i)) || self.cal.period_of(ts[i]).is_none() {
                    continue;
                }
                let v = values.is_valid(i).then(|| values.value(i));
                match first {
                    Some((t, _)) if t < ts[i] => break,
                    Some((_, w)) if w <= v => {}
                    _ => first = Some((ts[i], v)),
                }
            }
            let Some((t, v)) = first else { continue };
            let c = self.cal.period_of(t).expect("in range") as usize;
            let label = v.map_or_else(|| crate::breakdown::NONE_LABEL.to_string(), str::to_string);
            let cells = st
                .groups
                .entry(label)
                .or_insert_with(|| (vec![0; n], vec![0; n * n]));
            cells.0[c] += 1;
            for i in range {
                if !rev.is_valid(i) {
                    continue;
                }
                if let Some(p) = self.cal.period_of(ts[i])
                    && p as usize >= c
                {
                    cells.1[c * n + p as usize - c] += rev.value(i);
                }
            }
        }
        Ok(())
    }

    /// Cohort and average rows of one group's sizes and cells.
    fn rows(&self, group: Option<&str>, sizes: &[u64], cells: &[i128]) -> Vec<LtvRow> {
        let (cal, n, as_of) = (&self.cal, self.cal.periods(), self.as_of);
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
                    group: group.map(str::to_string),
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
                group: group.map(str::to_string),
                cohort: None,
                period: k as u32,
                cohort_size: avg_size[k],
                revenue: (avg_size[k] > 0).then(|| cents(avg_rev[k])),
                ltv: (avg_size[k] > 0).then(|| avg_rev[k] as f64 / 100.0 / avg_size[k] as f64),
                complete: avg_size[k] > 0,
            });
        }
        rows
    }

    fn words(&self) -> usize {
        self.cal.periods().div_ceil(64).max(1)
    }
}

/// [`LtvFold`]'s state for a range of users.
pub struct LtvState {
    lo: u32,
    start: Vec<u64>,
    /// Revenue of users whose cohort was not settled when it was read, by
    /// `(user - lo) * periods + period`.
    revenue: hashbrown::HashMap<u64, i128, foldhash::fast::FixedState>,
    /// Revenue already attributed, by cohort and offset (`periods * periods`).
    cells: Vec<i128>,
    /// With a breakdown: sizes and cells per group.
    groups: std::collections::BTreeMap<String, (Vec<u64>, Vec<i128>)>,
}

/// Cohort sizes (`n`) and revenue by cohort and offset (`n * n`); with a
/// breakdown, per group.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct LtvCells {
    sizes: Vec<u64>,
    cells: Vec<i128>,
    groups: std::collections::BTreeMap<String, (Vec<u64>, Vec<i128>)>,
}

impl UserFold for LtvFold {
    type State = LtvState;
    type Partial = LtvCells;

    fn name(&self) -> &'static str {
        "ltv"
    }

    fn input(&self) -> FoldInput {
        FoldInput {
            columns: vec!["revenue".into()],
            values: self.by.iter().cloned().collect(),
            flags: self.start.iter().cloned().collect(),
            until: None,
            ordered: self.by.is_some(),
            ..Default::default()
        }
    }

    fn schema(&self) -> SchemaRef {
        schema_of(self.by.is_some())
    }

    fn start(&self, keys: Range<u32>) -> LtvState {
        let by = self.by.is_some();
        LtvState {
            lo: keys.start,
            start: if by {
                Vec::new()
            } else {
                vec![0; (keys.end - keys.start) as usize * self.words()]
            },
            revenue: hashbrown::HashMap::with_hasher(foldhash::fast::FixedState::default()),
            cells: vec![0; self.cal.periods() * self.cal.periods()],
            groups: Default::default(),
        }
    }

    fn update(&self, st: &mut LtvState, rows: &Rows<'_>) -> DfResult<()> {
        if self.by.is_some() {
            return self.update_by(st, rows);
        }
        let (keys, ts) = (rows.keys(), rows.ts());
        let Some(rev) = rows.column(0).as_primitive_opt::<Decimal128Type>() else {
            return exec_err!("column `revenue` is not a decimal");
        };
        let is_start = self.start.is_some().then(|| rows.flag(0));
        let (words, n) = (self.words(), self.cal.periods());
        // No row still to come is older than this file's first event: a user
        // whose cohort period started by then keeps that cohort.
        let settled = rows.file_min_ts();
        for i in 0..rows.len() {
            let Some(p) = self.cal.period_of(ts[i]) else {
                continue;
            };
            let u = (keys[i] - st.lo) as usize;
            let bits = &mut st.start[u * words..(u + 1) * words];
            if is_start.is_none_or(|s| s.value(i)) {
                bits[p as usize / 64] |= 1u64 << (p % 64);
            }
            if !rev.is_valid(i) {
                continue;
            }
            let v = rev.value(i);
            match first_bit(bits) {
                Some(c) if self.cal.day_start_of_period(c) <= settled => {
                    // Revenue before the cohort does not count.
                    if p as usize >= c {
                        st.cells[c * n + p as usize - c] += v;
                    }
                }
                // The cohort may still move earlier: decide in `finish`.
                _ => {
                    *st.revenue
                        .entry(u as u64 * n as u64 + p as u64)
                        .or_default() += v
                }
            }
        }
        Ok(())
    }

    fn finish(&self, st: LtvState) -> DfResult<LtvCells> {
        let n = self.cal.periods();
        let words = self.words();
        let cohort: Vec<u32> = st
            .start
            .chunks_exact(words)
            .map(|bits| first_bit(bits).map_or(u32::MAX, |c| c as u32))
            .collect();
        let mut out = LtvCells {
            sizes: vec![0; n],
            cells: st.cells,
            groups: st.groups,
        };
        for &c in &cohort {
            if c != u32::MAX {
                out.sizes[c as usize] += 1;
            }
        }
        for (&k, &v) in &st.revenue {
            let (u, p) = ((k / n as u64) as usize, (k % n as u64) as usize);
            let c = cohort[u];
            if c != u32::MAX && p >= c as usize {
                out.cells[c as usize * n + p - c as usize] += v;
            }
        }
        Ok(out)
    }

    fn merge(&self, a: &mut LtvCells, b: LtvCells) -> DfResult<()> {
        a.sizes.iter_mut().zip(b.sizes).for_each(|(x, y)| *x += y);
        a.cells.iter_mut().zip(b.cells).for_each(|(x, y)| *x += y);
        for (g, (sizes, cells)) in b.groups {
            match a.groups.get_mut(&g) {
                Some((s, c)) => {
                    s.iter_mut().zip(sizes).for_each(|(x, y)| *x += y);
                    c.iter_mut().zip(cells).for_each(|(x, y)| *x += y);
                }
                None => {
                    a.groups.insert(g, (sizes, cells));
                }
            }
        }
        Ok(())
    }

    fn emit(&self, r: LtvCells) -> DfResult<RecordBatch> {
        let rows: Vec<LtvRow> = match self.by {
            None => self.rows(None, &r.sizes, &r.cells),
            Some(_) => r
                .groups
                .iter()
                .flat_map(|(g, (sizes, cells))| self.rows(Some(g), sizes, cells))
                .collect(),
        };
        let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.kind),
        ))];
        if self.by.is_some() {
            cols.push(Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.group.clone()),
            )));
        }
        cols.extend::<[ArrayRef; 6]>([
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.cohort.clone()),
            )),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.period))),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.cohort_size),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.revenue.clone()),
            )),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.ltv))),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.complete)),
            )),
        ]);
        Ok(RecordBatch::try_new(schema_of(self.by.is_some()), cols)?)
    }
}
