//! Enqueue mode's hand-off: where the receiver puts a verified delivery
//! instead of calling the handlers, and what the append came to.
//!
//! The receiver answers `202` once [`Enqueue::enqueue`] returns
//! [`Enqueued::Added`], `200` duplicate for [`Enqueued::Duplicate`], and
//! `503` for an error; `queue::RedisQueue` (feature `queue`) is the crate's
//! implementation, and workers handle what it holds.

use std::future::Future;

use crate::dedupe::StoreError;
use crate::erase::BoxFuture;
use crate::handler::Delivery;

/// A durable queue for enqueue mode: the receiver answers `202` once
/// [`enqueue`](Self::enqueue) returns [`Enqueued::Added`], and workers
/// handle the event later. `queue::RedisQueue` (feature `queue`) is one.
///
/// ```
/// use ltvboost_webhooks::dedupe::StoreError;
/// use ltvboost_webhooks::handler::Delivery;
/// use ltvboost_webhooks::receiver::enqueue::{Enqueue, Enqueued};
///
/// /// Keeps nothing: for a demonstration only.
/// struct Discard;
///
/// impl Enqueue for Discard {
///     async fn enqueue(&self, delivery: &Delivery) -> Result<Enqueued, StoreError> {
///         Ok(Enqueued::Added(delivery.dedupe_key().to_owned()))
///     }
/// }
/// ```
pub trait Enqueue: Send + Sync + 'static {
    /// Appends `delivery` durably, once per event (by
    /// [`Delivery::dedupe_key`]); returns once the write is confirmed. An
    /// `Err` answers `503`, so the sender retries.
    fn enqueue(
        &self,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send;
}

/// [`Enqueue`] behind a pointer (the crate's one pattern, see `erase.rs`).
pub(crate) trait ErasedEnqueue: Send + Sync + 'static {
    fn enqueue_boxed<'a>(
        &'a self,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<Enqueued, StoreError>>;
}

impl<Q: Enqueue> ErasedEnqueue for Q {
    fn enqueue_boxed<'a>(
        &'a self,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<Enqueued, StoreError>> {
        Box::pin(Enqueue::enqueue(self, delivery))
    }
}

/// What [`Enqueue::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enqueued {
    /// Appended, and the write confirmed, under this entry id.
    Added(String),
    /// The event was enqueued before (by any receiver): anything appended
    /// with this delivery is dropped by the workers, unrun.
    Duplicate,
}
