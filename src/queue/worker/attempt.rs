//! One attempt at one entry: the secrets it was verified with looked up,
//! its event's key read (handled, queued under this entry, or a copy), the
//! handler called while the hold is renewed, and the end recorded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::Worker;
use super::calls::renew;
use super::entry::{Entry, EventState, Hold};
use crate::Outcome;
use crate::event::Envelope;
use crate::handler::{Delivery, Dispatched};
use crate::metrics;
use crate::secrets::Keys;
use crate::signature::{KeyId, Signature};

/// The dead-letter reason of an event whose `data` does not fit its type
/// (and that the worker is not set to acknowledge): retrying cannot help.
const MISMATCHED: &str = "event data does not fit its type";

/// Why a worker cannot verify an entry, and passes it on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Missing {
    /// The secret that verified it at the receiver, by key id.
    Key(KeyId),
    /// The account it was received for (none: queued by a receiver without
    /// accounts), unknown to this worker's source.
    Account(Option<String>),
}

/// Since when a worker has lacked a key or an account, and whether it said
/// so.
pub(super) struct Lacking {
    pub(super) since: tokio::time::Instant,
    pub(super) said: bool,
}

/// How long a worker may lack a key or an account before it counts and
/// logs it: receivers and workers that follow one secret file read it at
/// different moments, so for a second or two after a new secret is written,
/// a worker meets entries it verified at a receiver before it read the file
/// itself. Those are passed on quietly.
pub(super) const LACKING_GRACE: Duration = Duration::from_secs(10);

/// How an entry's handling ends.
pub(super) enum End {
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
    /// One entry: verified, run while its hold is renewed, its end recorded.
    pub(super) async fn handle(&self, entry: Entry) {
        // Bounded, as at the receiver: a source that hangs (a database, say)
        // must not keep an unheld entry from the run loop until another
        // worker's claim counts a start it never had.
        let lookup = self.secrets.keys_boxed(entry.account.as_deref());
        let keys = match crate::secrets::within(self.claim_idle / 2, lookup).await {
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
    pub(super) fn entry_span(&self, entry: &Entry, attempt: u32) -> tracing::Span {
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
    pub(super) async fn run_entry(&self, entry: &Entry, keys: &Keys, attempt: u32) -> End {
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
        let outcome = Outcome::of(&dispatched, self.acknowledge_mismatched);
        let error = dispatched.failure();
        // The same handler metrics as inline mode.
        outcome.time_handler(delivery.event_type(), timer.elapsed());
        match outcome {
            done if done.is_success() => End::Done(delivery.dedupe_key().to_owned()),
            Outcome::Mismatched { .. } => End::Dead(MISMATCHED.to_owned()),
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
    pub(super) async fn dispatch_holding(&self, entry: &Entry, delivery: &Delivery) -> Dispatched {
        let call = self.handlers.dispatch(delivery, self.handler_timeout);
        self.holding(entry, call).await
    }

    /// Runs `work` while renewing this run's hold on `entry` about every
    /// third of `claim_idle`, so that no other worker claims it meanwhile.
    /// The renewal runs on a task of its own: a handler that blocks its
    /// thread does not stop it.
    pub(super) async fn holding<T>(&self, entry: &Entry, work: impl Future<Output = T>) -> T {
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
    pub(super) async fn pass_on(&self, entry: &Entry, missing: Missing) {
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
            (Missing::Key(key_id), true) => match entry.account.as_deref() {
                None => tracing::error!(
                    %key_id,
                    "an entry was verified by a secret this worker does not hold: add it to \
                     LTVBOOST_WEBHOOK_SECRET or LTVBOOST_WEBHOOK_SECRET_FILE (the worker's \
                     secret source) as on the receivers; its entries are left to workers that \
                     hold it"
                ),
                Some(account) => tracing::error!(
                    %key_id,
                    %account,
                    "an entry was verified by a secret of this account that this worker does \
                     not hold: add it to the account's secrets in LTVBOOST_WEBHOOK_ACCOUNTS_FILE \
                     (the worker's secret source) as on the receivers; its entries are left to \
                     workers that hold it"
                ),
            },
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

    /// Records the entry's end, retrying while Redis fails for as long as
    /// the hold lasts (`claim_idle` since Redis last confirmed it); left
    /// pending after that, it is claimed again.
    pub(super) async fn record(&self, entry: &Entry, attempt: u32, end: End) {
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
    pub(super) fn start(
        running: &'a std::sync::Mutex<HashMap<String, Arc<Hold>>>,
        entry: &Entry,
    ) -> Self {
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
