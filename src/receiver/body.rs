//! Step 4 of a delivery: its body, read within the limits, and the budget
//! of body bytes every delivery not yet verified draws from.
//!
//! A body is read against three clocks (one deadline for the whole read,
//! the stall timeout since the last byte, a rate floor once the read has
//! lasted the stall timeout) and charged, as it arrives, to a budget shared
//! by every delivery (and optionally to its peer's share): a sender that
//! trickles bytes, or many that send large bodies at once, hold neither a
//! request nor memory for long.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::config::WebhookConfig;
use super::outcome::Rejection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Step 3: the whole body, at most `body_limit` bytes, charged to the
/// budget as it arrives. Three clocks cut it: one deadline for the whole
/// read (not per frame), the stall timeout since the last byte, and the
/// rate floor once the read has lasted the stall timeout; a byte-at-a-time
/// sender holds neither the request nor any budget for long.
pub(super) async fn read_body<B>(
    config: &WebhookConfig,
    body: B,
    charge: &mut Charge<'_>,
) -> Result<Bytes, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let deadline = started + config.read_timeout;
    let mut body = std::pin::pin!(body);
    // The first frame is kept as it arrived (usually the whole body); later
    // ones are copied together, so that many tiny frames hold no more memory
    // than the bytes they carry.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut received = 0usize;
    let mut last_byte = started;
    loop {
        let stall = last_byte + config.body_stall_timeout;
        let frame = match tokio::time::timeout_at(stall.min(deadline), body.as_mut().frame()).await
        {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => return Err(Rejection::BodyRead(e.into())),
            Err(_) if stall < deadline => return Err(Rejection::BodyStalled),
            Err(_) => {
                return Err(Rejection::BodyTimeout {
                    deadline: config.read_timeout,
                });
            }
        };
        // Trailers and empty frames are no progress.
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let len = data.remaining();
        if len == 0 {
            continue;
        }
        received = received.saturating_add(len);
        if received > config.body_limit {
            return Err(too_large(config));
        }
        if !charge.add(len) {
            return Err(Rejection::Overloaded);
        }
        last_byte = Instant::now();
        let reading = last_byte.duration_since(started);
        if reading >= config.body_stall_timeout
            && (received as f64) < config.min_body_rate as f64 * reading.as_secs_f64()
        {
            return Err(Rejection::BodyStalled);
        }
        if joined.is_empty() && first.is_none() {
            first = Some(data.copy_to_bytes(len));
        } else {
            // The first frame moves in here: its bytes are held once.
            if let Some(first) = first.take() {
                joined.extend_from_slice(&first);
            }
            joined.put(data);
        }
    }
    Ok(if joined.is_empty() {
        first.unwrap_or_default()
    } else {
        joined.freeze()
    })
}

/// Body bytes held before verification, shared by every clone of a
/// configuration and charged as they arrive, never from what a header
/// declares. A counter, not a semaphore: nobody waits for room (past the
/// budget a delivery is refused), so there is no waiter list to lock.
#[derive(Clone)]
pub(crate) struct BodyBudget {
    bytes: usize,
    held: Arc<AtomicUsize>,
    /// The share one peer address may hold, and what each holds.
    per_peer: Option<(usize, Arc<Mutex<PeerShares>>)>,
}

/// Body bytes held, by peer address.
type PeerShares = HashMap<IpAddr, usize>;

/// What one delivery holds of a [`BodyBudget`], given back on drop.
pub(crate) struct Charge<'a> {
    budget: &'a BodyBudget,
    peer: Option<IpAddr>,
    bytes: usize,
}

impl BodyBudget {
    pub(super) fn new(bytes: usize) -> Self {
        Self {
            bytes,
            held: Arc::default(),
            per_peer: None,
        }
    }

    /// An empty charge for one delivery from `peer`.
    pub(crate) fn charge(&self, peer: Option<IpAddr>) -> Charge<'_> {
        Charge {
            budget: self,
            peer,
            bytes: 0,
        }
    }

    /// The same budget, `bytes` in all.
    pub(super) fn with_bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    /// The same budget, each peer address held to `share` of it.
    pub(super) fn with_peer_share(mut self, share: usize) -> Self {
        self.per_peer = Some((share, Arc::default()));
        self
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn peer_share(&self) -> Option<usize> {
        self.per_peer.as_ref().map(|(share, _)| *share)
    }

    fn peers(map: &Mutex<PeerShares>) -> MutexGuard<'_, PeerShares> {
        // Every update leaves the map consistent: keep using it after a panic.
        map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Charge<'_> {
    /// Charges `bytes` more that arrived; `false` (and nothing charged) when
    /// the budget, or the peer's share of it, would be overspent.
    pub(crate) fn add(&mut self, bytes: usize) -> bool {
        let budget = self.budget;
        // The peer's share first, held locked until the budget agreed, so a
        // refusal never passes through the shared counter.
        let mut peers = match (&budget.per_peer, self.peer) {
            (Some((share, map)), Some(peer)) => {
                let peers = BodyBudget::peers(map);
                let held = peers.get(&peer).copied().unwrap_or(0);
                if held.saturating_add(bytes) > *share {
                    return false;
                }
                Some((peers, peer))
            }
            _ => None,
        };
        let global = budget
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes)
                    .filter(|total| *total <= budget.bytes)
            });
        if global.is_err() {
            return false;
        }
        if let Some((peers, peer)) = &mut peers {
            *peers.entry(*peer).or_insert(0) += bytes;
        }
        self.bytes += bytes;
        true
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.budget.held.fetch_sub(self.bytes, Ordering::Relaxed);
        if let (Some((_, map)), Some(peer)) = (&self.budget.per_peer, self.peer) {
            let mut peers = BodyBudget::peers(map);
            if let Some(held) = peers.get_mut(&peer) {
                *held = held.saturating_sub(self.bytes);
                if *held == 0 {
                    peers.remove(&peer);
                }
            }
        }
    }
}

/// The refusal of a body over the limit, by `Content-Length` or as read.
pub(super) fn too_large(config: &WebhookConfig) -> Rejection {
    Rejection::PayloadTooLarge {
        limit: config.body_limit,
    }
}
