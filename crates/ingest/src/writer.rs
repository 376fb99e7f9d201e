//! The background file writer: sorts, encodes and stages partition batches while
//! the decoding thread keeps reading. A bounded channel keeps memory flat.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow_array::RecordBatch;
use parquet::file::properties::WriterProperties;
use tenure_schema::{FileEntry, StoreLayout};

use crate::IngestError;
use crate::io::Io;
use crate::parquet_out::{encode, sort_batch, ts_range};

/// A batch of one partition to be written as one file.
pub struct Job {
    /// Partition date, `YYYY-MM-DD`.
    pub date: String,
    /// File name inside the partition.
    pub name: String,
    /// The rows, unsorted.
    pub batch: RecordBatch,
}

/// Handle to the writer thread.
pub struct Writer {
    tx: Option<SyncSender<Job>>,
    handle: Option<JoinHandle<Result<Vec<FileEntry>, IngestError>>>,
}

impl Writer {
    /// Starts a writer staging files of transaction `txn`.
    pub fn start(io: Io, txn: String, props: WriterProperties) -> Self {
        let (tx, rx) = sync_channel::<Job>(1);
        let handle = std::thread::Builder::new()
            .name("tenure-writer".into())
            .spawn(move || run(io, txn, props, rx))
            .expect("spawn writer thread");
        Self {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Queues a batch; blocks while the writer is busy. Fails if the writer
    /// stopped on an error (which [`Self::finish`] then returns).
    pub fn send(&mut self, job: Job) -> Result<(), IngestError> {
        let tx = self.tx.as_ref().expect("writer already finished");
        if tx.send(job).is_err() {
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
        match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(IngestError::BadInput("writer thread panicked".into()))),
            None => Ok(Vec::new()),
        }
    }
}

fn run(
    io: Io,
    txn: String,
    props: WriterProperties,
    rx: Receiver<Job>,
) -> Result<Vec<FileEntry>, IngestError> {
    let mut files = Vec::new();
    for job in rx {
        let sorted = sort_batch(&job.batch)?;
        drop(job.batch);
        let (min_ts, max_ts) = ts_range(&sorted);
        let bytes = encode(&sorted, props.clone())?;
        let staged = StoreLayout::staged_file(&txn, &job.date, &job.name);
        let size = bytes.len() as u64;
        io.put(&staged, bytes)?;
        files.push(FileEntry {
            path: StoreLayout::event_file(&job.date, &job.name),
            staged,
            date: job.date,
            rows: sorted.num_rows() as u64,
            bytes: size,
            min_ts,
            max_ts,
            txn: txn.clone(),
        });
    }
    Ok(files)
}
