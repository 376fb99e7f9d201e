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

/// The footer and page index of a stored file (one read of its tail, then
/// the page index).
pub(crate) async fn read_footer(
    store: &Arc<dyn ObjectStore>,
    part: &crate::table::Part,
) -> parquet::errors::Result<parquet::arrow::arrow_reader::ArrowReaderMetadata> {
    let mut reader = StoreFile {
        store: store.clone(),
        path: part.path.clone(),
        size: part.size,
    };
    let options = ArrowReaderOptions::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
    parquet::arrow::arrow_reader::ArrowReaderMetadata::load_async(&mut reader, options).await
}
