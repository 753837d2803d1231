use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::{Future, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Claim, ClaimStatus, ClaimToken, DedupeStore, StoreError};

/// An in-process [`DedupeStore`]: the default.
///
/// Right for a single receiver process. Claims and done-records vanish when
/// the process exits, and are not shared between processes: a fleet behind a
/// load balancer needs a shared store.
///
/// Expired entries leave in order of expiry, and no operation ever scans the
/// whole map. Expiries wait in one first-in-first-out queue per lifetime (a
/// lease, a done-record's TTL): with one clock and one lifetime, a later
/// entry never expires sooner, so the next to expire is always at a queue's
/// front and every operation costs O(1), where a single heap sifts each
/// lease's early expiry up past every done-record. Past 16 distinct
/// lifetimes, further ones share a heap. (BENCHMARKS.md, "Plain again",
/// measures the plain map and heap against this.)
///
/// Keys are held as 128-bit SipHash-1-3 fingerprints under a key drawn at
/// random for each store: no allocation per event, less memory, and no
/// pointer to follow on a lookup. Two different keys would share a
/// fingerprint with probability about n²/2¹²⁹ for n events held at once.
/// Keys come only from deliveries whose signature verified, and without the
/// store's random key nobody can search for a collision.
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
    /// The next claim's token; 0 is never issued (it marks a done-record).
    next_token: AtomicU64,
    fingerprint_key: [u64; 2],
    /// Times are held as nanoseconds since this instant: half the size of an
    /// `Instant`, which matters in an entry the map moves when it grows.
    epoch: Instant,
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

/// Nanoseconds since the store's epoch; `u64::MAX` is "never" (584 years).
type Tick = u64;

#[derive(Default)]
struct Inner {
    entries: HashMap<Fingerprint, Entry, BuildFingerprintHasher>,
    /// Every expiry ever set, by lifetime, soonest first within each. An item
    /// whose entry has since changed or gone is stale and skipped when it
    /// comes up.
    queues: Vec<ExpiryQueue>,
    /// Expiries of lifetimes beyond the first [`MAX_QUEUES`], soonest first.
    overflow: BinaryHeap<Reverse<(Tick, Fingerprint)>>,
    /// Room to reserve in each new queue.
    queue_capacity: usize,
}

/// How many distinct lifetimes get a queue of their own.
const MAX_QUEUES: usize = 16;

struct ExpiryQueue {
    lifetime: Duration,
    expiries: VecDeque<Expiry>,
}

/// One queued expiry: 24 bytes, where `(Tick, u128)` would pad to 32.
#[derive(Clone, Copy)]
struct Expiry {
    at: Tick,
    key: [u64; 2],
}

impl Expiry {
    fn new(at: Tick, key: Fingerprint) -> Self {
        Self {
            at,
            key: [key as u64, (key >> 64) as u64],
        }
    }

    fn key(self) -> Fingerprint {
        u128::from(self.key[0]) | (u128::from(self.key[1]) << 64)
    }
}

/// 16 bytes: with its key, a map slot is 32.
struct Entry {
    expires: Tick,
    /// The token of the claim that holds the key, or [`DONE`].
    holder: u64,
}

/// The `holder` of a done-record.
const DONE: u64 = 0;

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
    fn purge(&mut self, now: Tick) {
        let Inner {
            entries,
            queues,
            overflow,
            ..
        } = self;
        let mut expire = |at: Tick, key: Fingerprint| {
            if entries.get(&key).is_some_and(|e| e.expires == at) {
                entries.remove(&key);
            }
        };
        for queue in queues.iter_mut() {
            while let Some(&expiry) = queue.expiries.front() {
                if expiry.at > now {
                    break;
                }
                queue.expiries.pop_front();
                expire(expiry.at, expiry.key());
            }
        }
        while let Some(&Reverse((at, key))) = overflow.peek() {
            if at > now {
                break;
            }
            overflow.pop();
            expire(at, key);
        }
    }

    /// Remembers that `key` expires `lifetime` after `now`.
    fn schedule(&mut self, key: Fingerprint, now: Tick, lifetime: Duration) -> Tick {
        let expires = now.saturating_add(u64::try_from(lifetime.as_nanos()).unwrap_or(u64::MAX));
        let position = self.queues.iter().position(|q| q.lifetime == lifetime);
        let queue = match position {
            Some(i) => Some(i),
            None if self.queues.len() < MAX_QUEUES => {
                let capacity = self.queue_capacity;
                self.queues.push(ExpiryQueue {
                    lifetime,
                    expiries: VecDeque::with_capacity(capacity),
                });
                Some(self.queues.len() - 1)
            }
            None => None,
        };
        match queue.and_then(|i| self.queues.get_mut(i)) {
            Some(queue) => queue.expiries.push_back(Expiry::new(expires, key)),
            None => self.overflow.push(Reverse((expires, key))),
        }
        expires
    }

    fn set(&mut self, key: Fingerprint, holder: u64, now: Tick, lifetime: Duration) {
        let expires = self.schedule(key, now, lifetime);
        self.entries.insert(key, Entry { expires, holder });
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
                queues: Vec::new(),
                overflow: BinaryHeap::new(),
                queue_capacity: events,
            }),
            next_token: AtomicU64::new(DONE + 1),
            fingerprint_key: [word(k0), word(k1)],
            epoch: Instant::now(),
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
        // Every operation leaves the map and queues consistent before
        // anything that could panic, so a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Now, on the store's clock. Read under the lock, so that each queue's
    /// expiries only grow.
    fn now(&self) -> Tick {
        let since = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    fn claim_now(&self, key: &str, lease: Duration) -> Claim {
        let key = self.fingerprint(key);
        // Wraps only after 2^64 claims; skipping DONE keeps it unambiguous.
        let token = match self.next_token.fetch_add(1, Ordering::Relaxed) {
            DONE => self.next_token.fetch_add(1, Ordering::Relaxed),
            token => token,
        };
        let mut inner = self.lock();
        let now = self.now();
        inner.purge(now);
        if let Some(entry) = inner.entries.get(&key) {
            return match entry.holder {
                DONE => Claim::Done,
                _ => Claim::InFlight,
            };
        }
        inner.set(key, token, now, lease);
        Claim::Acquired(ClaimToken::new(u128::from(token)))
    }

    fn end_claim(&self, key: &str, token: &ClaimToken, done_for: Option<Duration>) -> ClaimStatus {
        let key = self.fingerprint(key);
        let mut inner = self.lock();
        let now = self.now();
        inner.purge(now);
        let holder = inner.entries.get(&key).map(|e| e.holder);
        let ours = holder.is_some_and(|h| h != DONE && u128::from(h) == token.get());
        match done_for {
            // Done whoever holds the key now: the work happened.
            Some(ttl) => inner.set(key, DONE, now, ttl),
            None if ours => {
                inner.entries.remove(&key);
            }
            None => {}
        }
        if ours {
            ClaimStatus::Held
        } else {
            ClaimStatus::Lost
        }
    }

    fn renew_now(&self, key: &str, token: &ClaimToken, lease: Duration) -> ClaimStatus {
        let key = self.fingerprint(key);
        let mut inner = self.lock();
        let now = self.now();
        inner.purge(now);
        match inner.entries.get(&key).map(|e| e.holder) {
            Some(holder) if holder != DONE && u128::from(holder) == token.get() => {
                inner.set(key, holder, now, lease);
                ClaimStatus::Held
            }
            _ => ClaimStatus::Lost,
        }
    }
}

impl DedupeStore for MemoryStore {
    fn claim(
        &self,
        key: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        ready(Ok(self.claim_now(key, lease)))
    }

    fn renew(
        &self,
        key: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send {
        ready(Ok(self.renew_now(key, token, lease)))
    }

    fn mark_done(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send {
        ready(Ok(self.end_claim(key, token, Some(ttl))))
    }

    fn release(
        &self,
        key: &str,
        token: &ClaimToken,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send {
        ready(Ok(self.end_claim(key, token, None)))
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
    async fn each_entry_expires_at_its_own_time_whatever_its_lifetime() {
        // More distinct lifetimes than there are queues, set in an order
        // that is not their expiry order: the overflow heap takes the rest.
        let store = MemoryStore::new();
        let leases: Vec<u64> = (1..=40).map(|i| (i * 7) % 40 + 1).collect();
        for &secs in &leases {
            let key = format!("k{secs}");
            assert!(matches!(
                store.claim(&key, Duration::from_secs(secs)).await.unwrap(),
                Claim::Acquired(_)
            ));
        }
        assert_eq!(store.len(), 40);
        for elapsed in 1..=40u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            for &secs in leases.iter().filter(|&&s| s >= elapsed) {
                let key = format!("k{secs}");
                match store.claim(&key, LEASE).await.unwrap() {
                    // Expired exactly now: claimed anew, and let go again.
                    Claim::Acquired(token) if secs == elapsed => {
                        store.release(&key, &token).await.unwrap();
                    }
                    Claim::InFlight if secs > elapsed => {}
                    other => panic!("k{secs} after {elapsed}s: {other:?}"),
                }
            }
            assert_eq!(store.len(), 40 - elapsed as usize);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_done_record_outlives_the_lease_it_replaced() {
        let store = MemoryStore::new();
        let token = acquire(&store, "k").await;
        store.mark_done("k", &token, TTL).await.unwrap();
        // The claim's lease passes: its queued expiry is stale and must not
        // remove the done-record.
        tokio::time::advance(LEASE + Duration::from_secs(1)).await;
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Done);
        tokio::time::advance(TTL).await;
        acquire(&store, "k").await;
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
    async fn a_lapsed_lease_can_be_claimed_again_and_the_old_token_releases_nothing() {
        let store = MemoryStore::new();
        let stale = acquire(&store, "k").await;
        tokio::time::advance(LEASE + Duration::from_secs(1)).await;
        let fresh = acquire(&store, "k").await;
        let lost = Ok(ClaimStatus::Lost);
        assert_eq!(store.release("k", &stale).await.map_err(drop), lost);
        assert_eq!(store.renew("k", &stale, LEASE).await.map_err(drop), lost);
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::InFlight);
        // The stale holder's work happened: done, over the fresh claim.
        assert_eq!(store.mark_done("k", &stale, TTL).await.map_err(drop), lost);
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Done);
        // The fresh holder, whose run was a repeat, cannot undo it.
        assert_eq!(store.release("k", &fresh).await.map_err(drop), lost);
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Done);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_claim_outlives_its_first_lease_and_a_lapsed_one_is_done_all_the_same() {
        let store = MemoryStore::new();
        let token = acquire(&store, "k").await;
        for _ in 0..5 {
            tokio::time::advance(LEASE / 2).await;
            assert_eq!(
                store.renew("k", &token, LEASE).await.unwrap(),
                ClaimStatus::Held
            );
        }
        assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::InFlight);
        tokio::time::advance(LEASE + Duration::from_secs(1)).await;
        // Lapsed, nobody else took it: recorded as done, reported as lost.
        let status = store.mark_done("k", &token, TTL).await.unwrap();
        assert_eq!(status, ClaimStatus::Lost);
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
