//! What a server hands the receiver in each request's extensions: the
//! peer's address ([`PeerAddr`]) and the set of deliveries it waits for at
//! shutdown (`Unsettled`). [`serve::Server`](crate::serve::Server) puts
//! both in every request; a receiver behind another server works without
//! them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The peer's address, in every request's extensions when
/// [`serve::Server`](crate::serve::Server) serves (with the `axum` feature,
/// axum's `ConnectInfo<SocketAddr>` carries it too). The receiver reads it
/// for [`WebhookConfig::body_budget_per_peer`](crate::WebhookConfig::body_budget_per_peer).
///
/// ```
/// use ltvboost_webhooks::PeerAddr;
///
/// fn peer(request: &http::Request<()>) -> Option<std::net::SocketAddr> {
///     request.extensions().get::<PeerAddr>().map(|peer| peer.0)
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Deliveries whose handling or end (done-record, release) has not finished
/// yet, so that a server can wait for them when it shuts down.
/// [`serve::Server`](crate::serve::Server) hands one to every request in its
/// extensions.
#[derive(Clone, Default)]
pub(crate) struct Unsettled(Arc<UnsettledSet>);

#[derive(Default)]
struct UnsettledSet {
    /// Event ids by a number of their own (one event may come twice).
    open: Mutex<BTreeMap<u64, Box<str>>>,
    next: AtomicU64,
    /// Signalled when the set becomes empty.
    empty: Notify,
}

/// One delivery in an [`Unsettled`] set, taken out on drop.
pub(crate) struct Settling {
    set: Unsettled,
    number: u64,
}

impl Unsettled {
    fn open(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Box<str>>> {
        // Every update leaves the map consistent: keep using it after a panic.
        self.0
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn track(&self, event_id: &str) -> Settling {
        let number = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.open().insert(number, event_id.into());
        Settling {
            set: self.clone(),
            number,
        }
    }

    /// Completes once no delivery is unsettled.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) async fn settled(&self) {
        loop {
            let empty = self.0.empty.notified();
            let mut empty = std::pin::pin!(empty);
            empty.as_mut().enable();
            if self.open().is_empty() {
                return;
            }
            empty.await;
        }
    }

    /// The event ids of the deliveries not settled yet.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn event_ids(&self) -> Vec<Box<str>> {
        self.open().values().cloned().collect()
    }
}

impl std::fmt::Debug for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsettled")
            .field("deliveries", &self.open().len())
            .finish()
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        let mut open = self.set.open();
        open.remove(&self.number);
        if open.is_empty() {
            self.set.0.empty.notify_waiters();
        }
    }
}
