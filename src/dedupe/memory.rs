use std::collections::HashMap;
use std::future::{Future, ready};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Claim, ClaimToken, DedupeStore, StoreError};

/// Expired entries are swept once per this many claims, which keeps the map
/// bounded by the live entries at an amortised O(1) cost per claim.
const SWEEP_EVERY: u64 = 1024;

/// An in-process [`DedupeStore`]: the default.
///
/// Right for a single receiver process. Claims and done-records vanish when
/// the process exits, and are not shared between processes: a fleet behind a
/// load balancer needs a shared store.
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
    entries: Mutex<HashMap<String, Entry>>,
    next_token: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Claimed(u64),
    Done,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many claims and done-records are held (expired ones included until
    /// the next sweep).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave a map half-updated
        // (each operation is one insert or remove), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim_now(&self, key: &str, lease: Duration) -> Claim {
        let now = Instant::now();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        if token % SWEEP_EVERY == SWEEP_EVERY - 1 {
            entries.retain(|_, e| e.expires > now);
        }
        if let Some(entry) = entries.get(key).filter(|e| e.expires > now) {
            return match entry.state {
                State::Done => Claim::Done,
                State::Claimed(_) => Claim::InFlight,
            };
        }
        entries.insert(
            key.to_owned(),
            Entry {
                state: State::Claimed(token),
                expires: expiry(now, lease),
            },
        );
        Claim::Acquired(ClaimToken::new(token.to_string()))
    }

    fn end_claim(&self, key: &str, token: &ClaimToken, done_for: Option<Duration>) {
        let ours = token.as_str().parse::<u64>().ok();
        let mut entries = self.lock();
        let holds = |e: &Entry| matches!(e.state, State::Claimed(t) if Some(t) == ours);
        match done_for {
            Some(ttl) => {
                // Done even if the lease lapsed (the work happened), but never
                // over a claim that somebody else now holds.
                let taken = entries
                    .get(key)
                    .is_some_and(|e| !holds(e) && e.state != State::Done);
                if !taken {
                    entries.insert(
                        key.to_owned(),
                        Entry {
                            state: State::Done,
                            expires: expiry(Instant::now(), ttl),
                        },
                    );
                }
            }
            None => {
                if entries.get(key).is_some_and(holds) {
                    entries.remove(key);
                }
            }
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
    async fn expired_entries_are_swept() {
        let store = MemoryStore::new();
        for i in 0..SWEEP_EVERY - 1 {
            let key = format!("k{i}");
            let token = acquire(&store, &key).await;
            store.mark_done(&key, &token, TTL).await.unwrap();
        }
        assert_eq!(store.len(), (SWEEP_EVERY - 1) as usize);
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        acquire(&store, "last").await;
        assert_eq!(store.len(), 1);
    }
}
