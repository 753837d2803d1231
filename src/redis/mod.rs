//! Redis plumbing shared by the dedupe store
//! ([`RedisStore`](crate::dedupe::RedisStore)) and the queue: one server or
//! a Redis Cluster behind one connection type, connected on first use,
//! commands batched across deliveries, and deadlines on every call. It
//! knows nothing of either.

mod batch;
mod connection;

use std::future::Future;
use std::time::Duration;

pub(crate) use batch::Batched;
pub(crate) use connection::{Connection, Target};

/// The default deadline for one Redis operation, connection included.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// The namespace the dedupe store's and the queue's keys carry unless told
/// otherwise.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The prefix of `namespace`'s keys for `role` (`webhook`, `queue`):
/// `ltvboost:{<namespace>}:<role>:`. The braces are a Redis Cluster hash
/// tag: every key of one namespace lives in one slot, so each script
/// touches one slot. A namespace is 1 to 64 ASCII letters, digits, `-`, `_`
/// or `.`: anything else (a brace above all) could break the tag.
pub(crate) fn namespaced(namespace: &str, role: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(format!(
            "namespace {namespace:?}: use 1 to 64 ASCII letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(format!("ltvboost:{{{namespace}}}:{role}:"))
}

/// A Redis call that failed, or did not answer within its deadline.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
    #[error("Redis did not answer in time")]
    TimedOut,
}

/// A Redis call under an operation timeout. Shared by the store and the
/// queue.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(CallError::TimedOut),
    }
}

/// A duration in whole milliseconds, as `PX` and `PEXPIRE` take it.
pub(crate) fn millis(duration: Duration) -> String {
    // PX refuses 0 (a sub-millisecond duration still means "expire") and
    // values near i64::MAX (an "unbounded" duration means "a century").
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    duration.min(CENTURY).as_millis().max(1).to_string()
}
