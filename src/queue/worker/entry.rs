//! What a worker reads off the stream: one entry, and the hold a run has
//! on it; and what an event's key says about it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::streams::StreamId;

use crate::signature::KeyId;

/// One stream entry, as read: nothing in it is trusted until its signature
/// verifies.
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) body: Bytes,
    pub(super) signature: String,
    /// The key id of the secret that verified it at the receiver (absent
    /// from entries an earlier version wrote; unchecked until it verifies).
    pub(super) key_id: Option<KeyId>,
    /// The account it was received for, when the receivers have accounts
    /// (unchecked until it verifies with that account's secrets).
    pub(super) account: Option<String>,
    /// Handler starts recorded as failures, on earlier entries of the event.
    pub(super) attempts: u32,
    /// Times this entry was delivered to a worker, this one included.
    pub(super) deliveries: u32,
    /// The token its event's key holds while this entry is the one to run
    /// it (absent from entries an earlier version wrote).
    pub(super) token: Option<String>,
    /// The receiving span's trace context, when it was recorded.
    pub(super) traceparent: Option<Vec<u8>>,
    /// This run's hold: the delivery count it owns the entry under (every
    /// script that ends or renews the entry checks it), moved on when this
    /// worker's own claim takes the entry again while it runs.
    pub(super) hold: Arc<Hold>,
}

/// A run's hold on its entry.
pub(super) struct Hold {
    pub(super) deliveries: AtomicU32,
    /// When Redis last confirmed the hold (read, claim or renewal).
    pub(super) confirmed: std::sync::Mutex<tokio::time::Instant>,
}

impl Hold {
    pub(super) fn new(deliveries: u32) -> Arc<Self> {
        Arc::new(Self {
            deliveries: AtomicU32::new(deliveries),
            confirmed: std::sync::Mutex::new(tokio::time::Instant::now()),
        })
    }

    pub(super) fn deliveries(&self) -> u32 {
        self.deliveries.load(Ordering::SeqCst)
    }

    pub(super) fn confirm(&self) {
        if let Ok(mut confirmed) = self.confirmed.lock() {
            *confirmed = tokio::time::Instant::now();
        }
    }

    /// Whether no other worker can have claimed the entry yet.
    pub(super) fn lasts(&self, claim_idle: Duration) -> bool {
        self.confirmed
            .lock()
            .is_ok_and(|confirmed| confirmed.elapsed() < claim_idle)
    }
}

impl Entry {
    pub(super) fn read(entry: &StreamId, deliveries: u32) -> Self {
        Self {
            id: entry.id.clone(),
            body: Bytes::from(entry.get::<Vec<u8>>("body").unwrap_or_default()),
            signature: entry.get("signature").unwrap_or_default(),
            key_id: entry.get::<String>("key").and_then(|key| key.parse().ok()),
            account: entry.get("account"),
            attempts: entry.get("attempts").unwrap_or(0),
            token: entry.get("token"),
            deliveries,
            traceparent: entry.get(crate::trace::TRACEPARENT),
            hold: Hold::new(deliveries),
        }
    }

    /// Handler starts including this one: each delivery of this entry
    /// started one, whether or not its end was recorded.
    pub(super) fn attempt(&self) -> u32 {
        self.attempts.saturating_add(self.deliveries)
    }
}

/// What an event's key says about it.
pub(super) enum EventState {
    /// Handled.
    Done,
    /// Queued, to be run by the entry carrying this token.
    Queued(String),
    /// No key: expired or evicted.
    Missing,
    /// Another value: an earlier version's `queued`.
    Other,
    /// Redis did not answer.
    Unread,
}
