//! Writing event files: one tested `WriterProperties` factory, sorting, encoding.

use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampMicrosecondType, UInt32Type};
use arrow_array::{Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow_schema::Schema;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tenure_schema::{IngestConfig, columns};

use crate::IngestError;

/// Properties of every events file: zstd, capped row groups, page statistics,
/// the sort order recorded, and no dictionary for the unique `event_id`.
pub fn writer_properties(cfg: &IngestConfig, schema: &Schema) -> WriterProperties {
    let idx = |name: &str| schema.index_of(name).expect("event schema column") as i32;
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(cfg.zstd_level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(cfg.row_group_bytes.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: idx(columns::USER_KEY),
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: idx(columns::TS),
                descending: false,
                nulls_first: false,
            },
        ]))
        .set_column_dictionary_enabled(ColumnPath::from(columns::EVENT_ID), false)
        // Within a user's run `ts` only grows: delta encoding stores small
        // deltas, which decode far faster than zstd-compressed plain values.
        .set_column_dictionary_enabled(ColumnPath::from(columns::TS), false)
        .set_column_encoding(ColumnPath::from(columns::TS), Encoding::DELTA_BINARY_PACKED)
        // Rows are sorted by `user_key`: its deltas are mostly 0 and 1.
        .set_column_dictionary_enabled(ColumnPath::from(columns::USER_KEY), false)
        .set_column_encoding(
            ColumnPath::from(columns::USER_KEY),
            Encoding::DELTA_BINARY_PACKED,
        )
        .set_created_by(format!("tenure {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The distinct event names of a batch, sorted: recorded per file in the
/// manifest.
pub fn event_names(batch: &RecordBatch) -> Result<Vec<String>, IngestError> {
    let Some(column) = batch.column_by_name(columns::EVENT) else {
        return Ok(Vec::new());
    };
    let text = arrow_cast::cast(column, &arrow_schema::DataType::Utf8)?;
    let mut names = std::collections::BTreeSet::new();
    let mut last = None;
    for name in text.as_string::<i32>().iter().flatten() {
        if last != Some(name) {
            names.insert(name);
            last = Some(name);
        }
    }
    Ok(names.into_iter().map(String::from).collect())
}

/// Sorts a batch by `(user_key, ts)`, the order per-user passes read in.
pub fn sort_batch(batch: &RecordBatch) -> Result<RecordBatch, IngestError> {
    sort_batches(std::slice::from_ref(batch))
}

/// Merges batches of one schema into one batch sorted by `(user_key, ts)`;
/// rows that tie keep their order (batch by batch, row by row).
pub fn sort_batches(batches: &[RecordBatch]) -> Result<RecordBatch, IngestError> {
    let Some(first) = batches.first() else {
        return Err(IngestError::BadInput("nothing to sort".into()));
    };
    let schema = first.schema();
    let key_idx = schema.index_of(columns::USER_KEY)?;
    let ts_idx = schema.index_of(columns::TS)?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut order: Vec<(u32, i64, u32, u32)> = Vec::with_capacity(rows);
    for (b, batch) in batches.iter().enumerate() {
        let keys = batch.column(key_idx).as_primitive::<UInt32Type>();
        let ts = batch
            .column(ts_idx)
            .as_primitive::<TimestampMicrosecondType>();
        if keys.null_count() > 0 || ts.null_count() > 0 {
            return Err(IngestError::BadInput(
                "null user_key or ts in an events batch".into(),
            ));
        }
        order.extend(
            keys.values()
                .iter()
                .zip(ts.values().iter())
                .enumerate()
                .map(|(r, (&k, &t))| (k, t, b as u32, r as u32)),
        );
    }
    order.sort_unstable();
    if batches.len() == 1 {
        let indices = UInt32Array::from_iter_values(order.iter().map(|o| o.3));
        return Ok(arrow_select::take::take_record_batch(first, &indices)?);
    }
    let indices: Vec<(usize, usize)> = order.iter().map(|o| (o.2 as usize, o.3 as usize)).collect();
    drop(order);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    Ok(arrow_select::interleave::interleave_record_batch(
        &refs, &indices,
    )?)
}

/// Min and max `ts` of a batch.
pub fn ts_range(batch: &RecordBatch) -> (i64, i64) {
    let ts = batch.column_by_name(columns::TS).and_then(|c| {
        c.as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .cloned()
    });
    match ts {
        Some(ts) if !ts.is_empty() => (
            arrow_arith::aggregate::min(&ts).unwrap_or(0),
            arrow_arith::aggregate::max(&ts).unwrap_or(0),
        ),
        _ => (0, 0),
    }
}

/// The batch with [`tenure_schema::DICTIONARY_COLUMNS`] cast to dictionaries,
/// as they are stored (a no-op for batches read back from the store).
pub fn to_stored(batch: &RecordBatch) -> Result<RecordBatch, IngestError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut cols = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if tenure_schema::DICTIONARY_COLUMNS.contains(&f.name().as_str())
            && !matches!(f.data_type(), arrow_schema::DataType::Dictionary(..))
        {
            let ty = tenure_schema::dictionary_type();
            cols.push(arrow_cast::cast(c, &ty)?);
            fields.push(arrow_schema::Field::new(f.name(), ty, f.is_nullable()));
        } else {
            cols.push(c.clone());
            fields.push(f.as_ref().clone());
        }
    }
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        cols,
    )?)
}

/// Reads an events file back as batches of the stored schema. Files written
/// before `event`/`variant` were stored as dictionaries come back as strings;
/// they are cast so every file reads as one type.
pub fn decode_stored(data: bytes::Bytes) -> Result<Vec<RecordBatch>, IngestError> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)?
        .build()?
        .map(|b| to_stored(&b?))
        .collect()
}

/// Encodes a sorted batch as one Parquet file in memory. Files are bounded by
/// `file_rows`, so a single PUT of the finished bytes is both simple and atomic:
/// no multipart upload can be left half-done by a crash.
pub fn encode(batch: &RecordBatch, props: WriterProperties) -> Result<Vec<u8>, IngestError> {
    let batch = &to_stored(batch)?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(out)
}
