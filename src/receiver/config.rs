//! Every setting of a receiver, in one builder.

use std::sync::Arc;
use std::time::Duration;

use super::body::BodyBudget;
use crate::dedupe::{DedupeStore, ErasedStore, MemoryStore};
use crate::replay::{Clock, ReplayWindow, SystemClock};
use crate::secrets::{ErasedSource, SecretSource};
use crate::signature::Verifier;

/// The default webhook path.
pub const DEFAULT_PATH: &str = "/webhooks/ltvboost";

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default deadline for receiving the whole body: 10 seconds.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default budget for body bytes buffered, across all deliveries, before
/// their signatures are checked: 64 MiB.
pub const DEFAULT_BODY_BUDGET: usize = 64 * 1024 * 1024;

/// The default time a body may go without a byte arriving: 3 seconds.
pub const DEFAULT_BODY_STALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The default slowest rate a body may arrive at, once it has been read for
/// the stall timeout: 1 KiB a second.
pub const DEFAULT_MIN_BODY_RATE: u64 = 1024;

/// Longer durations are clamped to this: a deadline further ahead would
/// overflow the clock.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a claim holds by default before a crashed receiver's event can be
/// handled again: longer than any sender waits for an answer. A running
/// handler's claim is renewed, so it never lapses under it.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(120);

use crate::dedupe::DEFAULT_DONE_TTL;

/// What stands for the account's path segment in [`WebhookConfig::path`].
const ACCOUNT_SEGMENT: &str = "{account}";

/// What a receiver needs to accept a delivery: the active secrets, the path,
/// how large a body may be and how long it may take to arrive, how old its
/// event may be, and where deduplication is kept.
///
/// One builder for the [`WebhookLayer`](crate::WebhookLayer), the
/// [`WebhookEndpoint`](crate::WebhookEndpoint) and the axum extractor (which
/// uses the limits and the replay window, not the store). Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use ltvboost_webhooks::WebhookConfig;
/// use ltvboost_webhooks::dedupe::MemoryStore;
/// use ltvboost_webhooks::signature::{Secret, Verifier};
///
/// let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?)
///     .path("/hooks/ltvboost")
///     .body_limit(256 * 1024)
///     .read_timeout(Duration::from_secs(5))
///     .dedupe_store(MemoryStore::with_capacity(100_000));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WebhookConfig {
    pub(crate) secrets: Arc<dyn ErasedSource>,
    pub(crate) path: Arc<str>,
    pub(crate) body_limit: usize,
    pub(crate) read_timeout: Duration,
    pub(crate) body_stall_timeout: Duration,
    pub(crate) min_body_rate: u64,
    pub(crate) replay_window: ReplayWindow,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Arc<dyn ErasedStore>,
    pub(crate) claim_lease: Duration,
    pub(crate) done_ttl: Duration,
    pub(crate) acknowledge_mismatched: bool,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) require_created_at: bool,
    pub(crate) body_budget: BodyBudget,
}

impl WebhookConfig {
    /// A configuration with every setting at its default: path
    /// [`DEFAULT_PATH`], 1 MiB, 10 seconds, a 25-hour replay window, an
    /// in-memory dedupe store.
    ///
    /// `secrets` says what each delivery is verified with: a [`Verifier`]
    /// (fixed secrets), a [`SecretFile`](crate::secrets::SecretFile)
    /// (followed without a restart), or any other
    /// [`SecretSource`].
    pub fn new(secrets: impl SecretSource) -> Self {
        Self {
            secrets: Arc::new(secrets),
            path: Arc::from(DEFAULT_PATH),
            body_limit: DEFAULT_BODY_LIMIT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            body_stall_timeout: DEFAULT_BODY_STALL_TIMEOUT,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            replay_window: ReplayWindow::default(),
            clock: Arc::new(SystemClock),
            store: Arc::new(MemoryStore::new()),
            claim_lease: DEFAULT_CLAIM_LEASE,
            done_ttl: DEFAULT_DONE_TTL,
            acknowledge_mismatched: false,
            handler_timeout: Some(crate::handler::DEFAULT_HANDLER_TIMEOUT),
            require_created_at: false,
            body_budget: BodyBudget::new(DEFAULT_BODY_BUDGET),
        }
    }

    /// The path LTVboost posts to, matched exactly (a trailing slash is a
    /// different path) by [`WebhookLayer`](crate::WebhookLayer). The
    /// endpoint and the extractor answer wherever the router mounts them.
    /// Default: [`DEFAULT_PATH`].
    ///
    /// A receiver for many LTVboost accounts puts `{account}` in the path:
    /// one path segment, handed to the
    /// [`SecretSource`] as
    /// [`RequestHead::account`](crate::secrets::RequestHead::account), whose
    /// secrets alone verify the delivery.
    ///
    /// ```
    /// # use ltvboost_webhooks::WebhookConfig;
    /// # use ltvboost_webhooks::signature::{Secret, Verifier};
    /// let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?)
    ///     .path("/webhooks/ltvboost/{account}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(mut self, path: impl AsRef<str>) -> Self {
        self.path = Arc::from(path.as_ref());
        self
    }

    /// Whether `path` is the webhook path: `Some(None)` for the path
    /// itself, `Some(Some(account))` under an `{account}` path, `None` for
    /// any other.
    pub(crate) fn match_path<'p>(&self, path: &'p str) -> Option<Option<&'p str>> {
        let Some((prefix, suffix)) = self.path.split_once(ACCOUNT_SEGMENT) else {
            return (path == &*self.path).then_some(None);
        };
        let account = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
        (!account.is_empty() && !account.contains('/')).then_some(Some(account))
    }

    /// The largest body accepted, in bytes. Larger ones answer `413`, before
    /// they are read when `Content-Length` says so, and as soon as the limit
    /// is crossed when it does not.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How many body bytes all deliveries together may hold in memory
    /// before their signatures are checked. Bytes are charged as they
    /// arrive, never from `Content-Length`, so requests that declare large
    /// bodies and send nothing hold nothing. A delivery whose next bytes
    /// would go past it answers `503` (the sender retries) and frees its
    /// share at once. Default: [`DEFAULT_BODY_BUDGET`].
    pub fn body_budget(mut self, bytes: usize) -> Self {
        self.body_budget = self.body_budget.with_bytes(bytes);
        self
    }

    /// The share of the body budget one peer address may hold, off by
    /// default. Turn it on only when clients connect directly: behind a
    /// proxy or load balancer every delivery comes from the proxy's
    /// address, and this would cap them all together. The peer address is
    /// the one [`serve::Server`](crate::serve::Server) hands over (or
    /// axum's `ConnectInfo<SocketAddr>`); without one, no share applies.
    ///
    /// ```
    /// # use ltvboost_webhooks::WebhookConfig;
    /// # use ltvboost_webhooks::signature::{Secret, Verifier};
    /// let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?)
    ///     .body_budget_per_peer(4 * 1024 * 1024);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn body_budget_per_peer(mut self, bytes: usize) -> Self {
        self.body_budget = self.body_budget.with_peer_share(bytes);
        self
    }

    /// How long a body may go without a byte arriving before it is cut with
    /// `408` (`body_stalled`), freeing its share of the budget. Default:
    /// [`DEFAULT_BODY_STALL_TIMEOUT`]. At least 1 ms; at most a year.
    pub fn body_stall_timeout(mut self, timeout: Duration) -> Self {
        self.body_stall_timeout = timeout.clamp(Duration::from_millis(1), LONGEST);
        self
    }

    /// The slowest average rate, in bytes a second, a body may arrive at
    /// once it has been read for the stall timeout; slower, it is cut with
    /// `408` (`body_stalled`). `0` turns the floor off. Default:
    /// [`DEFAULT_MIN_BODY_RATE`].
    pub fn min_body_rate(mut self, bytes_per_second: u64) -> Self {
        self.min_body_rate = bytes_per_second;
        self
    }

    /// How long the whole body may take to arrive. This is one deadline for
    /// the whole read, not a per-frame timeout, so a client that trickles a
    /// byte at a time cannot hold the request open. Past it: `408`.
    pub fn read_timeout(mut self, deadline: Duration) -> Self {
        self.read_timeout = deadline.min(LONGEST);
        self
    }

    /// How far from now an event's signed `created_at` may be; outside it the
    /// delivery answers `400`. Default: 25 h into the past, 5 min into the
    /// future. [`ReplayWindow::UNBOUNDED`] turns the check off.
    pub fn replay_window(mut self, window: ReplayWindow) -> Self {
        self.replay_window = window;
        self
    }

    /// Whether a delivery without a readable `created_at` (RFC 3339, or Unix
    /// seconds or milliseconds, as a number or a string) is refused with
    /// `400`. Default: `false`: such a delivery skips the replay check, and
    /// the first one is logged as a warning.
    pub fn require_created_at(mut self, require: bool) -> Self {
        self.require_created_at = require;
        self
    }

    /// Where "now" comes from for the replay window. Default: the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Where claims and done-records are kept. Default: a
    /// [`MemoryStore`], for one process. A fleet of receivers needs one
    /// shared store (`RedisStore`, feature `redis`).
    pub fn dedupe_store<S: DedupeStore>(mut self, store: S) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// How long a claim holds before a delivery whose receiver died can be
    /// handled again. A running handler's claim is renewed every third of
    /// it. Default: [`DEFAULT_CLAIM_LEASE`].
    pub fn claim_lease(mut self, lease: Duration) -> Self {
        // A zero lease would renew in a busy loop; a huge one would overflow
        // the renewal timer.
        self.claim_lease = lease.clamp(Duration::from_millis(3), LONGEST);
        self
    }

    /// How long an event is remembered as done. Default: [`DEFAULT_DONE_TTL`].
    /// Never shorter than the replay window's span: a record that expired
    /// inside the window would let a replay through.
    pub fn done_ttl(mut self, ttl: Duration) -> Self {
        self.done_ttl = ttl.min(LONGEST);
        self
    }

    /// How long a done-record lives: [`done_ttl`](Self::done_ttl), never
    /// shorter than the replay window's span.
    pub(crate) fn done_record_ttl(&self) -> Duration {
        self.done_ttl.max(self.replay_window.span())
    }

    /// Whether a known event type whose `data` does not fit its payload is
    /// acknowledged (`200`) after the fallback handler saw it, instead of
    /// answered `400`. Default: `false`.
    pub fn acknowledge_mismatched(mut self, acknowledge: bool) -> Self {
        self.acknowledge_mismatched = acknowledge;
        self
    }
}

impl WebhookConfig {
    /// A deadline for one handler call (or, with
    /// [`WebhookLayer::in_transaction`](crate::WebhookLayer::in_transaction),
    /// the handler's part of the transaction): past it the call is dropped
    /// and answered `500` as a failure, its claim released (its transaction
    /// rolled back), so the sender's retry runs it again; until then a
    /// retry is answered `409`. Default:
    /// [`DEFAULT_HANDLER_TIMEOUT`](crate::handler::DEFAULT_HANDLER_TIMEOUT);
    /// `None` lets a call run for ever, its claim renewed all the while.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ltvboost_webhooks::WebhookConfig;
    /// # use ltvboost_webhooks::signature::{Secret, Verifier};
    /// let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?)
    ///     .handler_timeout(Duration::from_secs(30));
    /// let unbounded = config.clone().handler_timeout(None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handler_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.handler_timeout = timeout.into();
        self
    }
}

impl From<Verifier> for WebhookConfig {
    fn from(verifier: Verifier) -> Self {
        Self::new(verifier)
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("path", &self.path)
            .field("body_limit", &self.body_limit)
            .field("read_timeout", &self.read_timeout)
            .field("body_stall_timeout", &self.body_stall_timeout)
            .field("min_body_rate", &self.min_body_rate)
            .field("replay_window", &self.replay_window)
            .field("claim_lease", &self.claim_lease)
            .field("done_ttl", &self.done_ttl)
            .field("acknowledge_mismatched", &self.acknowledge_mismatched)
            .field("handler_timeout", &self.handler_timeout)
            .field("require_created_at", &self.require_created_at)
            .field("body_budget", &self.body_budget.bytes())
            .field("body_budget_per_peer", &self.body_budget.peer_share())
            .finish_non_exhaustive()
    }
}
