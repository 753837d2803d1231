//! Every Redis call a worker makes, under its consumer name and its run's
//! hold: the reads and claims, the maintenance lease's work, and the
//! scripts that end, renew or hand back an entry. `mod.rs` is the run loop
//! that decides which to make.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamPendingCountReply, StreamReadReply};

use super::entry::{Entry, EventState, Hold};
use super::{MAINTENANCE_LEASE, READ_BLOCK, STALE_CONSUMER, Worker};
use crate::handler::Delivery;
use crate::metrics;
use crate::queue::scripts::{self, script};
use crate::queue::{DeadLetter, GROUP, QueueError, RedisQueue};
use crate::redis::{CallError, Connection, millis};

impl Worker {
    /// A connection of its own for the blocking read, with no response
    /// timeout of its own: [`Self::read`] bounds each read by the block time
    /// plus the operation timeout, so a reply is never cut off while Redis
    /// is still blocking, and entries delivered in it are never stranded.
    pub(super) async fn read_connection(&self) -> Option<Connection> {
        self.queue
            .target
            .dedicated_connection(self.queue.timeout)
            .await
            .map_err(|error| tracing::warn!(%error, "could not connect to the queue"))
            .ok()
    }

    /// New entries for this consumer, waiting up to a second for some.
    pub(super) async fn read(
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
    pub(super) async fn reclaim(&self, count: usize, cursor: &mut String) -> Vec<Entry> {
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
    pub(super) async fn lease(&self) -> bool {
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
    pub(super) async fn maintain(&self) {
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
    pub(super) async fn tidy(&self) {
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
    pub(super) async fn leave(&self) {
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

    /// Hands `entry` back to the group, looking idle for `claim_idle` and
    /// with this delivery uncounted, so that the next claim pass (any
    /// worker's, within a second) takes it.
    pub(super) async fn give_back(&self, entry: &Entry) {
        self.give_back_held(&entry.id, &entry.hold).await;
    }

    /// [`give_back`](Self::give_back) by the entry's id and this run's hold.
    pub(super) async fn give_back_held(&self, id: &str, hold: &Hold) {
        let mut invocation = script!(scripts::PASS_ON).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .arg(GROUP)
            .arg(id)
            .arg(&self.consumer)
            .arg(millis(self.claim_idle))
            .arg(hold.deliveries().saturating_sub(1))
            .arg(hold.deliveries());
        if let Err(error) = self.invoke::<i64>(invocation).await {
            tracing::warn!(%error, "could not hand the entry back; it is claimed after claim_idle");
        }
    }

    /// What the event's key says: done, or queued under an entry's token.
    pub(super) async fn event_state(&self, delivery: &Delivery) -> EventState {
        let mut get = redis::cmd("GET");
        get.arg(self.queue.keys.event(delivery.dedupe_key()));
        match self
            .queue
            .bounded(self.queue.redis.query::<Option<String>>(get))
            .await
        {
            Ok(Some(state)) if state == "done" => EventState::Done,
            Ok(Some(state)) => match state.strip_prefix(crate::queue::QUEUED) {
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

    /// The done-record (always) and, for the entry's owner, its removal.
    pub(super) async fn done(&self, entry: &Entry, dedupe_key: &str) -> Result<bool, QueueError> {
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
    pub(super) async fn discard(&self, entry: &Entry) -> Result<bool, QueueError> {
        let mut invocation = script!(scripts::DISCARD).prepare_invoke();
        invocation
            .key(&self.queue.keys.stream)
            .arg(GROUP)
            .arg(&entry.id)
            .arg(&self.consumer)
            .arg(entry.hold.deliveries());
        Ok(self.invoke::<i64>(invocation).await? == 1)
    }

    pub(super) async fn retry(
        &self,
        entry: &Entry,
        attempts: u32,
        error: &str,
    ) -> Result<bool, QueueError> {
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

    pub(super) async fn dead_letter(
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

    pub(super) async fn invoke<T: redis::FromRedisValue>(
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
pub(super) async fn renew(
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

/// Events lost to something outside the queue (a key deleted by hand, an
/// older version's trimming): logged at `error` and counted.
pub(super) fn lost(count: u64, what: &str) {
    tracing::error!(count, "{what}: their events are lost");
    metrics::queue_entries_lost(count);
}
