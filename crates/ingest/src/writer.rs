//! The background file writers: sort, encode and stage partition batches while
//! decoding goes on. A bounded channel keeps memory flat; two threads encode two
//! files at once, so encoding keeps up with parallel decoding.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow_array::RecordBatch;
use parquet::file::properties::WriterProperties;
use tenure_schema::{FileEntry, StoreLayout};

use crate::IngestError;
use crate::ids;
use crate::io::Io;
use crate::parquet_out::{encode, sort_batches, ts_range};

/// A batch of one partition to be written as one file.
pub struct Job {
    /// Partition date, `YYYY-MM-DD`.
    pub date: String,
    /// File name inside the partition.
    pub name: String,
    /// The rows, unsorted, in one or more batches.
    pub batches: Vec<RecordBatch>,
}

/// Writer threads.
const THREADS: usize = 2;

/// Handle to the writer threads.
pub struct Writer {
    tx: Option<SyncSender<Job>>,
    handles: Vec<JoinHandle<Result<Vec<FileEntry>, IngestError>>>,
    /// Set by a writer that stopped on an error.
    failed: Arc<AtomicBool>,
}

impl Writer {
    /// Starts writers staging files of transaction `txn`.
    pub fn start(io: Io, txn: String, props: WriterProperties) -> Self {
        let (tx, rx) = sync_channel::<Job>(1);
        let rx = Arc::new(Mutex::new(rx));
        let failed = Arc::new(AtomicBool::new(false));
        let handles = (0..THREADS)
            .map(|i| {
                let (io, txn, props, rx) = (io.clone(), txn.clone(), props.clone(), rx.clone());
                let failed = failed.clone();
                std::thread::Builder::new()
                    .name(format!("tenure-writer-{i}"))
                    .spawn(move || {
                        let r = run(io, txn, props, &rx);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                    .expect("spawn writer thread")
            })
            .collect();
        Self {
            tx: Some(tx),
            handles,
            failed,
        }
    }

    /// Queues a batch; blocks while the writer is busy. Fails if the writer
    /// stopped on an error (which [`Self::finish`] then returns).
    pub fn send(&mut self, job: Job) -> Result<(), IngestError> {
        let tx = self.tx.as_ref().expect("writer already finished");
        if self.failed.load(Ordering::Relaxed) || tx.send(job).is_err() {
            return Err(self
                .finish()
                .err()
                .unwrap_or_else(|| IngestError::BadInput("writer thread stopped".into())));
        }
        Ok(())
    }

    /// Waits for every queued file and returns their entries.
    pub fn finish(&mut self) -> Result<Vec<FileEntry>, IngestError> {
        self.tx.take();
        let mut files = Vec::new();
        let mut error = None;
        for h in self.handles.drain(..) {
            match h
                .join()
                .unwrap_or_else(|_| Err(IngestError::BadInput("writer thread panicked".into())))
            {
                Ok(f) => files.extend(f),
                Err(e) => error = error.or(Some(e)),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(files),
        }
    }
}

fn run(
    io: Io,
    txn: String,
    props: WriterProperties,
    rx: &Mutex<Receiver<Job>>,
) -> Result<Vec<FileEntry>, IngestError> {
    let mut files = Vec::new();
    loop {
        // The lock is held only while waiting for the next job.
        let Ok(job) = rx
            .lock()
            .map_err(|_| ())
            .and_then(|r| r.recv().map_err(drop))
        else {
            break;
        };
        let sorted = sort_batches(&job.batches)?;
        drop(job.batches);
        let (min_ts, max_ts) = ts_range(&sorted);
        let bytes = encode(&sorted, props.clone())?;
        let staged = StoreLayout::staged_file(&txn, &job.date, &job.name);
        let size = bytes.len() as u64;
        io.put(&staged, bytes)?;
        io.put(
            &ids::staged_ids_path(&staged),
            ids::encode(ids::hash_ids(&sorted)?),
        )?;
        files.push(FileEntry {
            path: StoreLayout::event_file(&job.date, &job.name),
            staged,
            date: job.date,
            rows: sorted.num_rows() as u64,
            bytes: size,
            min_ts,
            max_ts,
            txn: txn.clone(),
            events: Some(crate::parquet_out::event_names(&sorted)?),
            identity: 0,
        });
    }
    Ok(files)
}
