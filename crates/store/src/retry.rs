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
/// object_store's retries) are final, and so is a store that cannot be
/// reached at all (object_store has spent its whole retry budget on it).
///
/// With [`crate::RETRY`], an operation therefore gives up within about
/// `(OPERATION_RETRIES + 1) x (retry_timeout + one attempt)` in the worst case
/// (a store that keeps cutting connections), and within seconds when the
/// faults are occasional.
pub fn is_transport_error(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    if !matches!(e, object_store::Error::Generic { .. }) {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(http) = err.downcast_ref::<HttpError>() {
            return !matches!(http.kind(), HttpErrorKind::Connect);
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
