//! Retrying whole operations after transport failures that object_store's own
//! retries do not cover.
//!
//! object_store retries a request until its answer's head arrives; a failure
//! while reading the answer's body (a list, a `get`'s bytes, a DeleteObjects
//! answer) or a reset after an unanswered request surfaces at once. For
//! idempotent operations (reads, lists, plain puts, deletes, copies) the whole
//! operation is safe to run again, so Tenure does, a few times.

use std::time::Duration;

/// Extra runs of a whole operation after a transport failure.
pub const OPERATION_RETRIES: u32 = 3;

/// True when `e` is a transport failure (connection closed or reset, body cut
/// short, timeout) rather than an answer of the store: running the operation
/// again may succeed. Answers (not found, already exists, 4xx, 5xx after
/// object_store's retries) are final.
pub fn is_transport_error(e: &object_store::Error) -> bool {
    if !matches!(e, object_store::Error::Generic { .. }) {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<object_store::client::HttpError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Runs an idempotent operation, again after a transport failure (at most
/// [`OPERATION_RETRIES`] more times, backing off from 100 ms).
pub async fn idempotent<T, F, Fut>(mut op: F) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, object_store::Error>>,
{
    let mut retries = 0;
    loop {
        match op().await {
            Err(e) if retries < OPERATION_RETRIES && is_transport_error(&e) => {
                tokio::time::sleep(Duration::from_millis(100 << retries)).await;
                retries += 1;
            }
            result => return result,
        }
    }
}
