//! Redis plumbing shared by the dedupe store and the queue: a connection
//! that connects on first use, commands batched across deliveries, and
//! deadlines on every call.
//!
//! [`RedisStore`](crate::dedupe::RedisStore) lives here (re-exported from
//! [`dedupe`](crate::dedupe)); the queue builds on the same pieces.

mod batch;
mod store;

use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub(crate) use batch::Batched;
pub use store::{DEFAULT_KEY_PREFIX, DEFAULT_OPERATION_TIMEOUT, RedisStore};

use crate::dedupe::StoreError;

/// A multiplexed connection that connects on first use and reconnects by
/// itself. It has no response timeout of its own: every caller bounds each
/// operation by its `operation_timeout`, whatever that is set to. Shared by
/// the store and the queue.
pub(crate) fn lazy_connection(client: ::redis::Client) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(DEFAULT_OPERATION_TIMEOUT))
        .set_response_timeout(None)
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config).map_err(StoreError::new)
}

/// A Redis call under an operation timeout. Shared by the store and the
/// queue.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(StoreError::new),
        Err(_) => Err(StoreError::new("Redis did not answer in time")),
    }
}

/// A duration in whole milliseconds, as `PX` and `PEXPIRE` take it.
pub(crate) fn millis(duration: Duration) -> String {
    // PX refuses 0 (a sub-millisecond duration still means "expire") and
    // values near i64::MAX (an "unbounded" duration means "a century").
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    duration.min(CENTURY).as_millis().max(1).to_string()
}
