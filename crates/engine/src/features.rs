//! The per-user feature table segments are evaluated on (the contract is
//! `tenure_dsl::Feature`): computed in as few scans as the expression needs —
//! one for purchase facts (R, F, M, first/last seen, lifecycle, scores, means),
//! one per event count or property actually used, none otherwise.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, col, lit};
use tenure_dsl::{Feature, LifecycleAxis, Metric};

use crate::lifecycle::{self, ACTIVITY, TENURE, Thresholds};
use crate::table::Events;
use crate::userstats::{self, NEVER, PurchaseSpec, UserStats};
use crate::{EngineError, Result};

/// Options of the feature table.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    /// Everything is "as of" this instant (UTC µs); later events must already
    /// be excluded from `events` (open it with `to = as_of`).
    pub as_of: i64,
    /// The purchase event.
    pub purchase: PurchaseSpec,
    /// Lifecycle thresholds.
    pub thresholds: Thresholds,
    /// Only users with at least one purchase (RFM's population: customers).
    pub buyers_only: bool,
    /// How R, F and M scores are given.
    pub scoring: Scoring,
}

/// Quintile score (1-5) of each value among `values`, by rank with ties
/// sharing a score. The sorted values form runs of equal values; cut k (k =
/// 1..4, the top of score k) is first placed at the run holding the value of
/// 1-based rank ceil(k n / 5). With at least five distinct values each cut is
/// then moved, where needed, one run past the cut before it and no further
/// than leaves a run for every higher score, so every score 1..5 occurs: a
/// frequency that is 1 for 70 % of buyers and 2, 3, 4, 5+ for the rest scores
/// 1, 2, 3, 4, 5 rather than 1, 4, 5 only. With fewer distinct values the
/// cuts stay where placed (a value scores 1 plus the number of cut values it
/// exceeds, so equal buyers always score alike).
pub fn quintile_scores(values: &[i128]) -> Vec<i64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let mut runs = sorted.clone();
    runs.dedup();
    let m = runs.len();
    let run_of = |v: &i128| runs.binary_search(v).expect("every value is a run");
    let mut cuts = [0usize; 4];
    for k in 1..5 {
        let placed = run_of(&sorted[(k * n).div_ceil(5) - 1]);
        cuts[k - 1] = if m >= 5 {
            let after_previous = if k == 1 { 0 } else { cuts[k - 2] + 1 };
            placed.max(after_previous).min(m + k - 6)
        } else {
            placed
        };
    }
    values
        .iter()
        .map(|v| {
            let run = run_of(v);
            1 + cuts.iter().filter(|&&c| run > c).count() as i64
        })
        .collect()
}

/// How R, F and M scores are given: quintiles among the customers (the
/// default, [`quintile_scores`]) or, per metric, four fixed ascending
/// thresholds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scoring {
    /// R thresholds in whole days: R <= t1 scores 5, <= t2 4, <= t3 3,
    /// <= t4 2, else 1.
    pub recency_days: Option<[i64; 4]>,
    /// F thresholds in purchases: F <= t1 scores 1, <= t2 2, ..., > t4 5.
    pub frequency: Option<[i64; 4]>,
    /// M thresholds in cents: M <= t1 scores 1, ..., > t4 5.
    pub monetary_cents: Option<[i128; 4]>,
}

/// The score of `v` against four ascending thresholds: 1 plus the number of
/// thresholds it exceeds.
fn threshold_score(v: i128, thresholds: &[i128; 4]) -> i64 {
    1 + thresholds.iter().filter(|&&t| v > t).count() as i64
}

/// Builds the feature table (`user_key` plus one column per feature) for users
/// seen by `spec.as_of`, one row per user in key order.
pub async fn feature_table(
    events: &Events,
    features: &BTreeSet<Feature>,
    spec: &FeatureSpec,
) -> Result<RecordBatch> {
    Ok(build(events, features, spec, false).await?.0)
}

/// How many users of the feature table's population a compiled segment
/// matches, and how many there are: the same two numbers as filtering and
/// counting [`feature_table`], but when every feature is a purchase fact, users
/// who never bought (all alike: no recency, no frequency, no money, no score)
/// are one row of the table standing for all of them, so the table has a row
/// per buyer rather than per user.
pub async fn count_matching(
    events: &Events,
    features: &BTreeSet<Feature>,
    segment: &Expr,
    spec: &FeatureSpec,
) -> Result<(u64, u64)> {
    count_matching_split(events, features, segment, spec, PARALLEL_ROWS).await
}

/// [`count_matching`], splitting the rows among the threads when there are
/// more than `min_rows` (tests split tiny tables).
#[doc(hidden)]
pub async fn count_matching_split(
    events: &Events,
    features: &BTreeSet<Feature>,
    segment: &Expr,
    spec: &FeatureSpec,
    min_rows: usize,
) -> Result<(u64, u64)> {
    if features.iter().all(is_local) && pass(events, features, spec, true) == Pass::Everyone {
        // Every user's facts, each a function of that user's rows alone:
        // each key range counts its own matches (nothing per user leaves
        // the range, so memory is one range's facts, and on a cluster only
        // two numbers come back per range).
        let fold = CountFold::new(features, segment, spec, false)?;
        let m = crate::fold::partial(events, fold).await?;
        return Ok((m.matched, m.users));
    }
    let (stats, rows) = population(events, features, spec, true).await?;
    let total = rows.weight.iter().sum();
    if !features.iter().all(is_local) {
        let table = columns(events, features, spec, &stats, &rows).await?;
        return Ok((
            matched_weight(events, segment, &table, &rows.weight)?,
            total,
        ));
    }
    // Every column is a function of the row's own facts: build and test the
    // table slice by slice on all threads.
    let threads = crate::table::thread_count(events.options.threads);
    // Slices of at most COUNT_ROWS rows (their columns are built whole: at
    // 10M users, half the table per thread held 200 MB more than this).
    let per = rows
        .idx
        .len()
        .div_ceil(threads)
        .min(COUNT_ROWS)
        .max(min_rows)
        .max(1);
    let counts = crate::par::fold_ranges(
        rows.idx.len(),
        per,
        threads,
        || (),
        |lo, hi, _| {
            let table = local_table(
                features,
                spec,
                &stats,
                &rows.keys[lo..hi],
                &rows.idx[lo..hi],
            )?;
            matched_weight(events, segment, &table, &rows.weight[lo..hi])
        },
    )
    .into_iter()
    .collect::<Result<Vec<u64>>>()?;
    Ok((counts.iter().sum(), total))
}

/// Fewest rows a count gives each thread.
const PARALLEL_ROWS: usize = 32 * 1024;

/// Most rows a count builds and tests at once.
const COUNT_ROWS: usize = 256 * 1024;

/// The rows of [`feature_table`] that `filter` keeps (all of them without
/// one), in key order, in one or more batches (at least one: a table that
/// keeps nobody is an empty batch with the table's schema). When every
/// feature is a function of the row's own facts, the table is built and
/// filtered slice by slice on all threads, so only the kept rows are ever
/// held whole; the per-user facts are dropped before returning.
pub async fn matching_rows(
    events: &Events,
    features: &BTreeSet<Feature>,
    filter: Option<&Expr>,
    spec: &FeatureSpec,
) -> Result<Vec<RecordBatch>> {
    matching_rows_by(events, features, filter, spec, LISTING_ROWS).await
}

/// [`matching_rows`], building `slice` rows at a time (tests use tiny slices).
async fn matching_rows_by(
    events: &Events,
    features: &BTreeSet<Feature>,
    filter: Option<&Expr>,
    spec: &FeatureSpec,
    slice: usize,
) -> Result<Vec<RecordBatch>> {
    if let Some(filter) = filter
        && features.iter().all(is_local)
        && pass(events, features, spec, false) == Pass::Everyone
    {
        // Each key range keeps only its matching users' facts.
        let fold = CountFold::new(features, filter, spec, true)?;
        let m = crate::fold::partial(events, fold).await?;
        let idx: Vec<usize> = (0..m.keys.len()).collect();
        let mut kept = Vec::new();
        for at in (0..m.keys.len()).step_by(slice) {
            let end = (at + slice).min(m.keys.len());
            kept.push(local_table(
                features,
                spec,
                &m.stats,
                &m.keys[at..end],
                &idx[at..end],
            )?);
        }
        if kept.is_empty() {
            kept.push(local_table(features, spec, &m.stats, &[], &[])?);
        }
        return Ok(kept);
    }
    let (stats, rows) = population(events, features, spec, false).await?;
    let keep = |table: RecordBatch| -> Result<RecordBatch> {
        Ok(match filter {
            None => table,
            Some(f) => {
                let mask = matches(events, f, &table)?;
                datafusion::arrow::compute::filter_record_batch(&table, &mask)?
            }
        })
    };
    if !features.iter().all(is_local) {
        let table = columns(events, features, spec, &stats, &rows).await?;
        drop((stats, rows));
        return Ok(vec![keep(table)?]);
    }
    let threads = crate::table::thread_count(events.options.threads);
    let n = rows.idx.len();
    let mut kept = crate::par::fold_ranges(
        n,
        slice,
        threads,
        || (),
        |lo, hi, _| {
            keep(local_table(
                features,
                spec,
                &stats,
                &rows.keys[lo..hi],
                &rows.idx[lo..hi],
            )?)
        },
    )
    .into_iter()
    .collect::<Result<Vec<RecordBatch>>>()?;
    kept.retain(|b| b.num_rows() > 0);
    if kept.is_empty() {
        kept.push(local_table(features, spec, &stats, &[], &[])?);
    }
    Ok(kept)
}

/// Rows of the feature table built at once by [`matching_rows`].
const LISTING_ROWS: usize = 64 * 1024;

/// The rows of [`matching_rows`] with each user's id: batches of `user_key`,
/// `user_id` and the features, in key order, the ids read from the users
/// dictionary a row group at a time as the batches are taken.
pub async fn matching_users(
    events: &Events,
    features: &BTreeSet<Feature>,
    filter: Option<&Expr>,
    spec: &FeatureSpec,
) -> Result<datafusion::execution::SendableRecordBatchStream> {
    matching_users_by(events, features, filter, spec, LISTING_ROWS).await
}

/// [`matching_users`] in batches of at most `slice` rows (tests use tiny
/// slices, so that ids are looked up over many calls).
#[doc(hidden)]
pub async fn matching_users_by(
    events: &Events,
    features: &BTreeSet<Feature>,
    filter: Option<&Expr>,
    spec: &FeatureSpec,
    slice: usize,
) -> Result<datafusion::execution::SendableRecordBatchStream> {
    let slice = slice.max(1);
    let rows = matching_rows_by(events, features, filter, spec, slice).await?;
    let table = rows[0].schema();
    // Slices of a bounded size: ids are looked up and kept per slice.
    let rows: Vec<RecordBatch> = rows
        .into_iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .step_by(slice)
                .map(move |at| b.slice(at, slice.min(b.num_rows() - at)))
        })
        .collect();
    let mut fields = vec![
        table.field(0).clone(),
        Field::new("user_id", DataType::Utf8, false),
    ];
    fields.extend(table.fields().iter().skip(1).map(|f| f.as_ref().clone()));
    let schema = Arc::new(Schema::new(fields));
    let ids = crate::user_ids::UserIds::open(events).await?;
    let out = schema.clone();
    let identity = events.identity.clone();
    // Each batch takes its ids before the next one starts (the reader only
    // moves forward).
    let stream =
        futures::stream::try_unfold((ids, rows.into_iter()), move |(mut ids, mut rest)| {
            let out = out.clone();
            let identity = identity.clone();
            async move {
                let Some(batch) = rest.next() else {
                    return Ok(None);
                };
                let keys = batch
                    .column(0)
                    .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
                let id = ids.of(keys).await.map_err(crate::sql::df_error)?;
                // A merged person read under a virtual key shows its own key.
                let key: ArrayRef = match &identity {
                    Some(i) if keys.values().last().is_some_and(|&k| k >= i.base) => {
                        Arc::new(datafusion::arrow::array::UInt32Array::from_iter_values(
                            keys.values().iter().map(|&k| i.dictionary_key(k)),
                        ))
                    }
                    _ => batch.column(0).clone(),
                };
                let mut columns = vec![key, Arc::new(id) as ArrayRef];
                columns.extend(batch.columns().iter().skip(1).cloned());
                Ok(Some((RecordBatch::try_new(out, columns)?, (ids, rest))))
            }
        });
    Ok(Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream),
    ))
}

/// Which rows of `table` `segment` matches (null: no).
fn matches(events: &Events, segment: &Expr, table: &RecordBatch) -> Result<BooleanArray> {
    matches_in(&events.ctx, segment, table)
}

/// [`matches`] in a session (coercing the segment's types to the table's).
fn matches_in(
    ctx: &datafusion::prelude::SessionContext,
    segment: &Expr,
    table: &RecordBatch,
) -> Result<BooleanArray> {
    let df_schema = DFSchema::try_from(table.schema())?;
    let predicate = ctx.create_physical_expr(segment.clone(), &df_schema)?;
    let matched = predicate.evaluate(table)?.into_array(table.num_rows())?;
    let matched = matched.as_boolean_opt().ok_or_else(|| {
        EngineError::BadRequest(format!(
            "a segment must be a condition, not a {} value",
            matched.data_type()
        ))
    })?;
    Ok(matched.clone())
}

/// The summed weight of the rows of `table` that `segment` matches.
fn matched_weight(
    events: &Events,
    segment: &Expr,
    table: &RecordBatch,
    weights: &[u64],
) -> Result<u64> {
    let matched = matches(events, segment, table)?;
    Ok(weights
        .iter()
        .enumerate()
        .filter(|&(r, _)| matched.is_valid(r) && matched.value(r))
        .map(|(_, w)| w)
        .sum())
}

/// The rows of a feature table: per row, the user key, the entry of the stats
/// it is computed from, and the number of users it stands for.
struct Rows {
    keys: Vec<u32>,
    idx: Vec<usize>,
    weight: Vec<u64>,
}

impl Rows {
    fn reserve(&mut self, n: usize) {
        self.keys.reserve_exact(n);
        self.idx.reserve_exact(n);
        self.weight.reserve_exact(n);
    }

    fn push(&mut self, key: u32, idx: usize, weight: u64) {
        self.keys.push(key);
        self.idx.push(idx);
        self.weight.push(weight);
    }

    /// One row per buyer of a buyers' pass (`stats` entry `i` is `keys[i]`),
    /// weight 1; adds to `stats` the blank entry of every user who never
    /// bought (seen before the as-of, no purchase) and returns its index.
    fn buyers(&mut self, keys: &[u32], stats: &mut UserStats) -> usize {
        let blank = never_bought(stats);
        self.reserve(keys.len() + 1);
        self.keys.extend_from_slice(keys);
        self.idx.extend(0..keys.len());
        self.weight.resize(self.weight.len() + keys.len(), 1);
        blank
    }
}

/// Adds to a buyers' pass `stats` the entry of every user who never bought
/// (seen before the as-of, no purchase); returns its index.
fn never_bought(stats: &mut UserStats) -> usize {
    stats.push_blank();
    if let Some(t) = stats.first_seen.last_mut() {
        *t = userstats::SEEN_BEFORE;
    }
    stats.len() - 1
}

/// The feature table and its row weights; with `collapse`, users without a
/// purchase may share one row (see [`count_matching`]).
async fn build(
    events: &Events,
    features: &BTreeSet<Feature>,
    spec: &FeatureSpec,
    collapse: bool,
) -> Result<(RecordBatch, Vec<u64>)> {
    let (stats, rows) = population(events, features, spec, collapse).await?;
    let table = columns(events, features, spec, &stats, &rows).await?;
    Ok((table, rows.weight))
}

/// The purchase facts and the rows of the feature table (see [`build`]).
async fn population(
    events: &Events,
    features: &BTreeSet<Feature>,
    spec: &FeatureSpec,
    collapse: bool,
) -> Result<(UserStats, Rows)> {
    let needs_revenue = needs_revenue(features);
    let mut rows = Rows {
        keys: Vec::new(),
        idx: Vec::new(),
        weight: Vec::new(),
    };
    let how = pass(events, features, spec, collapse);
    // A count over users whose facts are all their own, with users who
    // never bought as one row: which key a buyer comes under does not
    // matter (see `FoldInput::any_key`).
    let any_key =
        collapse && features.iter().all(is_local) && (spec.buyers_only || sparse(features));
    if how == Pass::BuyersAndSeen {
        let userstats::Buyers {
            keys,
            mut stats,
            seen,
            unbought,
        } = userstats::buyers_pass(events, &spec.purchase, needs_revenue, true, any_key).await?;
        let blank = rows.buyers(&keys, &mut stats);
        if let Some(first) = unbought {
            // One key that did not buy stands for all who did not.
            rows.push(first, blank, seen - keys.len() as u64);
        }
        return Ok((stats, rows));
    }
    let stats = if how == Pass::Buyers {
        let userstats::Buyers {
            keys, mut stats, ..
        } = userstats::buyers_pass(events, &spec.purchase, needs_revenue, false, any_key).await?;
        let users = events.users();
        // Every user in the dictionary was seen by `as_of`, but for keys
        // that joined another person (see `crate::identity`).
        let is_user = |k: u32| events.identity.as_ref().is_none_or(|i| i.is_user(k));
        let persons = events.persons();
        if spec.buyers_only || (collapse && sparse(features)) {
            // The extra last entry is every user who never bought.
            let blank = rows.buyers(&keys, &mut stats);
            if !spec.buyers_only && persons > keys.len() {
                // The first user who did not buy stands for all who did not.
                let mut bought = keys.iter().copied().peekable();
                let first = (0..users as u32)
                    .find(|&k| {
                        while bought.next_if(|&b| b < k).is_some() {}
                        is_user(k) && bought.peek() != Some(&k)
                    })
                    .unwrap_or(0);
                rows.push(first, blank, (persons - keys.len()) as u64);
            }
        } else {
            let blank = never_bought(&mut stats);
            let mut next = keys.iter().copied().enumerate().peekable();
            for k in 0..users as u32 {
                match next.next_if(|&(_, b)| b == k) {
                    Some((i, _)) => rows.push(k, i, 1),
                    None if is_user(k) => rows.push(k, blank, 1),
                    None => {}
                }
            }
        }
        stats
    } else {
        let stats = userstats::scan_with(events, &spec.purchase, needs_revenue).await?;
        for u in 0..stats.len() {
            if stats.first_seen[u] != NEVER
                && stats.first_seen[u] <= spec.as_of
                && (!spec.buyers_only || stats.purchases[u] > 0)
            {
                rows.push(u as u32, u, 1);
            }
        }
        stats
    };
    Ok((stats, rows))
}

/// How [`population`] reads the users' facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// As of a past date (the store opened up to it, nothing before left
    /// out), when users who never bought collapse into one row: the buyers'
    /// pass, counting the users seen, instead of a row per user.
    BuyersAndSeen,
    /// When nothing needs first/last seen and the whole history up to the
    /// newest event is in range, every user key is in the population (each
    /// was assigned from a committed event), so only purchase rows need to
    /// be read.
    Buyers,
    /// Every user's facts, from every row.
    Everyone,
}

fn pass(events: &Events, features: &BTreeSet<Feature>, spec: &FeatureSpec, collapse: bool) -> Pass {
    let whole_history = events.options.from.is_none()
        && events.options.to.is_none()
        && events.ts_range.is_some_and(|(_, max)| spec.as_of >= max);
    let needs_seen = features.iter().any(|f| {
        matches!(
            f,
            Feature::FirstSeen | Feature::LastSeen | Feature::Lifecycle(LifecycleAxis::Tenure)
        )
    });
    let up_to_as_of =
        events.options.from.is_none() && events.ts_range.is_some_and(|(_, max)| max <= spec.as_of);
    if up_to_as_of
        && !whole_history
        && !needs_seen
        && collapse
        && sparse(features)
        && !spec.buyers_only
    {
        Pass::BuyersAndSeen
    } else if whole_history && !needs_seen {
        Pass::Buyers
    } else {
        Pass::Everyone
    }
}

/// No feature needs a scan of its own (event counts, totals or properties).
fn sparse(features: &BTreeSet<Feature>) -> bool {
    features.iter().all(|f| {
        !matches!(
            f,
            Feature::Property(_) | Feature::EventCount { .. } | Feature::Total { .. }
        )
    })
}

/// Revenue is read only for features built on it.
fn needs_revenue(features: &BTreeSet<Feature>) -> bool {
    features.iter().any(|f| {
        !matches!(
            f,
            Feature::Recency
                | Feature::Frequency
                | Feature::FirstSeen
                | Feature::LastSeen
                | Feature::Lifecycle(_)
                | Feature::RScore
                | Feature::FScore
                | Feature::Mean(Metric::Recency | Metric::Frequency)
                | Feature::Property(_)
                | Feature::EventCount { .. }
                | Feature::Total { .. }
        )
    })
}

/// The feature columns of `rows`, computed from `stats`.
async fn columns(
    events: &Events,
    features: &BTreeSet<Feature>,
    spec: &FeatureSpec,
    stats: &UserStats,
    rows: &Rows,
) -> Result<RecordBatch> {
    let idx = &rows.idx;
    let mut fields = vec![Field::new("user_key", DataType::UInt32, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(rows.keys.clone()))];
    let recency = |u: usize| recency(stats, u, spec.as_of);
    // Scores rank buyers only (each buyer is a row of its own); users who
    // never bought have no score.
    let buyers: Vec<usize> = (0..idx.len())
        .filter(|&r| stats.purchases[idx[r]] > 0)
        .collect();
    let score_col = |metric: &dyn Fn(usize) -> i128, fixed: Option<[i128; 4]>| -> ArrayRef {
        let values: Vec<i128> = buyers.iter().map(|&r| metric(idx[r])).collect();
        let scores = match fixed {
            Some(t) => values.iter().map(|&v| threshold_score(v, &t)).collect(),
            None => quintile_scores(&values),
        };
        let mut by_row = vec![None; idx.len()];
        for (&r, s) in buyers.iter().zip(scores) {
            by_row[r] = Some(s);
        }
        Arc::new(Int64Array::from(by_row))
    };
    // The CLV models, fitted once if a prediction is asked for.
    let mut clv: Option<crate::clv::ClvResult> = None;
    for f in features {
        if matches!(
            f,
            Feature::PAlive | Feature::Clv | Feature::ExpectedPurchases(_)
        ) && clv.is_none()
        {
            clv = Some(clv_predictions(events, spec).await?);
        }
        let array: ArrayRef = match f {
            Feature::PAlive | Feature::Clv | Feature::ExpectedPurchases(_) => {
                prediction_column(f, clv.as_ref().expect("fitted above"), &rows.keys)
            }
            // More recent is better: score the negated recency.
            Feature::RScore => score_col(
                &|u| -(recency(u).unwrap_or(i64::MAX) as i128),
                // Negated like the values: R <= t scores above R > t.
                spec.scoring.recency_days.map(|t| {
                    let mut n = t.map(|d| -(d as i128) - 1);
                    n.reverse();
                    n
                }),
            ),
            Feature::FScore => score_col(
                &|u| stats.purchases[u] as i128,
                spec.scoring.frequency.map(|t| t.map(i128::from)),
            ),
            Feature::MScore => score_col(&|u| stats.revenue[u], spec.scoring.monetary_cents),
            Feature::Mean(m) => mean_col(m, stats, rows, &recency)?,
            Feature::Property(name) => {
                latest_property(events, name, &rows.keys, spec.as_of).await?
            }
            Feature::EventCount {
                event,
                within,
                filter,
            } => {
                event_counts(
                    events,
                    event,
                    within.map(|d| d.micros()),
                    filter.as_ref(),
                    &rows.keys,
                    spec.as_of,
                )
                .await?
            }
            Feature::Total {
                aggregate,
                property,
                within,
            } => {
                let window = within.map(|d| d.micros());
                totals(events, *aggregate, property, window, &rows.keys, spec.as_of).await?
            }
            local => local_column(local, spec, stats, idx)?,
        };
        fields.push(Field::new(f.column_name(), array.data_type().clone(), true));
        cols.push(array);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// The CLV models over every buyer up to the as-of (weeks, UTC, as
/// `tenure clv`; predictions over 52 weeks).
async fn clv_predictions(events: &Events, spec: &FeatureSpec) -> Result<crate::clv::ClvResult> {
    let request = crate::clv::ClvSpec {
        purchase_event: spec.purchase.event.clone(),
        tz: chrono_tz::Tz::UTC,
        unit_days: 7,
        calibration_end: None,
        as_of: Some(spec.as_of.saturating_add(1)),
        horizon: 52.0,
        discount: 0.0,
    };
    crate::clv::clv(events, &request).await
}

/// A prediction per user of `keys`: NULL for users who are not customers
/// (no purchase by the as-of).
fn prediction_column(f: &Feature, r: &crate::clv::ClvResult, keys: &[u32]) -> ArrayRef {
    let values = keys.iter().map(|&k| {
        let at = r.customers.binary_search_by_key(&k, |p| p.key).ok()?;
        let p = &r.customers[at];
        match f {
            Feature::PAlive => Some(p.p_alive),
            Feature::Clv => p.clv,
            Feature::ExpectedPurchases(d) => {
                let weeks = d.micros() as f64 / (7.0 * 86_400_000_000.0);
                Some(r.bgnbd.params.expected_purchases(&p.customer, weeks))
            }
            _ => None,
        }
    });
    Arc::new(Float64Array::from_iter(values.collect::<Vec<_>>()))
}

/// Days since the last purchase, for buyers.
fn recency(stats: &UserStats, u: usize, as_of: i64) -> Option<i64> {
    let l = stats.last_purchase[u];
    (l != NEVER).then(|| lifecycle::days_between(l, as_of))
}

/// Whether a feature of a row is a function of that row's facts alone (not
/// of the population, as scores and means are, nor of another scan).
fn is_local(f: &Feature) -> bool {
    Local::of(f).is_some()
}

/// The column of a local feature (see [`is_local`]) for the stats entries
/// `idx`; an error for any other.
fn local_column(
    f: &Feature,
    spec: &FeatureSpec,
    stats: &UserStats,
    idx: &[usize],
) -> Result<ArrayRef> {
    Ok(match f {
        Feature::Recency => Arc::new(Int64Array::from_iter(
            idx.iter().map(|&u| recency(stats, u, spec.as_of)),
        )),
        Feature::Frequency => Arc::new(Int64Array::from_iter_values(
            idx.iter().map(|&u| stats.purchases[u] as i64),
        )),
        Feature::Monetary => Arc::new(
            Decimal128Array::from_iter_values(idx.iter().map(|&u| stats.revenue[u]))
                .with_precision_and_scale(18, 2)?,
        ),
        Feature::FirstSeen => ts_col(idx.iter().map(|&u| Some(stats.first_seen[u]))),
        Feature::LastSeen => ts_col(idx.iter().map(|&u| Some(stats.last_seen[u]))),
        Feature::Lifecycle(LifecycleAxis::Tenure) => {
            Arc::new(StringArray::from_iter(idx.iter().map(|&u| {
                lifecycle::tenure_stage(stats, u, spec.as_of, &spec.thresholds).map(|s| TENURE[s])
            })))
        }
        Feature::Lifecycle(LifecycleAxis::Activity) => {
            Arc::new(StringArray::from_iter(idx.iter().map(|&u| {
                lifecycle::activity_stage(stats, u, spec.as_of, &spec.thresholds)
                    .map(|s| ACTIVITY[s])
                    .filter(|s| *s != "none")
            })))
        }
        other => {
            return Err(EngineError::BadRequest(format!(
                "{} is not a feature of one user's facts",
                other.column_name()
            )));
        }
    })
}

/// The feature table of rows `keys`/`idx` when every feature is local.
fn local_table(
    features: &BTreeSet<Feature>,
    spec: &FeatureSpec,
    stats: &UserStats,
    keys: &[u32],
    idx: &[usize],
) -> Result<RecordBatch> {
    let mut fields = vec![Field::new("user_key", DataType::UInt32, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(keys.to_vec()))];
    for f in features {
        let array = local_column(f, spec, stats, idx)?;
        fields.push(Field::new(f.column_name(), array.data_type().clone(), true));
        cols.push(array);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// A feature of one user's facts (see [`is_local`]), as [`CountFold`]
/// carries it to the key ranges.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Local {
    Recency,
    Frequency,
    Monetary,
    FirstSeen,
    LastSeen,
    Tenure,
    Activity,
}

impl Local {
    fn of(f: &Feature) -> Option<Self> {
        Some(match f {
            Feature::Recency => Self::Recency,
            Feature::Frequency => Self::Frequency,
            Feature::Monetary => Self::Monetary,
            Feature::FirstSeen => Self::FirstSeen,
            Feature::LastSeen => Self::LastSeen,
            Feature::Lifecycle(LifecycleAxis::Tenure) => Self::Tenure,
            Feature::Lifecycle(LifecycleAxis::Activity) => Self::Activity,
            _ => return None,
        })
    }

    fn feature(self) -> Feature {
        match self {
            Self::Recency => Feature::Recency,
            Self::Frequency => Feature::Frequency,
            Self::Monetary => Feature::Monetary,
            Self::FirstSeen => Feature::FirstSeen,
            Self::LastSeen => Feature::LastSeen,
            Self::Tenure => Feature::Lifecycle(LifecycleAxis::Tenure),
            Self::Activity => Feature::Lifecycle(LifecycleAxis::Activity),
        }
    }
}

/// A segment tested per key range, when every feature is a function of one
/// user's facts: each range gathers its users' facts (as
/// [`userstats::StatsFold`] does), builds their feature table slice by
/// slice and tests the segment on it. It keeps two numbers, the users seen
/// by the as-of that match and all of them, and with `keep` the matching
/// users' facts: nothing about the users who do not match leaves a range.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct CountFold {
    stats: userstats::StatsFold,
    /// Keep the matching users' keys and facts.
    keep: bool,
    features: Vec<Local>,
    #[serde(with = "crate::codec::expr")]
    segment: Expr,
    as_of: i64,
    thresholds: Thresholds,
    buyers_only: bool,
}

impl CountFold {
    pub(crate) fn new(
        features: &BTreeSet<Feature>,
        segment: &Expr,
        spec: &FeatureSpec,
        keep: bool,
    ) -> Result<Self> {
        let revenue = needs_revenue(features);
        let features: Vec<Local> = features
            .iter()
            .map(|f| {
                Local::of(f).ok_or_else(|| {
                    EngineError::Internal(format!(
                        "{} is not a feature of one user's facts",
                        f.column_name()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            stats: userstats::StatsFold {
                event: spec.purchase.event.clone(),
                revenue,
            },
            keep,
            features,
            segment: segment.clone(),
            as_of: spec.as_of,
            thresholds: spec.thresholds.clone(),
            buyers_only: spec.buyers_only,
        })
    }

    fn spec(&self) -> FeatureSpec {
        FeatureSpec {
            as_of: self.as_of,
            purchase: PurchaseSpec {
                event: self.stats.event.clone(),
            },
            thresholds: self.thresholds.clone(),
            buyers_only: self.buyers_only,
            scoring: Scoring::default(),
        }
    }
}

/// What [`CountFold`] finds: how many users match among how many, and
/// (with `keep`) the matching users' keys, ascending, and facts.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Matches {
    pub(crate) matched: u64,
    pub(crate) users: u64,
    pub(crate) keys: Vec<u32>,
    pub(crate) stats: UserStats,
}

impl crate::fold::UserFold for CountFold {
    type State = <userstats::StatsFold as crate::fold::UserFold>::State;
    type Partial = Matches;

    fn name(&self) -> &'static str {
        "segment_count"
    }

    fn input(&self) -> crate::fold::FoldInput {
        crate::fold::FoldInput {
            // Only counts leave the fold, unless it keeps the matches.
            any_key: !self.keep,
            ..self.stats.input()
        }
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("matched", DataType::UInt64, false),
            Field::new("users", DataType::UInt64, false),
        ]))
    }

    fn start(&self, keys: std::ops::Range<u32>) -> Self::State {
        self.stats.start(keys)
    }

    fn update(
        &self,
        state: &mut Self::State,
        rows: &crate::fold::Rows<'_>,
    ) -> datafusion::error::Result<()> {
        self.stats.update(state, rows)
    }

    fn finish(&self, (lo, stats): Self::State) -> datafusion::error::Result<Matches> {
        let (mut keys, mut idx) = (Vec::new(), Vec::new());
        for u in 0..stats.len() {
            if stats.first_seen[u] != NEVER
                && stats.first_seen[u] <= self.as_of
                && (!self.buyers_only || stats.purchases[u] > 0)
            {
                keys.push(lo + u as u32);
                idx.push(u);
            }
        }
        let features: BTreeSet<Feature> = self.features.iter().map(|f| f.feature()).collect();
        let spec = self.spec();
        // For the types' coercion, as the client's session would.
        let ctx = datafusion::prelude::SessionContext::new();
        let mut out = Matches {
            matched: 0,
            users: keys.len() as u64,
            keys: Vec::new(),
            stats: UserStats::default(),
        };
        for at in (0..keys.len()).step_by(COUNT_ROWS) {
            let end = (at + COUNT_ROWS).min(keys.len());
            let table = local_table(&features, &spec, &stats, &keys[at..end], &idx[at..end])
                .map_err(crate::sql::df_error)?;
            let m = matches_in(&ctx, &self.segment, &table).map_err(crate::sql::df_error)?;
            out.matched += m.true_count() as u64;
            if self.keep {
                for (i, _) in m.iter().enumerate().filter(|(_, v)| *v == Some(true)) {
                    out.keys.push(keys[at + i]);
                    out.stats.push_from(&stats, idx[at + i]);
                }
            }
        }
        Ok(out)
    }

    fn merge(&self, into: &mut Matches, other: Matches) -> datafusion::error::Result<()> {
        into.matched += other.matched;
        into.users += other.users;
        into.keys.extend(other.keys);
        into.stats.append(other.stats);
        Ok(())
    }

    fn emit(&self, m: Matches) -> datafusion::error::Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            self.schema(),
            vec![
                Arc::new(datafusion::arrow::array::UInt64Array::from(vec![m.matched])),
                Arc::new(datafusion::arrow::array::UInt64Array::from(vec![m.users])),
            ],
        )?)
    }
}

fn ts_col(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

fn mean_col(
    m: &Metric,
    stats: &UserStats,
    rows: &Rows,
    recency: &dyn Fn(usize) -> Option<i64>,
) -> Result<ArrayRef> {
    let n = rows.idx.len();
    let weighted = || rows.idx.iter().copied().zip(rows.weight.iter().copied());
    let users: u64 = rows.weight.iter().sum();
    Ok(match m {
        Metric::Recency => {
            let (sum, count) = weighted()
                .filter_map(|(u, w)| recency(u).map(|r| (r * w as i64, w)))
                .fold((0i64, 0u64), |(s, c), (r, w)| (s + r, c + w));
            let mean = (count > 0).then(|| sum as f64 / count as f64);
            Arc::new(Float64Array::from(vec![mean; n]))
        }
        Metric::Frequency => {
            let mean = (users > 0).then(|| {
                weighted()
                    .map(|(u, w)| stats.purchases[u] as f64 * w as f64)
                    .sum::<f64>()
                    / users as f64
            });
            Arc::new(Float64Array::from(vec![mean; n]))
        }
        Metric::Monetary => {
            // Decimal128(22, 6), as DataFusion's avg of Decimal128(18, 2) is.
            let sum: i128 = weighted().map(|(u, w)| stats.revenue[u] * w as i128).sum();
            let mean = (users > 0).then(|| sum * 10_000 / users as i128);
            Arc::new(Decimal128Array::from(vec![mean; n]).with_precision_and_scale(22, 6)?)
        }
    })
}

async fn latest_property(
    events: &Events,
    name: &str,
    users: &[u32],
    as_of: i64,
) -> Result<ArrayRef> {
    if !events.has_column(name) || ["user_key", "ts", "ingested_at", "properties"].contains(&name) {
        return Err(EngineError::BadRequest(format!(
            "property `{name}` is not a typed column of this store; declare it in the ingest config (or use variant)"
        )));
    }
    let fold = LatestFold {
        name: name.to_string(),
        as_of,
    };
    let latest = crate::fold::partial(events, fold).await?;
    Ok(Arc::new(StringArray::from_iter(users.iter().map(|&u| {
        latest
            .value
            .get(u as usize)
            .and_then(|&v| latest.names.get(v))
    }))))
}

/// Every user's latest non-null value of a column as of a time; at equal
/// times the greatest value (a rule that does not depend on reading order).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct LatestFold {
    pub(crate) name: String,
    pub(crate) as_of: i64,
}

/// Latest values of a key range (ranges appended in key order).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Latest {
    lo: u32,
    ts: Vec<i64>,
    /// Id in `names`, `u32::MAX` for none.
    value: Vec<u32>,
    names: crate::fold::Interner,
}

impl crate::fold::UserFold for LatestFold {
    type State = Latest;
    type Partial = Latest;

    fn name(&self) -> &'static str {
        "latest_property"
    }

    fn input(&self) -> crate::fold::FoldInput {
        crate::fold::FoldInput {
            columns: vec![self.name.clone()],
            until: Some(self.as_of.saturating_add(1)),
            ..Default::default()
        }
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("user_key", DataType::UInt32, false),
            Field::new(&self.name, DataType::Utf8, true),
        ]))
    }

    fn start(&self, keys: std::ops::Range<u32>) -> Latest {
        let n = (keys.end - keys.start) as usize;
        Latest {
            lo: keys.start,
            ts: vec![i64::MIN; n],
            value: vec![u32::MAX; n],
            names: Default::default(),
        }
    }

    fn update(
        &self,
        st: &mut Latest,
        rows: &crate::fold::Rows<'_>,
    ) -> datafusion::error::Result<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        let c = rows.column(0);
        let v = match c.data_type() {
            DataType::Utf8 => c.clone(),
            _ => datafusion::arrow::compute::cast(c, &DataType::Utf8)?,
        };
        let v = v.as_string::<i32>();
        for (i, &k) in keys.iter().enumerate() {
            if !v.is_valid(i) {
                continue;
            }
            let u = (k - st.lo) as usize;
            let newer = ts[i] > st.ts[u]
                || (ts[i] == st.ts[u] && Some(v.value(i)) > st.names.get(st.value[u]));
            if newer {
                st.ts[u] = ts[i];
                st.value[u] = st.names.id(Some(v.value(i)));
            }
        }
        Ok(())
    }

    fn finish(&self, st: Latest) -> datafusion::error::Result<Latest> {
        Ok(st)
    }

    fn merge(&self, into: &mut Latest, other: Latest) -> datafusion::error::Result<()> {
        let remap = into.names.absorb(&other.names);
        into.ts.extend(other.ts);
        into.value.extend(
            other
                .value
                .iter()
                .map(|&v| remap.get(v as usize).copied().unwrap_or(u32::MAX)),
        );
        Ok(())
    }

    fn emit(&self, st: Latest) -> datafusion::error::Result<RecordBatch> {
        let n = st.value.len();
        Ok(RecordBatch::try_new(
            self.schema(),
            vec![
                Arc::new(UInt32Array::from_iter_values(0..n as u32)),
                Arc::new(StringArray::from_iter(
                    st.value.iter().map(|&v| st.names.get(v)),
                )),
            ],
        )?)
    }
}

async fn event_counts(
    events: &Events,
    event: &str,
    within: Option<i64>,
    filter: Option<&tenure_dsl::EventFilter>,
    users: &[u32],
    as_of: i64,
) -> Result<ArrayRef> {
    let mut condition = col("event").eq(lit(event.to_string()));
    if let Some(w) = within {
        condition = condition.and(since(as_of - w));
    }
    if let Some(f) = filter {
        condition = condition.and(filter_expr(events, f)?);
    }
    let until = Some(as_of.saturating_add(1));
    let counts = crate::fold::totals::counts(events, "event_count", condition, until).await?;
    Ok(Arc::new(Int64Array::from_iter_values(users.iter().map(
        |&u| counts.get(u as usize).map_or(0, |&c| c as i64),
    ))))
}

/// `ts >= from`.
fn since(from: i64) -> Expr {
    let from =
        datafusion::scalar::ScalarValue::TimestampMicrosecond(Some(from), Some("UTC".into()));
    col("ts").gt_eq(lit(from))
}

/// The condition of a `did ... where` over the events table. A name is a
/// typed column when the store has one (`revenue`, `variant`, declared
/// properties), else a key of the `properties` JSON; a number compares as a
/// number (exactly, against decimal and integer columns; text values are
/// read as numbers, those that are not never match), text as text.
pub fn filter_expr(events: &Events, filter: &tenure_dsl::EventFilter) -> Result<Expr> {
    use tenure_dsl::EventFilter as F;
    let all = |items: &[F]| -> Result<Vec<Expr>> {
        items.iter().map(|i| filter_expr(events, i)).collect()
    };
    Ok(match filter {
        F::And(items) => all(items)?
            .into_iter()
            .reduce(Expr::and)
            .unwrap_or(lit(true)),
        F::Or(items) => all(items)?
            .into_iter()
            .reduce(Expr::or)
            .unwrap_or(lit(false)),
        F::Not(inner) => !filter_expr(events, inner)?,
        F::Compare {
            property,
            op,
            value,
        } => {
            let (left, right) = operands(events, property, value)?;
            use tenure_dsl::ast::CmpOp;
            match op {
                CmpOp::Eq => left.eq(right),
                CmpOp::Ne => left.not_eq(right),
                CmpOp::Lt => left.lt(right),
                CmpOp::Le => left.lt_eq(right),
                CmpOp::Gt => left.gt(right),
                CmpOp::Ge => left.gt_eq(right),
            }
        }
        F::In {
            property,
            values,
            negated,
        } => {
            let mut left = None;
            let mut list = Vec::new();
            for v in values {
                let (l, r) = operands(events, property, v)?;
                // Every item must read the property the same way.
                if left.as_ref().is_some_and(|x| *x != l) {
                    return Err(EngineError::BadRequest(format!(
                        "`{property} in (...)`: mix of numbers and text; use one kind"
                    )));
                }
                left = Some(l);
                list.push(r);
            }
            let left = left.ok_or_else(|| {
                EngineError::BadRequest(format!("`{property} in ()` needs a value"))
            })?;
            left.in_list(list, *negated)
        }
    })
}

/// The two sides of `property op value` (see [`filter_expr`]).
fn operands(events: &Events, property: &str, value: &tenure_dsl::Literal) -> Result<(Expr, Expr)> {
    use datafusion::logical_expr::{TryCast, cast};
    use datafusion::scalar::ScalarValue;
    use tenure_dsl::Literal;
    let internal = ["user_key", "ts", "ingested_at", "properties"];
    let typed = (events.has_column(property) && !internal.contains(&property))
        .then(|| {
            tenure_schema::event_schema(&events.snapshot.properties)
                .field_with_name(property)
                .map(|f| f.data_type().clone())
                .ok()
        })
        .flatten();
    let column = match &typed {
        Some(_) => col(property),
        None => crate::json::prop(property),
    };
    let numeric = typed.as_ref().is_some_and(|t| t.is_numeric());
    Ok(match value {
        Literal::Number(n) if numeric => {
            let digits = n.mantissa;
            let decimal = ScalarValue::Decimal128(Some(digits), 38, n.scale as i8);
            (column, lit(decimal))
        }
        Literal::Number(n) => {
            let x = n.mantissa as f64 / 10f64.powi(n.scale as i32);
            (
                Expr::TryCast(TryCast::new(Box::new(column), DataType::Float64)),
                lit(x),
            )
        }
        Literal::Text(_) if numeric => {
            return Err(EngineError::BadRequest(format!(
                "`{property}` is a number in this store; compare it with a number"
            )));
        }
        Literal::Text(t) => {
            let text = match &typed {
                Some(DataType::Utf8 | DataType::Dictionary(..)) | None => column,
                Some(_) => cast(column, DataType::Utf8),
            };
            (text, lit(t.clone()))
        }
    })
}

/// A property summed or averaged over each user's events up to the as-of
/// (in the window before it): `sum(revenue) within 30d`. Sums over no
/// values are 0; means over no values are NULL. Exact for decimal and
/// integer columns until the final division into a Float64.
async fn totals(
    events: &Events,
    aggregate: tenure_dsl::Aggregate,
    property: &str,
    within: Option<i64>,
    users: &[u32],
    as_of: i64,
) -> Result<ArrayRef> {
    use crate::fold::totals::{PerUser, Sums, Value};
    let schema = tenure_schema::event_schema(&events.snapshot.properties);
    let field = schema
        .field_with_name(property)
        .ok()
        .filter(|f| f.data_type().is_numeric() && f.name() != "user_key");
    let Some(field) = field else {
        return Err(EngineError::BadRequest(format!(
            "{aggregate}({property}): not a numeric column of this store; sums and averages \
             read revenue and numeric declared properties (declare `{property}` in the ingest \
             config)"
        )));
    };
    let (value, scale) = match field.data_type() {
        DataType::Decimal128(_, s) if *s >= 0 => {
            (Value::Exact(DataType::Decimal128(38, *s)), Some(*s as i32))
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            (Value::Float, None)
        }
        _ => (Value::Exact(DataType::Int64), Some(0)),
    };
    let present = col(property).is_not_null();
    let condition = match within {
        Some(w) => present.and(since(as_of - w)),
        None => present,
    };
    let until = Some(as_of.saturating_add(1));
    let fold = PerUser {
        name: "property_total".into(),
        input: crate::fold::FoldInput {
            columns: vec![property.to_string()],
            flags: vec![condition.clone()],
            any_flag: true,
            until,
            ..Default::default()
        },
        value,
    };
    let sums: Vec<f64> = match (crate::fold::partial(events, fold).await?, scale) {
        (Sums::Exact(v), Some(s)) => v.iter().map(|&x| x as f64 / 10f64.powi(s)).collect(),
        (Sums::Float(v), None) => v,
        _ => {
            return Err(EngineError::Internal(
                "property totals of the wrong kind".into(),
            ));
        }
    };
    let counts = match aggregate {
        tenure_dsl::Aggregate::Sum => None,
        tenure_dsl::Aggregate::Avg => {
            Some(crate::fold::totals::counts(events, "property_count", condition, until).await?)
        }
    };
    Ok(Arc::new(Float64Array::from_iter(users.iter().map(|&u| {
        let sum = sums.get(u as usize).copied().unwrap_or(0.0);
        match &counts {
            None => Some(sum),
            Some(c) => {
                let n = c.get(u as usize).copied().unwrap_or(0);
                (n > 0).then(|| sum / n as f64)
            }
        }
    }))))
}

/// Which users of `keys` match `segment` as of their own instant `at[key]`
/// (an experiment's exposure): `history` holds each user's events before it.
/// R, F, M, lifecycle stages, properties, `did` counts and first/last seen
/// `within` a window are those of that history at that instant (windows end
/// at it); first/last seen compared with a date, population-relative features
/// (scores, means) and predictions are refused. Indexed by user key.
pub async fn matches_as_of_each(
    history: &Events,
    segment: &tenure_dsl::Segment,
    at: &[i64],
    keys: &[u32],
    spec: &FeatureSpec,
) -> Result<Vec<bool>> {
    let stats = userstats::scan(history, &spec.purchase).await?;
    let as_of = |k: u32| {
        at.get(k as usize)
            .copied()
            .unwrap_or(i64::MIN)
            .saturating_sub(1)
    };
    let mut fields = vec![Field::new("user_key", DataType::UInt32, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(keys.to_vec()))];
    for f in &segment.features {
        let array: ArrayRef = match f {
            Feature::Recency => Arc::new(Int64Array::from_iter(
                keys.iter().map(|&k| recency(&stats, k as usize, as_of(k))),
            )),
            Feature::Frequency => Arc::new(Int64Array::from_iter_values(
                keys.iter().map(|&k| stats.purchases[k as usize] as i64),
            )),
            Feature::Monetary => Arc::new(
                Decimal128Array::from_iter_values(keys.iter().map(|&k| stats.revenue[k as usize]))
                    .with_precision_and_scale(18, 2)?,
            ),
            Feature::Lifecycle(LifecycleAxis::Tenure) => {
                Arc::new(StringArray::from_iter(keys.iter().map(|&k| {
                    lifecycle::tenure_stage(&stats, k as usize, as_of(k), &spec.thresholds)
                        .map(|s| TENURE[s])
                })))
            }
            Feature::Lifecycle(LifecycleAxis::Activity) => {
                Arc::new(StringArray::from_iter(keys.iter().map(|&k| {
                    lifecycle::activity_stage(&stats, k as usize, as_of(k), &spec.thresholds)
                        .map(|s| ACTIVITY[s])
                        .filter(|s| *s != "none")
                })))
            }
            Feature::FirstSeen | Feature::LastSeen => {
                // `within` compiles against the one as-of: each user's time is
                // moved by the distance from their own instant to it, which
                // keeps every `within` window relative to that instant. A
                // comparison with a date would move too, so it is refused.
                if dated(&segment.resolved, f) {
                    return Err(EngineError::BadRequest(format!(
                        "`{}` compared with a date cannot be read as of each user's own \
                         instant; use `within` (as of that instant) or a lifecycle stage",
                        f.column_name()
                    )));
                }
                let times = if *f == Feature::FirstSeen {
                    &stats.first_seen
                } else {
                    &stats.last_seen
                };
                let values = keys.iter().map(|&k| {
                    let t = times[k as usize];
                    (t != NEVER).then(|| t + (spec.as_of - as_of(k)))
                });
                Arc::new(
                    TimestampMicrosecondArray::from_iter(values.collect::<Vec<_>>())
                        .with_timezone("UTC"),
                )
            }
            Feature::Property(name) => latest_property(history, name, keys, spec.as_of).await?,
            Feature::EventCount {
                event,
                within,
                filter,
            } => {
                // The window ends at each user's own instant.
                let window = window_before_each(history, at, *within);
                event_counts(&window, event, None, filter.as_ref(), keys, spec.as_of).await?
            }
            Feature::Total {
                aggregate,
                property,
                within,
            } => {
                let window = window_before_each(history, at, *within);
                totals(&window, *aggregate, property, None, keys, spec.as_of).await?
            }
            other => {
                return Err(EngineError::BadRequest(format!(
                    "`{}` cannot be read as of each user's own instant: it is measured from one \
                     as-of or over the whole population (use R, F, M, lifecycle, properties and \
                     `did` counts)",
                    other.column_name()
                )));
            }
        };
        fields.push(Field::new(f.column_name(), array.data_type().clone(), true));
        cols.push(array);
    }
    let table = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
    keys_matching(table, &segment.expr, at.len()).await
}

/// `history` from `within` before each user's own instant (all of it
/// without a window).
fn window_before_each(
    history: &Events,
    at: &[i64],
    within: Option<tenure_dsl::ast::Duration>,
) -> Events {
    match within {
        None => history.clone(),
        Some(d) => {
            let span = d.micros();
            Events {
                since: Some(Arc::new(
                    at.iter().map(|&t| t.saturating_sub(span)).collect(),
                )),
                ..history.clone()
            }
        }
    }
}

/// The users of a feature table (`user_key` first) for which `expr` holds,
/// as flags indexed by user key (`users` entries).
pub async fn keys_matching(table: RecordBatch, expr: &Expr, users: usize) -> Result<Vec<bool>> {
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_batch("features", table)?;
    let matched = ctx
        .table("features")
        .await?
        .filter(expr.clone())?
        .select(vec![col("user_key")])?
        .collect()
        .await?;
    let mut out = vec![false; users];
    for batch in matched {
        for &u in batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::UInt32Type>()
            .values()
        {
            if let Some(m) = out.get_mut(u as usize) {
                *m = true;
            }
        }
    }
    Ok(out)
}

/// Whether `expr` compares `feature` (a time) with a value rather than only
/// by `within`.
fn dated(expr: &tenure_dsl::ResolvedExpr, feature: &Feature) -> bool {
    use tenure_dsl::ResolvedExpr as E;
    match expr {
        E::And(items) | E::Or(items) => items.iter().any(|e| dated(e, feature)),
        E::Not(inner) => dated(inner, feature),
        E::Compare {
            feature: f, rhs, ..
        } => f == feature || matches!(rhs, tenure_dsl::Operand::Feature(o) if o == feature),
        E::InList { feature: f, .. } | E::Between { feature: f, .. } => f == feature,
        E::Within { .. } => false,
        E::Segment { body, .. } => dated(body, feature),
    }
}

/// What segment expressions may name over this store: its declared
/// properties and `variant` (events are not listed).
pub fn catalog(events: &Events) -> tenure_dsl::Catalog {
    tenure_dsl::Catalog {
        properties: Some(
            events
                .snapshot
                .properties
                .iter()
                .map(|p| p.name.clone())
                .chain(["variant".to_string()])
                .collect(),
        ),
        events: event_names(events),
    }
}

/// Every event name in the store, from the manifest's per-file lists (the
/// whole store, not only the files in range: a name misspelt is misspelt
/// whatever the range); `None` when a file predates those lists.
pub fn event_names(events: &Events) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for file in &events.snapshot.files {
        names.extend(file.events.as_ref()?.iter().cloned());
    }
    Some(names)
}

/// The store's users dictionary as a table (`user_key`, `user_id`), read with
/// DataFusion from the committed segments.
pub async fn users_table(events: &Events) -> Result<datafusion::dataframe::DataFrame> {
    let urls: Vec<String> = events
        .snapshot
        .users
        .segments
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                crate::table::store_url(&events.store.url),
                events.store.path(s)
            )
        })
        .collect();
    if urls.is_empty() {
        return Err(events.empty_error());
    }
    Ok(events
        .ctx
        .read_parquet(urls, datafusion::prelude::ParquetReadOptions::default())
        .await?)
}

#[cfg(test)]
mod tests {
    use super::quintile_scores;

    #[test]
    fn quintiles_by_value_with_ties() {
        assert_eq!(quintile_scores(&[1, 2, 3, 4, 5]), [1, 2, 3, 4, 5]);
        assert_eq!(quintile_scores(&[10, 10, 10, 10, 10]), [1, 1, 1, 1, 1]);
        assert_eq!(
            quintile_scores(&[1, 1, 1, 1, 1, 1, 1, 1, 2, 3]),
            [1, 1, 1, 1, 1, 1, 1, 1, 5, 5]
        );
        assert_eq!(quintile_scores(&[30, 10, 20]), [4, 1, 2]);
        // Mostly ones: with five distinct values every score occurs.
        let mut f = vec![1; 70];
        f.extend([2; 15].iter().chain(&[3; 8]).chain(&[4; 4]).chain(&[7; 3]));
        let s = quintile_scores(&f);
        for (v, want) in [(1, 1), (2, 2), (3, 3), (4, 4), (7, 5)] {
            let at = f.iter().position(|&x| x == v).unwrap();
            assert_eq!(s[at], want, "value {v}");
        }
        // Cut values 1, 1, 1, 3 by rank scored these 1, 4, 4, 5, 5 before.
        assert_eq!(
            quintile_scores(&[1, 1, 1, 1, 1, 1, 2, 3, 4, 5]),
            [1, 1, 1, 1, 1, 1, 2, 3, 4, 5]
        );
        assert_eq!(
            quintile_scores(&[5, 5, 5, 5, 5, 6, 7, 8, 9, 10]),
            [1, 1, 1, 1, 1, 2, 3, 4, 5, 5]
        );
        assert!(quintile_scores(&[]).is_empty());
    }
}
