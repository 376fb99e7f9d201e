//! Plans that travel: Tenure's `datafusion-proto` extension codecs.
//!
//! Every Tenure plan node serialises to what it is made of, never to
//! process-local state:
//!
//! - [`KeyScanExec`](crate::fold::KeyScanExec): the object store URL its files
//!   are read from (`tenure://s<digest of the store's URL>`, registered in the
//!   session's runtime by [`Events::open`](crate::Events::open)), the committed files (path, size,
//!   earliest time), the declared properties (the table's schema), the fold's
//!   input (columns, conditions as DataFusion's protobuf expressions, time
//!   bound, reading modes), the key ranges and the time range; an A/B
//!   readout's per-user exposure times travel as raw little-endian bytes.
//! - [`FoldExec`](crate::fold::FoldExec): the fold's name and parameters
//!   (calendars as period, zone and range; conditions as protobuf
//!   expressions); its input is the scan above.
//! - [`FeatureRowsExec`](crate::sql): `segment()` and `rfm()`: the request
//!   (expression, as-of) and the store's URL, reopened where it runs.
//! - [`FoldTable`](crate::sql::FoldTable) (a table function's result in a
//!   logical plan): its physical plan, encoded as above.
//!
//! Decoding runs in any session whose runtime has the store registered
//! under the same URL (open the store with `Events::open`); conditions
//! resolve functions against the decoding session's registry.
//!
//! ```no_run
//! # async fn f(events: tenure_engine::Events, plan: std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> datafusion::error::Result<()> {
//! let bytes = tenure_engine::codec::plan_to_bytes(plan)?;
//! let plan = tenure_engine::codec::plan_from_bytes(&bytes, &events.ctx.task_ctx())?;
//! # Ok(()) }
//! ```

use std::cell::RefCell;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{TableReference, internal_err, plan_err};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion_proto::bytes::Serializeable;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::fold::{FoldExec, KeyScanExec};

/// Tenure's physical and logical extension codec.
#[derive(Debug, Default, Clone, Copy)]
pub struct TenureCodec;

/// Whether `node` is one of Tenure's plan nodes (what [`TenureCodec`]
/// encodes; other nodes are another codec's to encode).
pub fn is_tenure_node(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<KeyScanExec>().is_some()
        || node.downcast_ref::<crate::sql::FeatureRowsExec>().is_some()
        || is_fold(node)
}

/// `plan` as bytes (DataFusion's protobuf plan with Tenure's nodes).
pub fn plan_to_bytes(plan: Arc<dyn ExecutionPlan>) -> DfResult<bytes::Bytes> {
    datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &TenureCodec)
}

/// The plan of [`plan_to_bytes`], decoded in the session of `ctx`.
pub fn plan_from_bytes(bytes: &[u8], ctx: &TaskContext) -> DfResult<Arc<dyn ExecutionPlan>> {
    datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(bytes, ctx, &TenureCodec)
}

thread_local! {
    /// The session a decoding resolves expressions' functions in.
    static DECODING: RefCell<Option<Arc<TaskContext>>> = const { RefCell::new(None) };
}

/// Runs `f` with `ctx` as the session expressions are decoded in.
fn decoding<T>(ctx: &TaskContext, f: impl FnOnce() -> T) -> T {
    /// Puts the previous session back, also when `f` panics.
    struct Restore(Option<Arc<TaskContext>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            DECODING.with(|d| *d.borrow_mut() = previous);
        }
    }
    let copy = Arc::new(copy_of(ctx));
    let _restore = Restore(DECODING.with(|d| d.replace(Some(copy))));
    f()
}

/// A copy of `ctx` (same configuration, functions and runtime).
pub(crate) fn copy_of(ctx: &TaskContext) -> TaskContext {
    TaskContext::new(
        ctx.task_id(),
        ctx.session_id(),
        ctx.session_config().clone(),
        ctx.scalar_functions().clone(),
        ctx.higher_order_functions().clone(),
        ctx.aggregate_functions().clone(),
        ctx.window_functions().clone(),
        ctx.runtime_env(),
    )
}

/// The session being decoded in (a default one outside a decoding).
pub(crate) fn decoding_context() -> Arc<TaskContext> {
    DECODING
        .with(|d| d.borrow().clone())
        .unwrap_or_else(|| Arc::new(TaskContext::default()))
}

fn to_bytes(e: &Expr) -> Result<Vec<u8>, String> {
    e.to_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| format!("a condition cannot be serialised: {e}"))
}

fn from_bytes(b: &[u8]) -> Result<Expr, String> {
    Expr::from_bytes_with_ctx(b, &decoding_context())
        .map_err(|e| format!("a condition cannot be decoded: {e}"))
}

/// Serde of an optional [`Expr`].
pub(crate) mod opt_expr {
    use super::*;
    use serde::{
        Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _,
    };

    pub(crate) fn serialize<S: Serializer>(e: &Option<Expr>, s: S) -> Result<S::Ok, S::Error> {
        e.as_ref()
            .map(to_bytes)
            .transpose()
            .map_err(S::Error::custom)?
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Expr>, D::Error> {
        let b: Option<Vec<u8>> = Deserialize::deserialize(d)?;
        b.map(|b| from_bytes(&b))
            .transpose()
            .map_err(D::Error::custom)
    }
}

/// Serde of an [`Expr`].
pub(crate) mod expr {
    use super::*;
    use serde::{
        Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _,
    };

    pub(crate) fn serialize<S: Serializer>(e: &Expr, s: S) -> Result<S::Ok, S::Error> {
        to_bytes(e).map_err(S::Error::custom)?.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Expr, D::Error> {
        let b: Vec<u8> = Deserialize::deserialize(d)?;
        from_bytes(&b).map_err(D::Error::custom)
    }
}

/// Serde of a list of [`Expr`]s.
pub(crate) mod vec_expr {
    use super::*;
    use serde::{
        Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _,
    };

    pub(crate) fn serialize<S: Serializer>(e: &[Expr], s: S) -> Result<S::Ok, S::Error> {
        e.iter()
            .map(to_bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(S::Error::custom)?
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Expr>, D::Error> {
        let b: Vec<Vec<u8>> = Deserialize::deserialize(d)?;
        b.iter()
            .map(|b| from_bytes(b))
            .collect::<Result<_, _>>()
            .map_err(D::Error::custom)
    }
}

/// A node's encoding: a JSON header, then raw bytes (large numeric data
/// such as per-user exposure times).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "node", rename_all = "snake_case")]
enum Node {
    /// A [`KeyScanExec`]; the tail holds the per-user lower bounds, if any.
    KeyScan(crate::fold::ScanSpec),
    /// A [`FoldExec`] of the named fold.
    Fold {
        fold: String,
        params: serde_json::Value,
        layout: crate::fold::Layout,
    },
    /// `segment()` / `rfm()`.
    FeatureRows(crate::sql::FeatureRowsSpec),
}

fn write_node(buf: &mut Vec<u8>, node: &Node, tail: &[u8]) -> DfResult<()> {
    let json = serde_json::to_vec(node)
        .map_err(|e| DataFusionError::Internal(format!("encoding a Tenure plan node: {e}")))?;
    buf.extend_from_slice(b"TNR1");
    buf.extend_from_slice(&(json.len() as u64).to_le_bytes());
    buf.extend_from_slice(&json);
    buf.extend_from_slice(tail);
    Ok(())
}

fn read_node(buf: &[u8]) -> DfResult<(Node, &[u8])> {
    let bad = || DataFusionError::Plan("not a Tenure plan node (or another version's)".into());
    let rest = buf.strip_prefix(b"TNR1").ok_or_else(bad)?;
    let (len, rest) = rest.split_at_checked(8).ok_or_else(bad)?;
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
    let (json, tail) = rest.split_at_checked(len).ok_or_else(bad)?;
    let node = serde_json::from_slice(json)
        .map_err(|e| DataFusionError::Plan(format!("decoding a Tenure plan node: {e}")))?;
    Ok((node, tail))
}

/// Every fold type, by the name its [`FoldExec`] is encoded with.
macro_rules! folds {
    ($($name:literal => $t:ty),* $(,)?) => {
        fn is_fold(node: &dyn ExecutionPlan) -> bool {
            false $(|| node.downcast_ref::<FoldExec<$t>>().is_some())*
        }

        fn encode_fold(node: &dyn ExecutionPlan) -> Option<DfResult<Node>> {
            $(
                if let Some(f) = node.downcast_ref::<FoldExec<$t>>() {
                    return Some(
                        serde_json::to_value(f.fold().as_ref())
                            .map(|params| Node::Fold {
                                fold: $name.into(),
                                params,
                                layout: f.layout(),
                            })
                            .map_err(|e| DataFusionError::Internal(format!(
                                "encoding the {} fold: {e}", $name
                            ))),
                    );
                }
            )*
            None
        }

        fn decode_fold(
            name: &str,
            params: serde_json::Value,
            input: Arc<dyn ExecutionPlan>,
            ids: Option<Arc<dyn ExecutionPlan>>,
            layout: crate::fold::Layout,
        ) -> DfResult<Arc<dyn ExecutionPlan>> {
            let bad = |e: serde_json::Error| {
                DataFusionError::Plan(format!("decoding the {name} fold: {e}"))
            };
            match name {
                $(
                    $name => Ok(Arc::new(FoldExec::with_children(
                        Arc::new(serde_json::from_value::<$t>(params).map_err(bad)?),
                        input,
                        ids,
                        layout,
                    ))),
                )*
                other => plan_err!("unknown Tenure fold `{other}`"),
            }
        }
    };
}

folds! {
    "retention" => crate::retention::RetentionFold,
    "ltv" => crate::ltv::LtvFold,
    "lifecycle" => crate::lifecycle::LifecycleFold,
    "lifecycle_stages" => crate::lifecycle::StagesFold,
    "kpi" => crate::kpi::KpiFold,
    "stickiness" => crate::stickiness::StickinessFold,
    "funnel" => crate::funnel::FunnelFold,
    "funnel_tally" => crate::funnel::FunnelTally,
    "funnel_converted" => crate::funnel::FunnelConverted,
    "user_stats" => crate::userstats::StatsFold,
    "buyers" => crate::userstats::BuyersFold,
    "segment_count" => crate::features::CountFold,
    "latest" => crate::features::LatestFold,
    "per_user" => crate::fold::totals::PerUser,
    "assign" => crate::abtest::AssignFold,
    "paths" => crate::paths::PathsFold,
    "kpi_by" => crate::kpi::KpiByFold,
    "clv" => crate::clv::ClvFold,
}

impl PhysicalExtensionCodec for TenureCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // The node's expressions are decoded with the session's functions
        // (`prop()` among them), so the header is read inside too.
        decoding(ctx, || {
            let (node, tail) = read_node(buf)?;
            match node {
                Node::KeyScan(spec) => Ok(Arc::new(KeyScanExec::decode(spec, tail, ctx)?) as _),
                Node::Fold {
                    fold,
                    params,
                    layout,
                } => {
                    let parts = layout.stage == crate::fold::Stage::Parts;
                    if parts && layout.deferred > 0 {
                        // Merged persons' range waits for the others in
                        // the same process: never a task of its own.
                        return plan_err!("a fold with merged persons cannot be split into parts");
                    }
                    let (input, ids) = match inputs {
                        [input] if !parts => (input, None),
                        [input, ids] if parts => (input, Some(ids.clone())),
                        _ => {
                            return plan_err!(
                                "a Tenure fold has {} inputs, not {}",
                                1 + usize::from(parts),
                                inputs.len()
                            );
                        }
                    };
                    if layout.stage != crate::fold::Stage::Merge
                        && input.output_partitioning().partition_count() != layout.ranges.len()
                    {
                        return plan_err!("a Tenure fold's input does not have its key ranges");
                    }
                    decode_fold(&fold, params, input.clone(), ids, layout)
                }
                Node::FeatureRows(spec) => {
                    Ok(Arc::new(crate::sql::FeatureRowsExec::decode(spec)?) as _)
                }
            }
        })
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(scan) = node.downcast_ref::<KeyScanExec>() {
            let (spec, tail) = scan.encode();
            return write_node(buf, &Node::KeyScan(spec), &tail);
        }
        if let Some(rows) = node.downcast_ref::<crate::sql::FeatureRowsExec>() {
            return write_node(buf, &Node::FeatureRows(rows.spec().clone()), &[]);
        }
        match encode_fold(node.as_ref()) {
            Some(n) => write_node(buf, &n?, &[]),
            None => internal_err!("{} is not a Tenure plan node", node.name()),
        }
    }
}

impl LogicalExtensionCodec for TenureCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> DfResult<Extension> {
        plan_err!("Tenure has no logical extension nodes")
    }

    fn try_encode(&self, _node: &Extension, _buf: &mut Vec<u8>) -> DfResult<()> {
        plan_err!("Tenure has no logical extension nodes")
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let plan = plan_from_bytes(buf, ctx)?;
        if plan.schema().fields() != schema.fields() {
            return plan_err!("a Tenure table's plan does not have the table's schema");
        }
        Ok(Arc::new(crate::sql::FoldTable::new(plan)))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        let Some(table) = node.downcast_ref::<crate::sql::FoldTable>() else {
            return internal_err!("table {table_ref} is not a Tenure table function's result");
        };
        buf.extend_from_slice(&plan_to_bytes(table.plan().clone())?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Every fold's plan and every table function's plan survive a trip
    //! through bytes: decoded in a fresh session of the same store, they give
    //! the same batches.

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::logical_expr::{col, lit};
    use datafusion::physical_plan::collect;

    use super::*;
    use crate::fold::{FoldInput, UserFold, plan};
    use crate::{Events, OpenOptions};

    /// A memory store holding a fixture's events.
    fn store(name: &str, fixture: &str) -> String {
        crate::test_store::store(&format!("codec-{name}"), fixture)
    }

    fn text(batches: &[datafusion::arrow::array::RecordBatch]) -> String {
        pretty_format_batches(batches).unwrap().to_string()
    }

    /// Runs `plan`, sends it through bytes into a fresh session of the same
    /// store, runs it there and compares; returns the rows.
    async fn round_trip(events: &Events, plan: Arc<dyn ExecutionPlan>) -> String {
        let want = collect(plan.clone(), events.ctx.task_ctx()).await.unwrap();
        let bytes = plan_to_bytes(plan.clone()).unwrap();
        let fresh = Events::open(&events.store.url, events.options.clone())
            .await
            .unwrap();
        let decoded = plan_from_bytes(&bytes, &fresh.ctx.task_ctx()).unwrap();
        assert_eq!(
            datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string(),
            datafusion::physical_plan::displayable(decoded.as_ref())
                .indent(true)
                .to_string()
        );
        // Encoding the decoded plan gives the same bytes.
        assert_eq!(plan_to_bytes(decoded.clone()).unwrap(), bytes);
        let got = collect(decoded, fresh.ctx.task_ctx()).await.unwrap();
        let (want, got) = (text(&want), text(&got));
        assert_eq!(want, got);
        assert!(want.lines().count() > 4, "no rows: {want}");
        want
    }

    /// `fold` whole, then as a cluster runs it (a part per key range, then a
    /// merge; and the merged partial result as bytes, emitted here), each
    /// through bytes: the same rows every way.
    async fn fold_trip<F: UserFold>(events: &Events, fold: F) -> String {
        let json = serde_json::to_value(&fold).unwrap();
        let copy: F = decoding(&events.ctx.task_ctx(), || serde_json::from_value(json)).unwrap();
        let whole = round_trip(events, plan(events, fold).unwrap()).await;
        let scan = Arc::new(KeyScanExec::try_new(events, &copy.input()).unwrap());
        assert!(scan.ranges().len() > 1, "one key range: nothing to merge");
        let copy = Arc::new(copy);
        let split = FoldExec::distributed(copy.clone(), scan.clone());
        assert_eq!(round_trip(events, Arc::new(split)).await, whole);
        // As a cluster's scheduler cuts the parts stage for its tasks: one
        // range each, found through the in-memory leaf of range ids; the
        // rows of all of them merged give the same result.
        let layout = FoldExec::new(copy.clone(), scan.clone()).layout();
        let mut rows = Vec::new();
        for r in (0..layout.ranges.len()).rev() {
            let ids = crate::fold::exec::range_ids(layout.ranges.len()).unwrap();
            let ids = ids
                .as_ref()
                .downcast_ref::<datafusion::datasource::source::DataSourceExec>()
                .unwrap();
            let mem = ids
                .data_source()
                .as_ref()
                .downcast_ref::<datafusion::datasource::memory::MemorySourceConfig>()
                .unwrap();
            let one = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[mem.partitions()[r].clone()],
                mem.original_schema(),
                None,
            )
            .unwrap();
            let parts = crate::fold::Layout {
                stage: crate::fold::Stage::Parts,
                ..layout.clone()
            };
            let task = FoldExec::with_children(copy.clone(), scan.clone(), Some(one), parts);
            assert_eq!(task.properties().output_partitioning().partition_count(), 1);
            let got = collect(Arc::new(task), events.ctx.task_ctx())
                .await
                .unwrap();
            let range = got[0]
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
            assert_eq!(range.value(0) as usize, r);
            rows.extend(got);
        }
        let shuffled = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            &[rows],
            crate::fold::exec::part_schema(),
            None,
        )
        .unwrap();
        let merge = FoldExec::with_input(
            copy.clone(),
            shuffled,
            crate::fold::Layout {
                stage: crate::fold::Stage::Merge,
                ..layout.clone()
            },
        );
        let got = collect(Arc::new(merge), events.ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(text(&got), whole);
        // The partial result as a cluster's client gets it: each range's
        // rows, merged here.
        let (parts, n) = FoldExec::parts(copy.clone(), scan.clone());
        let rows = collect(parts, events.ctx.task_ctx()).await.unwrap();
        let bytes = crate::fold::exec::assemble_parts("t", &rows, n).unwrap();
        let part = crate::fold::exec::merge_decoded(copy.as_ref(), bytes).unwrap();
        assert_eq!(text(&[copy.emit(part).unwrap()]), whole);
        // A scan counts what it reads: some bytes, but no range more than
        // the files hold (a page at a range's edge is read by both ranges).
        let counted = Arc::new(KeyScanExec::try_new(events, &copy.input()).unwrap());
        let once = FoldExec::new(copy.clone(), counted.clone());
        collect(Arc::new(once), events.ctx.task_ctx())
            .await
            .unwrap();
        let metrics = counted.metrics().unwrap();
        let total: u64 = counted.file_sizes().sum();
        let read = metrics.sum_by_name("bytes_scanned").unwrap().as_usize() as u64;
        let ranges = counted.ranges().len() as u64;
        assert!(
            read > 0 && read <= total * ranges,
            "{read} bytes of {total}"
        );
        let files = metrics.sum_by_name("files_opened").unwrap().as_usize();
        assert!(files > 0 && files as u64 <= counted.file_sizes().count() as u64 * ranges);
        assert!(metrics.output_rows().unwrap() > 0);
        whole
    }

    fn event(name: &str) -> Expr {
        col("event").eq(lit(name))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_fold_round_trips() {
        use crate::calendar::Period;
        use crate::retention::{Mode, RetentionSpec};
        let url = store("retention", "retention/events.ndjson");
        let events = Events::open(&url, OpenOptions::default()).await.unwrap();
        let (_, max_ts) = events.ts_range.unwrap();
        let tz: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
        let spec = RetentionSpec {
            period: Period::Week,
            tz,
            start: Some(event("signup")),
            ret: Some(event("purchase").and(col("revenue").gt(lit(10)))),
            mode: Mode::Bracket(vec![(0, 0), (1, 3)]),
            as_of: Some(max_ts),
            by: None,
            read: None,
            revenue: false,
        };
        fold_trip(
            &events,
            crate::retention::RetentionFold::new(&events, &spec).unwrap(),
        )
        .await;
        // A breakdown on a key of `properties` and a column (computed with
        // `prop()`), read by day, with revenue per cell.
        let by_day = RetentionSpec {
            by: Some("event,country".into()),
            read: Some(Period::Day),
            revenue: true,
            mode: Mode::NDay,
            ..spec.clone()
        };
        fold_trip(
            &events,
            crate::retention::RetentionFold::new(&events, &by_day).unwrap(),
        )
        .await;
        fold_trip(&events, crate::ltv::LtvFold::new(&events, &spec).unwrap()).await;
        fold_trip(&events, crate::ltv::LtvFold::new(&events, &by_day).unwrap()).await;
        fold_trip(
            &events,
            crate::lifecycle::LifecycleFold::new(&events, Period::Week, tz, None).unwrap(),
        )
        .await;
        fold_trip(
            &events,
            crate::lifecycle::StagesFold {
                as_of: max_ts,
                thresholds: Default::default(),
                purchase: "purchase".into(),
            },
        )
        .await;
        let kpi = crate::kpi::KpiSpec {
            period: Period::Month,
            tz,
            purchase: Default::default(),
            conversion_days: 7,
            signup: crate::request::SIGNUP.into(),
        };
        fold_trip(&events, crate::kpi::KpiFold::new(&events, &kpi).unwrap()).await;
        fold_trip(
            &events,
            crate::kpi::KpiByFold::new(&events, &kpi, "event,country").unwrap(),
        )
        .await;
        let sticky = crate::stickiness::StickinessSpec {
            period: Period::Week,
            tz,
            condition: Some(event("view").or(event("purchase"))),
            as_of: None,
        };
        fold_trip(
            &events,
            crate::stickiness::StickinessFold::new(&events, &sticky).unwrap(),
        )
        .await;
        for revenue in [false, true] {
            let (event, revenue) = ("purchase".to_string(), revenue);
            fold_trip(
                &events,
                crate::userstats::StatsFold {
                    event: event.clone(),
                    revenue,
                },
            )
            .await;
            for seen in [false, true] {
                let event = event.clone();
                let fold = crate::userstats::BuyersFold {
                    event,
                    revenue,
                    seen,
                    any_key: seen,
                };
                fold_trip(&events, fold).await;
            }
        }
        // A segment counted per key range, on facts of each user alone.
        let catalog = crate::features::catalog(&events);
        let resolver = tenure_dsl::Resolver::new(&catalog);
        let segment = tenure_dsl::Segment::new(
            "M >= 10 or first_seen within 7d",
            &resolver,
            &tenure_dsl::CompileContext::new(max_ts),
        )
        .unwrap();
        let spec = crate::features::FeatureSpec {
            as_of: max_ts,
            purchase: Default::default(),
            thresholds: Default::default(),
            buyers_only: false,
            scoring: Default::default(),
        };
        let fold =
            crate::features::CountFold::new(&segment.features, &segment.expr, &spec, true).unwrap();
        let counted = fold_trip(&events, fold).await;
        let (matched, users) =
            crate::features::count_matching(&events, &segment.features, &segment.expr, &spec)
                .await
                .unwrap();
        assert!(matched > 0 && matched < users, "{matched} of {users}");
        assert!(
            counted.contains(&format!(" {matched} ")) && counted.contains(&format!(" {users} ")),
            "{counted}"
        );
        use crate::fold::totals::{PerUser, Value};
        let count = || PerUser {
            name: "count".into(),
            input: FoldInput {
                flags: vec![event("view")],
                any_flag: true,
                until: Some(max_ts),
                ..Default::default()
            },
            value: Value::Count,
        };
        fold_trip(&events, count()).await;
        fold_trip(
            &events,
            PerUser {
                name: "sum".into(),
                input: FoldInput {
                    columns: vec!["revenue".into()],
                    ..Default::default()
                },
                value: Value::Exact(datafusion::arrow::datatypes::DataType::Decimal128(38, 2)),
            },
        )
        .await;
        // Per-user lower bounds (an experiment's exposures) travel too.
        let exposed = Events {
            since: Some(Arc::new(
                (0..events.users() as i64)
                    .map(|k| if k % 2 == 0 { i64::MAX } else { i64::MIN })
                    .collect(),
            )),
            ..events.clone()
        };
        let restricted = collect(plan(&exposed, count()).unwrap(), events.ctx.task_ctx())
            .await
            .unwrap();
        let all = collect(plan(&events, count()).unwrap(), events.ctx.task_ctx())
            .await
            .unwrap();
        assert_ne!(text(&restricted), text(&all), "the bounds restrict nothing");
        let bytes = plan_to_bytes(plan(&exposed, count()).unwrap()).unwrap();
        let decoded = plan_from_bytes(&bytes, &events.ctx.task_ctx()).unwrap();
        let got = collect(decoded, events.ctx.task_ctx()).await.unwrap();
        assert_eq!(text(&got), text(&restricted));
        // And per-user windows (CUPED's days before exposure): lower and upper
        // bounds together, and upper bounds alone.
        let mid = (events.ts_range.unwrap().0 + max_ts) / 2;
        let upper: Arc<Vec<i64>> = Arc::new(vec![mid; events.users()]);
        for windowed in [
            Events {
                before: Some(upper.clone()),
                ..exposed.clone()
            },
            Events {
                before: Some(upper.clone()),
                ..events.clone()
            },
        ] {
            let want = collect(plan(&windowed, count()).unwrap(), events.ctx.task_ctx())
                .await
                .unwrap();
            assert_ne!(text(&want), text(&all), "the upper bounds restrict nothing");
            let bytes = plan_to_bytes(plan(&windowed, count()).unwrap()).unwrap();
            let decoded = plan_from_bytes(&bytes, &events.ctx.task_ctx()).unwrap();
            let got = collect(decoded, events.ctx.task_ctx()).await.unwrap();
            assert_eq!(text(&got), text(&want));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn funnel_and_arms_round_trip() {
        use crate::funnel::{FunnelConverted, FunnelFold, FunnelSpec, FunnelTally, Modes, syntax};
        let url = store("funnel", "funnel/events.ndjson");
        let events = Events::open(&url, OpenOptions::default()).await.unwrap();
        let spec = FunnelSpec {
            steps: syntax::parse_steps(
                &events,
                "view_item, add_to_cart where variant = 'A' or variant = 'B', purchase",
            )
            .unwrap(),
            window_us: syntax::parse_window("1d").unwrap(),
            modes: Modes {
                strict_increase: true,
                ..Default::default()
            },
            exclusions: Vec::new(),
            by: Some("variant".into()),
            user_groups: None,
            hold: None,
            entry_from: None,
            entry_to: None,
        };
        let rows = fold_trip(&events, FunnelFold::new(&events, &spec).unwrap()).await;
        // Its tally per key range gives the same rows.
        let tally = FunnelTally(FunnelFold::new(&events, &spec).unwrap());
        assert_eq!(fold_trip(&events, tally).await, rows);
        let converted = FunnelConverted(FunnelFold::new(&events, &spec).unwrap());
        assert!(fold_trip(&events, converted).await.contains("true"));
        // abtest(): its request travels.
        crate::sql::register_functions(&events);
        let df = events
            .ctx
            .sql("SELECT arm, users, conversions FROM abtest('funnel:view_item>purchase within 1d') ORDER BY arm")
            .await
            .unwrap();
        let readout = round_trip(&events, df.create_physical_plan().await.unwrap()).await;
        assert!(readout.contains("| A "), "{readout}");
        assert!(rows.contains("add_to_cart"), "{rows}");
        fold_trip(
            &events,
            crate::abtest::AssignFold {
                column: "variant".into(),
            },
        )
        .await;
        fold_trip(
            &events,
            crate::features::LatestFold {
                name: "variant".into(),
                as_of: i64::MAX,
            },
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn table_functions_round_trip_as_physical_and_logical_plans() {
        let url = store("sql", "retention/events.ndjson");
        let events = Events::open(&url, OpenOptions::default()).await.unwrap();
        crate::sql::register_functions(&events);
        let fresh = Events::open(&url, OpenOptions::default()).await.unwrap();
        crate::sql::register_functions(&fresh);
        for sql in [
            "SELECT cohort, period, users FROM retention('week', 'signup', 'purchase') \
             WHERE kind = 'cohort' AND cohort_size > 0 ORDER BY cohort, period",
            "SELECT r.user_id, r.frequency, s.recency FROM rfm() r \
             JOIN segment('R < 30d', '2026-04-01') s USING (user_key) ORDER BY r.user_id",
            "SELECT * FROM segment('F >= 1 and lifecycle = active', '2026-03-20')",
            "SELECT * FROM lifecycle_stages()",
            "SELECT s.period, s.users, l.users FROM stickiness('week') s \
             JOIN lifecycle('week') l ON s.period = l.period WHERE s.days = 1 AND l.status = 'new' ORDER BY 1",
            "SELECT metric, period, numerator FROM kpi('week') ORDER BY period, metric",
            "SELECT cohort, period, revenue FROM ltv('week') WHERE kind = 'cohort' ORDER BY 1, 2",
            "SELECT step, users FROM funnel('signup, purchase', '7d', 'variant') ORDER BY step",
        ] {
            let df = events.ctx.sql(sql).await.unwrap();
            let logical = df.logical_plan().clone();
            let physical = df.create_physical_plan().await.unwrap();
            let want = round_trip(&events, physical).await;
            // The logical plan: table function results travel as their plans.
            let bytes = datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(
                &logical,
                &TenureCodec,
            )
            .unwrap();
            let decoded = datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
                &bytes,
                &fresh.ctx.task_ctx(),
                &TenureCodec,
            )
            .unwrap();
            let got = fresh
                .ctx
                .execute_logical_plan(decoded)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            assert_eq!(text(&got), want, "{sql}");
        }
    }

    /// A plan decoded after more events were committed reads the snapshot
    /// it was made on: the same rows as where it was planned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decoded_plans_read_the_snapshot_they_were_made_on() {
        let url = store("pinned", "retention/events.ndjson");
        let events = Events::open(&url, OpenOptions::default()).await.unwrap();
        crate::sql::register_functions(&events);
        let queries = [
            "SELECT user_id, frequency FROM rfm() ORDER BY user_id",
            "SELECT user_id FROM segment('F >= 1') ORDER BY user_id",
            "SELECT user_id FROM segment('F >= 1', '2026-04-01') ORDER BY user_id",
        ];
        let mut encoded = Vec::new();
        for sql in queries {
            let df = events.ctx.sql(sql).await.unwrap();
            let physical = df.create_physical_plan().await.unwrap();
            let want = text(
                &collect(physical.clone(), events.ctx.task_ctx())
                    .await
                    .unwrap(),
            );
            encoded.push((sql, plan_to_bytes(physical).unwrap(), want));
        }
        // New buyers committed after planning.
        let at = url.clone();
        std::thread::spawn(move || {
            let store = tenure_ingest::Store::open(&at).unwrap();
            let mut ing =
                tenure_ingest::Ingest::begin(store, tenure_ingest::IngestOptions::default())
                    .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("late.ndjson");
            std::fs::write(
                &file,
                "{\"event_id\":\"late1\",\"user_id\":\"late\",\"event\":\"purchase\",\"ts\":\"2026-03-25T10:00:00Z\",\"revenue\":5}\n",
            )
            .unwrap();
            ing.add_file(&file).unwrap();
            ing.commit().unwrap();
        })
        .join()
        .unwrap();
        let fresh = Events::open(&url, OpenOptions::default()).await.unwrap();
        crate::sql::register_functions(&fresh);
        for (sql, bytes, want) in encoded {
            let decoded = plan_from_bytes(&bytes, &fresh.ctx.task_ctx()).unwrap();
            let got = text(&collect(decoded, fresh.ctx.task_ctx()).await.unwrap());
            assert_eq!(got, want, "{sql}");
            // Planned afresh, the late buyer is there.
            let now = fresh.ctx.sql(sql).await.unwrap().collect().await.unwrap();
            assert!(text(&now).contains("late"), "{sql}: {}", text(&now));
        }
    }

    #[tokio::test]
    async fn decoding_without_the_store_is_a_clear_error() {
        let url = store("nostore", "retention/events.ndjson");
        let other = store("other", "retention/events.ndjson");
        let events = Events::open(&url, OpenOptions::default()).await.unwrap();
        let fold = crate::userstats::StatsFold {
            event: "purchase".into(),
            revenue: false,
        };
        let bytes = plan_to_bytes(plan(&events, fold).unwrap()).unwrap();
        let err = plan_from_bytes(&bytes, &TaskContext::default()).unwrap_err();
        assert!(
            err.to_string().contains("tenure://s"),
            "unexpected error: {err}"
        );
        // Nor in a session of another store: it is not read by mistake.
        let other = Events::open(&other, OpenOptions::default()).await.unwrap();
        let err = plan_from_bytes(&bytes, &other.ctx.task_ctx()).unwrap_err();
        assert!(err.to_string().contains("does not have"), "{err}");
        let err = plan_from_bytes(b"TNR1garbage", &events.ctx.task_ctx()).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}
