//! Acknowledge now, handle later: a durable hand-off through a Redis stream
//! (feature `queue`).
//!
//! In enqueue mode ([`WebhookLayer::enqueue`](crate::WebhookLayer::enqueue))
//! the receiver reads, verifies, parses and replay-checks a delivery as
//! always, then appends its verified bytes to a Redis stream and answers
//! `202 Accepted` only after Redis acknowledged the write. The event's dedupe
//! key guards the append in the same Lua script, so an event delivered to any
//! receiver of a fleet is enqueued once; a duplicate answers `200`. Redis
//! unreachable or slow answers `503`: nothing is acknowledged that is not
//! stored.
//!
//! A [`Worker`] consumes the stream through a consumer group and calls the
//! same [`Handlers`](crate::handler::Handlers) with the same
//! `Delivery`: `Ok` records the event as done and
//! acknowledges the entry (one script, atomic); `Err` or a panic schedules a
//! retry with exponential backoff; after the last attempt the entry moves to
//! a dead-letter stream with its last error. Entries a crashed worker left
//! pending are claimed by the others once idle for
//! [`Worker::claim_idle`].
//!
//! # What is durable when `202` is answered
//!
//! The entry is in Redis' memory, and in its append-only file as Redis'
//! `appendfsync` allows: with `appendonly yes` and `appendfsync always`,
//! nothing acknowledged is lost when Redis crashes; with `everysec`, up to a
//! second of acknowledged events may be. Run the queue's Redis with
//! `maxmemory-policy noeviction`: an evicted entry or dedupe key is an event
//! lost or handled twice.
//!
//! # The one window where a handler can run twice
//!
//! A worker that dies after its handler succeeded but before the done-record
//! and the acknowledgement reached Redis (one script) leaves the entry
//! pending; another worker claims it after `claim_idle` and runs the handler
//! again. Make handlers idempotent where that matters.
//!
//! ```no_run
//! use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
//! use ltvboost_webhooks::queue::RedisQueue;
//! # async fn run(verifier: ltvboost_webhooks::signature::Verifier) -> Result<(), Box<dyn std::error::Error>> {
//! let queue = RedisQueue::connect("redis://127.0.0.1:6379/").await?;
//! let layer = WebhookLayer::enqueue(WebhookConfig::new(verifier), queue);
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use redis::streams::{StreamId, StreamInfoGroupsReply, StreamRangeReply};

/// A script, hashed once.
macro_rules! script {
    ($source:ident) => {{
        static SCRIPT: std::sync::LazyLock<Script> =
            std::sync::LazyLock::new(|| Script::new($source));
        &*SCRIPT
    }};
}

mod worker;

pub use worker::{DEFAULT_CLAIM_IDLE, DEFAULT_CONCURRENCY, DEFAULT_MAX_ATTEMPTS, Worker};

use crate::dedupe::DEFAULT_DONE_TTL;
use crate::dedupe::StoreError;
use crate::handler::Delivery;
use crate::redis::{Batched, bounded, lazy_connection, millis};

/// The default prefix of the queue's keys: the stream is `<prefix>events`,
/// the dead letters `<prefix>dead`, scheduled retries `<prefix>retry`.
pub const DEFAULT_QUEUE_PREFIX: &str = "ltvboost:queue:";

/// How long stream entries are kept by default: 7 days, far beyond the
/// time a worker needs, so that workers down for a day lose nothing.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The consumer group every worker reads through.
const GROUP: &str = "workers";

/// KEYS[1] = dedupe key, KEYS[2] = stream. ARGV: done TTL ms, oldest id kept,
/// then the entry's fields. The dedupe key guards the append: a duplicate
/// appends nothing. Returns the entry id, or false for a duplicate. The
/// append comes before the key is set: a script is not undone when a later
/// command fails, and a key without its entry would lose the event.
const ENQUEUE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[2], '*',
  'body', ARGV[3], 'secret_index', ARGV[4], 'received_at', ARGV[5], 'attempts', '0',
  'type', ARGV[6], 'event_id', ARGV[7], 'key', ARGV[8])
redis.call('SET', KEYS[1], 'queued', 'PX', ARGV[1])
return id
";

/// KEYS[1] = dead-letter stream, KEYS[2] = stream. ARGV[1] = id. Moves one
/// dead letter back onto the stream with its attempts reset.
const REQUEUE: &str = r"
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields = found[1][2]
local entry = {}
for i = 1, #fields, 2 do
  local name = fields[i]
  if name ~= 'attempts' and name ~= 'error' then
    table.insert(entry, name)
    table.insert(entry, fields[i + 1])
  end
end
table.insert(entry, 'attempts')
table.insert(entry, '0')
redis.call('XADD', KEYS[2], '*', unpack(entry))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
";

/// The queue's keys.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    stream: String,
    dead: String,
    retry: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            stream: format!("{prefix}events"),
            dead: format!("{prefix}dead"),
            retry: format!("{prefix}retry"),
        }
    }
}

/// A Redis stream that receivers append verified deliveries to, and
/// [`Worker`]s handle from. See the [module docs](self).
#[derive(Clone)]
pub struct RedisQueue {
    /// Enqueues of concurrent deliveries go to Redis together.
    redis: Batched,
    /// For the worker's blocking reads, which would hold up every other
    /// command on a shared connection.
    client: redis::Client,
    keys: Keys,
    timeout: Duration,
    retention: Duration,
    done_ttl: Duration,
}

pub use crate::layer::Enqueued;

/// An entry moved to the dead-letter stream after its last attempt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter stream, for [`RedisQueue::requeue`].
    pub id: String,
    /// The event type's wire name.
    pub type_name: String,
    /// The event id, when the event has one.
    pub event_id: Option<String>,
    /// How many times the handler ran.
    pub attempts: u32,
    /// The handler's last error.
    pub error: String,
}

impl DeadLetter {
    fn from_entry(entry: &StreamId) -> Self {
        Self {
            id: entry.id.clone(),
            type_name: entry.get("type").unwrap_or_default(),
            event_id: entry.get::<String>("event_id").filter(|id| !id.is_empty()),
            attempts: entry.get("attempts").unwrap_or(0),
            error: entry.get("error").unwrap_or_default(),
        }
    }
}

impl RedisQueue {
    /// Connects to Redis at `url`, checks the connection, and creates the
    /// stream and its consumer group when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let queue = Self::lazy(url)?;
        queue.ensure_group().await?;
        Ok(queue)
    }

    /// A queue that connects on first use: a receiver built with it starts
    /// while Redis is down, and answers `503` until Redis is back. Must be
    /// called inside a tokio runtime.
    pub fn lazy(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::new)?;
        Ok(Self {
            redis: Batched::new(lazy_connection(client.clone())?),
            client,
            keys: Keys::new(DEFAULT_QUEUE_PREFIX),
            timeout: crate::redis::DEFAULT_OPERATION_TIMEOUT,
            retention: DEFAULT_RETENTION,
            done_ttl: DEFAULT_DONE_TTL,
        })
    }

    /// The prefix of every key the queue writes. Default:
    /// [`DEFAULT_QUEUE_PREFIX`]. Receivers and workers of one endpoint share
    /// it.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.keys = Keys::new(prefix);
        self
    }

    /// How long entries are kept in the stream (by age; older ones are
    /// trimmed as new ones arrive). Default: [`DEFAULT_RETENTION`].
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long an enqueued event is remembered: a redelivery within it is a
    /// duplicate. The same setting as
    /// [`WebhookConfig::done_ttl`](crate::WebhookConfig::done_ttl), under the
    /// same name. Default: [`DEFAULT_DONE_TTL`].
    pub fn done_ttl(mut self, ttl: Duration) -> Self {
        self.done_ttl = ttl;
        self
    }

    /// The deadline for one Redis operation. Default: 2 s.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Appends a verified delivery, unless its event was enqueued before
    /// (what [`WebhookLayer::enqueue`](crate::WebhookLayer::enqueue) calls).
    /// Returns once Redis has acknowledged the write.
    pub async fn enqueue(&self, delivery: &Delivery) -> Result<Enqueued, StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let oldest = now.saturating_sub(self.retention).as_millis();
        let key = format!("{}{}", self.keys.prefix, delivery.dedupe_key());
        let (ttl, oldest, received) = (
            millis(self.done_ttl),
            format!("{oldest}-0"),
            now.as_millis(),
        );
        let added: Option<String> = self
            .bounded(self.redis.invoke(script!(ENQUEUE), |command| {
                command
                    .arg(2)
                    .arg(&key)
                    .arg(&self.keys.stream)
                    .arg(&ttl)
                    .arg(&oldest)
                    .arg(delivery.envelope().body().as_ref())
                    .arg(delivery.secret_index())
                    .arg(received)
                    .arg(delivery.type_name())
                    .arg(delivery.id().unwrap_or(""))
                    .arg(delivery.dedupe_key());
            }))
            .await?;
        Ok(added.map_or(Enqueued::Duplicate, Enqueued::Added))
    }

    /// Entries delivered to a worker and not yet acknowledged.
    pub async fn pending(&self) -> Result<u64, StoreError> {
        Ok(self.group_info().await?.map_or(0, |g| g.pending as u64))
    }

    /// Entries in the stream no worker has read yet (`None` when Redis cannot
    /// tell).
    pub async fn lag(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .group_info()
            .await?
            .and_then(|g| g.lag.map(|lag| lag as u64)))
    }

    /// Entries in the stream, handled or not (until trimmed).
    pub async fn len(&self) -> Result<u64, StoreError> {
        let mut connection = self.redis.connection();
        let mut command = redis::cmd("XLEN");
        command.arg(&self.keys.stream);
        self.bounded(command.query_async(&mut connection)).await
    }

    /// Whether the stream holds no entry.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len().await? == 0)
    }

    /// The oldest `count` dead letters.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut connection = self.redis.connection();
        let mut command = redis::cmd("XRANGE");
        command
            .arg(&self.keys.dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count);
        let range: StreamRangeReply = self.bounded(command.query_async(&mut connection)).await?;
        Ok(range.ids.iter().map(DeadLetter::from_entry).collect())
    }

    /// Moves the dead letter `id` back onto the stream, its attempts reset.
    /// Whether there was one.
    pub async fn requeue(&self, id: &str) -> Result<bool, StoreError> {
        let mut invocation = script!(REQUEUE).prepare_invoke();
        invocation
            .key(&self.keys.dead)
            .key(&self.keys.stream)
            .arg(id);
        let mut connection = self.redis.connection();
        let moved: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(moved == 1)
    }

    async fn ensure_group(&self) -> Result<(), StoreError> {
        let mut connection = self.redis.connection();
        let mut create = redis::cmd("XGROUP");
        // From the stream's start: entries appended before the group existed
        // are handled too.
        create
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self
            .bounded(create.query_async::<()>(&mut connection))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn group_info(&self) -> Result<Option<redis::streams::StreamInfoGroup>, StoreError> {
        let mut connection = self.redis.connection();
        let mut command = redis::cmd("XINFO");
        command.arg("GROUPS").arg(&self.keys.stream);
        let groups: StreamInfoGroupsReply =
            self.bounded(command.query_async(&mut connection)).await?;
        Ok(groups.groups.into_iter().find(|g| g.name == GROUP))
    }

    /// A Redis call under the operation timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        Ok(bounded(self.timeout, call).await?)
    }
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL (and any password in it) is deliberately absent.
        f.debug_struct("RedisQueue")
            .field("stream", &self.keys.stream)
            .field("timeout", &self.timeout)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl crate::layer::Enqueue for RedisQueue {
    fn enqueue<'a>(
        &'a self,
        delivery: &'a Delivery,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Enqueued, StoreError>> + Send + 'a>,
    > {
        Box::pin(RedisQueue::enqueue(self, delivery))
    }
}
