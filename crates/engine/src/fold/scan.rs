//! [`KeyScanExec`]: the leaf of every fold plan. Its partitions are ranges of
//! user keys; each reads the committed files directly (the Parquet reader of
//! `stored.rs`, no listing, no coalescing), pruned to the row groups and pages
//! whose `user_key` statistics overlap its range, then keeps only the rows of
//! its range and of the requested time range, and evaluates the fold's
//! conditions into boolean columns.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimestampMicrosecondType, UInt32Type,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, exec_datafusion_err, exec_err, plan_err};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::ObjectStore;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use super::FoldInput;
use crate::stored::StoreFile;
use crate::table::{Events, Part};

/// Rows per decoded batch (as in `stored.rs`).
const BATCH_ROWS: usize = 8 * 1024;

/// Reads the rows of ranges of user keys; see the module docs.
#[derive(Debug)]
pub struct KeyScanExec {
    store: Arc<dyn ObjectStore>,
    /// Committed files in range, earliest first.
    parts: Arc<Vec<Part>>,
    /// `user_key`, `ts`, the requested columns, the conditions' columns.
    read: SchemaRef,
    flag_exprs: Vec<Expr>,
    flags: Vec<Arc<dyn PhysicalExpr>>,
    /// Flags of the form `text_column = 'literal'`: (column in `read`,
    /// literal), tested once per dictionary value instead of per row.
    eq_flags: Vec<Option<(usize, String)>>,
    ranges: Vec<(u32, u32)>,
    /// Rows kept: `time.0 <= ts < time.1`.
    time: (i64, i64),
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

/// Columns a fold may not ask for: the scan always provides them.
const KEY_COLUMNS: [&str; 2] = ["user_key", "ts"];

impl KeyScanExec {
    /// The scan of `events` for a fold's `input`, one key range per thread.
    pub fn try_new(events: &Events, input: &FoldInput) -> crate::Result<Self> {
        let Some(parts) = &events.parts else {
            return Err(crate::EngineError::Internal(
                "a fold reads the stored files; this events table is a view".into(),
            ));
        };
        let mut parts: Vec<Part> = parts
            .iter()
            .filter(|p| input.until.is_none_or(|u| p.min_ts < u))
            .cloned()
            .collect();
        parts.sort_by_key(|p| p.min_ts);
        let table = tenure_schema::stored_schema(&events.snapshot.properties);
        let mut names: Vec<String> = KEY_COLUMNS.iter().map(|c| c.to_string()).collect();
        let mut add = |name: &str| -> DfResult<()> {
            if table.index_of(name).is_err() {
                return plan_err!(
                    "`{name}` is not a column of the events table (try variant, event or a declared property)"
                );
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
            Ok(())
        };
        for c in &input.columns {
            if KEY_COLUMNS.contains(&c.as_str()) {
                return Err(crate::EngineError::Internal(format!(
                    "a fold asked for `{c}`, which every fold reads"
                )));
            }
            add(c)?;
        }
        for e in &input.flags {
            for c in e.column_refs() {
                add(&c.name)?;
            }
        }
        let fields: Vec<Field> = names
            .iter()
            .map(|n| table.field_with_name(n).expect("checked").clone())
            .collect();
        let read = Arc::new(Schema::new(fields));
        let df_schema = DFSchema::try_from_qualified_schema("events", read.as_ref())?;
        let flags = input
            .flags
            .iter()
            .map(|e| {
                events
                    .ctx
                    .create_physical_expr(e.clone().is_true(), &df_schema)
            })
            .collect::<DfResult<Vec<_>>>()?;
        let eq_flags = input.flags.iter().map(|e| text_eq(e, &read)).collect();
        let mut out: Vec<Field> = read.fields().iter().map(|f| f.as_ref().clone()).collect();
        for j in 0..flags.len() {
            out.push(Field::new(format!("__flag{j}"), DataType::Boolean, false));
        }
        // The earliest event time of the file the rows come from: files are
        // read earliest first, so no later row is older than this.
        out.push(Field::new("__file_min_ts", DataType::Int64, false));
        let schema = Arc::new(Schema::new(out));
        let users = u32::try_from(events.users())
            .map_err(|_| crate::EngineError::Unreadable("more than 4 billion users".into()))?;
        let threads = crate::table::thread_count(events.options.threads) as u32;
        let n = threads.clamp(1, users.max(1));
        let per = users.div_ceil(n).max(1);
        let ranges: Vec<(u32, u32)> = (0..n)
            .map(|i| ((i * per).min(users), ((i + 1) * per).min(users)))
            .collect();
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(ranges.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            store: events.store.inner.clone(),
            parts: Arc::new(parts),
            read,
            flag_exprs: input.flags.clone(),
            flags,
            eq_flags,
            ranges,
            time: (
                events.options.from.unwrap_or(i64::MIN),
                events
                    .options
                    .to
                    .unwrap_or(i64::MAX)
                    .min(input.until.unwrap_or(i64::MAX)),
            ),
            schema,
            props,
        })
    }

    /// The key range of each partition.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// Index of the first condition column.
    pub fn flags_at(&self) -> usize {
        self.read.fields().len()
    }
}

impl DisplayAs for KeyScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let cols: Vec<&str> = self
            .read
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "KeyScanExec: files={}, key_ranges={}, columns=[{}]",
            self.parts.len(),
            self.ranges.len(),
            cols.join(", ")
        )?;
        if !self.flag_exprs.is_empty() {
            let flags: Vec<String> = self.flag_exprs.iter().map(|e| e.to_string()).collect();
            write!(f, ", flags=[{}]", flags.join(", "))?;
        }
        if self.time != (i64::MIN, i64::MAX) {
            write!(f, ", ts=[{}, {})", self.time.0, self.time.1)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for KeyScanExec {
    fn name(&self) -> &str {
        "KeyScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for e in &self.flags {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let Some(&range) = self.ranges.get(partition) else {
            return exec_err!("KeyScanExec has no partition {partition}");
        };
        let last = partition + 1 == self.ranges.len();
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(2);
        let job = Job {
            store: self.store.clone(),
            parts: self.parts.clone(),
            read: self.read.clone(),
            schema: self.schema.clone(),
            flags: self.flags.clone(),
            eq_flags: self.eq_flags.clone(),
            range,
            last,
            time: self.time,
        };
        tokio::spawn(async move {
            if let Err(e) = job.run(&tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// One partition's reading.
struct Job {
    store: Arc<dyn ObjectStore>,
    parts: Arc<Vec<Part>>,
    read: SchemaRef,
    schema: SchemaRef,
    flags: Vec<Arc<dyn PhysicalExpr>>,
    eq_flags: Vec<Option<(usize, String)>>,
    range: (u32, u32),
    /// The last range also checks that no key is beyond the dictionary.
    last: bool,
    time: (i64, i64),
}

type Sender = tokio::sync::mpsc::Sender<DfResult<RecordBatch>>;

impl Job {
    async fn run(&self, tx: &Sender) -> DfResult<()> {
        for part in self.parts.iter() {
            if !self.file(part, tx).await? {
                break;
            }
        }
        Ok(())
    }

    /// Reads one file; false when the receiver is gone.
    async fn file(&self, part: &Part, tx: &Sender) -> DfResult<bool> {
        let in_file = |e: &dyn fmt::Display| exec_datafusion_err!("cannot read {}: {e}", part.path);
        let reader = StoreFile {
            store: self.store.clone(),
            path: part.path.clone(),
            size: part.size,
        };
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options)
            .await
            .map_err(|e| in_file(&e))?;
        let (lo, hi) = self.range;
        let check_beyond = self.last;
        let Some((groups, selection)) = select(
            builder.metadata(),
            builder.schema(),
            builder.parquet_schema(),
            lo,
            if check_beyond { u32::MAX } else { hi },
        )
        .map_err(|e| in_file(&e))?
        else {
            return Ok(true);
        };
        let present: Vec<&str> = self
            .read
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| builder.schema().index_of(n).is_ok())
            .collect();
        let mask = ProjectionMask::columns(builder.parquet_schema(), present.iter().copied());
        let mut stream = builder
            .with_projection(mask)
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| in_file(&e))?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| in_file(&e))?;
            let Some(out) = self.shape(&batch, part.min_ts).map_err(|e| in_file(&e))? else {
                continue;
            };
            if tx.send(Ok(out)).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The batch's rows of this range and time range, as [`Self::schema`].
    fn shape(&self, batch: &RecordBatch, file_min_ts: i64) -> DfResult<Option<RecordBatch>> {
        let (lo, hi) = self.range;
        let keys = batch
            .column_by_name("user_key")
            .and_then(|c| c.as_primitive_opt::<UInt32Type>())
            .ok_or_else(|| exec_datafusion_err!("no user_key column of type UInt32"))?;
        let ts = batch
            .column_by_name("ts")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .ok_or_else(|| exec_datafusion_err!("no ts column of type timestamp(µs)"))?;
        if keys.null_count() > 0 || ts.null_count() > 0 {
            return exec_err!("null user_key or ts");
        }
        let k = keys.values();
        if self.last && k.iter().any(|&x| x >= hi) {
            return exec_err!(
                "user_key beyond the users dictionary ({hi} users): the store is inconsistent"
            );
        }
        // Rows of the range: a slice when the keys are sorted (they are in
        // every file Tenure writes), else a filter.
        let mut batch = if k.is_sorted() {
            let a = k.partition_point(|&x| x < lo);
            let b = k.partition_point(|&x| x < hi);
            if a == b {
                return Ok(None);
            }
            batch.slice(a, b - a)
        } else {
            let keep: BooleanArray = k.iter().map(|&x| Some(x >= lo && x < hi)).collect();
            filter_record_batch(batch, &keep)?
        };
        let (from, to) = self.time;
        if from != i64::MIN || to != i64::MAX {
            let t = batch
                .column_by_name("ts")
                .expect("checked")
                .as_primitive::<TimestampMicrosecondType>()
                .values();
            if t.iter().any(|&x| x < from || x >= to) {
                let keep: BooleanArray = t.iter().map(|&x| Some(x >= from && x < to)).collect();
                batch = filter_record_batch(&batch, &keep)?;
            }
        }
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for f in self.read.fields() {
            columns.push(match batch.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => c.clone(),
                Some(c) => cast(c, f.data_type())?,
                // A file written before the column was declared.
                None => new_null_array(f.data_type(), n),
            });
        }
        let read = RecordBatch::try_new(self.read.clone(), columns.clone())?;
        let mut hits = Vec::new();
        for (e, eq) in self.flags.iter().zip(&self.eq_flags) {
            if let Some((c, value)) = eq
                && crate::stored::map_text(read.column(*c).as_ref(), |v| v == value, &mut hits)
            {
                columns.push(Arc::new(BooleanArray::from(std::mem::take(&mut hits))));
                continue;
            }
            let v = e.evaluate(&read)?.into_array(n)?;
            columns.push(v);
        }
        columns.push(Arc::new(datafusion::arrow::array::Int64Array::from_value(
            file_min_ts,
            n,
        )));
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

/// The row groups and rows of a file that may hold keys in `lo..hi`, from
/// the `user_key` statistics (row groups, then pages when the page index is
/// there); `None` when nothing can.
fn select(
    meta: &ParquetMetaData,
    arrow: &SchemaRef,
    parquet: &parquet::schema::types::SchemaDescriptor,
    lo: u32,
    hi: u32,
) -> Result<Option<(Vec<usize>, RowSelection)>, DataFusionError> {
    let groups = meta.row_groups();
    let all: Vec<usize> = (0..groups.len()).collect();
    let whole = |gs: &[usize]| {
        let rows: usize = gs.iter().map(|&g| groups[g].num_rows() as usize).sum();
        RowSelection::from(vec![RowSelector::select(rows)])
    };
    let Ok(conv) = StatisticsConverter::try_new("user_key", arrow, parquet) else {
        return Ok(Some((all.clone(), whole(&all))));
    };
    let overlaps = |min: &dyn Array, max: &dyn Array, i: usize| -> bool {
        let (Some(min), Some(max)) = (
            min.as_primitive_opt::<UInt32Type>(),
            max.as_primitive_opt::<UInt32Type>(),
        ) else {
            return true;
        };
        if min.is_null(i) || max.is_null(i) {
            return true;
        }
        max.value(i) >= lo && min.value(i) < hi
    };
    let mins = conv.row_group_mins(groups.iter())?;
    let maxs = conv.row_group_maxes(groups.iter())?;
    let chosen: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&g| overlaps(&mins, &maxs, g))
        .collect();
    if chosen.is_empty() {
        return Ok(None);
    }
    let (Some(index), Some(offsets)) = (meta.column_index(), meta.offset_index()) else {
        return Ok(Some((chosen.clone(), whole(&chosen))));
    };
    let mut selectors = Vec::new();
    for &g in &chosen {
        let one = [g];
        let pmins = conv.data_page_mins(index, offsets, one.iter())?;
        let pmaxs = conv.data_page_maxes(index, offsets, one.iter())?;
        let counts = conv.data_page_row_counts(offsets, groups, one.iter())?;
        let Some(counts) = counts.filter(|c| c.len() == pmins.len()) else {
            selectors.push(RowSelector::select(groups[g].num_rows() as usize));
            continue;
        };
        for p in 0..counts.len() {
            let rows = counts.value(p) as usize;
            selectors.push(match overlaps(&pmins, &pmaxs, p) {
                true => RowSelector::select(rows),
                false => RowSelector::skip(rows),
            });
        }
    }
    let selection = RowSelection::from(selectors);
    if !selection.selects_any() {
        return Ok(None);
    }
    Ok(Some((chosen, selection)))
}

/// `(column index in read, literal)` when `e` is `column = 'literal'` (either
/// way round) over a text column: such a flag is one test per distinct value.
fn text_eq(e: &Expr, read: &Schema) -> Option<(usize, String)> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = e
    else {
        return None;
    };
    let (c, v) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return None,
    };
    let (ScalarValue::Utf8(Some(v))
    | ScalarValue::Utf8View(Some(v))
    | ScalarValue::LargeUtf8(Some(v))) = v
    else {
        return None;
    };
    let i = read.index_of(&c.name).ok()?;
    let text = match read.field(i).data_type() {
        DataType::Utf8 => true,
        DataType::Dictionary(k, v) => **k == DataType::Int32 && **v == DataType::Utf8,
        _ => false,
    };
    text.then(|| (i, v.clone()))
}
