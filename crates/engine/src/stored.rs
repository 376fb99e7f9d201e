//! A stored Parquet file read through the object store with its size known
//! from the manifest: the reader under [`crate::fold::KeyScanExec`], the leaf
//! of every fold plan (one read of the file's tail gets the footer).

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// A stored file of known size, read through the object store, or on a
/// local disk straight from the file.
pub(crate) struct StoreFile {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: object_store::path::Path,
    pub(crate) size: u64,
    /// Where the file is on local disk (a local store), read with `pread` on
    /// the calling thread: the object store's local reads each go through a
    /// blocking-pool task (a thread hand-off per column chunk), which cost a
    /// fifth of a purchases-only scan. Files are immutable once committed,
    /// and an open file stays readable if a compaction retires it; a file
    /// not at its path any more is read through the object store, which
    /// looks for it where it went.
    local: Option<std::path::PathBuf>,
    file: Option<std::fs::File>,
    /// Bytes read, if counted.
    read: Option<datafusion::physical_plan::metrics::Count>,
}

impl StoreFile {
    /// The stored file `part` of `store`, whose files are under `local_dir`
    /// when it is on local disk.
    pub(crate) fn new(
        store: &Arc<dyn ObjectStore>,
        part: &crate::table::Part,
        local_dir: Option<&std::path::Path>,
    ) -> Self {
        Self {
            store: store.clone(),
            path: part.path.clone(),
            size: part.size,
            local: local_dir.map(|d| d.join(part.path.as_ref())),
            file: None,
            read: None,
        }
    }

    /// Counting the bytes it reads into `read`.
    pub(crate) fn counting(mut self, read: datafusion::physical_plan::metrics::Count) -> Self {
        self.read = Some(read);
        self
    }

    fn count(&self, got: &[bytes::Bytes]) {
        if let Some(c) = &self.read {
            c.add(got.iter().map(|b| b.len()).sum());
        }
    }

    /// `ranges` read from the local file; `None` when there is none (not a
    /// local store, or the file moved).
    fn read_local(
        &mut self,
        ranges: &[std::ops::Range<u64>],
    ) -> parquet::errors::Result<Option<Vec<bytes::Bytes>>> {
        #[cfg(unix)]
        {
            let Some(path) = &self.local else {
                return Ok(None);
            };
            if self.file.is_none() {
                match std::fs::File::open(path) {
                    Ok(f) => self.file = Some(f),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        self.local = None;
                        return Ok(None);
                    }
                    Err(e) => return Err(parquet::errors::ParquetError::External(Box::new(e))),
                }
            }
            use std::io::{Read, Seek};
            let mut file = self.file.as_ref().expect("opened");
            let io = |e| parquet::errors::ParquetError::External(Box::new(e));
            // Read into spare capacity: a zeroed buffer would be written
            // twice (a memset of every byte read, as much as the reading).
            let read = |r: &std::ops::Range<u64>| {
                let len = (r.end - r.start) as usize;
                let mut buf = Vec::with_capacity(len);
                file.seek(std::io::SeekFrom::Start(r.start)).map_err(io)?;
                Read::by_ref(&mut file)
                    .take(len as u64)
                    .read_to_end(&mut buf)
                    .map_err(io)?;
                if buf.len() != len {
                    return Err(io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
                }
                Ok(bytes::Bytes::from(buf))
            };
            Ok(Some(
                ranges
                    .iter()
                    .map(read)
                    .collect::<parquet::errors::Result<_>>()?,
            ))
        }
        #[cfg(not(unix))]
        {
            let _ = ranges;
            Ok(None)
        }
    }
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
            if let Some(mut got) = self.read_local(std::slice::from_ref(&range))? {
                self.count(&got);
                return Ok(got.pop().unwrap_or_default());
            }
            let mut got = self
                .store
                .get_ranges(&self.path, &[range])
                .await
                .map_err(parquet_error)?;
            self.count(&got);
            Ok(got.pop().unwrap_or_default())
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            if let Some(got) = self.read_local(&ranges)? {
                self.count(&got);
                return Ok(got);
            }
            let got = self
                .store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)?;
            self.count(&got);
            Ok(got)
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

/// The footer and page index of a stored file (one read of its tail, then
/// the page index).
pub(crate) async fn read_footer(
    store: &Arc<dyn ObjectStore>,
    part: &crate::table::Part,
    local_dir: Option<&std::path::Path>,
) -> parquet::errors::Result<parquet::arrow::arrow_reader::ArrowReaderMetadata> {
    let mut reader = StoreFile::new(store, part, local_dir);
    let options = ArrowReaderOptions::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
    parquet::arrow::arrow_reader::ArrowReaderMetadata::load_async(&mut reader, options).await
}
