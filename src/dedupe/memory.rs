use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::{Future, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Claim, ClaimToken, DedupeStore, StoreError};

/// An in-process [`DedupeStore`]: the default.
///
/// Right for a single receiver process. Claims and done-records vanish when
/// the process exits, and are not shared between processes: a fleet behind a
/// load balancer needs a shared store.
///
/// Expired entries leave in order of expiry (a min-heap beside the map), so
/// every operation costs O(log n) however many events the window holds; no
/// operation ever scans the whole map.
///
/// Uses tokio's clock, so tests can move time with `tokio::time::pause`.
///
/// ```
/// use std::time::Duration;
/// use ltvboost_webhooks::dedupe::{Claim, DedupeStore, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let lease = Duration::from_secs(60);
/// let Claim::Acquired(token) = store.claim("evt_1", lease).await? else { unreachable!() };
/// assert_eq!(store.claim("evt_1", lease).await?, Claim::InFlight);
/// store.mark_done("evt_1", &token, Duration::from_secs(3600)).await?;
/// assert_eq!(store.claim("evt_1", lease).await?, Claim::Done);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    next_token: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    // foldhash rather than SipHash: keys come only from deliveries whose
    // signature verified, so nobody without the secret can choose them to
    // flood one bucket; it is still seeded at random per map.
    entries: HashMap<Arc<str>, Entry, foldhash::fast::RandomState>,
    /// Every expiry ever set, soonest first. An item whose entry has since
    /// changed or gone is stale and skipped when it comes up.
    expiries: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires: Instant,
    /// The map's key, shared with the expiry heap without a second lookup.
    key: Arc<str>,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Claimed(u64),
    Done,
}

impl Inner {
    /// Drops every entry that has expired by `now`.
    fn purge(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.expiries.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.expiries.pop() else {
                break;
            };
            if self.entries.get(&key).is_some_and(|e| e.expires == at) {
                self.entries.remove(&key);
            }
        }
    }

    /// Adds an entry for a key the map does not hold.
    fn insert(&mut self, key: &str, state: State, expires: Instant) {
        let key: Arc<str> = Arc::from(key);
        self.expiries.push(Reverse((expires, key.clone())));
        let entry = Entry {
            state,
            expires,
            key: key.clone(),
        };
        self.entries.insert(key, entry);
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many claims and done-records are held (expired ones are dropped
    /// by the next operation).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation leaves the map and heap consistent before anything
        // that could panic, so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim_now(&self, key: &str, lease: Duration) -> Claim {
        let now = Instant::now();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.purge(now);
        if let Some(entry) = inner.entries.get(key) {
            return match entry.state {
                State::Done => Claim::Done,
                State::Claimed(_) => Claim::InFlight,
            };
        }
        inner.insert(key, State::Claimed(token), expiry(now, lease));
        Claim::Acquired(ClaimToken::new(token.to_string()))
    }

    fn end_claim(&self, key: &str, token: &ClaimToken, done_for: Option<Duration>) {
        let now = Instant::now();
        let ours = token.as_str().parse::<u64>().ok();
        let mut inner = self.lock();
        inner.purge(now);
        let holds = |e: &Entry| matches!(e.state, State::Claimed(t) if Some(t) == ours);
        let Inner { entries, expiries } = &mut *inner;
        match (done_for, entries.get_mut(key)) {
            // Done even if the lease lapsed (the work happened), but never
            // over a claim that somebody else now holds.
            (Some(_), Some(e)) if !holds(e) && e.state != State::Done => {}
            (Some(ttl), Some(e)) => {
                e.state = State::Done;
                e.expires = expiry(now, ttl);
                expiries.push(Reverse((e.expires, e.key.clone())));
            }
            (Some(ttl), None) => inner.insert(key, State::Done, expiry(now, ttl)),
            (None, Some(e)) if holds(e) => {
                entries.remove(key);
            }
            (None, _) => {}
        }
    }
}

/// `now + after`, saturating: an "unbounded" TTL must not overflow.
fn expiry(now: Instant, after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(after)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

impl DedupeStore for MemoryStore {
    fn claim(
        &self,
        key: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        ready(Ok(self.claim_now(key, lease)))
    }

    fn mark_done(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.end_claim(key, token, Some(ttl));
        ready(Ok(()))
    }

    fn release(
        &self,
        key: &str,
        token: &ClaimToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.end_claim(key, token, None);
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);
    const TTL: Duration = Duration::from_secs(3600);

    async fn acquire(store: &MemoryStore, key: &str) -> ClaimToken {
        match store.claim(key, LEASE).await.unwrap() {
            Claim::Acquired(token) => token,
            other => panic!("expected to acquire {key}, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lifecycle() {
        let store = MemoryStore::new();
        let token = acquire(&store, "k").await;
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::InFlight);
        store.release("k", &token).await.unwrap();
        let token = acquire(&store, "k").await;
        store.mark_done("k", &token, TTL).await.unwrap();
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Done);
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        acquire(&store, "k").await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_can_be_claimed_again_and_the_old_token_ends_nothing() {
        let store = MemoryStore::new();
        let stale = acquire(&store, "k").await;
        tokio::time::advance(LEASE + Duration::from_secs(1)).await;
        let fresh = acquire(&store, "k").await;
        store.release("k", &stale).await.unwrap();
        store.mark_done("k", &stale, TTL).await.unwrap();
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::InFlight);
        store.mark_done("k", &fresh, TTL).await.unwrap();
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Done);
    }

    #[tokio::test]
    async fn unbounded_durations_do_not_overflow() {
        let store = MemoryStore::new();
        let Claim::Acquired(token) = store.claim("k", Duration::MAX).await.unwrap() else {
            panic!()
        };
        store.mark_done("k", &token, Duration::MAX).await.unwrap();
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Done);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_leave_and_live_ones_stay() {
        let store = MemoryStore::new();
        for i in 0..1000 {
            let key = format!("k{i}");
            let token = acquire(&store, &key).await;
            // Half live for the TTL, half for twice as long.
            let ttl = if i % 2 == 0 { TTL } else { TTL * 2 };
            store.mark_done(&key, &token, ttl).await.unwrap();
        }
        acquire(&store, "in-flight").await; // a claim for LEASE
        assert_eq!(store.len(), 1001);
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        assert_eq!(store.claim("k1", LEASE).await.unwrap(), Claim::Done);
        assert_eq!(
            store.len(),
            500,
            "the expired half and the lapsed claim are gone"
        );
        acquire(&store, "k0").await;
        tokio::time::advance(TTL).await;
        acquire(&store, "k1").await;
        assert_eq!(store.len(), 1, "only the newest claim is left");
    }
}
