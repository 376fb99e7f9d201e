//! The users dictionary: `user_id` -> dense `user_key` (0, 1, 2, ...).
//!
//! Dense keys let every per-user pass downstream index plain arrays instead of
//! hashing strings. The dictionary is stored as Parquet segments listed in the
//! manifest; each commit that meets new users adds one segment with their keys.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::IngestError;

/// In-memory dictionary: the committed users plus those met in this transaction.
///
/// Compact, since it holds every user of the store: the ids back to back in one
/// buffer, where each ends, and a hash table of keys (4 bytes a bucket) that
/// compares against the buffer. About 8 bytes plus the id's length a user,
/// rather than two heap strings and a map entry.
#[derive(Default)]
pub struct UserDict {
    /// Every id, in key order.
    bytes: Vec<u8>,
    /// `ends[k]`: where id `k` ends in `bytes` (it starts where `k - 1` ends).
    ends: Vec<usize>,
    table: HashTable<u32>,
    hasher: FixedState,
    /// Users committed before this transaction: keys `0..base`.
    base: u32,
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
        let mut pairs: Vec<(u32, StringArray)> = Vec::new();
        let mut bytes = 0;
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
                if batch.num_rows() == 0 {
                    continue;
                }
                // Segments hold consecutive keys; check it rather than trust it.
                let first = keys.values().first().copied().unwrap_or(0);
                if keys
                    .values()
                    .iter()
                    .enumerate()
                    .any(|(i, &k)| k as usize != first as usize + i)
                {
                    return Err(corrupt("users segment keys are not consecutive".into()));
                }
                bytes += ids.value_data().len();
                pairs.push((first, ids.clone()));
            }
        }
        pairs.sort_by_key(|(first, _)| *first);
        let mut dict = Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(expected as usize),
            table: HashTable::with_capacity(expected as usize),
            ..Self::default()
        };
        for (first, ids) in &pairs {
            if *first as usize != dict.ends.len() {
                return Err(corrupt(format!(
                    "users dictionary: a segment starts at key {first}, expected {}",
                    dict.ends.len()
                )));
            }
            for id in ids.iter().flatten() {
                if dict.get(id).is_some() {
                    return Err(corrupt(format!("users dictionary holds {id:?} twice")));
                }
                dict.push(id);
            }
        }
        if dict.ends.len() as u64 != expected {
            return Err(corrupt(format!(
                "users dictionary has {} users, the manifest says {expected}",
                dict.ends.len()
            )));
        }
        dict.base = expected as u32;
        Ok(dict)
    }

    fn id_bytes(&self, k: u32) -> &[u8] {
        id_in(&self.bytes, &self.ends, k)
    }

    fn id(&self, k: u32) -> &str {
        // Only whole `&str`s are appended, so every id is valid UTF-8.
        std::str::from_utf8(self.id_bytes(k)).expect("ids are UTF-8")
    }

    /// Appends `user_id` under the next key.
    fn push(&mut self, user_id: &str) -> u32 {
        let k = self.ends.len() as u32;
        self.bytes.extend_from_slice(user_id.as_bytes());
        self.ends.push(self.bytes.len());
        let hash = self.hasher.hash_one(user_id.as_bytes());
        let Self {
            table,
            bytes,
            ends,
            hasher,
            ..
        } = self;
        // Growing the table rehashes keys: borrow the ids apart from it.
        table.insert_unique(hash, k, |&k| hasher.hash_one(id_in(bytes, ends, k)));
        k
    }

    /// Key of `user_id`, assigning the next free one to a new user.
    pub fn key(&mut self, user_id: &str) -> u32 {
        match self.get(user_id) {
            Some(k) => k,
            None => self.push(user_id),
        }
    }

    /// Existing key of `user_id`, if any.
    pub fn get(&self, user_id: &str) -> Option<u32> {
        // Bytes, not `str`: comparing needs no UTF-8 check.
        let hash = self.hasher.hash_one(user_id.as_bytes());
        self.table
            .find(hash, |&k| self.id_bytes(k) == user_id.as_bytes())
            .copied()
    }

    /// Users committed before this transaction.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Users added by this transaction, in key order from [`Self::base`].
    pub fn added(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        (self.base..self.ends.len() as u32).map(|k| self.id(k))
    }

    /// Total users.
    pub fn len(&self) -> u64 {
        self.ends.len() as u64
    }

    /// No users at all?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes of id `k`, given every id back to back and where each ends.
fn id_in<'a>(bytes: &'a [u8], ends: &[usize], k: u32) -> &'a [u8] {
    let k = k as usize;
    let from = if k == 0 { 0 } else { ends[k - 1] };
    &bytes[from..ends[k]]
}

fn corrupt(message: String) -> IngestError {
    IngestError::Corrupt {
        url: String::new(),
        message,
    }
}

/// Encodes users `(first_key.., ids)` as a segment file.
pub fn encode_segment<'a>(
    first_key: u32,
    ids: impl ExactSizeIterator<Item = &'a str>,
) -> Result<Vec<u8>, IngestError> {
    let keys = UInt32Array::from_iter_values((0..ids.len() as u32).map(|i| first_key + i));
    let ids = StringArray::from_iter_values(ids);
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
        let mut d2 = UserDict::from_segments(&[Bytes::from(seg.clone())], 2).unwrap();
        assert_eq!(d2.key("b"), 1);
        assert_eq!(d2.key("c"), 2);
        assert_eq!(d2.added().collect::<Vec<_>>(), ["c"]);
        assert!(UserDict::from_segments(&[], 3).is_err());
        // A second segment continues the keys, in whichever order they are listed.
        let seg2 = encode_segment(2, d2.added()).unwrap();
        let d3 = UserDict::from_segments(&[Bytes::from(seg2.clone()), Bytes::from(seg.clone())], 3)
            .unwrap();
        assert_eq!(
            ["a", "b", "c", "d"].map(|id| d3.get(id)),
            [Some(0), Some(1), Some(2), None]
        );
        // The same segment twice is a corrupt store, not a silent overwrite.
        let twice = UserDict::from_segments(&[Bytes::from(seg.clone()), Bytes::from(seg)], 4);
        assert!(twice.is_err());
    }

    #[test]
    fn many_users_keep_their_keys() {
        let mut d = UserDict::default();
        let ids: Vec<String> = (0..50_000)
            .map(|i| format!("user-{}", i * 7919 % 100_003))
            .collect();
        let keys: Vec<u32> = ids.iter().map(|id| d.key(id)).collect();
        let mut first = std::collections::HashMap::new();
        for (id, &k) in ids.iter().zip(&keys) {
            assert_eq!(*first.entry(id.clone()).or_insert(k), k);
        }
        assert_eq!(d.len() as usize, first.len());
        assert!(
            ids.iter()
                .zip(&keys)
                .all(|(id, &k)| d.get(id) == Some(k) && d.id(k) == id)
        );
        assert_eq!(d.get("user-100003"), None);
    }
}
