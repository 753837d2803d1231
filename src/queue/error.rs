//! What can go wrong with a queue, each naming the queue.

use std::time::Duration;

use crate::redis::CallError;

/// An operation on a [`RedisQueue`](super::RedisQueue) that failed. Every
/// variant names the queue by its stream's key, so that a log line tells
/// which of a service's queues (namespaces) it was about.
///
/// A receiver in enqueue mode answers `503` to any of them, so that
/// LTVboost retries. Match on the variant, never on the text:
///
/// ```no_run
/// use ltvboost_webhooks::queue::{QueueError, RedisQueue};
/// # async fn run() {
/// match RedisQueue::lazy("redis://127.0.0.1:6379/").unwrap().require_durable(true).checked().await {
///     Ok(_) => {}
///     Err(QueueError::NotDurable { stream, risks }) => eprintln!("{stream}: {risks}"),
///     Err(other) => eprintln!("{other}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Redis did not answer within the
    /// [`operation_timeout`](super::RedisQueue::operation_timeout).
    #[error("queue {stream}: Redis did not answer within {timeout:?}")]
    TimedOut {
        /// The queue's stream key.
        stream: String,
        /// The deadline it missed.
        timeout: Duration,
    },
    /// The stream's consumer group is gone: Redis restarted empty,
    /// `FLUSHALL`, or a failover to an empty node. A [`Worker`](super::Worker)
    /// recreates it by itself.
    #[error("queue {stream}: its consumer group is gone")]
    NoGroup {
        /// The queue's stream key.
        stream: String,
    },
    /// With [`require_durable`](super::RedisQueue::require_durable): the
    /// queue's Redis is set to forget events it acknowledged.
    #[error("queue {stream}: its Redis can forget an acknowledged event: {risks}")]
    NotDurable {
        /// The queue's stream key.
        stream: String,
        /// Each setting and what it risks.
        risks: String,
    },
    /// With [`wait_for_replicas`](super::RedisQueue::wait_for_replicas):
    /// fewer replicas than asked for confirmed an entry in time. The entry
    /// is kept; the sender's retry is a duplicate, confirmed once they have it.
    #[error(
        "queue {stream}: {confirmed} of {wanted} replicas confirmed the entry within {deadline:?}"
    )]
    NotReplicated {
        /// The queue's stream key.
        stream: String,
        /// How many replicas confirmed it.
        confirmed: u64,
        /// How many were asked for.
        wanted: u32,
        /// How long the enqueue waited for them.
        deadline: Duration,
    },
    /// Redis refused the operation or could not be reached.
    #[error("queue {stream}: Redis: {source}")]
    Redis {
        /// The queue's stream key.
        stream: String,
        /// Redis's error, as the client reported it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The queue's settings are not usable: a malformed URL or namespace.
    #[error("queue settings: {0}")]
    Invalid(String),
}

impl QueueError {
    /// A failed call on the queue whose stream is `stream`.
    pub(super) fn call(stream: &str, timeout: Duration, error: CallError) -> Self {
        match error {
            CallError::TimedOut => Self::TimedOut {
                stream: stream.to_owned(),
                timeout,
            },
            CallError::Redis(error) if error.code() == Some("NOGROUP") => Self::NoGroup {
                stream: stream.to_owned(),
            },
            CallError::Redis(error) => Self::Redis {
                stream: stream.to_owned(),
                source: Box::new(error),
            },
        }
    }
}

/// The [`Enqueue`](crate::receiver::enqueue::Enqueue) hand-off reports a store error
/// (answered `503`); its text names the queue.
impl From<QueueError> for crate::dedupe::StoreError {
    fn from(error: QueueError) -> Self {
        Self::new(error)
    }
}
