use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::{Future, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
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
/// Keys are held as 128-bit SipHash-1-3 fingerprints under a key drawn at
/// random for each store: no allocation per event, a third of the memory, and
/// no pointer to follow on a lookup. Two different keys would share a
/// fingerprint with probability about n²/2¹²⁹: for a billion events held at
/// once, 10⁻²¹. Keys come only from deliveries whose signature verified, and
/// without the store's random key nobody can search for a collision.
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
pub struct MemoryStore {
    inner: Mutex<Inner>,
    next_token: AtomicU64,
    fingerprint_key: [u64; 2],
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// A key's 128-bit keyed fingerprint.
type Fingerprint = u128;

#[derive(Default)]
struct Inner {
    entries: HashMap<Fingerprint, Entry, BuildFingerprintHasher>,
    /// Every expiry ever set, soonest first. An item whose entry has since
    /// changed or gone is stale and skipped when it comes up.
    expiries: BinaryHeap<Reverse<(Instant, Fingerprint)>>,
}

struct Entry {
    state: State,
    expires: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Claimed(u64),
    Done,
}

/// Fingerprints are already uniformly distributed: the map uses their low
/// bits as they are instead of hashing them again.
#[derive(Default, Clone, Copy)]
struct BuildFingerprintHasher;

#[derive(Default)]
struct FingerprintHasher(u64);

impl std::hash::BuildHasher for BuildFingerprintHasher {
    type Hasher = FingerprintHasher;
    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher(0)
    }
}

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `u128` keys; a correct fallback all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
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

    fn set(&mut self, key: Fingerprint, state: State, expires: Instant) {
        self.expiries.push(Reverse((expires, key)));
        self.entries.insert(key, Entry { state, expires });
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with room for `events` deliveries before it must grow.
    ///
    /// A store grows by doubling, and each doubling moves every entry while
    /// the store is locked: at a million entries, a pause of milliseconds
    /// for every delivery in flight. Size it to the events you expect in a
    /// done-record's lifetime (25 h by default) to avoid that.
    ///
    /// ```
    /// use ltvboost_webhooks::dedupe::MemoryStore;
    ///
    /// // About 10 events a second, held for 25 hours.
    /// let store = MemoryStore::with_capacity(10 * 25 * 3600);
    /// assert!(store.is_empty());
    /// ```
    ///
    /// # Panics
    ///
    /// If the memory cannot be reserved, as `HashMap::with_capacity` does.
    pub fn with_capacity(events: usize) -> Self {
        let mut seed = [0u8; 16];
        // Without the system's randomness (it does not fail on supported
        // platforms), fall back to a key that differs per process and store.
        if getrandom::fill(&mut seed).is_err() {
            let fallback = std::collections::hash_map::RandomState::new();
            let a = std::hash::BuildHasher::hash_one(&fallback, 1u8);
            let b = std::hash::BuildHasher::hash_one(&fallback, 2u8);
            seed[..8].copy_from_slice(&a.to_le_bytes());
            seed[8..].copy_from_slice(&b.to_le_bytes());
        }
        let (k0, k1) = seed.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::with_capacity_and_hasher(events, BuildFingerprintHasher),
                // A claim and a done-record per event, before old ones leave.
                expiries: BinaryHeap::with_capacity(events.saturating_mul(2)),
            }),
            next_token: AtomicU64::new(0),
            fingerprint_key: [word(k0), word(k1)],
        }
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

    fn fingerprint(&self, key: &str) -> Fingerprint {
        use siphasher::sip128::Hasher128;
        let [k0, k1] = self.fingerprint_key;
        let mut hasher = siphasher::sip128::SipHasher13::new_with_keys(k0, k1);
        std::hash::Hasher::write(&mut hasher, key.as_bytes());
        hasher.finish128().as_u128()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation leaves the map and heap consistent before anything
        // that could panic, so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim_now(&self, key: &str, lease: Duration) -> Claim {
        let key = self.fingerprint(key);
        let now = Instant::now();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.purge(now);
        if let Some(entry) = inner.entries.get(&key) {
            return match entry.state {
                State::Done => Claim::Done,
                State::Claimed(_) => Claim::InFlight,
            };
        }
        inner.set(key, State::Claimed(token), expiry(now, lease));
        Claim::Acquired(ClaimToken::new(token.to_string()))
    }

    fn end_claim(&self, key: &str, token: &ClaimToken, done_for: Option<Duration>) {
        let key = self.fingerprint(key);
        let now = Instant::now();
        let ours = token.as_str().parse::<u64>().ok();
        let mut inner = self.lock();
        inner.purge(now);
        let holds = |e: &Entry| matches!(e.state, State::Claimed(t) if Some(t) == ours);
        let Inner { entries, expiries } = &mut *inner;
        match (done_for, entries.get_mut(&key)) {
            // Done even if the lease lapsed (the work happened), but never
            // over a claim that somebody else now holds.
            (Some(_), Some(e)) if !holds(e) && e.state != State::Done => {}
            (Some(ttl), Some(e)) => {
                e.state = State::Done;
                e.expires = expiry(now, ttl);
                expiries.push(Reverse((e.expires, key)));
            }
            (Some(ttl), None) => inner.set(key, State::Done, expiry(now, ttl)),
            (None, Some(e)) if holds(e) => {
                entries.remove(&key);
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
