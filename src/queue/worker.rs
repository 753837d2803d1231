//! The worker: reads the stream through the consumer group, calls the
//! handlers, and records each entry's end.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::Script;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{DeadLetter, GROUP, RedisQueue};
use crate::Backoff;
use crate::Outcome;
use crate::dedupe::StoreError;
use crate::event::Envelope;
use crate::handler::{Delivery, Dispatched, Handlers};
use crate::metrics;
use crate::redis::millis;

/// Handler calls a worker runs at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Handler calls per event before it is dead-lettered, by default: with the
/// default backoff (1 min, growing 4× to at most 6 h) the last comes about
/// 18 hours after the first, close to the sender's own 24-hour policy,
/// which queue mode replaces.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// How long an entry stays pending with a silent worker before another
/// worker takes it, by default: longer than the slowest handler should run.
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(5 * 60);

/// KEYS[1] = stream, KEYS[2] = dedupe key. ARGV: group, entry id, TTL ms.
/// The done-record and the acknowledgement, atomically.
const DONE: &str = r"
redis.call('SET', KEYS[2], 'done', 'PX', ARGV[3])
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
";

/// KEYS[1] = stream, KEYS[2] = retry set. ARGV: group, entry id, due (ms),
/// the entry as JSON. Scheduled and acknowledged, atomically.
const RETRY: &str = r"
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
";

/// KEYS[1] = stream, KEYS[2] = dead-letter stream. ARGV: group, entry id,
/// then the dead letter's fields. Moved and acknowledged, atomically.
const DEAD: &str = r"
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
";

/// KEYS[1] = retry set, KEYS[2] = stream. ARGV: now (ms), how many. Moves
/// the retries that are due back onto the stream.
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local e = cjson.decode(member)
  redis.call('XADD', KEYS[2], '*', 'body', e.body, 'secret_index', e.secret_index,
    'received_at', e.received_at, 'attempts', e.attempts, 'type', e.type,
    'event_id', e.event_id, 'key', e.key, 'error', e.error)
end
return #due
";

type DeadLetterHook = Arc<dyn Fn(&DeadLetter) + Send + Sync>;

/// Handles what receivers enqueued: reads the stream through a consumer
/// group, calls the handlers, retries with backoff, dead-letters after the
/// last attempt, and claims what a crashed worker left pending. See the
/// [module docs](super).
///
/// ```no_run
/// use ltvboost_webhooks::handler::{Handlers, SegmentHandler};
/// use ltvboost_webhooks::queue::{RedisQueue, Worker};
///
/// struct Segments;
/// impl SegmentHandler for Segments {}
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = RedisQueue::connect("redis://127.0.0.1:6379/").await?;
/// Worker::new(queue, Handlers::segments(Segments))
///     .concurrency(32)
///     .run(ltvboost_webhooks::serve::shutdown_signal())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Worker {
    queue: RedisQueue,
    handlers: Handlers,
    consumer: String,
    concurrency: usize,
    max_attempts: u32,
    retry_backoff: Backoff,
    claim_idle: Duration,
    acknowledge_mismatched: bool,
    on_dead_letter: Option<DeadLetterHook>,
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
            .finish_non_exhaustive()
    }
}

/// One stream entry, as read.
struct Entry {
    id: String,
    body: Bytes,
    secret_index: usize,
    received_at: String,
    attempts: u32,
    type_name: String,
    event_id: String,
    key: String,
}

impl Entry {
    fn read(entry: &StreamId) -> Self {
        let text = |name: &str| entry.get::<String>(name).unwrap_or_default();
        Self {
            id: entry.id.clone(),
            body: Bytes::from(entry.get::<Vec<u8>>("body").unwrap_or_default()),
            secret_index: entry.get("secret_index").unwrap_or(0),
            received_at: text("received_at"),
            attempts: entry.get("attempts").unwrap_or(0),
            type_name: text("type"),
            event_id: text("event_id"),
            key: text("key"),
        }
    }
}

impl Worker {
    /// A worker for `queue`, calling `handlers`, with the default policy.
    /// Its consumer name is unique to the process.
    pub fn new(queue: RedisQueue, handlers: Handlers) -> Self {
        let consumer = format!(
            "{}-{}",
            std::process::id(),
            crate::dedupe::ClaimToken::random()
        );
        Self {
            queue,
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
            acknowledge_mismatched: false,
            on_dead_letter: None,
        }
    }

    /// How many handler calls run at once. Default: [`DEFAULT_CONCURRENCY`].
    pub fn concurrency(mut self, handlers: usize) -> Self {
        self.concurrency = handlers.max(1);
        self
    }

    /// Handler calls per event before it is dead-lettered. Default:
    /// [`DEFAULT_MAX_ATTEMPTS`].
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The waits between attempts. Default: 1 min, growing 4 times, at most
    /// 6 h.
    ///
    /// ```no_run
    /// # async fn run(queue: ltvboost_webhooks::queue::RedisQueue, handlers: ltvboost_webhooks::handler::Handlers) {
    /// use std::time::Duration;
    /// use ltvboost_webhooks::Backoff;
    /// use ltvboost_webhooks::queue::Worker;
    ///
    /// let backoff = Backoff::new(Duration::from_secs(30), 2.0, Duration::from_secs(3600));
    /// let worker = Worker::new(queue, handlers).retry_backoff(backoff);
    /// # }
    /// ```
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// How long an entry stays pending with a silent worker before another
    /// takes it. Default: [`DEFAULT_CLAIM_IDLE`]. Keep it longer than the
    /// slowest handler: a claim of a running handler's entry runs it twice.
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle.max(Duration::from_millis(10));
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
    /// suffix.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer = name.into();
        self
    }

    /// Called for each event moved to the dead-letter stream.
    pub fn on_dead_letter(mut self, hook: impl Fn(&DeadLetter) + Send + Sync + 'static) -> Self {
        self.on_dead_letter = Some(Arc::new(hook));
        self
    }

    /// The wait before attempt `attempt + 1`, after `attempt` calls.
    fn backoff(&self, attempt: u32) -> Duration {
        self.retry_backoff.delay(attempt)
    }

    /// Handles entries until `shutdown` completes, then stops reading,
    /// finishes the handler calls in flight, records their ends, and returns.
    /// Redis errors are logged and retried; only a failure to set up the
    /// consumer group is returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        self.queue.ensure_group().await?;
        let worker = Arc::new(self);
        let slots = Arc::new(Semaphore::new(worker.concurrency));
        let mut running = JoinSet::new();
        let mut reads = worker.read_connection().await;
        let mut shutdown = std::pin::pin!(shutdown);
        // None: not yet (an Instant in the past could underflow on a
        // machine that booted minutes ago).
        let mut maintained: Option<tokio::time::Instant> = None;
        loop {
            while running.try_join_next().is_some() {}
            let maintenance_every = (worker.claim_idle / 2).min(Duration::from_secs(1));
            let mut entries = Vec::new();
            if maintained.is_none_or(|at| at.elapsed() >= maintenance_every) {
                maintained = Some(tokio::time::Instant::now());
                worker.maintain().await;
                entries = worker.reclaim(slots.available_permits()).await;
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
                let read = worker.read(&mut reads, free);
                tokio::select! {
                    read = read => match read {
                        Ok(read) => entries = read,
                        Err(error) => {
                            tracing::warn!(%error, "could not read the queue; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            reads = worker.read_connection().await;
                        }
                    },
                    () = &mut shutdown => break,
                }
            }
            for entry in entries {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let worker = worker.clone();
                running.spawn(async move {
                    worker.handle(entry).await;
                    drop(slot);
                });
            }
        }
        // Stop reading; let what runs finish and record its end.
        while running.join_next().await.is_some() {}
        Ok(())
    }

    async fn read_connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.queue
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|error| tracing::warn!(%error, "could not connect to the queue"))
            .ok()
    }

    /// New entries for this consumer, waiting up to a second for some.
    async fn read(
        &self,
        connection: &mut Option<redis::aio::MultiplexedConnection>,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let Some(connection) = connection else {
            return Err(StoreError::new("no connection to the queue"));
        };
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&self.queue.keys.stream)
            .arg(">");
        let reply = tokio::time::timeout(
            Duration::from_secs(1) + self.queue.timeout,
            command.query_async::<Option<StreamReadReply>>(connection),
        )
        .await
        .map_err(|_| StoreError::new("Redis did not answer XREADGROUP in time"))?
        .map_err(StoreError::new)?;
        Ok(reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(|entry| Entry::read(&entry))
            .collect())
    }

    /// Entries other consumers left pending for longer than `claim_idle`.
    async fn reclaim(&self, count: usize) -> Vec<Entry> {
        if count == 0 {
            return Vec::new();
        }
        let mut command = redis::cmd("XAUTOCLAIM");
        command
            .arg(&self.queue.keys.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis().to_string())
            .arg("0-0")
            .arg("COUNT")
            .arg(count);
        let mut connection = self.queue.redis.connection();
        match self
            .queue
            .bounded(command.query_async::<StreamAutoClaimReply>(&mut connection))
            .await
        {
            Ok(reply) => {
                if !reply.claimed.is_empty() {
                    tracing::info!(
                        entries = reply.claimed.len(),
                        "claimed entries a silent worker left pending"
                    );
                }
                reply.claimed.iter().map(Entry::read).collect()
            }
            Err(error) => {
                tracing::warn!(%error, "could not claim idle entries");
                Vec::new()
            }
        }
    }

    /// Moves due retries back onto the stream, and reports the queue's depth.
    async fn maintain(&self) {
        let mut invocation = script!(PROMOTE).prepare_invoke();
        invocation
            .key(&self.queue.keys.retry)
            .key(&self.queue.keys.stream)
            .arg(now_millis())
            .arg(1000);
        let mut connection = self.queue.redis.connection();
        if let Err(error) = self
            .queue
            .bounded(invocation.invoke_async::<i64>(&mut connection))
            .await
        {
            tracing::warn!(%error, "could not schedule due retries");
        }
        if let (Ok(pending), Ok(lag)) = (self.queue.pending().await, self.queue.lag().await) {
            metrics::queue_depth(pending, lag);
        }
    }

    /// One handler call, and its end recorded in Redis.
    async fn handle(&self, entry: Entry) {
        let attempt = entry.attempts + 1;
        let span = tracing::info_span!(
            "ltvboost_webhook_worker",
            entry = %entry.id,
            event_id = %entry.event_id,
            event_type = %entry.type_name,
            attempt,
        );
        self.handle_in_span(entry, attempt).instrument(span).await;
    }

    async fn handle_in_span(&self, entry: Entry, attempt: u32) {
        // The handler's result as inline mode's Outcome, then what that means
        // for the entry: done, a retry, or the dead letters (no retry can
        // change it, or the last attempt).
        let end = match Envelope::from_bytes(entry.body.clone()) {
            // Verified before it was enqueued: only a damaged entry fails here.
            Err(e) => Some((format!("unreadable entry: {e}"), true)),
            Ok(envelope) => {
                let delivery = Delivery::restored(envelope, entry.secret_index, entry.key.clone());
                let (outcome, error) = match self.handlers.dispatch(&delivery).await {
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
                match outcome {
                    done if done.is_success() => None,
                    Outcome::Mismatched { .. } => {
                        Some((outcome.row().text.trim().to_owned(), true))
                    }
                    failed => Some((
                        error.unwrap_or_else(|| failed.kind().to_owned()),
                        attempt >= self.max_attempts,
                    )),
                }
            }
        };
        let recorded = match end {
            None => self.done(&entry).await,
            Some((error, true)) => {
                tracing::error!(%error, "dead-lettering the event");
                self.dead_letter(&entry, attempt, &error).await
            }
            Some((error, false)) => {
                let wait = self.backoff(attempt);
                tracing::warn!(%error, retry_in = ?wait, "handler failed; retrying later");
                self.retry(&entry, attempt, &error, wait).await
            }
        };
        // Left pending: another worker claims it after `claim_idle`.
        if let Err(error) = recorded {
            tracing::warn!(%error, "could not record the entry's end; it will be claimed again");
        }
    }

    async fn done(&self, entry: &Entry) -> Result<(), StoreError> {
        let mut invocation = script!(DONE).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .key(format!("{}{}", self.queue.keys.prefix, entry.key))
            .arg(GROUP)
            .arg(&entry.id)
            .arg(millis(self.queue.done_ttl));
        self.invoke(invocation).await
    }

    async fn retry(
        &self,
        entry: &Entry,
        attempts: u32,
        error: &str,
        wait: Duration,
    ) -> Result<(), StoreError> {
        let member = serde_json::json!({
            "entry": entry.id,
            "body": String::from_utf8_lossy(&entry.body),
            "secret_index": entry.secret_index.to_string(),
            "received_at": entry.received_at,
            "attempts": attempts.to_string(),
            "type": entry.type_name,
            "event_id": entry.event_id,
            "key": entry.key,
            "error": error,
        });
        let due = now_millis().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        let mut invocation = script!(RETRY).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .key(&self.queue.keys.retry)
            .arg(GROUP)
            .arg(&entry.id)
            .arg(due)
            .arg(member.to_string());
        self.invoke(invocation).await?;
        metrics::queue_retry();
        Ok(())
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        attempts: u32,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut invocation = script!(DEAD).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .key(&self.queue.keys.dead)
            .arg(GROUP)
            .arg(&entry.id);
        for (name, value) in [
            ("secret_index", entry.secret_index.to_string()),
            ("received_at", entry.received_at.clone()),
            ("attempts", attempts.to_string()),
            ("type", entry.type_name.clone()),
            ("event_id", entry.event_id.clone()),
            ("key", entry.key.clone()),
            ("error", error.to_owned()),
        ] {
            invocation.arg(name).arg(value);
        }
        invocation.arg("body").arg(entry.body.as_ref());
        self.invoke(invocation).await?;
        metrics::queue_dead_letter();
        if let Some(hook) = &self.on_dead_letter {
            hook(&DeadLetter {
                id: entry.id.clone(),
                type_name: entry.type_name.clone(),
                event_id: Some(entry.event_id.clone()).filter(|id| !id.is_empty()),
                attempts,
                error: error.to_owned(),
            });
        }
        Ok(())
    }

    async fn invoke(&self, invocation: redis::ScriptInvocation<'_>) -> Result<(), StoreError> {
        let mut connection = self.queue.redis.connection();
        self.queue
            .bounded(invocation.invoke_async::<i64>(&mut connection))
            .await
            .map(drop)
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
