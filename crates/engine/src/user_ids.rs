//! The users dictionary read in key order, a row group at a time: the ids of
//! ascending user keys without holding every user's id (a listing of a
//! segment's users at 10M users held the whole dictionary in a hash join).

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray, UInt32Array};
use datafusion::arrow::datatypes::DataType;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};
use parquet::file::statistics::Statistics;

use crate::stored::StoreFile;
use crate::table::{Events, Part};
use crate::{EngineError, Result};

/// Reads user ids for ascending keys (see [`UserIds::of`]).
pub struct UserIds {
    /// Segments not yet read, by first key.
    segments: VecDeque<(u32, Part)>,
    store: Arc<dyn object_store::ObjectStore>,
    local_dir: Option<std::path::PathBuf>,
    stream: Option<ParquetRecordBatchStream<StoreFile>>,
    /// The ids of keys `first..first + ids.len()` read last.
    current: Option<(u32, StringArray)>,
    /// Merged persons read under virtual keys, and a second reader for
    /// their persons' ids (virtual keys ascend with their persons' keys).
    identity: Option<Arc<crate::identity::Identity>>,
    persons: Option<Box<UserIds>>,
}

impl UserIds {
    /// The dictionary of `events`' snapshot; each segment's first key comes
    /// from its footer's statistics (segments hold consecutive keys).
    pub async fn open(events: &Events) -> Result<Self> {
        let store = events.store.inner.clone();
        let local_dir = events.store.local_dir.clone();
        let mut segments = Vec::new();
        for s in &events.snapshot.users.segments {
            let path = events.store.path(s);
            let size = store
                .head(&path)
                .await
                .map_err(tenure_store::StoreError::from)?
                .size;
            let part = Part {
                path: path.clone(),
                size,
                min_ts: 0,
                event_names: None,
            };
            let reader = StoreFile::new(&store, &part, local_dir.as_deref());
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| unreadable(&part, e))?;
            let first = builder
                .metadata()
                .row_groups()
                .iter()
                .filter(|g| g.num_rows() > 0)
                .map(|g| match g.column(0).statistics() {
                    Some(Statistics::Int32(s)) => s.min_opt().map(|&v| v as u32),
                    _ => None,
                })
                .next();
            match first {
                // An empty segment adds nobody.
                None if builder.metadata().file_metadata().num_rows() == 0 => {}
                Some(Some(first)) => segments.push((first, part)),
                _ => {
                    return Err(EngineError::Unreadable(format!(
                        "users segment {s} has no user_key statistics"
                    )));
                }
            }
        }
        segments.sort_by_key(|(first, _)| *first);
        let persons = events.identity.as_ref().map(|_| {
            Box::new(Self {
                segments: segments.clone().into(),
                store: store.clone(),
                local_dir: local_dir.clone(),
                stream: None,
                current: None,
                identity: None,
                persons: None,
            })
        });
        Ok(Self {
            segments: segments.into(),
            store,
            local_dir,
            stream: None,
            current: None,
            identity: events.identity.clone(),
            persons,
        })
    }

    /// The ids of `keys`, which must ascend and not precede the keys of the
    /// previous call.
    pub async fn of(&mut self, keys: &UInt32Array) -> Result<StringArray> {
        if keys.is_empty() {
            return Ok(StringArray::new_null(0));
        }
        if let (Some(id), Some(persons)) = (&self.identity, self.persons.as_mut()) {
            let cut = keys.values().partition_point(|&k| k < id.base);
            if cut < keys.len() {
                // A merged person's id is its person's (the name's) id.
                let theirs = UInt32Array::from_iter_values(
                    keys.values()[cut..].iter().map(|&k| id.dictionary_key(k)),
                );
                let theirs = Box::pin(persons.of(&theirs)).await?;
                if cut == 0 {
                    return Ok(theirs);
                }
                let mine = Box::pin(self.of(&keys.slice(0, cut))).await?;
                let all = datafusion::arrow::compute::concat(&[&mine, &theirs])?;
                return Ok(all.as_string::<i32>().clone());
            }
        }
        let mut taken: Vec<StringArray> = Vec::new();
        let values = keys.values();
        let mut at = 0;
        while at < values.len() {
            let k = values[at];
            let (first, ids) = loop {
                match &self.current {
                    Some((first, ids)) if k >= *first && ((k - first) as usize) < ids.len() => {
                        break (*first, ids.clone());
                    }
                    Some((first, _)) if k < *first => {
                        return Err(EngineError::Internal(format!(
                            "user ids asked for key {k} after key {first}"
                        )));
                    }
                    _ => {
                        if !self.advance().await? {
                            return Err(EngineError::Unreadable(format!(
                                "user key {k} is not in the users dictionary"
                            )));
                        }
                    }
                }
            };
            // The keys of this run that the batch holds.
            let end = first as u64 + ids.len() as u64;
            let n = values[at..].partition_point(|&v| (v as u64) < end);
            let indices =
                UInt32Array::from_iter_values(values[at..at + n].iter().map(|&v| v - first));
            let got = datafusion::arrow::compute::take(&ids, &indices, None)?;
            taken.push(got.as_string::<i32>().clone());
            at += n;
        }
        if taken.len() == 1 {
            return Ok(taken.pop().expect("one"));
        }
        let refs: Vec<&dyn Array> = taken.iter().map(|a| a as &dyn Array).collect();
        let all = datafusion::arrow::compute::concat(&refs)?;
        Ok(all.as_string::<i32>().clone())
    }

    /// Reads the next batch of ids into `current`; false at the end.
    async fn advance(&mut self) -> Result<bool> {
        loop {
            if let Some(stream) = &mut self.stream {
                if let Some(batch) = stream.next().await {
                    let batch = batch
                        .map_err(|e| EngineError::Unreadable(format!("users dictionary: {e}")))?;
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    let keys = batch
                        .column(0)
                        .as_primitive_opt::<datafusion::arrow::datatypes::UInt32Type>()
                        .ok_or_else(|| {
                            EngineError::Unreadable("users segment: bad user_key column".into())
                        })?;
                    let first = keys.value(0);
                    // Segments hold consecutive keys; check it rather than trust it.
                    if keys
                        .values()
                        .iter()
                        .enumerate()
                        .any(|(i, &k)| k as u64 != first as u64 + i as u64)
                    {
                        return Err(EngineError::Unreadable(
                            "users segment keys are not consecutive".into(),
                        ));
                    }
                    let ids = match batch.column(1).data_type() {
                        DataType::Utf8 => batch.column(1).clone(),
                        _ => datafusion::arrow::compute::cast(batch.column(1), &DataType::Utf8)?,
                    };
                    self.current = Some((first, ids.as_string::<i32>().clone()));
                    return Ok(true);
                }
                self.stream = None;
            }
            let Some((_, part)) = self.segments.pop_front() else {
                return Ok(false);
            };
            let reader = StoreFile::new(&self.store, &part, self.local_dir.as_deref());
            self.stream = Some(
                ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .and_then(|b| b.with_batch_size(8 * 1024).build())
                    .map_err(|e| unreadable(&part, e))?,
            );
        }
    }
}

fn unreadable(part: &Part, e: parquet::errors::ParquetError) -> EngineError {
    EngineError::Unreadable(format!("users segment {}: {e}", part.path))
}
