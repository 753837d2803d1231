//! Deduplication: a handler runs once per event, though LTVboost delivers at
//! least once.
//!
//! The receiver talks to a [`DedupeStore`] in three steps around each handler
//! call:
//!
//! 1. [`claim`](DedupeStore::claim) the event's key before calling the
//!    handler. The answer is [`Claim::Acquired`] (go ahead),
//!    [`Claim::InFlight`] (another delivery of the same event is being handled
//!    right now: answer `409`, the sender retries later) or [`Claim::Done`]
//!    (already handled: answer `200` without calling the handler).
//! 2. [`mark_done`](DedupeStore::mark_done) after the handler succeeded. The
//!    record lives at least as long as the replay window, so a retry inside it
//!    is recognised.
//! 3. [`release`](DedupeStore::release) after the handler failed, so that the
//!    sender's retry runs it again.
//!
//! A claim carries a lease: if the process dies between claim and
//! mark-done/release, the claim lapses by itself and a later retry runs the
//! handler. While a handler runs, the receiver [renews](DedupeStore::renew)
//! the lease every third of its length, so a handler slower than the lease
//! still runs only once at a time. A [`ClaimToken`] ties renewal and release
//! to the claim they belong to, so a slow instance whose lease lapsed cannot
//! release somebody else's claim; its success is still recorded as done (the
//! work happened), and every lapsed claim is reported as
//! [`ClaimStatus::Lost`].
//!
//! A store that cannot answer returns a [`StoreError`]: the receiver answers
//! `503` and calls no handler (fail closed: nothing is acknowledged that was
//! not handled).
//!
//! [`MemoryStore`] is the default, for a single process. `RedisStore`
//! (feature `redis`) is shared by a fleet of receivers behind a load balancer.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::time::Duration;

use crate::signature::Signature;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_KEY_PREFIX, DEFAULT_NAMESPACE, DEFAULT_OPERATION_TIMEOUT, RedisStore};

/// How long a done-record lives by default: the default replay window
/// (24 h of retries + 1 h) plus the 5 minutes of allowed clock skew.
pub const DEFAULT_DONE_TTL: Duration = Duration::from_secs(25 * 3600 + 5 * 60);

/// The result of trying to claim an event's key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The key is ours until the lease runs out: call the handler.
    Acquired(ClaimToken),
    /// Another delivery of the same event holds an unexpired claim.
    InFlight,
    /// The event was handled successfully before.
    Done,
}

/// Identifies one claim, so that only its holder ends it.
///
/// A 128-bit number: a store's counter, or 16 random bytes where claims come
/// from many processes. It is `Copy` and costs no allocation; its text form
/// (`Display`) is 32 lowercase hex digits, for stores that keep text.
///
/// ```
/// use ltvboost_webhooks::dedupe::ClaimToken;
///
/// let token = ClaimToken::new(0xbeef);
/// assert_eq!(token.get(), 0xbeef);
/// assert_eq!(token.to_string(), "0000000000000000000000000000beef");
/// assert_ne!(ClaimToken::random(), ClaimToken::random());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(u128);

impl ClaimToken {
    /// Wraps a store's token.
    pub const fn new(token: u128) -> Self {
        Self(token)
    }

    /// A token unique across a fleet without coordination: 16 random bytes
    /// drawn once a process, plus a counter (one system call a process, not
    /// one a claim).
    pub fn random() -> Self {
        static BASE: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let base = *BASE.get_or_init(|| {
            let mut bytes = [0u8; 16];
            if getrandom::fill(&mut bytes).is_err() {
                // No OS randomness: the clock and the process id are unique
                // enough for a claim token, which guards against mix-ups,
                // not attackers.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
            }
            u128::from_le_bytes(bytes)
        });
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(base.wrapping_add(u128::from(count)))
    }

    /// The token's number.
    pub const fn get(self) -> u128 {
        self.0
    }
}

impl std::fmt::Display for ClaimToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The store could not answer. The receiver answers `503`.
#[derive(Debug, thiserror::Error)]
#[error("dedupe store unavailable: {0}")]
pub struct StoreError(#[source] Box<dyn std::error::Error + Send + Sync + 'static>);

#[cfg(feature = "redis")]
impl From<crate::redis::CallError> for StoreError {
    fn from(error: crate::redis::CallError) -> Self {
        Self::new(error)
    }
}

impl StoreError {
    /// Wraps the store's own error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self(error.into())
    }
}

/// Whether a claim was still held by the token that ended or renewed it.
///
/// `Lost` means the lease lapsed (and perhaps another delivery claimed the
/// key since): the receiver logs it at `error` with the event id, because a
/// handler may then have run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimStatus {
    /// The token held the claim until this operation.
    Held,
    /// The claim had lapsed or belonged to another token.
    Lost,
}

/// Where claims and done-records live.
///
/// Implementations must make each operation atomic with respect to the others
/// on the same key: two concurrent claims of one key must not both succeed.
pub trait DedupeStore: Send + Sync + 'static {
    /// Claims `key` for `lease`, unless it is done or claimed by someone else.
    fn claim(
        &self,
        key: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Extends the claim on `key` to `lease` from now, if `token` still
    /// holds it. The receiver calls it every third of the lease while a
    /// handler runs, so a slow handler's claim never lapses under it.
    fn renew(
        &self,
        key: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send;

    /// Records `key` as done for `ttl`, and says whether `token` still held
    /// its claim.
    ///
    /// Called after the handler succeeded. The key is recorded as done
    /// whatever holds it now (the work happened: a delivery that claimed the
    /// key after this claim lapsed is a repeat, and no later one should run);
    /// a claim that is no longer `token`'s is reported as
    /// [`ClaimStatus::Lost`].
    fn mark_done(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send;

    /// Drops the claim on `key` if `token` still holds it, so a retry can
    /// claim it again.
    fn release(
        &self,
        key: &str,
        token: &ClaimToken,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send;
}

/// The key an event is deduplicated on: `evt:<id>`, or `sig:<hex signature>`
/// for an event without an id (a retry carries identical bytes, hence an
/// identical signature).
///
/// ```
/// use ltvboost_webhooks::dedupe::event_key;
/// use ltvboost_webhooks::signature::Signature;
///
/// let signature = Signature::parse(format!("sha256={}", "ab".repeat(32)).as_bytes())?;
/// assert_eq!(event_key(Some("evt_1"), &signature), "evt:evt_1");
/// assert_eq!(event_key(None, &signature), format!("sig:{}", "ab".repeat(32)));
/// # Ok::<(), ltvboost_webhooks::signature::SignatureError>(())
/// ```
pub fn event_key(id: Option<&str>, signature: &Signature) -> String {
    match id {
        Some(id) => format!("evt:{id}"),
        None => format!("sig:{signature}"),
    }
}

type StoreFuture<'a, T> = crate::erase::BoxFuture<'a, Result<T, StoreError>>;

/// [`DedupeStore`] behind a pointer (the crate's one pattern, see
/// `erase.rs`): the receiver holds any store as `Arc<dyn ErasedStore>`, so
/// its public types need no store parameter.
pub(crate) trait ErasedStore: Send + Sync + 'static {
    fn claim_boxed<'a>(&'a self, key: &'a str, lease: Duration) -> StoreFuture<'a, Claim>;
    fn renew_boxed<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, ClaimStatus>;
    fn mark_done_boxed<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ClaimStatus>;
    fn release_boxed<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
    ) -> StoreFuture<'a, ClaimStatus>;
}

impl<S: DedupeStore> ErasedStore for S {
    fn claim_boxed<'a>(&'a self, key: &'a str, lease: Duration) -> StoreFuture<'a, Claim> {
        Box::pin(DedupeStore::claim(self, key, lease))
    }
    fn renew_boxed<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, ClaimStatus> {
        Box::pin(DedupeStore::renew(self, key, token, lease))
    }
    fn mark_done_boxed<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ClaimStatus> {
        Box::pin(DedupeStore::mark_done(self, key, token, ttl))
    }
    fn release_boxed<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
    ) -> StoreFuture<'a, ClaimStatus> {
        Box::pin(DedupeStore::release(self, key, token))
    }
}

/// A store that remembers nothing: every claim is granted.
///
/// For receivers whose handlers are idempotent on their own (an upsert keyed
/// on the event id, say), and for benchmarks and fuzzing, where deduplication
/// is not what is measured. With it, a retry of an event that succeeded runs
/// the handler again, and so does a concurrent duplicate.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDedupe;

impl DedupeStore for NoDedupe {
    async fn claim(&self, _: &str, _: Duration) -> Result<Claim, StoreError> {
        Ok(Claim::Acquired(ClaimToken(0)))
    }

    async fn renew(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<ClaimStatus, StoreError> {
        Ok(ClaimStatus::Held)
    }

    async fn mark_done(
        &self,
        _: &str,
        _: &ClaimToken,
        _: Duration,
    ) -> Result<ClaimStatus, StoreError> {
        Ok(ClaimStatus::Held)
    }

    async fn release(&self, _: &str, _: &ClaimToken) -> Result<ClaimStatus, StoreError> {
        Ok(ClaimStatus::Held)
    }
}

impl<S: DedupeStore> DedupeStore for std::sync::Arc<S> {
    fn claim(
        &self,
        key: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        (**self).claim(key, lease)
    }

    fn renew(
        &self,
        key: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send {
        (**self).renew(key, token, lease)
    }

    fn mark_done(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send {
        (**self).mark_done(key, token, ttl)
    }

    fn release(
        &self,
        key: &str,
        token: &ClaimToken,
    ) -> impl Future<Output = Result<ClaimStatus, StoreError>> + Send {
        (**self).release(key, token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_dedupe_grants_every_claim() {
        let lease = Duration::from_secs(60);
        for _ in 0..2 {
            let Claim::Acquired(token) = NoDedupe.claim("k", lease).await.unwrap() else {
                panic!("NoDedupe refused a claim")
            };
            NoDedupe.mark_done("k", &token, lease).await.unwrap();
        }
    }
}
