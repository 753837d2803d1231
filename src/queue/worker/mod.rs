//! The worker: reads the stream through the consumer group, verifies each
//! entry, calls the handlers while it holds the entry, and records the end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod attempt;
mod calls;
mod entry;

use attempt::{Lacking, Missing};
use entry::Hold;

use super::{DeadLetter, QueueError, RedisQueue};
use crate::Backoff;
use crate::handler::Handlers;
use crate::metrics;
use crate::redis::Connection;
use crate::secrets::{ErasedSource, SecretSource};

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

/// How long a stopping worker lets its handlers finish, by default.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

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
    secrets: Arc<dyn ErasedSource>,
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
    shutdown_grace: Duration,
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
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for `queue`, verifying entries with `verifier` (the
    /// receivers' secrets) and calling `handlers`, with the default policy.
    /// Its consumer name is unique to the process.
    ///
    /// Each entry names the secret that verified it at the receiver (by
    /// [`KeyId`](crate::signature::KeyId)). An entry whose secret this worker does not hold is neither
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
            handler_timeout: Some(crate::handler::DEFAULT_HANDLER_TIMEOUT),
            acknowledge_mismatched: false,
            on_dead_letter: None,
            missing_keys: Arc::default(),
            running: Arc::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
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

    /// How long [`run`](Self::run), once asked to stop, lets running
    /// handlers finish. Past it they are stopped (as a crash would stop
    /// them: an event whose handler had done part of its work runs again)
    /// and their entries handed back, uncounted, for another worker to take
    /// at once. Default: 25 s, within the 30 s a supervisor such as
    /// Kubernetes waits before `SIGKILL`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn run(worker: ltvboost_webhooks::queue::Worker) {
    /// let worker = worker.shutdown_grace(Duration::from_secs(50));
    /// # }
    /// ```
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// A deadline for one handler call: past it the call is dropped and
    /// counts as a failure (retried, then dead-lettered). Default:
    /// [`DEFAULT_HANDLER_TIMEOUT`](crate::handler::DEFAULT_HANDLER_TIMEOUT); `None` lets a call run for ever (its
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
                    // Held while the others end (a handler may outlast
                    // `claim_idle`): no other worker claims it meanwhile,
                    // which would count a start it never had.
                    worker.holding(&entry, all_ended(&mut running)).await;
                    let alone = worker.clone();
                    running.spawn(async move { alone.handle(entry).await });
                    all_ended(&mut running).await;
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
        // Stop reading; let what runs finish and record its end, within the
        // grace. What still runs then is stopped and handed back, uncounted,
        // for another worker to take at once (rather than after claim_idle,
        // or cut off half-way by a supervisor's SIGKILL).
        if tokio::time::timeout(worker.shutdown_grace, all_ended(&mut running))
            .await
            .is_err()
        {
            let held: Vec<(String, Arc<Hold>)> = worker
                .running
                .lock()
                .map(|running| {
                    running
                        .iter()
                        .map(|(id, hold)| (id.clone(), hold.clone()))
                        .collect()
                })
                .unwrap_or_default();
            running.shutdown().await;
            tracing::warn!(
                count = held.len(),
                grace = ?worker.shutdown_grace,
                "handlers still running at the end of the shutdown grace were stopped; \
                 their entries are handed back for another worker"
            );
            for (id, hold) in &held {
                worker.give_back_held(id, hold).await;
            }
        }
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
}

/// Waits until every task in `running` has ended.
async fn all_ended(running: &mut JoinSet<()>) {
    while running.join_next().await.is_some() {}
}
