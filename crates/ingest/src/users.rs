//! The users dictionary: `user_id` -> dense `user_key` (0, 1, 2, ...).
//!
//! Dense keys let every per-user pass downstream index plain arrays instead of
//! hashing strings. The dictionary is stored as Parquet segments listed in the
//! manifest; each commit that meets new users adds one segment with their keys.

use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::IngestError;

/// In-memory dictionary: the committed users plus those met in this transaction.
#[derive(Default)]
pub struct UserDict {
    map: HashMap<Box<str>, u32, FixedState>,
    /// Users committed before this transaction: keys `0..base`.
    base: u32,
    /// Users added by this transaction, in key order (`base..`).
    added: Vec<Box<str>>,
}

/// Schema of a users segment file.
pub fn segment_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_key", DataType::UInt32, false),
        Field::new("user_id", DataType::Utf8, false),
    ]))
}

impl UserDict {
    /// Loads committed segments (their contents) into a dictionary.
    pub fn from_segments(segments: &[Bytes], expected: u64) -> Result<Self, IngestError> {
        let mut map: HashMap<Box<str>, u32, FixedState> =
            HashMap::with_capacity_and_hasher(expected as usize, FixedState::default());
        for data in segments {
            for batch in ParquetRecordBatchReaderBuilder::try_new(data.clone())?.build()? {
                let batch = batch?;
                let keys = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<UInt32Array>()
                    .ok_or_else(|| {
                        IngestError::BadInput("users segment: bad user_key column".into())
                    })?;
                let ids = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| {
                        IngestError::BadInput("users segment: bad user_id column".into())
                    })?;
                for i in 0..batch.num_rows() {
                    map.insert(ids.value(i).into(), keys.value(i));
                }
            }
        }
        if map.len() as u64 != expected {
            return Err(IngestError::Corrupt {
                url: String::new(),
                message: format!(
                    "users dictionary has {} users, the manifest says {expected}",
                    map.len()
                ),
            });
        }
        Ok(Self {
            map,
            base: expected as u32,
            added: Vec::new(),
        })
    }

    /// Key of `user_id`, assigning the next free one to a new user.
    pub fn key(&mut self, user_id: &str) -> u32 {
        if let Some(&k) = self.map.get(user_id) {
            return k;
        }
        let k = self.base + self.added.len() as u32;
        let boxed: Box<str> = user_id.into();
        self.added.push(boxed.clone());
        self.map.insert(boxed, k);
        k
    }

    /// Existing key of `user_id`, if any.
    pub fn get(&self, user_id: &str) -> Option<u32> {
        self.map.get(user_id).copied()
    }

    /// Users committed before this transaction.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Users added by this transaction, in key order from [`Self::base`].
    pub fn added(&self) -> &[Box<str>] {
        &self.added
    }

    /// Total users.
    pub fn len(&self) -> u64 {
        self.base as u64 + self.added.len() as u64
    }

    /// No users at all?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes users `(first_key.., ids)` as a segment file.
pub fn encode_segment(first_key: u32, ids: &[Box<str>]) -> Result<Vec<u8>, IngestError> {
    let keys = UInt32Array::from_iter_values((0..ids.len() as u32).map(|i| first_key + i));
    let ids = StringArray::from_iter_values(ids.iter().map(|s| &**s));
    let batch = RecordBatch::try_new(segment_schema(), vec![Arc::new(keys), Arc::new(ids)])?;
    let mut out = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

/// Decodes a segment into `(key, id)` pairs.
pub fn decode_segment(data: Bytes) -> Result<Vec<(u32, String)>, IngestError> {
    let mut out = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(data)?.build()? {
        let batch = batch?;
        let keys = batch.column(0).as_any().downcast_ref::<UInt32Array>();
        let ids = batch.column(1).as_any().downcast_ref::<StringArray>();
        let (Some(keys), Some(ids)) = (keys, ids) else {
            return Err(IngestError::BadInput(
                "users segment has unexpected columns".into(),
            ));
        };
        for i in 0..keys.len() {
            out.push((keys.value(i), ids.value(i).to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dense_and_stable_across_segments() {
        let mut d = UserDict::default();
        assert_eq!(d.key("a"), 0);
        assert_eq!(d.key("b"), 1);
        assert_eq!(d.key("a"), 0);
        let seg = encode_segment(0, d.added()).unwrap();
        let mut d2 = UserDict::from_segments(&[Bytes::from(seg)], 2).unwrap();
        assert_eq!(d2.key("b"), 1);
        assert_eq!(d2.key("c"), 2);
        assert_eq!(d2.added().len(), 1);
        assert!(UserDict::from_segments(&[], 3).is_err());
    }
}
