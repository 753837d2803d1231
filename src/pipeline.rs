//! The one pass every delivery takes, top to bottom.
//!
//! The adapters ([`WebhookLayer`](crate::WebhookLayer),
//! [`WebhookEndpoint`](crate::WebhookEndpoint), the axum extractor) turn HTTP
//! into a call here and the [`Outcome`] back into a response. Each step can
//! end the delivery:
//!
//! | step | function | ends with |
//! | --- | --- | --- |
//! | 1. method is `POST` | [`Pipeline::check_head`] | `405` |
//! | 2. one well-formed signature header, `Content-Length` within the limit | [`check_head`] | `401` / `413` |
//! | 3. the whole body, within the size limit and the read deadline | [`receive`] | `413` / `408` |
//! | 4. signature matches under an active secret (constant time) | [`receive`] | `401` |
//! | 5. body is a JSON event envelope | [`receive`] | `400` |
//! | 6. signed `created_at` inside the replay window | [`receive`] | `400` |
//! | 7. dedupe claim | [`handle`] | `200` duplicate / `409` / `503` |
//! | 8. the handler, its claim renewed while it runs; done or released | [`handle`] | `200` / `500` / `400` |
//! | 7–8 in enqueue mode: an append to the queue, guarded by the dedupe key | `Pipeline::hand_off` | `202` / `200` duplicate / `503` |
//!
//! Steps 1–2 need no I/O: a request that fails them costs no read and no
//! allocation. The extractor stops after step 6. Steps 7–8 run on a task of
//! their own, so a sender that hangs up mid-delivery cancels neither the
//! handler nor the end of its claim; the answer goes out when the handler
//! returns, and the claim's end (done or released) is recorded just after.

use std::any::Any;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, Method};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::oneshot;
use tracing::{Instrument, field};

use crate::config::WebhookConfig;
use std::future::Future;

use crate::dedupe::{Claim, ClaimStatus, ClaimToken, ErasedStore, StoreError};
use crate::event::Envelope;
use crate::handler::{Delivery, Dispatched, Handlers};
use crate::metrics;
use crate::outcome::Outcome;
use crate::rejection::Rejection;
use crate::replay::parse_timestamp;
use crate::signature::{SIGNATURE_HEADER, Signature, SignatureError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the layer and the endpoint share: the configuration and the handlers.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) config: WebhookConfig,
    handlers: Handlers,
}

/// The parts of a request's head a delivery needs once its body is read.
#[derive(Debug)]
pub(crate) struct Head {
    signature: Signature,
    content_length: Option<u64>,
}

impl Pipeline {
    pub(crate) fn new(config: WebhookConfig, handlers: Handlers) -> Self {
        Self { config, handlers }
    }

    /// Steps 1–2. A refusal is logged here, in its own span.
    pub(crate) fn check_head(&self, method: &Method, headers: &HeaderMap) -> Result<Head, Outcome> {
        let head = if method == Method::POST {
            check_head(&self.config, headers)
        } else {
            Err(Rejection::MethodNotAllowed)
        };
        head.map_err(|rejection| {
            let outcome = Outcome::Rejected(rejection);
            delivery_span().in_scope(|| report(&outcome));
            metrics::delivery(&outcome, metrics::type_label(None));
            outcome
        })
    }

    /// Steps 3–8, in the delivery's span, logged when done.
    pub(crate) async fn run<B>(self: Arc<Self>, head: Head, body: B) -> Outcome
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let span = delivery_span();
        let _in_flight = metrics::InFlight::start();
        let outcome = async {
            let (outcome, event_type) = match receive(&self.config, head, body).await {
                Ok(delivery) => {
                    let span = tracing::Span::current();
                    span.record("event_id", delivery.id());
                    span.record("event_type", delivery.type_name());
                    span.record("secret_index", delivery.secret_index());
                    let event_type = metrics::type_label(Some(delivery.event_type()));
                    (self.clone().hand_off(delivery).await, event_type)
                }
                Err(rejection) => (Outcome::Rejected(rejection), metrics::type_label(None)),
            };
            report(&outcome);
            metrics::delivery(&outcome, event_type);
            outcome
        };
        outcome.instrument(span).await
    }

    /// Steps 7–8: the handlers, or in enqueue mode the queue.
    async fn hand_off(self: Arc<Self>, delivery: Delivery) -> Outcome {
        #[cfg(feature = "queue")]
        if let Some(queue) = &self.config.queue {
            return match queue.enqueue(&delivery).await {
                Ok(crate::queue::Enqueued::Added(_)) => Outcome::Enqueued,
                Ok(_) => Outcome::Duplicate,
                Err(error) => {
                    tracing::error!(%error, "queue unavailable; asking the sender to retry");
                    Outcome::QueueUnavailable
                }
            };
        }
        handle_on_own_task(self, delivery).await
    }
}

/// Step 2: one well-formed signature header, and a `Content-Length` within
/// the limit.
pub(crate) fn check_head(config: &WebhookConfig, headers: &HeaderMap) -> Result<Head, Rejection> {
    let signature = signature_header(headers)?;
    let content_length = content_length(headers);
    if content_length.is_some_and(|len| len > config.body_limit as u64) {
        return Err(too_large(config));
    }
    Ok(Head {
        signature,
        content_length,
    })
}

/// Steps 3–6: read the body within the limits, verify it, parse it, check
/// its replay window.
pub(crate) async fn receive<B>(
    config: &WebhookConfig,
    head: Head,
    body: B,
) -> Result<Delivery, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    // Room in the budget for what is about to be buffered, held until the
    // signature is checked.
    let reserve = head.content_length.unwrap_or(config.body_limit as u64);
    let Some(reserved) = config.body_budget.reserve(reserve) else {
        return Err(Rejection::Overloaded);
    };
    let body = read_body(config, body).await?;
    metrics::body(body.len());
    let verified = config.verifier.verify_signature(head.signature, body)?;
    drop(reserved);
    metrics::secret_matched(verified.secret_index());
    let envelope = Envelope::from_bytes(verified.body().clone())?;
    match envelope.created_at().and_then(parse_timestamp) {
        Some(created) => config
            .replay_window
            .check_time(created, config.clock.now())?,
        None if config.require_created_at => return Err(Rejection::CreatedAtMissing),
        None => warn_once_without_created_at(),
    }
    Ok(Delivery::new(envelope, &verified))
}

/// Deliveries without a readable `created_at` skip the replay check; said
/// once per process, not per request.
fn warn_once_without_created_at() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "a delivery had no readable created_at (RFC 3339 or Unix seconds or milliseconds): \
             its replay check was skipped; set require_created_at(true) to refuse such deliveries"
        );
    });
}

/// Step 3: the whole body, at most `body_limit` bytes, within one deadline
/// for the whole read (not per frame: a byte-at-a-time sender cannot hold
/// the request open).
async fn read_body<B>(config: &WebhookConfig, body: B) -> Result<Bytes, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let read = Limited::new(body, config.body_limit).collect();
    match tokio::time::timeout(config.read_timeout, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large(config)),
        Ok(Err(e)) => Err(Rejection::BodyRead(e)),
        Err(_) => Err(Rejection::BodyTimeout {
            deadline: config.read_timeout,
        }),
    }
}

fn too_large(config: &WebhookConfig) -> Rejection {
    Rejection::PayloadTooLarge {
        limit: config.body_limit,
    }
}

/// Steps 7–8 on a task of their own (where a runtime is at hand), so that
/// a sender hanging up cancels nothing. The answer comes as soon as the
/// handler is done; the claim's end is recorded after it.
async fn handle_on_own_task(pipeline: Arc<Pipeline>, delivery: Delivery) -> Outcome {
    let (answer, answered) = oneshot::channel();
    let handling = handle(pipeline, delivery, answer).in_current_span();
    let task = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => Some(runtime.spawn(handling)),
        Err(_) => {
            handling.await;
            None
        }
    };
    if let Ok(outcome) = answered.await {
        return outcome;
    }
    // Handler panics are caught in `handle`: this is the store's.
    let panic = match task {
        Some(task) => task.await.err().and_then(|e| e.try_into_panic().ok()),
        None => None,
    };
    tracing::error!(
        panic = panic.as_deref().map_or("cancelled", panic_message),
        "dedupe store failed; asking the sender to retry"
    );
    Outcome::StoreUnavailable
}

/// Steps 7–8: claim, dispatch with the claim renewed, answer, then record
/// the claim's end: done, or released for the sender's retry.
async fn handle(pipeline: Arc<Pipeline>, delivery: Delivery, answer: oneshot::Sender<Outcome>) {
    let config = &pipeline.config;
    let store = &*config.store;
    let key = delivery.dedupe_key();
    let token = match timed(config, "claim", store.claim_boxed(key, config.claim_lease)).await {
        Ok(Claim::Acquired(token)) => token,
        Ok(Claim::Done) => return drop(answer.send(Outcome::Duplicate)),
        Ok(Claim::InFlight) => return drop(answer.send(Outcome::InFlight)),
        Err(error) => {
            tracing::error!(%error, "dedupe store unavailable; asking the sender to retry");
            return drop(answer.send(Outcome::StoreUnavailable));
        }
    };

    let started = metrics::Timer::start();
    let dispatch = AssertUnwindSafe(pipeline.handlers.dispatch(&delivery)).catch_unwind();
    let dispatched = tokio::select! {
        biased;
        dispatched = dispatch => dispatched,
        never = keep_claimed(store, key, &token, config) => match never {},
    };

    let outcome = match dispatched {
        Ok(Dispatched::Handled) => Outcome::Handled,
        Ok(Dispatched::Mismatched) => Outcome::Mismatched {
            acknowledged: config.acknowledge_mismatched,
        },
        Ok(Dispatched::Failed(error)) => {
            tracing::error!(%error, "webhook handler failed; the sender will retry");
            Outcome::HandlerFailed
        }
        Err(panic) => {
            tracing::error!(
                panic = panic_message(&*panic),
                "webhook handler panicked; the sender will retry"
            );
            Outcome::HandlerPanicked
        }
    };

    let event_type = metrics::type_label(Some(delivery.event_type()));
    metrics::handler(event_type, &outcome, started.elapsed());

    // The handler's result stands whatever the store says next: answering
    // otherwise would make the sender redo work that happened (after done)
    // or was already refused (after release). A lapsed lease cleans up
    // either way.
    let done = outcome.is_success();
    let _ = answer.send(outcome);
    let settled = if done {
        let ttl = config.done_ttl.max(config.replay_window.span());
        timed(config, "mark_done", store.mark_done_boxed(key, &token, ttl)).await
    } else {
        timed(config, "release", store.release_boxed(key, &token)).await
    };
    match settled {
        Ok(ClaimStatus::Held) => {}
        Ok(_) => tracing::error!(
            done,
            "the claim lapsed while the handler ran: another delivery may have run it too"
        ),
        Err(error) => tracing::warn!(%error, done, "could not record the delivery's end"),
    }
}

/// Renews the claim every third of its lease, for as long as it is polled.
async fn keep_claimed(
    store: &dyn ErasedStore,
    key: &str,
    token: &ClaimToken,
    config: &WebhookConfig,
) -> Infallible {
    let lease = config.claim_lease;
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + lease / 3, lease / 3);
    loop {
        every.tick().await;
        match timed(config, "renew", store.renew_boxed(key, token, lease)).await {
            Ok(ClaimStatus::Held) => {}
            Ok(_) => tracing::error!("the claim lapsed while the handler ran"),
            Err(error) => tracing::warn!(%error, "could not renew the claim"),
        }
    }
}

/// Runs a store operation, and reports how long it took and whether it
/// failed (for stores that do I/O).
async fn timed<T>(
    config: &WebhookConfig,
    operation: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    if !config.store_does_io {
        return call.await;
    }
    let started = metrics::Timer::start();
    let result = call.await;
    metrics::store(operation, started.elapsed(), result.is_err());
    result
}

/// The span every delivery's logs sit in; its fields are filled as they
/// become known.
fn delivery_span() -> tracing::Span {
    tracing::info_span!(
        "ltvboost_webhook",
        event_id = field::Empty,
        event_type = field::Empty,
        secret_index = field::Empty,
        outcome = field::Empty,
        reason = field::Empty,
    )
}

/// The one log line per delivery, at a level that fits the outcome.
fn report(outcome: &Outcome) {
    let span = tracing::Span::current();
    span.record("outcome", outcome.kind());
    if let Some(reason) = outcome.reason() {
        span.record("reason", reason);
    }
    let status = outcome.status().as_u16();
    match outcome {
        Outcome::Handled | Outcome::Duplicate | Outcome::Enqueued => {
            tracing::info!(status, "webhook answered");
        }
        Outcome::Rejected(rejection) => log_refusal(rejection),
        _ => tracing::warn!(status, "webhook answered"),
    }
}

/// Logs a refusal. Refusals of unauthenticated requests go to `debug`, so
/// that a flood of forged requests cannot flood the logs. The extractor logs
/// its refusals here too.
pub(crate) fn log_refusal(rejection: &Rejection) {
    let (status, code) = (rejection.status().as_u16(), rejection.reason());
    if rejection.is_authenticated() {
        tracing::warn!(status, code, reason = %rejection, "webhook refused");
    } else {
        tracing::debug!(status, code, reason = %rejection, "webhook refused");
    }
}

/// The one `x-ltvboost-signature` header, parsed.
fn signature_header(headers: &HeaderMap) -> Result<Signature, SignatureError> {
    const NAME: http::HeaderName = http::HeaderName::from_static(SIGNATURE_HEADER);
    let mut values = headers.get_all(NAME).iter();
    let value = values.next().ok_or(SignatureError::Missing)?;
    if values.next().is_some() {
        return Err(SignatureError::Duplicated);
    }
    Signature::parse(value.as_bytes())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The text a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
