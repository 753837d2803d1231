//! Acknowledge now, handle later: a durable hand-off through a Redis stream
//! (feature `queue`).
//!
//! In enqueue mode ([`WebhookLayer::enqueue`](crate::WebhookLayer::enqueue))
//! the receiver reads, verifies, parses and replay-checks a delivery as
//! always, then appends its body and signature to a Redis stream and
//! answers `202 Accepted` only after Redis acknowledged the write. The
//! event's dedupe key is set in the same transaction (`SET … NX GET` and
//! `XADD`), to a token the entry carries too: an event delivered to any
//! receiver of a fleet runs once; a duplicate answers `200`, and the copy
//! its transaction appended is deleted (or, if that fails, dropped unrun by
//! the workers). Redis unreachable, slow or full answers `503`: nothing is
//! acknowledged that is not stored.
//!
//! A [`Worker`] consumes the stream through a consumer group. It verifies
//! each entry's signature with the receivers' secrets (an entry altered or
//! injected in Redis is dead-lettered, never run); an entry verified at the
//! receiver by a secret the worker does not hold (named by its
//! [`KeyId`](crate::signature::KeyId)) is passed on to the other workers,
//! neither run nor dead-lettered, so a rotation can reach receivers and
//! workers in any order. Then it calls the same
//! [`Handlers`](crate::handler::Handlers) with the same `Delivery`, renewing
//! its hold on the entry while the handler runs so that no other worker
//! claims it. `Ok` records the event done and deletes the entry (one
//! script); `Err`, a panic or the optional deadline schedules a retry with
//! exponential backoff; after the last attempt, or once an entry was
//! started [`Worker::max_attempts`] times without an end (its handler
//! crashed the process), it moves to a capped dead-letter stream with the
//! reason. Entries a crashed worker left pending are claimed by the others
//! once idle for [`Worker::claim_idle`], and each runs alone, nothing
//! beside it, so that a crash it causes again is charged to it only.
//!
//! # Memory stays bounded
//!
//! A handled entry is deleted with its acknowledgement, so the stream holds
//! only what waits or runs; the dead letters are capped by count and by bytes
//! ([`RedisQueue::dead_letter_cap`], [`RedisQueue::dead_letter_bytes`]); a worker that stops removes its
//! consumer from the group, and consumers of crashed workers are removed
//! after an hour. The scripts that end an entry free memory and run on a
//! full Redis, so a Redis that filled up while workers were down drains as
//! soon as they run; meanwhile receivers answer `503`.
//!
//! # What is durable when `202` is answered
//!
//! The entry is in Redis's memory, and on disk as Redis's settings allow;
//! [`RedisQueue::connect`] reads them and logs each risk at `warn`
//! ([`RedisQueue::require_durable`] refuses instead):
//!
//! | Redis setting | what a `202` survives |
//! | --- | --- |
//! | `appendonly yes`, `appendfsync always` | a Redis crash and a machine crash |
//! | `appendonly yes`, `appendfsync everysec` | a Redis crash; a machine crash loses up to 1 s |
//! | `appendonly no` | nothing: a restart forgets the events since the last snapshot, and rolls the group back so handled events run again |
//! | `maxmemory-policy` other than `noeviction` | eviction: an evicted entry is an event lost, an evicted dedupe key an event handled twice |
//! | replicas, default | a failover may lose the last events (replication is asynchronous) |
//! | replicas, [`RedisQueue::wait_for_replicas`] | a failover: each `202` waits until the replicas have it, or is a `503`; a worker's end record is not waited for, so an event handled just before a failover can run again after it |
//!
//! # The one window where a handler can run twice
//!
//! A worker that dies after its handler succeeded but before the
//! done-record reached Redis (one script, retried for as long as the
//! worker's hold lasts when Redis fails) leaves the entry pending; another
//! worker claims it after `claim_idle` and runs the handler again. So does
//! a worker cut off from Redis for longer than `claim_idle` while its
//! handler runs. Make handlers idempotent where that matters.
//!
//! Every run holds its entry under a token, the consumer and the entry's
//! delivery count, which every claim changes. The scripts that renew and
//! end an entry check it, so a run whose hold was lost cannot end what
//! another run now owns; the done-record itself is always written, and
//! every worker reads it before running any entry, so an entry appended
//! again, or re-delivered by a group recreated over a surviving stream,
//! is acknowledged without running once its event is done.
//!
//! ```no_run
//! use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
//! use ltvboost_webhooks::queue::RedisQueue;
//! # async fn run(verifier: ltvboost_webhooks::signature::Verifier) -> Result<(), Box<dyn std::error::Error>> {
//! let queue = RedisQueue::connect("redis://127.0.0.1:6379/").await?;
//! let layer = WebhookLayer::enqueue(WebhookConfig::new(verifier), queue);
//! # Ok(()) }
//! ```

use std::time::Duration;

use redis::streams::{StreamId, StreamRangeReply};

mod durability;
mod error;
mod scripts;
mod worker;

pub use durability::{Durability, Risk};
pub use error::QueueError;
pub use worker::{DEFAULT_CLAIM_IDLE, DEFAULT_CONCURRENCY, DEFAULT_MAX_ATTEMPTS, Worker};

use crate::dedupe::DEFAULT_DONE_TTL;
use crate::handler::Delivery;
use crate::redis::{Batched, Target, bounded, millis, namespaced};
use scripts::script;

/// The default prefix of the queue's keys, the
/// [`DEFAULT_NAMESPACE`](crate::dedupe::DEFAULT_NAMESPACE)'s (see
/// [`RedisQueue::namespace`]): the stream is `<prefix>events`, the dead
/// letters `<prefix>dead`, scheduled retries `<prefix>retry` (and one hash
/// `<prefix>retry:<entry id>` each), each event's record `<prefix><key>`.
pub const DEFAULT_QUEUE_PREFIX: &str = "ltvboost:{default}:queue:";

/// How many dead letters are kept by default; the oldest go first, each
/// counted and logged.
pub const DEFAULT_DEAD_LETTER_CAP: u64 = 10_000;

/// How many bytes of dead letters (their bodies, signatures and reasons)
/// are kept by default: 100 MiB. The oldest go first, each counted and
/// logged.
pub const DEFAULT_DEAD_LETTER_BYTES: u64 = 100 * 1024 * 1024;

/// The consumer group every worker reads through.
const GROUP: &str = "workers";

/// What an event's key holds while it is queued, before the token of the
/// entry that runs it; `done` once it is handled.
const QUEUED: &str = "queued:";

/// The queue's keys.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    stream: String,
    dead: String,
    /// The bytes the dead letters hold, kept by the scripts that add and
    /// remove them.
    dead_bytes: String,
    retry: String,
    /// Held by the one worker that runs the queue's maintenance.
    maintainer: String,
    /// The prefix of each scheduled retry's hash.
    retry_entry: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            stream: format!("{prefix}events"),
            dead: format!("{prefix}dead"),
            dead_bytes: format!("{prefix}dead-bytes"),
            retry: format!("{prefix}retry"),
            maintainer: format!("{prefix}maintainer"),
            retry_entry: format!("{prefix}retry:"),
        }
    }

    /// The key recording an event queued, then done.
    fn event(&self, dedupe_key: &str) -> String {
        format!("{}{dedupe_key}", self.prefix)
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
    target: Target,
    keys: Keys,
    timeout: Duration,
    done_ttl: Duration,
    dead_letter_cap: u64,
    dead_letter_bytes: u64,
    require_durable: bool,
    /// With `wait_for_replicas`: how many, how long, and a connection of
    /// their own (a pending `WAIT` holds up every command behind it).
    replicas: Option<Replicas>,
}

/// What `wait_for_replicas` set.
#[derive(Clone)]
struct Replicas {
    count: u32,
    deadline: Duration,
    /// Enqueues on a connection of their own, each batch ending with one
    /// `WAIT` that covers every write before it on that connection.
    batch: Batched,
}

use crate::receiver::enqueue::Enqueued;

/// An entry moved to the dead-letter stream.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter stream, for [`RedisQueue::requeue`].
    pub id: String,
    /// The event type's wire name, read from its body (empty when the body
    /// is not an envelope).
    pub type_name: String,
    /// The event id, when the event has one.
    pub event_id: Option<String>,
    /// How many times the handler was started.
    pub attempts: u32,
    /// Why it was given up: the handler's last error, or what else ended it.
    pub error: String,
}

/// What a queue holds, as [`RedisQueue::stats`] read it in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueStats {
    /// Entries in the stream: waiting, or being handled (handled ones are
    /// deleted).
    pub entries: u64,
    /// Of those, entries delivered to a worker and not yet ended.
    pub pending: u64,
    /// How long the oldest entry has been in the stream, by Redis's clock
    /// (a retry re-enters the stream when it is due); `None` when empty.
    pub oldest_age: Option<Duration>,
    /// Retries scheduled and not yet due.
    pub scheduled_retries: u64,
    /// Dead letters kept (at most [`RedisQueue::dead_letter_cap`]).
    pub dead_letters: u64,
    /// Consumers in the group: running workers, and crashed ones not yet
    /// tidied away.
    pub consumers: u64,
}

impl QueueStats {
    /// Entries no worker has read yet.
    pub fn waiting(&self) -> u64 {
        self.entries.saturating_sub(self.pending)
    }
}

impl DeadLetter {
    fn from_entry(entry: &StreamId) -> Self {
        let body = entry.get::<Vec<u8>>("body").unwrap_or_default();
        Self::new(
            entry.id.clone(),
            &body,
            entry.get("attempts").unwrap_or(0),
            entry.get("error").unwrap_or_default(),
        )
    }

    /// A dead letter of `body`, its type and id read from it for display
    /// (a dead letter may be one that never verified).
    fn new(id: String, body: &[u8], attempts: u32, error: String) -> Self {
        let envelope = crate::event::Envelope::from_bytes(bytes::Bytes::copy_from_slice(body)).ok();
        Self {
            id,
            type_name: envelope
                .as_ref()
                .map(|e| e.type_name().to_owned())
                .unwrap_or_default(),
            event_id: envelope.as_ref().and_then(|e| e.id().map(str::to_owned)),
            attempts,
            error,
        }
    }
}

impl RedisQueue {
    /// Connects to Redis at `url` and [checks](Self::checked) it: the
    /// connection, the consumer group (created when missing) and the
    /// settings that decide whether a `202` survives a restart, each risk
    /// logged at `warn`.
    pub async fn connect(url: &str) -> Result<Self, QueueError> {
        Self::lazy(url)?.checked().await
    }

    /// A queue that connects on first use: a receiver built with it starts
    /// while Redis is down, and answers `503` until Redis is back. Must be
    /// called inside a tokio runtime.
    pub fn lazy(url: &str) -> Result<Self, QueueError> {
        let invalid = |error: crate::redis::CallError| QueueError::Invalid(error.to_string());
        let target = Target::open(url).map_err(invalid)?;
        Ok(Self {
            redis: Batched::new(target.lazy_connection().map_err(invalid)?),
            target,
            keys: Keys::new(DEFAULT_QUEUE_PREFIX),
            timeout: crate::redis::DEFAULT_OPERATION_TIMEOUT,
            done_ttl: DEFAULT_DONE_TTL,
            dead_letter_cap: DEFAULT_DEAD_LETTER_CAP,
            dead_letter_bytes: DEFAULT_DEAD_LETTER_BYTES,
            require_durable: false,
            replicas: None,
        })
    }

    /// Checks the connection, creates the consumer group when missing, and
    /// reads the server's [`Durability`]: each risk is logged at `warn`
    /// (`appendfsync everysec` at `info`), naming the setting and what it
    /// risks. With [`require_durable`](Self::require_durable), a setting
    /// under which a restart or a full memory forgets a `202` is an error.
    ///
    /// ```no_run
    /// use ltvboost_webhooks::queue::RedisQueue;
    /// # async fn run() -> Result<(), ltvboost_webhooks::queue::QueueError> {
    /// let queue = RedisQueue::lazy("redis://127.0.0.1:6379/")?
    ///     .require_durable(true)
    ///     .checked()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn checked(self) -> Result<Self, QueueError> {
        self.ensure_group().await?;
        tracing::info!(keys = %format!("{}*", self.keys.prefix), "queue keys");
        let durability = self.durability().await?;
        let mut refused = Vec::new();
        for risk in durability.risks() {
            if risk.setting == "replication" && self.replicas.is_some() {
                continue;
            }
            if risk.setting == "appendfsync" && risk.risk.starts_with("everysec") {
                tracing::info!(setting = risk.setting, "queue's Redis: {}", risk.risk);
                continue;
            }
            tracing::warn!(setting = risk.setting, "queue's Redis: {}", risk.risk);
            if risk.certain && risk.setting != "replication" {
                refused.push(risk.to_string());
            }
        }
        if self.require_durable && !refused.is_empty() {
            return Err(QueueError::NotDurable {
                stream: self.keys.stream.clone(),
                risks: refused.join("; "),
            });
        }
        Ok(self)
    }

    /// Reads the settings of the queue's Redis that decide what a `202`
    /// survives.
    pub async fn durability(&self) -> Result<Durability, QueueError> {
        let mut connection = self.redis.connection();
        self.bounded(async { Ok(Durability::read(&mut connection, &self.keys.stream).await) })
            .await
    }

    /// Whether [`checked`](Self::checked) refuses a Redis that can forget a
    /// `202` (`appendonly no`, an evicting `maxmemory-policy`,
    /// `appendfsync no`, a replica) rather than only warn. Default: `false`.
    pub fn require_durable(mut self, require: bool) -> Self {
        self.require_durable = require;
        self
    }

    /// Makes each `202` wait until `replicas` replicas have the entry (Redis
    /// `WAIT`: one for each batch of concurrent enqueues, at the end of
    /// their pipeline, on a connection of their own, so that on a Redis
    /// Cluster it reaches the node that wrote), for
    /// at most `deadline` (keep it below the
    /// [`operation_timeout`](Self::operation_timeout)); when fewer confirm,
    /// the delivery is answered `503` and the sender retries (the entry
    /// stays queued and is handled once). Default: off; replication is then
    /// asynchronous and a failover can lose the last events answered `202`.
    pub fn wait_for_replicas(mut self, replicas: u32, deadline: Duration) -> Self {
        self.replicas = None;
        if replicas > 0 {
            match self.target.lazy_connection() {
                Ok(connection) => {
                    let mut wait = redis::cmd("WAIT");
                    wait.arg(replicas).arg(millis(deadline.min(self.timeout)));
                    self.replicas = Some(Replicas {
                        count: replicas,
                        deadline,
                        batch: Batched::new(connection).ending_with(wait),
                    });
                }
                // Only a malformed URL fails here, and `lazy` parsed it.
                Err(error) => tracing::error!(%error, "could not set up waiting for replicas"),
            }
        }
        self
    }

    /// The namespace of every key the queue writes:
    /// `ltvboost:{<namespace>}:queue:`. Default:
    /// [`DEFAULT_NAMESPACE`](crate::dedupe::DEFAULT_NAMESPACE). The receivers
    /// and workers of one service share one; services that share a Redis
    /// each take their own, or one service's workers handle the other's
    /// events and each event is enqueued for only one of them. The braces
    /// are a Redis Cluster hash tag: every key of the queue lives in one
    /// slot. A namespace is 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
    /// Set it before [`checked`](Self::checked), which creates the stream.
    ///
    /// ```no_run
    /// use ltvboost_webhooks::queue::RedisQueue;
    /// # async fn run() -> Result<(), ltvboost_webhooks::queue::QueueError> {
    /// let queue = RedisQueue::lazy("redis://127.0.0.1:6379/")?
    ///     .namespace("billing")?
    ///     .checked()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn namespace(mut self, namespace: &str) -> Result<Self, QueueError> {
        self.keys = Keys::new(&namespaced(namespace, "queue").map_err(QueueError::Invalid)?);
        Ok(self)
    }

    /// The prefix of every key the queue writes, verbatim (no hash tag is
    /// added). Default: [`DEFAULT_QUEUE_PREFIX`]; prefer
    /// [`namespace`](Self::namespace).
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.keys = Keys::new(prefix);
        self
    }

    /// How many dead letters are kept; past it the oldest is dropped, counted
    /// (`ltvboost_webhook_queue_dead_letters_dropped_total`) and logged.
    /// Default: [`DEFAULT_DEAD_LETTER_CAP`].
    pub fn dead_letter_cap(mut self, cap: u64) -> Self {
        self.dead_letter_cap = cap.max(1);
        self
    }

    /// How many bytes of dead letters are kept (bodies, signatures and
    /// reasons); past it the oldest are dropped, counted and logged, as past
    /// the [count](Self::dead_letter_cap). The newest dead letter is always
    /// kept, whatever its size. Default: [`DEFAULT_DEAD_LETTER_BYTES`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ltvboost_webhooks::queue::QueueError> {
    /// use ltvboost_webhooks::queue::RedisQueue;
    ///
    /// let queue = RedisQueue::lazy("redis://127.0.0.1:6379/")?
    ///     .dead_letter_cap(50_000)
    ///     .dead_letter_bytes(512 * 1024 * 1024);
    /// # let _ = queue;
    /// # Ok(()) }
    /// ```
    pub fn dead_letter_bytes(mut self, cap: u64) -> Self {
        self.dead_letter_bytes = cap.max(1);
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

    /// Appends a verified delivery with its signature, unless its event was
    /// enqueued before (what
    /// [`WebhookLayer::enqueue`](crate::WebhookLayer::enqueue) calls).
    /// Returns once Redis has acknowledged the write (and the replicas, with
    /// [`wait_for_replicas`](Self::wait_for_replicas)).
    ///
    /// One transaction, no script: `SET` of the event's key to `queued:`
    /// and a token new to this entry (`NX GET`: only when the event is new,
    /// answering what was there) and `XADD` of the entry with the same
    /// token. A transaction cannot skip its `XADD`, so a duplicate appends
    /// an entry too, which the enqueue then deletes; its token is not the
    /// one its event's key holds, so a copy that stays (the deletion failed)
    /// is dropped unrun by a worker. Either both writes happen or neither: a
    /// crash between them loses nothing answered `202`.
    pub async fn enqueue(&self, delivery: &Delivery) -> Result<Enqueued, QueueError> {
        let token = crate::dedupe::ClaimToken::random().to_string();
        let mut claim = redis::cmd("SET");
        claim
            .arg(self.keys.event(delivery.dedupe_key()))
            .arg(format!("{QUEUED}{token}"))
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(self.done_ttl));
        let mut append = redis::cmd("XADD");
        append
            .arg(&self.keys.stream)
            .arg("*")
            .arg("body")
            .arg(delivery.envelope().body().as_ref())
            .arg("signature")
            .arg(delivery.signature().to_header_value())
            // Which secret verified it: only a worker holding it runs the entry.
            .arg("key")
            .arg(delivery.key_id().to_string())
            .arg("token")
            .arg(&token);
        // The account it was received for: the worker verifies with its secrets.
        if let Some(account) = delivery.account() {
            append.arg("account").arg(account);
        }
        // The delivery span's context, so the worker's span continues its trace.
        if let Some(traceparent) = crate::trace::current_traceparent() {
            append.arg(crate::trace::TRACEPARENT).arg(traceparent);
        }
        let transaction = vec![redis::cmd("MULTI"), claim, append, redis::cmd("EXEC")];
        let batch = self.replicas.as_ref().map_or(&self.redis, |r| &r.batch);
        let answer = self.bounded(batch.send(transaction)).await?;
        let (before, id): (Option<String>, String) =
            redis::FromRedisValue::from_redis_value(answer.value).map_err(|e| {
                self.failed(crate::redis::CallError::Redis(redis::RedisError::from(e)))
            })?;
        if let Some(replicas) = &self.replicas {
            let confirmed = answer
                .ending
                .and_then(|value| redis::FromRedisValue::from_redis_value(value).ok())
                .unwrap_or(0u64);
            if confirmed < u64::from(replicas.count) {
                return Err(QueueError::NotReplicated {
                    stream: self.keys.stream.clone(),
                    confirmed,
                    wanted: replicas.count,
                    deadline: replicas.deadline,
                });
            }
        }
        let mut delete = redis::cmd("XDEL");
        delete.arg(&self.keys.stream).arg(&id);
        match before {
            None => Ok(Enqueued::Added(id)),
            // This very transaction, sent again by the client after a lost
            // connection (redis-rs' cluster client resends a pipeline): the
            // second entry carries the key's own token, and would run too.
            Some(before) if before.strip_prefix(QUEUED) == Some(token.as_str()) => {
                let _: u64 = self.bounded(batch.query(delete)).await?;
                Ok(Enqueued::Added(id))
            }
            // A duplicate: its copy carries a token the key does not hold,
            // so a worker would drop it unrun; removed now, it neither waits
            // in the stream nor outlives the key (an entry that waits longer
            // than `done_ttl` for a worker holding its key would find the
            // key gone and run). If the removal fails, the worker's check
            // still drops the copy.
            Some(_) => {
                if let Err(error) = self.bounded(batch.query::<u64>(delete)).await {
                    tracing::debug!(%error, "could not remove a duplicate's copy; workers drop it unrun");
                }
                Ok(Enqueued::Duplicate)
            }
        }
    }

    /// The queue's counts and the oldest entry's age, read in one step.
    ///
    /// ```no_run
    /// # async fn run(queue: ltvboost_webhooks::queue::RedisQueue) -> Result<(), ltvboost_webhooks::queue::QueueError> {
    /// let stats = queue.stats().await?;
    /// println!("{} waiting, {} dead", stats.waiting(), stats.dead_letters);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut invocation = script!(scripts::STATS).prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.retry)
            .key(&self.keys.dead)
            .arg(GROUP);
        let mut connection = self.redis.connection();
        let (entries, oldest, pending, scheduled_retries, dead_letters, consumers): (
            u64,
            i64,
            u64,
            u64,
            u64,
            u64,
        ) = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(QueueStats {
            entries,
            pending,
            oldest_age: u64::try_from(oldest).ok().map(Duration::from_millis),
            scheduled_retries,
            dead_letters,
            consumers,
        })
    }

    /// The oldest `count` dead letters.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.dead_letters_after(None, count).await
    }

    /// Up to `count` dead letters, oldest first, after the dead letter
    /// `after` (from the start when `None`): pass the last id of a page to
    /// get the next.
    ///
    /// ```no_run
    /// # async fn run(queue: ltvboost_webhooks::queue::RedisQueue) -> Result<(), ltvboost_webhooks::queue::QueueError> {
    /// let mut after = None;
    /// loop {
    ///     let page = queue.dead_letters_after(after.as_deref(), 100).await?;
    ///     let Some(last) = page.last() else { break };
    ///     after = Some(last.id.clone());
    ///     for letter in &page {
    ///         println!("{} {} {}", letter.id, letter.type_name, letter.error);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn dead_letters_after(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let range = self.dead_range(after, count).await?;
        Ok(range.ids.iter().map(DeadLetter::from_entry).collect())
    }

    /// The body of the dead letter `id` (the event's JSON, as signed), when
    /// there is one.
    pub async fn dead_letter_body(&self, id: &str) -> Result<Option<bytes::Bytes>, QueueError> {
        let mut connection = self.redis.connection();
        let mut command = redis::cmd("XRANGE");
        command.arg(&self.keys.dead).arg(id).arg(id);
        let range: StreamRangeReply = self.bounded(command.query_async(&mut connection)).await?;
        Ok(range
            .ids
            .first()
            .and_then(|entry| entry.get::<Vec<u8>>("body"))
            .map(bytes::Bytes::from))
    }

    /// Moves every dead letter there is now back onto the stream, oldest
    /// first; how many. One dead-lettered again meanwhile stays dead.
    pub async fn requeue_all(&self) -> Result<u64, QueueError> {
        let mut connection = self.redis.connection();
        let mut newest = redis::cmd("XREVRANGE");
        newest
            .arg(&self.keys.dead)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let newest: StreamRangeReply = self.bounded(newest.query_async(&mut connection)).await?;
        let Some(last) = newest.ids.first().map(|entry| stream_id(&entry.id)) else {
            return Ok(0);
        };
        let mut moved = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.dead_range(after.as_deref(), 100).await?;
            let Some(tail) = page.ids.last() else {
                return Ok(moved);
            };
            after = Some(tail.id.clone());
            for entry in &page.ids {
                if stream_id(&entry.id) > last {
                    return Ok(moved);
                }
                moved += u64::from(self.requeue(&entry.id).await?);
            }
        }
    }

    /// Deletes the dead letters that were dead-lettered before `before`;
    /// how many.
    pub async fn purge_dead_letters_before(
        &self,
        before: std::time::SystemTime,
    ) -> Result<u64, QueueError> {
        let millis = before
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let mut connection = self.redis.connection();
        let mut invocation = script!(scripts::PURGE_DEAD).prepare_invoke();
        invocation
            .key(&self.keys.dead)
            .key(&self.keys.dead_bytes)
            .arg(format!("{millis}-0"));
        self.bounded(invocation.invoke_async(&mut connection)).await
    }

    async fn dead_range(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<StreamRangeReply, QueueError> {
        let mut connection = self.redis.connection();
        let mut command = redis::cmd("XRANGE");
        command
            .arg(&self.keys.dead)
            .arg(after.map_or_else(|| "-".to_owned(), |id| format!("({id}")))
            .arg("+")
            .arg("COUNT")
            .arg(count);
        self.bounded(command.query_async(&mut connection)).await
    }

    /// Moves the dead letter `id` back onto the stream, its attempts reset.
    /// Whether there was one.
    pub async fn requeue(&self, id: &str) -> Result<bool, QueueError> {
        let mut invocation = script!(scripts::REQUEUE).prepare_invoke();
        invocation
            .key(&self.keys.dead)
            .key(&self.keys.stream)
            .key(&self.keys.dead_bytes)
            .arg(id);
        let mut connection = self.redis.connection();
        let moved: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(moved == 1)
    }

    /// Creates the stream and its group when missing (also on a full Redis).
    /// Whether it created the group.
    async fn ensure_group(&self) -> Result<bool, QueueError> {
        let mut invocation = script!(scripts::ENSURE_GROUP).prepare_invoke();
        invocation.key(&self.keys.stream).arg(GROUP);
        let mut connection = self.redis.connection();
        let created: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(created == 1)
    }

    /// A Redis call under the operation timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, QueueError> {
        bounded(self.timeout, call)
            .await
            .map_err(|error| self.failed(error))
    }

    /// A failed call, named after this queue.
    fn failed(&self, error: crate::redis::CallError) -> QueueError {
        QueueError::call(&self.keys.stream, self.timeout, error)
    }
}

/// A stream id's two numbers, for ordering.
fn stream_id(id: &str) -> (u64, u64) {
    let (millis, sequence) = id.split_once('-').unwrap_or((id, "0"));
    (millis.parse().unwrap_or(0), sequence.parse().unwrap_or(0))
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL (and any password in it) is deliberately absent.
        f.debug_struct("RedisQueue")
            .field("stream", &self.keys.stream)
            .field("timeout", &self.timeout)
            .field("dead_letter_cap", &self.dead_letter_cap)
            .field("dead_letter_bytes", &self.dead_letter_bytes)
            .field("require_durable", &self.require_durable)
            .field(
                "replicas",
                &self.replicas.as_ref().map(|r| (r.count, r.deadline)),
            )
            .finish_non_exhaustive()
    }
}

impl crate::receiver::enqueue::Enqueue for RedisQueue {
    async fn enqueue(&self, delivery: &Delivery) -> Result<Enqueued, crate::dedupe::StoreError> {
        Ok(RedisQueue::enqueue(self, delivery).await?)
    }
}
