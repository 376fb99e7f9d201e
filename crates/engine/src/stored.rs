//! Reading the stored Parquet files directly, without a DataFusion plan, for
//! the passes that need a few columns of every row and fold them themselves
//! (the purchases-only pass, funnels): no filter, projection, copy or coalesce
//! of batches between the decoder and the fold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{Int32Type, TimestampMicrosecondType, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::ObjectStore;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::table::{Events, Part};
use crate::{EngineError, Result};

/// Rows per decoded batch: small enough that decode buffers stay in cache and
/// are reused (64K-row batches made the allocator map and unmap them per batch).
const BATCH_ROWS: usize = 8 * 1024;

/// Where a batch comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// Index of the file in the list given to [`scan_files`].
    pub file: usize,
    /// The file.
    pub part: &'a Part,
}

impl Origin<'_> {
    /// An error about this file.
    pub fn error(&self, e: &dyn std::fmt::Display) -> EngineError {
        EngineError::Unreadable(format!("cannot read {}: {e}", self.part.path))
    }

    /// A column of one of this file's batches.
    pub fn column<'b>(&self, batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| self.error(&format!("no column `{name}`")))
    }

    /// An error for a column of an unexpected type.
    pub fn wrong(&self, name: &str) -> EngineError {
        self.error(&format!("column `{name}` has an unexpected type"))
    }

    /// A batch's user keys and times (neither may be null).
    pub fn keys_and_times<'b>(&self, batch: &'b RecordBatch) -> Result<(&'b [u32], &'b [i64])> {
        let keys = self
            .column(batch, "user_key")?
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| self.wrong("user_key"))?;
        let ts = self
            .column(batch, "ts")?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| self.wrong("ts"))?;
        if keys.null_count() > 0 || ts.null_count() > 0 {
            return Err(self.error(&"null user_key or ts"));
        }
        Ok((keys.values(), ts.values()))
    }
}

/// Reads `columns` of every file (columns a file lacks are left out of its
/// batches) and folds each batch into a per-task state made by `init`: one task per thread
/// takes files from a shared queue, largest first; each file's batches arrive
/// in order, one file after another. Returns every task's state.
pub(crate) async fn scan_files<S, F>(
    events: &Events,
    files: &[Part],
    columns: &[&str],
    init: impl Fn() -> S,
    fold: F,
) -> Result<Vec<S>>
where
    S: Send + 'static,
    F: Fn(&mut S, Origin<'_>, &RecordBatch) -> Result<()> + Clone + Send + Sync + 'static,
{
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].size));
    let files = Arc::new(files.to_vec());
    let order = Arc::new(order);
    let columns: Arc<Vec<String>> = Arc::new(columns.iter().map(|c| c.to_string()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let workers = crate::table::thread_count(events.options.threads)
        .min(files.len())
        .max(1);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (files, order, columns, next) =
            (files.clone(), order.clone(), columns.clone(), next.clone());
        let store = events.store.inner.clone();
        let (mut state, fold) = (init(), fold.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(&file) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                let part = &files[file];
                let mut stream = open(&store, part, &columns).await?;
                let origin = Origin { file, part };
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(|e| origin.error(&e))?;
                    fold(&mut state, origin, &batch)?;
                }
            }
            Ok::<_, EngineError>(state)
        }));
    }
    join(tasks).await
}

/// Waits for every task, in order.
pub(crate) async fn join<T>(tasks: Vec<tokio::task::JoinHandle<Result<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| EngineError::Internal(format!("scan task failed: {e}")))??,
        );
    }
    Ok(out)
}

/// The rows of a text column (a dictionary of strings, or strings) whose value
/// passes `f` (called once per distinct dictionary value), ascending; nulls do
/// not pass. Returns false when the column is not text.
pub(crate) fn select_text(
    column: &dyn Array,
    f: impl Fn(&str) -> bool,
    out: &mut Vec<u32>,
) -> bool {
    out.clear();
    if let Some(d) = column.as_dictionary_opt::<Int32Type>() {
        let Some(names) = d.values().as_string_opt::<i32>() else {
            return false;
        };
        let pass: Vec<bool> = (0..names.len())
            .map(|j| names.is_valid(j) && f(names.value(j)))
            .collect();
        let keys = d.keys();
        if keys.null_count() == 0 {
            // Without a branch per row: write every row, advance past the
            // ones that pass (a few percent, at random, would mispredict).
            out.resize(keys.len(), 0);
            let mut n = 0;
            for (i, &k) in keys.values().iter().enumerate() {
                out[n] = i as u32;
                n += usize::from(pass[k as usize]);
            }
            out.truncate(n);
        } else {
            out.extend(
                (0..d.len())
                    .filter(|&i| keys.is_valid(i) && pass[keys.value(i) as usize])
                    .map(|i| i as u32),
            );
        }
    } else if let Some(s) = column.as_string_opt::<i32>() {
        out.extend(
            (0..s.len())
                .filter(|&i| s.is_valid(i) && f(s.value(i)))
                .map(|i| i as u32),
        );
    } else {
        return false;
    }
    true
}

type Batches = parquet::arrow::async_reader::ParquetRecordBatchStream<StoreFile>;

/// Opens one stored file for the named columns.
async fn open(store: &Arc<dyn ObjectStore>, part: &Part, columns: &[String]) -> Result<Batches> {
    let in_file = |e: &dyn std::fmt::Display| {
        EngineError::Unreadable(format!("cannot read {}: {e}", part.path))
    };
    let reader = StoreFile {
        store: store.clone(),
        path: part.path.clone(),
        size: part.size,
    };
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| in_file(&e))?;
    let mask =
        ProjectionMask::columns(builder.parquet_schema(), columns.iter().map(|c| c.as_str()));
    let stream = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| in_file(&e))?;
    Ok(stream)
}

/// A stored file of known size, read through the object store.
pub(crate) struct StoreFile {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: object_store::path::Path,
    pub(crate) size: u64,
}

fn parquet_error(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreFile {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        async move {
            let mut got = self
                .store
                .get_ranges(&self.path, &[range])
                .await
                .map_err(parquet_error)?;
            Ok(got.pop().unwrap_or_default())
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            // The size is known: one read of the file's tail gets the footer.
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{DictionaryArray, Int32Array, StringArray};

    use super::*;

    #[test]
    fn select_text_picks_the_rows_whose_value_passes() {
        let names = Arc::new(StringArray::from(vec![
            Some("view"),
            Some("purchase"),
            None,
            Some("purchase"),
        ]));
        let pick = |col: &dyn Array| {
            let mut out = vec![99];
            assert!(select_text(col, |n| n == "purchase", &mut out));
            out
        };
        // Keys without nulls (the branch-free path), with nulls, plain strings.
        let keys = Int32Array::from(vec![0, 1, 1, 2, 3, 0, 3]);
        let dict = DictionaryArray::new(keys, names.clone());
        assert_eq!(pick(&dict), [1, 2, 4, 6]);
        let keys = Int32Array::from(vec![Some(1), None, Some(0), Some(3), None]);
        let dict = DictionaryArray::new(keys, names.clone());
        assert_eq!(pick(&dict), [0, 3]);
        let plain = StringArray::from(vec![None, Some("purchase"), Some("view"), Some("purchase")]);
        assert_eq!(pick(&plain), [1, 3]);
        assert_eq!(
            pick(&StringArray::from(Vec::<&str>::new())),
            Vec::<u32>::new()
        );
        let mut out = Vec::new();
        assert!(!select_text(&Int32Array::from(vec![1]), |_| true, &mut out));
    }
}
