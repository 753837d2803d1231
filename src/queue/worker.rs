//! The worker: reads the stream through the consumer group, verifies each
//! entry, calls the handlers while it holds the entry, and records the end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::scripts::{self, script};
use super::{DeadLetter, GROUP, QueueError, RedisQueue};
use crate::Backoff;
use crate::Outcome;
use crate::event::Envelope;
use crate::handler::{Delivery, Dispatched, Handlers};
use crate::metrics;
use crate::redis::CallError;
use crate::redis::{Connection, millis};
use crate::secrets::{Keys, SecretSource};
use crate::signature::{KeyId, Signature};

/// Handler calls a worker runs at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Handler starts per event before it is dead-lettered, by default: with
/// the default backoff (1 min, growing 4× to at most 6 h) the last comes
/// about 18 hours after the first, close to the sender's own 24-hour policy,
/// which queue mode replaces.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// How long an entry stays pending with a silent worker before another
/// worker takes it, by default. A running handler's worker renews its hold
/// about every third of it, so it bounds how long a crash goes unnoticed,
/// not how long a handler may run.
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(5 * 60);

/// How long one handler call may run by default before it is dropped and
/// counts as a failed attempt: a hung handler ends, and is retried.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long the blocking read waits for new entries.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// How often the group is tidied: acknowledged leftovers trimmed, consumers
/// of crashed workers removed.
const TIDY_EVERY: Duration = Duration::from_secs(60);

/// How long the maintenance lease lasts unrenewed: the worker holding it
/// renews it at every pass (at least once a second); when it dies, another
/// takes over within this.
const MAINTENANCE_LEASE: Duration = Duration::from_secs(5);

/// A consumer holding nothing and silent this long belongs to a worker that
/// is gone (a live worker reads every second).
const STALE_CONSUMER: Duration = Duration::from_secs(3600);

type DeadLetterHook = Arc<dyn Fn(&DeadLetter) + Send + Sync>;

/// Handles what receivers enqueued: reads the stream through a consumer
/// group, verifies each entry's signature with the same secrets as the
/// receivers, calls the handlers, retries with backoff, dead-letters after
/// the last attempt, and claims what a crashed worker left pending. See the
/// [module docs](super).
///
/// ```no_run
/// use ltvboost_webhooks::handler::{Handlers, SegmentHandler};
/// use ltvboost_webhooks::queue::{RedisQueue, Worker};
/// use ltvboost_webhooks::signature::Verifier;
///
/// struct Segments;
/// impl SegmentHandler for Segments {}
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = RedisQueue::connect("redis://127.0.0.1:6379/").await?;
/// let verifier = Verifier::from_list(&std::env::var("LTVBOOST_WEBHOOK_SECRET")?)?;
/// Worker::new(queue, verifier, Handlers::segments(Segments))
///     .concurrency(32)
///     .run(ltvboost_webhooks::serve::shutdown_signal())
///     .await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Worker {
    queue: RedisQueue,
    secrets: Arc<dyn SecretSource>,
    handlers: Handlers,
    consumer: String,
    concurrency: usize,
    max_attempts: u32,
    retry_backoff: Backoff,
    claim_idle: Duration,
    handler_timeout: Option<Duration>,
    acknowledge_mismatched: bool,
    on_dead_letter: Option<DeadLetterHook>,
    /// Key ids this worker said it lacks: said once each, not per entry.
    missing_keys: Arc<std::sync::Mutex<HashMap<Missing, Lacking>>>,
    /// The entries this worker runs, by id: never run twice at once.
    running: Arc<std::sync::Mutex<HashMap<String, Arc<Hold>>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("consumer", &self.consumer)
            .field("concurrency", &self.concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff", &self.retry_backoff)
            .field("claim_idle", &self.claim_idle)
            .field("handler_timeout", &self.handler_timeout)
            .finish_non_exhaustive()
    }
}

/// One stream entry, as read: nothing in it is trusted until its signature
/// verifies.
struct Entry {
    id: String,
    body: Bytes,
    signature: String,
    /// The key id of the secret that verified it at the receiver (absent
    /// from entries an earlier version wrote; unchecked until it verifies).
    key_id: Option<KeyId>,
    /// The account it was received for, when the receivers have accounts
    /// (unchecked until it verifies with that account's secrets).
    account: Option<String>,
    /// Handler starts recorded as failures, on earlier entries of the event.
    attempts: u32,
    /// Times this entry was delivered to a worker, this one included.
    deliveries: u32,
    /// The token its event's key holds while this entry is the one to run
    /// it (absent from entries an earlier version wrote).
    token: Option<String>,
    /// The receiving span's trace context, when it was recorded.
    traceparent: Option<Vec<u8>>,
    /// This run's hold: the delivery count it owns the entry under (every
    /// script that ends or renews the entry checks it), moved on when this
    /// worker's own claim takes the entry again while it runs.
    hold: Arc<Hold>,
}

/// A run's hold on its entry.
struct Hold {
    deliveries: AtomicU32,
    /// When Redis last confirmed the hold (read, claim or renewal).
    confirmed: std::sync::Mutex<tokio::time::Instant>,
}

impl Hold {
    fn new(deliveries: u32) -> Arc<Self> {
        Arc::new(Self {
            deliveries: AtomicU32::new(deliveries),
            confirmed: std::sync::Mutex::new(tokio::time::Instant::now()),
        })
    }

    fn deliveries(&self) -> u32 {
        self.deliveries.load(Ordering::SeqCst)
    }

    fn confirm(&self) {
        if let Ok(mut confirmed) = self.confirmed.lock() {
            *confirmed = tokio::time::Instant::now();
        }
    }

    /// Whether no other worker can have claimed the entry yet.
    fn lasts(&self, claim_idle: Duration) -> bool {
        self.confirmed
            .lock()
            .is_ok_and(|confirmed| confirmed.elapsed() < claim_idle)
    }
}

impl Entry {
    fn read(entry: &StreamId, deliveries: u32) -> Self {
        Self {
            id: entry.id.clone(),
            body: Bytes::from(entry.get::<Vec<u8>>("body").unwrap_or_default()),
            signature: entry.get("signature").unwrap_or_default(),
            key_id: entry.get::<String>("key").and_then(|key| key.parse().ok()),
            account: entry.get("account"),
            attempts: entry.get("attempts").unwrap_or(0),
            token: entry.get("token"),
            deliveries,
            traceparent: entry.get(crate::trace::TRACEPARENT),
            hold: Hold::new(deliveries),
        }
    }

    /// Handler starts including this one: each delivery of this entry
    /// started one, whether or not its end was recorded.
    fn attempt(&self) -> u32 {
        self.attempts.saturating_add(self.deliveries)
    }
}

/// Why a worker cannot verify an entry, and passes it on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Missing {
    /// The secret that verified it at the receiver, by key id.
    Key(KeyId),
    /// The account it was received for (none: queued by a receiver without
    /// accounts), unknown to this worker's source.
    Account(Option<String>),
}

/// Since when a worker has lacked a key or an account, and whether it said
/// so.
struct Lacking {
    since: tokio::time::Instant,
    said: bool,
}

/// How long a worker may lack a key or an account before it counts and
/// logs it: receivers and workers that follow one secret file read it at
/// different moments, so for a second or two after a new secret is written,
/// a worker meets entries it verified at a receiver before it read the file
/// itself. Those are passed on quietly.
const LACKING_GRACE: Duration = Duration::from_secs(10);

/// What an event's key says about it.
enum EventState {
    /// Handled.
    Done,
    /// Queued, to be run by the entry carrying this token.
    Queued(String),
    /// No key: expired or evicted.
    Missing,
    /// Another value: an earlier version's `queued`.
    Other,
    /// Redis did not answer.
    Unread,
}

/// How an entry's handling ends.
enum End {
    /// Handled: the event (by its dedupe key) is recorded done.
    Done(String),
    /// Not run: a copy of an event queued or handled already.
    Discard,
    /// Not run yet: whether it should run could not be read. Handed back,
    /// uncounted, for the next claim to try again.
    Later,
    Retry(String),
    Dead(String),
}

impl Worker {
    /// A worker for `queue`, verifying entries with `verifier` (the
    /// receivers' secrets) and calling `handlers`, with the default policy.
    /// Its consumer name is unique to the process.
    ///
    /// Each entry names the secret that verified it at the receiver (by
    /// [`KeyId`]). An entry whose secret this worker does not hold is neither
    /// run nor dead-lettered: it is passed on at once to the other workers,
    /// uncounted as an attempt, logged at `error` (once per key id) and
    /// counted, so workers and receivers can be redeployed in any order
    /// during a rotation. An entry whose secret it holds but that does not
    /// verify was altered or injected in Redis, and is dead-lettered.
    ///
    /// `secrets` is the receivers' [`SecretSource`]: a
    /// [`Verifier`](crate::signature::Verifier) (fixed secrets), a
    /// [`SecretFile`](crate::secrets::SecretFile) (the receivers' file,
    /// followed without a restart), or one with accounts, asked for the
    /// account each entry was received for.
    pub fn new(queue: RedisQueue, secrets: impl SecretSource, handlers: Handlers) -> Self {
        let consumer = format!(
            "{}-{}",
            std::process::id(),
            crate::dedupe::ClaimToken::random()
        );
        Self {
            queue,
            secrets: Arc::new(secrets),
            handlers,
            consumer,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_backoff: Backoff::new(
                Duration::from_secs(60),
                4.0,
                Duration::from_secs(6 * 3600),
            ),
            claim_idle: DEFAULT_CLAIM_IDLE,
            handler_timeout: Some(DEFAULT_HANDLER_TIMEOUT),
            acknowledge_mismatched: false,
            on_dead_letter: None,
            missing_keys: Arc::default(),
            running: Arc::default(),
        }
    }

    /// How many handler calls run at once. Default: [`DEFAULT_CONCURRENCY`].
    pub fn concurrency(mut self, handlers: usize) -> Self {
        self.concurrency = handlers.max(1);
        self
    }

    /// Handler starts per event before it is dead-lettered, counting starts
    /// that never ended (the process aborted, ran out of memory or was
    /// killed): an event that crashes its worker is given up after this
    /// many. Entries that were running beside it when a worker crashed are
    /// charged a start too. Default: [`DEFAULT_MAX_ATTEMPTS`].
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The waits between attempts. Default: 1 min, growing 4 times, at most
    /// 6 h.
    ///
    /// ```no_run
    /// # async fn run(worker: ltvboost_webhooks::queue::Worker) {
    /// use std::time::Duration;
    /// use ltvboost_webhooks::Backoff;
    ///
    /// let backoff = Backoff::new(Duration::from_secs(30), 2.0, Duration::from_secs(3600));
    /// let worker = worker.retry_backoff(backoff);
    /// # }
    /// ```
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// How long an entry stays pending with a silent worker (crashed, hung,
    /// or cut off from Redis) before another takes it. Default:
    /// [`DEFAULT_CLAIM_IDLE`]. A worker renews its hold on each entry it
    /// runs about every third of this, so a handler may run longer.
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle.max(Duration::from_millis(30));
        self
    }

    /// A deadline for one handler call: past it the call is dropped and
    /// counts as a failure (retried, then dead-lettered). Default:
    /// [`DEFAULT_HANDLER_TIMEOUT`]; `None` lets a call run for ever (its
    /// hold renewed all the while).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn run(worker: ltvboost_webhooks::queue::Worker) {
    /// let worker = worker.handler_timeout(Duration::from_secs(30));
    /// let unbounded = worker.clone().handler_timeout(None);
    /// # }
    /// ```
    pub fn handler_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.handler_timeout = timeout.into();
        self
    }

    /// Whether an event of a known type whose `data` does not fit its
    /// payload counts as handled once the fallback saw it, as
    /// [`WebhookConfig::acknowledge_mismatched`](crate::WebhookConfig::acknowledge_mismatched)
    /// does inline. Default: `false`: it is dead-lettered at once (a retry
    /// would not make it fit), as inline mode answers `400`.
    pub fn acknowledge_mismatched(mut self, acknowledge: bool) -> Self {
        self.acknowledge_mismatched = acknowledge;
        self
    }

    /// The consumer name in the group. Default: the process id and a random
    /// suffix. Two running workers must never share one.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer = name.into();
        self
    }

    /// Called for each event moved to the dead-letter stream.
    pub fn on_dead_letter(mut self, hook: impl Fn(&DeadLetter) + Send + Sync + 'static) -> Self {
        self.on_dead_letter = Some(Arc::new(hook));
        self
    }

    /// Handles entries until `shutdown` completes, then stops reading,
    /// finishes the handler calls in flight, records their ends, removes its
    /// consumer from the group when it holds nothing, and returns.
    ///
    /// Nothing Redis does ends it: an unreachable or full Redis, a lost
    /// consumer group (a restart without persistence, `FLUSHALL`, a failover
    /// to an empty node) are logged and retried, the group recreated.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // A clone runs with state of its own, whatever its consumer name.
        self.running = Arc::default();
        self.missing_keys = Arc::default();
        let worker = Arc::new(self);
        let mut shutdown = std::pin::pin!(shutdown);
        // A full or unreachable Redis at start is waited out.
        loop {
            match worker.queue.ensure_group().await {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "could not set up the consumer group; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = &mut shutdown => return,
                    }
                }
            }
        }
        let slots = Arc::new(Semaphore::new(worker.concurrency));
        let mut running = JoinSet::new();
        let mut reads = worker.read_connection().await;
        // None: not yet (an Instant in the past could underflow on a
        // machine that booted minutes ago).
        let mut maintained: Option<tokio::time::Instant> = None;
        let mut tidied: Option<tokio::time::Instant> = None;
        // Whether this worker holds the maintenance lease.
        let mut maintainer = false;
        let mut stopping = false;
        let mut claim_from = "0-0".to_owned();
        loop {
            while running.try_join_next().is_some() {}
            let maintenance_every = (worker.claim_idle / 2).min(Duration::from_secs(1));
            let mut entries = Vec::new();
            if maintained.is_none_or(|at| at.elapsed() >= maintenance_every) {
                maintained = Some(tokio::time::Instant::now());
                let held = worker.lease().await;
                if held {
                    worker.maintain().await;
                } else if maintainer {
                    // Another worker exports the queue's gauges now: this
                    // one's last values must not linger beside them (the
                    // dashboard and alerts take the maximum).
                    metrics::queue_stats(0, 0, 0.0, 0, 0);
                }
                maintainer = held;
                entries = worker
                    .reclaim(slots.available_permits(), &mut claim_from)
                    .await;
            }
            if maintainer && tidied.is_none_or(|at| at.elapsed() >= TIDY_EVERY) {
                tidied = Some(tokio::time::Instant::now());
                worker.tidy().await;
            }
            if entries.is_empty() {
                let free = slots.available_permits();
                if free == 0 {
                    tokio::select! {
                        _ = running.join_next() => {}
                        () = &mut shutdown => break,
                    }
                    continue;
                }
                let read = {
                    let read = worker.read(&mut reads, free);
                    let mut read = std::pin::pin!(read);
                    tokio::select! {
                        read = &mut read => read,
                        () = &mut shutdown => {
                            // A blocking read dropped now would still be
                            // served by Redis: entries appended meanwhile
                            // would go to this consumer and wait for
                            // `claim_idle`. Let it end (within the block
                            // time) and run what it got.
                            stopping = true;
                            read.await
                        }
                    }
                };
                match read {
                    Ok(read) => entries = read,
                    Err(error) if !stopping => worker.recover(error, &mut reads).await,
                    Err(error) => tracing::warn!(%error, "the last read failed"),
                }
            }
            let mut ran_suspect = false;
            for entry in entries {
                if entry.deliveries > 1 {
                    // Taken from a worker that went silent, perhaps killed by
                    // this very entry: run alone, so that a crash is charged
                    // to it and to no innocent entry beside it. One a pass:
                    // the others go back to the group at once, uncounted,
                    // rather than wait unheld.
                    if std::mem::replace(&mut ran_suspect, true) {
                        worker.give_back(&entry).await;
                        continue;
                    }
                    while running.join_next().await.is_some() {}
                    let alone = worker.clone();
                    running.spawn(async move { alone.handle(entry).await });
                    while running.join_next().await.is_some() {}
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let worker = worker.clone();
                running.spawn(async move {
                    worker.handle(entry).await;
                    drop(slot);
                });
            }
            if stopping {
                break;
            }
        }
        // Stop reading; let what runs finish and record its end.
        while running.join_next().await.is_some() {}
        if maintainer {
            // Its gauges must not linger at their last values.
            metrics::queue_stats(0, 0, 0.0, 0, 0);
        }
        worker.leave().await;
    }

    /// After a failed read: recreates a lost group at once; otherwise waits
    /// a moment and reconnects.
    async fn recover(&self, error: QueueError, reads: &mut Option<Connection>) {
        match error {
            QueueError::NoGroup { .. } => match self.queue.ensure_group().await {
                Ok(_) => {
                    tracing::warn!(
                        "the consumer group was gone (Redis restarted empty, FLUSHALL or a failover); recreated it"
                    );
                    return;
                }
                Err(error) => tracing::warn!(%error, "could not recreate the consumer group"),
            },
            error => {
                tracing::warn!(%error, "could not read the queue; retrying");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        *reads = self.read_connection().await;
    }

    /// A connection of its own for the blocking read, with no response
    /// timeout of its own: [`Self::read`] bounds each read by the block time
    /// plus the operation timeout, so a reply is never cut off while Redis
    /// is still blocking, and entries delivered in it are never stranded.
    async fn read_connection(&self) -> Option<Connection> {
        self.queue
            .target
            .dedicated_connection(self.queue.timeout)
            .await
            .map_err(|error| tracing::warn!(%error, "could not connect to the queue"))
            .ok()
    }

    /// New entries for this consumer, waiting up to a second for some.
    async fn read(
        &self,
        connection: &mut Option<Connection>,
        count: usize,
    ) -> Result<Vec<Entry>, QueueError> {
        let Some(connection) = connection else {
            let unconnected =
                redis::RedisError::from((redis::ErrorKind::Io, "no connection to the queue"));
            return Err(self.queue.failed(CallError::Redis(unconnected)));
        };
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis().to_string())
            .arg("STREAMS")
            .arg(&self.queue.keys.stream)
            .arg(">");
        // No shorter deadline than the block time: a reply is never cut off
        // while Redis still blocks.
        let reply = crate::redis::bounded(
            READ_BLOCK + self.queue.timeout,
            command.query_async::<Option<StreamReadReply>>(connection),
        )
        .await
        .map_err(|error| {
            QueueError::call(
                &self.queue.keys.stream,
                READ_BLOCK + self.queue.timeout,
                error,
            )
        })?;
        Ok(reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(|entry| Entry::read(&entry, 1))
            .collect())
    }

    /// Entries other consumers left pending for longer than `claim_idle`,
    /// with how often each was delivered.
    ///
    /// `cursor` is where the previous call stopped: Redis looks at a
    /// bounded number of pending entries per call, so long-running entries
    /// ahead of a dead worker's must not be looked at again every time.
    async fn reclaim(&self, count: usize, cursor: &mut String) -> Vec<Entry> {
        if count == 0 {
            return Vec::new();
        }
        let mut command = redis::cmd("XAUTOCLAIM");
        command
            .arg(&self.queue.keys.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis().to_string())
            .arg(cursor.as_str())
            .arg("COUNT")
            .arg(count);
        let mut connection = self.queue.redis.connection();
        let reply = match self
            .queue
            .bounded(command.query_async::<StreamAutoClaimReply>(&mut connection))
            .await
        {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(%error, "could not claim idle entries");
                return Vec::new();
            }
        };
        *cursor = reply.next_stream_id.clone();
        if !reply.deleted_ids.is_empty() {
            tracing::error!(entries = ?reply.deleted_ids, "pending entries deleted from the stream");
            lost(
                reply.deleted_ids.len() as u64,
                "pending entries deleted from the stream before a worker finished them",
            );
        }
        if reply.claimed.is_empty() {
            return Vec::new();
        }
        tracing::info!(
            entries = reply.claimed.len(),
            "claimed entries a silent worker left pending"
        );
        // How often each was delivered, this claim included: asked of each
        // claimed id, so that other entries pending here cannot crowd one
        // out of the answer.
        let mut pending = redis::pipe();
        for entry in &reply.claimed {
            pending
                .cmd("XPENDING")
                .arg(&self.queue.keys.stream)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .arg(&self.consumer);
        }
        let deliveries = match self
            .queue
            .bounded(pending.query_async::<Vec<StreamPendingCountReply>>(&mut connection))
            .await
        {
            Ok(replies) => replies
                .into_iter()
                .flat_map(|reply| reply.ids)
                .map(|p| (p.id, u32::try_from(p.times_delivered).unwrap_or(u32::MAX)))
                .collect::<HashMap<_, _>>(),
            Err(error) => {
                // Without the count there is no hold to run under: claimed
                // again after claim_idle.
                tracing::warn!(%error, "could not read the claimed entries' delivery counts");
                return Vec::new();
            }
        };
        let running = self.running.lock().map(|r| r.clone()).unwrap_or_default();
        reply
            .claimed
            .iter()
            .filter_map(|entry| {
                let times = *deliveries.get(&entry.id)?;
                if let Some(hold) = running.get(&entry.id) {
                    // This worker runs it still (its renewal was late): the
                    // run keeps it, under the claim's count.
                    tracing::warn!(entry = %entry.id, "claimed an entry this worker runs; it keeps running once");
                    hold.deliveries.store(times, Ordering::SeqCst);
                    hold.confirm();
                    return None;
                }
                Some(Entry::read(entry, times))
            })
            .collect()
    }

    /// Moves due retries back onto the stream, and reports the queue's state.
    /// Takes or renews the maintenance lease: one worker at a time promotes
    /// due retries, reads the queue's statistics and tidies the group.
    /// Whether this worker holds it.
    async fn lease(&self) -> bool {
        let mut invocation = script!(scripts::LEASE).prepare_invoke();
        invocation
            .key(&self.queue.keys.maintainer)
            .arg(&self.consumer)
            .arg(millis(MAINTENANCE_LEASE));
        match self.invoke::<i64>(invocation).await {
            Ok(held) => held == 1,
            Err(error) => {
                tracing::debug!(%error, "could not take or renew the maintenance lease");
                false
            }
        }
    }

    /// Promotes due retries and exports the queue's gauges (the lease
    /// holder only).
    async fn maintain(&self) {
        let mut invocation = script!(scripts::PROMOTE).prepare_invoke();
        invocation
            .key(&self.queue.keys.retry)
            .key(&self.queue.keys.stream)
            .arg(1000)
            .arg(&self.queue.keys.retry_entry);
        match self.invoke::<(u64, u64)>(invocation).await {
            Ok((_, 0)) => {}
            Ok((_, missing)) => lost(missing, "due retries whose saved entry was deleted"),
            Err(error) => tracing::warn!(%error, "could not schedule due retries"),
        }
        match self.queue.stats().await {
            Ok(stats) => metrics::queue_stats(
                stats.entries,
                stats.pending,
                stats.oldest_age.map_or(0.0, |age| age.as_secs_f64()),
                stats.scheduled_retries,
                stats.dead_letters,
            ),
            Err(error) => tracing::debug!(%error, "could not read the queue's stats"),
        }
    }

    /// The safety cap and the group's housekeeping (see `scripts::TIDY`).
    async fn tidy(&self) {
        let mut invocation = script!(scripts::TIDY).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .arg(GROUP)
            .arg(millis(STALE_CONSUMER.max(self.claim_idle * 2)));
        match self.invoke::<(u64, u64)>(invocation).await {
            Ok((trimmed, removed)) if trimmed + removed > 0 => tracing::info!(
                trimmed,
                consumers_removed = removed,
                "tidied the queue: acknowledged entries left in the stream, and consumers of \
                 workers that are gone"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not tidy the queue"),
        }
    }

    /// Removes this worker's consumer from the group, if it holds nothing.
    async fn leave(&self) {
        let mut release = script!(scripts::RELEASE).prepare_invoke();
        release.key(&self.queue.keys.maintainer).arg(&self.consumer);
        if let Err(error) = self.invoke::<i64>(release).await {
            tracing::debug!(%error, "could not give up the maintenance lease; it lapses by itself");
        }
        let mut invocation = script!(scripts::LEAVE).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .arg(GROUP)
            .arg(&self.consumer);
        if let Err(error) = self.invoke::<i64>(invocation).await {
            tracing::warn!(%error, "could not remove this worker's consumer from the group");
        }
    }

    /// One entry: verified, run while its hold is renewed, its end recorded.
    async fn handle(&self, entry: Entry) {
        let keys = match self.secrets.keys(entry.account.as_deref()).await {
            Ok(Some(keys)) => keys,
            Ok(None) => {
                let account = entry.account.clone();
                return self.pass_on(&entry, Missing::Account(account)).await;
            }
            Err(error) => {
                tracing::warn!(%error, entry = %entry.id, "could not look up the entry's secrets; it waits for the next claim");
                return self.give_back(&entry).await;
            }
        };
        if let Some(key_id) = entry.key_id.filter(|id| !keys.verifier().holds(*id)) {
            return self.pass_on(&entry, Missing::Key(key_id)).await;
        }
        let _running = Running::start(&self.running, &entry);
        let attempt = entry.attempt();
        let span = self.entry_span(&entry, attempt);
        crate::trace::continue_trace(&span, entry.traceparent.as_deref());
        async {
            let end = self.run_entry(&entry, &keys, attempt).await;
            // Held while its end is recorded too: recording may retry for a while.
            self.holding(&entry, self.record(&entry, attempt, end))
                .await;
        }
        .instrument(span)
        .await;
    }

    /// The span of one attempt at an entry. With the `opentelemetry`
    /// feature it also carries OpenTelemetry's messaging attributes.
    fn entry_span(&self, entry: &Entry, attempt: u32) -> tracing::Span {
        #[cfg(feature = "opentelemetry")]
        let span = tracing::info_span!(
            "ltvboost_webhook_worker",
            entry = %entry.id,
            event_id = tracing::field::Empty,
            event_type = tracing::field::Empty,
            attempt,
            otel.name = "process",
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "redis",
            messaging.operation.type = "process",
            messaging.destination.name = %self.queue.keys.stream,
            messaging.message.id = %entry.id,
            error.type = tracing::field::Empty,
        );
        #[cfg(not(feature = "opentelemetry"))]
        let span = tracing::info_span!(
            "ltvboost_webhook_worker",
            entry = %entry.id,
            event_id = tracing::field::Empty,
            event_type = tracing::field::Empty,
            attempt,
        );
        span
    }

    /// What the entry's handling comes to, and its event's dedupe key once
    /// its signature verified.
    async fn run_entry(&self, entry: &Entry, keys: &Keys, attempt: u32) -> End {
        if attempt > self.max_attempts {
            return End::Dead(format!(
                "started {} times without an end: the handler crashed, hung or was killed",
                attempt - 1
            ));
        }
        let verified = Signature::parse(entry.signature.as_bytes()).and_then(|signature| {
            keys.verifier()
                .verify_signature(signature, entry.body.clone())
        });
        let verified = match verified {
            Ok(verified) => verified,
            Err(error) => {
                return End::Dead(format!(
                    "the entry does not verify ({error}): altered or injected in Redis"
                ));
            }
        };
        let delivery = match Envelope::from_bytes(verified.body().clone()) {
            Ok(envelope) => match keys.account() {
                Some(account) => Delivery::new(envelope, &verified).with_account(account),
                None => Delivery::new(envelope, &verified),
            },
            Err(e) => return End::Dead(format!("unreadable entry: {e}")),
        };
        let span = tracing::Span::current();
        span.record("event_id", delivery.id().unwrap_or(""));
        span.record("event_type", delivery.type_name());
        // Any entry whose event is recorded done (reclaimed or retried after
        // another worker finished it, requeued, appended again by a restore
        // or a script run twice, re-delivered by a group recreated over a
        // surviving stream), and any copy appended by a duplicate delivery
        // or a lost race (its token is not the one the event's key holds).
        // Concurrent entries' checks travel together on the multiplexed
        // connection.
        match (self.event_state(&delivery).await, &entry.token) {
            (EventState::Done, _) => {
                tracing::info!("already handled; acknowledged without running");
                return End::Discard;
            }
            (EventState::Unread, _) => return End::Later,
            // The entry its key names, or one whose key expired or was
            // evicted (the window where "once" rests on the key), or an
            // entry an earlier version wrote, without a token.
            (EventState::Queued(token), Some(own)) if token == *own => {}
            (EventState::Missing, _) | (_, None) => {}
            // A copy: of an event queued under another entry's token, or
            // under an earlier version's plain `queued`.
            (EventState::Queued(_) | EventState::Other, Some(_)) => {
                tracing::debug!("a copy of an event queued under another entry; dropped unrun");
                return End::Discard;
            }
        }
        let timer = metrics::Timer::start();
        let dispatched = self.dispatch_holding(entry, &delivery).await;
        let (outcome, error) = match dispatched {
            Dispatched::Handled => (Outcome::Handled, None),
            Dispatched::Mismatched => (
                Outcome::Mismatched {
                    acknowledged: self.acknowledge_mismatched,
                },
                None,
            ),
            Dispatched::Failed(error) => (Outcome::HandlerFailed, Some(error.to_string())),
            Dispatched::Panicked(panic) => (
                Outcome::HandlerPanicked,
                Some(format!("handler panicked: {panic}")),
            ),
        };
        // The same handler metrics as inline mode.
        metrics::handler(
            metrics::type_label(Some(delivery.event_type())),
            outcome.kind(),
            timer.elapsed(),
        );
        match outcome {
            done if done.is_success() => End::Done(delivery.dedupe_key().to_owned()),
            Outcome::Mismatched { .. } => End::Dead(outcome.row().text.trim().to_owned()),
            failed => {
                let error = error.unwrap_or_else(|| failed.kind().to_owned());
                if attempt >= self.max_attempts {
                    End::Dead(error)
                } else {
                    End::Retry(error)
                }
            }
        }
    }

    /// The handler call, under the optional deadline, while this worker
    /// renews its hold on the entry so that no other worker claims it.
    async fn dispatch_holding(&self, entry: &Entry, delivery: &Delivery) -> Dispatched {
        let call = async {
            match self.handler_timeout {
                None => self.handlers.dispatch(delivery).await,
                Some(deadline) => tokio::time::timeout(deadline, self.handlers.dispatch(delivery))
                    .await
                    .unwrap_or_else(|_| {
                        Dispatched::Failed(
                            format!("the handler did not finish within {deadline:?}").into(),
                        )
                    }),
            }
        };
        self.holding(entry, call).await
    }

    /// Runs `work` while renewing this run's hold on `entry` about every
    /// third of `claim_idle`, so that no other worker claims it meanwhile.
    /// The renewal runs on a task of its own: a handler that blocks its
    /// thread does not stop it.
    async fn holding<T>(&self, entry: &Entry, work: impl Future<Output = T>) -> T {
        // Aborted when dropped: if `work` unwinds or is dropped, nothing
        // renews a hold no run has any more.
        let _renewal = AbortOnDrop(tokio::spawn(renew(
            self.queue.clone(),
            self.consumer.clone(),
            entry.id.clone(),
            entry.hold.clone(),
            self.claim_idle,
        )));
        work.await
    }

    /// Hands an entry signed with a secret this worker does not hold back to
    /// the group, looking idle for `claim_idle` and with this delivery
    /// uncounted, so that the next worker's claim (within a second) takes
    /// it. A worker that lacks the key takes it again and passes it on
    /// again: nothing is lost or dead-lettered while no worker holds the
    /// key, and the alert on the metric says so.
    async fn pass_on(&self, entry: &Entry, missing: Missing) {
        // Whether it has lacked it longer than the grace, and is to say so.
        let (lacking, say) = self
            .missing_keys
            .lock()
            .map(|mut lacked| {
                let lacking = lacked.entry(missing.clone()).or_insert(Lacking {
                    since: tokio::time::Instant::now(),
                    said: false,
                });
                let long = lacking.since.elapsed() >= LACKING_GRACE;
                let say = long && !lacking.said;
                lacking.said |= say;
                (long, say)
            })
            .unwrap_or((true, true));
        if lacking {
            metrics::queue_key_missing();
        }
        match (&missing, say) {
            (Missing::Key(key_id), true) => tracing::error!(
                %key_id,
                "an entry was verified by a secret this worker does not hold: add it to \
                 LTVBOOST_WEBHOOK_SECRET or LTVBOOST_WEBHOOK_SECRET_FILE (the worker's secret \
                 source) as on the receivers; its entries are left to workers that hold it"
            ),
            (Missing::Account(None), true) => tracing::error!(
                "an entry queued without an account (by a receiver with \
                 LTVBOOST_WEBHOOK_SECRET or LTVBOOST_WEBHOOK_SECRET_FILE) reached a worker with \
                 accounts: keep a worker with the receivers' earlier secrets running until \
                 such entries are drained; they are left to workers that can verify them"
            ),
            (Missing::Account(Some(account)), true) => tracing::error!(
                %account,
                "an entry was received for an account this worker does not know: add it to \
                 LTVBOOST_WEBHOOK_ACCOUNTS_FILE (the worker's secret source) as on the \
                 receivers; its entries are left to workers that know it"
            ),
            (missing, false) => {
                tracing::debug!(?missing, "passed on an entry this worker cannot verify");
            }
        }
        self.give_back(entry).await;
    }

    /// Hands `entry` back to the group, looking idle for `claim_idle` and
    /// with this delivery uncounted, so that the next claim pass (any
    /// worker's, within a second) takes it.
    async fn give_back(&self, entry: &Entry) {
        let mut invocation = script!(scripts::PASS_ON).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .arg(GROUP)
            .arg(&entry.id)
            .arg(&self.consumer)
            .arg(millis(self.claim_idle))
            .arg(entry.hold.deliveries().saturating_sub(1))
            .arg(entry.hold.deliveries());
        if let Err(error) = self.invoke::<i64>(invocation).await {
            tracing::warn!(%error, "could not hand the entry back; it is claimed after claim_idle");
        }
    }

    /// What the event's key says: done, or queued under an entry's token.
    async fn event_state(&self, delivery: &Delivery) -> EventState {
        let mut get = redis::cmd("GET");
        get.arg(self.queue.keys.event(delivery.dedupe_key()));
        match self
            .queue
            .bounded(self.queue.redis.query::<Option<String>>(get))
            .await
        {
            Ok(Some(state)) if state == "done" => EventState::Done,
            Ok(Some(state)) => match state.strip_prefix(super::QUEUED) {
                Some(token) => EventState::Queued(token.to_owned()),
                None => EventState::Other,
            },
            Ok(None) => EventState::Missing,
            Err(error) => {
                tracing::warn!(%error, "could not read the event's key; the entry waits for the next claim");
                EventState::Unread
            }
        }
    }

    /// Records the entry's end, retrying while Redis fails for as long as
    /// the hold lasts (`claim_idle` since Redis last confirmed it); left
    /// pending after that, it is claimed again.
    async fn record(&self, entry: &Entry, attempt: u32, end: End) {
        match &end {
            End::Later => return self.give_back(entry).await,
            End::Done(_) | End::Discard => {}
            End::Retry(error) => tracing::warn!(
                %error,
                retry_in = ?self.retry_backoff.delay(attempt),
                "handler failed; retrying later"
            ),
            End::Dead(error) => tracing::error!(%error, "dead-lettering the event"),
        }
        if let End::Retry(_) | End::Dead(_) = &end {
            // The OpenTelemetry attributes (absent from the span without the feature).
            let span = tracing::Span::current();
            span.record("otel.status_code", "error");
            let kind = if let End::Retry(_) = &end {
                "retry"
            } else {
                "dead_letter"
            };
            span.record("error.type", kind);
        }
        let mut wait = Duration::from_millis(100);
        loop {
            let recorded = match &end {
                End::Done(dedupe_key) => self.done(entry, dedupe_key).await,
                End::Discard => self.discard(entry).await,
                End::Later => return,
                End::Retry(error) => self.retry(entry, attempt, error).await,
                End::Dead(error) => self.dead_letter(entry, attempt, error).await,
            };
            match recorded {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        "the entry is no longer this worker's: an earlier try that Redis did \
                         not answer in time ended it, or another worker claimed it after this \
                         one was silent for longer than claim_idle"
                    );
                    return;
                }
                Err(error) if entry.hold.lasts(self.claim_idle) => {
                    tracing::warn!(%error, "could not record the entry's end; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::error!(
                        %error,
                        "could not record the entry's end; it will be claimed again after claim_idle"
                    );
                    return;
                }
            }
        }
    }

    /// The done-record (always) and, for the entry's owner, its removal.
    async fn done(&self, entry: &Entry, dedupe_key: &str) -> Result<bool, QueueError> {
        let event = self.queue.keys.event(dedupe_key);
        let ttl = millis(self.queue.done_ttl);
        let done = self
            .queue
            .redis
            .invoke::<i64>(script!(scripts::DONE), |command| {
                command
                    .arg(2)
                    .arg(&self.queue.keys.stream)
                    .arg(&event)
                    .arg(GROUP)
                    .arg(&entry.id)
                    .arg(&self.consumer)
                    .arg(&ttl)
                    .arg(entry.hold.deliveries());
            });
        Ok(self.queue.bounded(done).await? == 1)
    }

    /// For the entry's owner, its removal, the event's key untouched.
    async fn discard(&self, entry: &Entry) -> Result<bool, QueueError> {
        let mut invocation = script!(scripts::DISCARD).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .arg(GROUP)
            .arg(&entry.id)
            .arg(&self.consumer)
            .arg(entry.hold.deliveries());
        Ok(self.invoke::<i64>(invocation).await? == 1)
    }

    async fn retry(&self, entry: &Entry, attempts: u32, error: &str) -> Result<bool, QueueError> {
        let wait = self.retry_backoff.delay(attempts);
        let mut invocation = script!(scripts::RETRY).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .key(&self.queue.keys.retry)
            .key(format!("{}{}", self.queue.keys.retry_entry, entry.id))
            .arg(GROUP)
            .arg(&entry.id)
            .arg(&self.consumer)
            .arg(millis(wait))
            .arg(attempts)
            .arg(error)
            .arg(entry.hold.deliveries());
        match self.invoke::<i64>(invocation).await? {
            0 => Ok(false),
            1 => {
                metrics::queue_retry();
                Ok(true)
            }
            _ => {
                lost(1, "an entry deleted from the stream while it ran");
                Ok(true)
            }
        }
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        attempts: u32,
        error: &str,
    ) -> Result<bool, QueueError> {
        let mut invocation = script!(scripts::DEAD).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .key(&self.queue.keys.dead)
            .key(&self.queue.keys.dead_bytes)
            .arg(GROUP)
            .arg(&entry.id)
            .arg(&self.consumer)
            .arg(self.queue.dead_letter_cap)
            .arg(attempts)
            .arg(error)
            .arg(entry.hold.deliveries())
            .arg(self.queue.dead_letter_bytes);
        let Some((id, dropped, found)) =
            self.invoke::<Option<(String, u64, u8)>>(invocation).await?
        else {
            return Ok(false);
        };
        if found == 0 {
            lost(
                1,
                "an entry deleted from the stream while it ran (its dead letter has no body)",
            );
        }
        metrics::queue_dead_letter();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                cap = self.queue.dead_letter_cap,
                bytes_cap = self.queue.dead_letter_bytes,
                "the dead letters are at their cap: dropped the oldest"
            );
            metrics::queue_dead_letters_dropped(dropped);
        }
        if let Some(hook) = &self.on_dead_letter {
            hook(&DeadLetter::new(
                id,
                &entry.body,
                attempts,
                error.to_owned(),
            ));
        }
        Ok(true)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, QueueError> {
        let mut connection = self.queue.redis.connection();
        self.queue
            .bounded(invocation.invoke_async::<T>(&mut connection))
            .await
    }
}

/// Renews `hold` on entry `id` about every third of `claim_idle`, for as
/// long as it is not aborted.
async fn renew(
    queue: RedisQueue,
    consumer: String,
    id: String,
    hold: Arc<Hold>,
    claim_idle: Duration,
) {
    let mut every = tokio::time::interval(claim_idle / 3);
    every.tick().await;
    loop {
        every.tick().await;
        let mut invocation = script!(scripts::RENEW).prepare_invoke();
        invocation
            .key(&queue.keys.stream)
            .arg(GROUP)
            .arg(&id)
            .arg(&consumer)
            .arg(hold.deliveries());
        let mut connection = queue.redis.connection();
        match queue
            .bounded(invocation.invoke_async::<i64>(&mut connection))
            .await
        {
            Ok(1) => hold.confirm(),
            Ok(_) => tracing::warn!(
                "another worker claimed this entry while this run held it (this worker was \
                 silent for longer than claim_idle); its end is theirs"
            ),
            Err(error) => tracing::warn!(%error, "could not renew the hold on the entry"),
        }
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An entry in this worker's running set, for as long as it lives.
struct Running<'a> {
    running: &'a std::sync::Mutex<HashMap<String, Arc<Hold>>>,
    id: String,
}

impl<'a> Running<'a> {
    fn start(running: &'a std::sync::Mutex<HashMap<String, Arc<Hold>>>, entry: &Entry) -> Self {
        if let Ok(mut running) = running.lock() {
            running.insert(entry.id.clone(), entry.hold.clone());
        }
        Self {
            running,
            id: entry.id.clone(),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&self.id);
        }
    }
}

/// Events lost to something outside the queue (a key deleted by hand, an
/// older version's trimming): logged at `error` and counted.
fn lost(count: u64, what: &str) {
    tracing::error!(count, "{what}: their events are lost");
    metrics::queue_entries_lost(count);
}
