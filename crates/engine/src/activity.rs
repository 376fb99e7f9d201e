//! The per-user pass shared by retention, lifecycle and KPIs: one scan of
//! `(user_key, ts[, flags])`, folded into per-user bitmaps of active periods,
//! indexed directly by the dense `user_key` (no hash table, no string).
//!
//! Why not a `GROUP BY user_key`: DataFusion's hash aggregation costs about as
//! much as the whole scan again on 10M events; a dense array indexed by key is
//! a single pass. Each scan partition folds into its own bitmaps; they are OR-ed
//! at the end.

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{TimestampMicrosecondType, UInt32Type};
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use crate::calendar::Calendar;
use crate::table::Events;
use crate::{EngineError, Result};

/// Which events set the "start" and "return" bits.
#[derive(Debug, Clone, Default)]
pub struct ActivitySpec {
    /// Condition for start events (`None`: any event).
    pub start: Option<Expr>,
    /// Condition for return events (`None`: any event).
    pub ret: Option<Expr>,
}

/// Per-user bitmaps of periods with start and return events.
#[derive(Debug, Clone)]
pub struct Activity {
    /// Periods covered (bits per user).
    pub periods: usize,
    /// Words per user.
    pub words: usize,
    /// Users (size of the key space).
    pub users: usize,
    /// Start-event bits, `users * words`.
    pub start: Vec<u64>,
    /// Return-event bits; `None` when return events are start events.
    pub ret: Option<Vec<u64>>,
}

impl Activity {
    /// Empty bitmaps for `users` and `periods` (separate return bits if asked).
    pub fn new(users: usize, periods: usize, separate_return: bool) -> Self {
        let words = periods.div_ceil(64).max(1);
        Self {
            periods,
            words,
            users,
            start: vec![0; users * words],
            ret: separate_return.then(|| vec![0; users * words]),
        }
    }

    /// Marks user `u` active (start and return) in period `p`.
    pub fn set(&mut self, u: usize, p: usize) {
        self.start[u * self.words + p / 64] |= 1 << (p % 64);
    }

    /// The start bits of user `u`.
    #[inline]
    pub fn start_of(&self, u: usize) -> &[u64] {
        &self.start[u * self.words..(u + 1) * self.words]
    }

    /// The return bits of user `u`.
    #[inline]
    pub fn return_of(&self, u: usize) -> &[u64] {
        match &self.ret {
            Some(r) => &r[u * self.words..(u + 1) * self.words],
            None => self.start_of(u),
        }
    }

    fn merge(&mut self, other: Activity) {
        for (a, b) in self.start.iter_mut().zip(other.start) {
            *a |= b;
        }
        if let (Some(a), Some(b)) = (self.ret.as_mut(), other.ret) {
            for (x, y) in a.iter_mut().zip(b) {
                *x |= y;
            }
        }
    }
}

/// Lowest set bit of a multi-word bitmap.
#[inline]
pub fn first_bit(bits: &[u64]) -> Option<usize> {
    bits.iter()
        .enumerate()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
}

/// Is bit `i` set?
#[inline]
pub fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] >> (i % 64) & 1 == 1
}

/// Scans the events once and returns every user's active periods.
pub async fn scan(events: &Events, cal: &Calendar, spec: &ActivitySpec) -> Result<Activity> {
    let users = events.users();
    let periods = cal.periods();
    let separate = spec.start.is_some() || spec.ret.is_some();
    let mut df = events.in_range().await?;
    let mut select = vec![col("user_key"), col("ts")];
    if separate {
        let s = spec.start.clone().unwrap_or(lit(true));
        let r = spec.ret.clone().unwrap_or(lit(true));
        df = df.filter(s.clone().or(r.clone()))?;
        select.push(s.is_true().alias("is_start"));
        select.push(r.is_true().alias("is_return"));
    }
    let df = df.select(select)?;
    let streams = df.execute_stream_partitioned().await?;
    let mut tasks = Vec::with_capacity(streams.len());
    for stream in streams {
        let cal = cal.clone();
        tasks.push(tokio::spawn(fold(stream, cal, users, periods, separate)));
    }
    let mut acc: Option<Activity> = None;
    for t in tasks {
        let part = t
            .await
            .map_err(|e| EngineError::Internal(format!("scan task failed: {e}")))??;
        match acc.as_mut() {
            None => acc = Some(part),
            Some(a) => a.merge(part),
        }
    }
    Ok(acc.unwrap_or_else(|| Activity::new(users, periods, separate)))
}

async fn fold(
    mut stream: SendableRecordBatchStream,
    cal: Calendar,
    users: usize,
    periods: usize,
    separate: bool,
) -> Result<Activity> {
    let mut act = Activity::new(users, periods, separate);
    let words = act.words;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).as_primitive::<UInt32Type>();
        let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let (keys, ts) = (keys.values(), ts.values());
        if keys.iter().any(|&k| k as usize >= users) {
            return Err(EngineError::BadRequest(format!(
                "user_key beyond the users dictionary ({users} users): the store is inconsistent"
            )));
        }
        if separate {
            let s: &BooleanArray = batch.column(2).as_boolean();
            let r: &BooleanArray = batch.column(3).as_boolean();
            let ret = act.ret.as_mut().expect("separate bitmaps");
            for i in 0..batch.num_rows() {
                let Some(p) = cal.period_of(ts[i]) else {
                    continue;
                };
                let idx = keys[i] as usize * words + p as usize / 64;
                let m = 1u64 << (p % 64);
                if s.value(i) {
                    act.start[idx] |= m;
                }
                if r.value(i) {
                    ret[idx] |= m;
                }
            }
        } else {
            for i in 0..batch.num_rows() {
                let Some(p) = cal.period_of(ts[i]) else {
                    continue;
                };
                act.start[keys[i] as usize * words + p as usize / 64] |= 1u64 << (p % 64);
            }
        }
        // Nulls cannot occur: user_key and ts are non-nullable columns.
        debug_assert_eq!(batch.column(0).null_count(), 0);
    }
    Ok(act)
}
