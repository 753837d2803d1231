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
//! | 3. the request's secrets, from its head ([`SecretSource::lookup`]) | [`receive`] | `404` / `503` |
//! | 4. the whole body, within the size limit and the read deadline | [`receive`] | `413` / `408` |
//! | 5. signature matches under one of those secrets (constant time) | [`receive`] | `401` |
//! | 6. body is a JSON event envelope | [`receive`] | `400` |
//! | 7. signed `created_at` inside the replay window | [`receive`] | `400` |
//! | 8. dedupe claim | [`handle`] | `200` duplicate / `409` / `503` |
//! | 9. the handler, its claim renewed while it runs; done or released | [`handle`] | `200` / `500` / `400` |
//! | 8–9 in enqueue mode: an append to the queue, guarded by the dedupe key | `Pipeline::hand_off` | `202` / `200` duplicate / `503` |
//!
//! Steps 1–2 need no I/O: a request that fails them costs no read and no
//! allocation; one that fails step 3 costs no body read. The extractor
//! stops after step 7. Steps 8–9 run on a task of
//! their own, so a sender that hangs up mid-delivery cancels neither the
//! handler nor the end of its claim; the answer goes out when the handler
//! returns, and the claim's end (done or released) is recorded just after.

use std::convert::Infallible;
use std::sync::Arc;

use std::net::IpAddr;

use http::{Extensions, HeaderMap, Method};
use http_body::Body;
use tokio::sync::oneshot;
use tracing::{Instrument, Level, field};

use super::body::{read_body, too_large};
use super::config::WebhookConfig;
use super::handover::{PeerAddr, Settling, Unsettled};
use std::future::Future;

use super::outcome::Outcome;
use super::outcome::Rejection;
use crate::dedupe::{Claim, ClaimStatus, ClaimToken, ErasedStore, StoreError};
use crate::event::Envelope;
use crate::handler::{Delivery, Handlers, panic_message};
use crate::metrics;
use crate::replay::parse_timestamp;
use crate::secrets::{self, RequestHead};
use crate::signature::{SIGNATURE_HEADER, Signature, SignatureError};
use crate::trace;

use super::enqueue::{Enqueue, Enqueued, ErasedEnqueue};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the layer and the endpoint share: the configuration and where
/// verified deliveries go.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) config: WebhookConfig,
    destination: Destination,
}

/// Where verified deliveries go: the handlers (inline mode), or a queue
/// that workers handle from (enqueue mode).
enum Destination {
    Inline(Arc<Handlers>),
    Queue(Box<dyn ErasedEnqueue>),
    /// Handlers inside a Postgres transaction with the done-record.
    #[cfg(feature = "postgres")]
    InTransaction(Arc<dyn Deliver>),
}

/// A destination that claims, handles and records each delivery itself,
/// and says what to answer: handlers inside a Postgres transaction, which
/// the `postgres` module implements from above the receiver.
#[cfg(feature = "postgres")]
pub(crate) trait Deliver: Send + Sync + 'static {
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> crate::erase::BoxFuture<'a, Outcome>;
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Destination::Inline(_) => "Inline",
            Destination::Queue(_) => "Queue",
            #[cfg(feature = "postgres")]
            Destination::InTransaction(_) => "InTransaction",
        })
    }
}

/// The parts of a request's head a delivery needs once its body is read.
#[derive(Debug)]
pub(crate) struct Head {
    signature: Signature,
    /// The peer's address, when the server handed one over.
    peer: Option<IpAddr>,
    /// Where the server waits for deliveries' ends at shutdown, when it
    /// handed one over.
    unsettled: Option<Unsettled>,
    /// The delivery's span (none in the extractor, which logs refusals only).
    span: tracing::Span,
    /// The request's `traceparent`: the span's parent once the signature
    /// has verified, never before (an unsigned request cannot join a trace).
    traceparent: Option<http::HeaderValue>,
}

impl Pipeline {
    /// Inline mode: deliveries go to `handlers`.
    pub(crate) fn inline(config: WebhookConfig, handlers: Handlers) -> Arc<Self> {
        Arc::new(Self {
            config,
            destination: Destination::Inline(Arc::new(handlers)),
        })
    }

    /// Enqueue mode: deliveries go to `queue`.
    pub(crate) fn enqueue(config: WebhookConfig, queue: impl Enqueue) -> Arc<Self> {
        Arc::new(Self {
            config,
            destination: Destination::Queue(Box::new(queue)),
        })
    }

    /// Handlers inside a Postgres transaction.
    #[cfg(feature = "postgres")]
    pub(crate) fn in_transaction(config: WebhookConfig, target: Arc<dyn Deliver>) -> Arc<Self> {
        Arc::new(Self {
            config,
            destination: Destination::InTransaction(target),
        })
    }

    /// Steps 1–2, in the delivery's span, a new root until the signature
    /// verifies. A refusal is logged here.
    pub(crate) fn check_head(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Head, Outcome> {
        let span = delivery_span(method, path);
        let head = if method == Method::POST {
            check_head(&self.config, headers, extensions)
        } else {
            Err(Rejection::MethodNotAllowed)
        };
        match head {
            Ok(head) => Ok(Head {
                span,
                traceparent: headers.get(trace::TRACEPARENT).cloned(),
                ..head
            }),
            Err(rejection) => {
                let outcome = Outcome::Rejected(rejection);
                span.in_scope(|| report(&outcome));
                outcome.count(None);
                Err(outcome)
            }
        }
    }

    /// Steps 3–9, logged when done in the delivery's span. The span is
    /// entered only once the signature has verified, after the request's
    /// `traceparent` became its parent: a span is given its parent before it
    /// is first entered, and an unsigned request must not join a trace.
    pub(crate) async fn run<B>(
        self: Arc<Self>,
        mut head: Head,
        request: http::Request<B>,
    ) -> Outcome
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let span = std::mem::replace(&mut head.span, tracing::Span::none());
        let traceparent = head.traceparent.take();
        let _in_flight = metrics::InFlight::start();
        let unsettled = head.unsettled.clone();
        let (outcome, event_type) = match receive(&self.config, head, &parts, body).await {
            Ok(delivery) => {
                trace::continue_trace(&span, traceparent.as_ref().map(http::HeaderValue::as_bytes));
                span.record("event_id", delivery.id());
                span.record("event_type", delivery.type_name());
                span.record("secret_index", delivery.secret_index());
                if let Some(account) = delivery.account() {
                    span.record("account", account);
                }
                let event_type = Some(delivery.event_type());
                let outcome = self
                    .clone()
                    .hand_off(delivery, unsettled)
                    .instrument(span.clone())
                    .await;
                (outcome, event_type)
            }
            Err(rejection) => (Outcome::Rejected(rejection), None),
        };
        span.in_scope(|| report(&outcome));
        outcome.count(event_type);
        outcome
    }

    /// Steps 7–8: the handlers, or in enqueue mode the queue.
    async fn hand_off(
        self: Arc<Self>,
        delivery: Delivery,
        unsettled: Option<Unsettled>,
    ) -> Outcome {
        match &self.destination {
            Destination::Inline(handlers) => {
                let handlers = handlers.clone();
                handle_on_own_task(self, handlers, delivery, unsettled).await
            }
            Destination::Queue(queue) => match queue.enqueue_boxed(&delivery).await {
                Ok(Enqueued::Added(_)) => Outcome::Enqueued,
                Ok(_) => Outcome::Duplicate,
                Err(error) => {
                    // The queue's own error (it names the queue), not the
                    // store error that carries it.
                    let error: &dyn std::error::Error =
                        std::error::Error::source(&error).unwrap_or(&error);
                    tracing::error!(%error, "queue unavailable; asking the sender to retry");
                    Outcome::QueueUnavailable
                }
            },
            #[cfg(feature = "postgres")]
            Destination::InTransaction(target) => {
                // On a task of its own, like the inline handlers: a sender
                // hanging up cancels no transaction half-way.
                let target = target.clone();
                let settling = settling(unsettled.as_ref(), &delivery);
                let delivering = async move { target.deliver(&delivery).await };
                on_own_task(settling, delivering).await.unwrap_or_else(|panic| {
                    tracing::error!(%panic, "the transaction failed; asking the sender to retry");
                    Outcome::StoreUnavailable
                })
            }
        }
    }
}

/// Step 2: one well-formed signature header, and a `Content-Length` within
/// the limit.
pub(crate) fn check_head(
    config: &WebhookConfig,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<Head, Rejection> {
    let signature = signature_header(headers)?;
    if content_length(headers).is_some_and(|len| len > config.body_limit as u64) {
        return Err(too_large(config));
    }
    Ok(Head {
        signature,
        peer: peer_address(extensions),
        unsettled: extensions.get::<Unsettled>().cloned(),
        span: tracing::Span::none(),
        traceparent: None,
    })
}

/// The peer's address, as [`serve::Server`](crate::serve::Server) or
/// axum's `into_make_service_with_connect_info` hands it over.
fn peer_address(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(peer) = extensions.get::<PeerAddr>() {
        return Some(peer.0.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(peer) = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        return Some(peer.0.ip());
    }
    let _ = extensions;
    None
}

/// Steps 3–7: find the request's secrets, read the body within the limits,
/// verify it, parse it, check its replay window.
pub(crate) async fn receive<B>(
    config: &WebhookConfig,
    head: Head,
    request: &http::request::Parts,
    body: B,
) -> Result<Delivery, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let path = request.uri.path();
    // Outside an `{account}` path (an endpoint mounted elsewhere), no account.
    let account = config.match_path(path).flatten();
    let request = RequestHead::new(&request.method, path, &request.headers).with_account(account);
    // Bounded like the body's read: a source that hangs holds no
    // connection for longer.
    let looked_up =
        secrets::within(config.read_timeout, config.secrets.lookup_boxed(&request)).await;
    let keys = match looked_up {
        Ok(Some(keys)) => keys,
        Ok(None) => return Err(Rejection::UnknownAccount),
        Err(error) => {
            // The answer names no cause; the log does.
            let cause: &dyn std::error::Error = &error;
            tracing::warn!(error = %cause.source().unwrap_or(cause), "the secret source failed");
            return Err(Rejection::SecretsUnavailable(error));
        }
    };
    // What arrives is charged to the budget until the signature is checked.
    let mut charge = config.body_budget.charge(head.peer);
    let body = read_body(config, body, &mut charge).await?;
    metrics::body(body.len());
    let verified = keys.verifier().verify_signature(head.signature, body)?;
    drop(charge);
    metrics::secret_matched(verified.secret_index());
    let envelope = Envelope::from_bytes(verified.body().clone())?;
    match envelope.created_at().map(parse_timestamp) {
        Some(Some(created)) => config
            .replay_window
            .check_time(created, config.clock.now())?,
        _ if config.require_created_at => return Err(Rejection::CreatedAtMissing),
        None => skip_replay_check(&MISSING, "created_at_missing", "had no created_at"),
        Some(None) => skip_replay_check(
            &UNREADABLE,
            "created_at_unreadable",
            "had a created_at that is neither RFC 3339 nor Unix seconds or milliseconds",
        ),
    }
    let delivery = Delivery::new(envelope, &verified);
    Ok(match keys.account() {
        Some(account) => delivery.with_account(account),
        None => delivery,
    })
}

static MISSING: std::sync::Once = std::sync::Once::new();
static UNREADABLE: std::sync::Once = std::sync::Once::new();

/// A delivery skips the replay check: counted every time, said once per
/// process and reason, not per request.
fn skip_replay_check(said: &std::sync::Once, reason: &'static str, what: &'static str) {
    metrics::replay_skipped(reason);
    said.call_once(|| {
        tracing::warn!(
            reason,
            "a delivery {what}: its replay check was skipped; set require_created_at(true) to \
             refuse such deliveries"
        );
    });
}

/// Steps 7–8 on a task of their own (where a runtime is at hand), so that
/// a sender hanging up cancels nothing. The answer comes as soon as the
/// handler is done; the claim's end is recorded after it, and the server's
/// shutdown waits for that (`unsettled`).
async fn handle_on_own_task(
    pipeline: Arc<Pipeline>,
    handlers: Arc<Handlers>,
    delivery: Delivery,
    unsettled: Option<Unsettled>,
) -> Outcome {
    let (answer, answered) = oneshot::channel();
    let settling = settling(unsettled.as_ref(), &delivery);
    let task = on_own_task(settling, async move {
        handle(&pipeline.config, &handlers, delivery, answer).await;
    });
    if let Ok(outcome) = answered.await {
        return outcome;
    }
    // Handler panics are caught where they are dispatched: this is the store's.
    let panic = task.await.err().and_then(|e| e.try_into_panic().ok());
    tracing::error!(
        panic = panic.as_deref().map_or("cancelled", panic_message),
        "dedupe store failed; asking the sender to retry"
    );
    Outcome::StoreUnavailable
}

/// The delivery counted among those the server's shutdown waits for, until
/// the returned guard drops.
fn settling(unsettled: Option<&Unsettled>, delivery: &Delivery) -> Option<Settling> {
    unsettled.map(|set| set.track(delivery.id().unwrap_or(delivery.dedupe_key())))
}

/// Runs `work` on a task of its own, in the delivery's span, holding
/// `settling` until it ends. The pipeline already needs tokio (its clocks),
/// so a runtime is at hand.
fn on_own_task<F>(settling: Option<Settling>, work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(
        async move {
            let output = work.await;
            drop(settling);
            output
        }
        .in_current_span(),
    )
}

/// Steps 7–8: claim, dispatch with the claim renewed, answer, then record
/// the claim's end: done, or released for the sender's retry.
async fn handle(
    config: &WebhookConfig,
    handlers: &Handlers,
    delivery: Delivery,
    answer: oneshot::Sender<Outcome>,
) {
    let store = &*config.store;
    let key = delivery.dedupe_key();
    let token = match timed("claim", store.claim_boxed(key, config.claim_lease)).await {
        Ok(Claim::Acquired(token)) => token,
        Ok(Claim::Done) => return drop(answer.send(Outcome::Duplicate)),
        Ok(Claim::InFlight) => return drop(answer.send(Outcome::InFlight)),
        Err(error) => {
            tracing::error!(%error, "dedupe store unavailable; asking the sender to retry");
            return drop(answer.send(Outcome::StoreUnavailable));
        }
    };

    let started = metrics::Timer::start();
    let dispatched = tokio::select! {
        biased;
        dispatched = handlers.dispatch(&delivery, config.handler_timeout) => dispatched,
        never = keep_claimed(store, key, &token, config) => match never {},
    };

    dispatched.log_failure();
    let outcome = Outcome::of(&dispatched, config.acknowledge_mismatched);

    outcome.time_handler(delivery.event_type(), started.elapsed());

    // The handler's result stands whatever the store says next: answering
    // otherwise would make the sender redo work that happened (after done)
    // or was already refused (after release). A lapsed lease cleans up
    // either way.
    let done = outcome.is_success();
    let _ = answer.send(outcome);
    let settled = if done {
        let ttl = config.done_record_ttl();
        timed("mark_done", store.mark_done_boxed(key, &token, ttl)).await
    } else {
        timed("release", store.release_boxed(key, &token)).await
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
        match timed("renew", store.renew_boxed(key, token, lease)).await {
            Ok(ClaimStatus::Held) => {}
            Ok(_) => tracing::error!("the claim lapsed while the handler ran"),
            Err(error) => tracing::warn!(%error, "could not renew the claim"),
        }
    }
}

/// Runs a store operation, and reports how long it took and whether it
/// failed.
async fn timed<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = metrics::Timer::start();
    let result = call.await;
    metrics::store(operation, started.elapsed(), result.is_err());
    result
}

/// The span every delivery's logs sit in; its fields are filled as they
/// become known. With the `opentelemetry` feature it also carries
/// OpenTelemetry's HTTP server attributes.
fn delivery_span(method: &Method, path: &str) -> tracing::Span {
    #[cfg(feature = "opentelemetry")]
    let span = tracing::info_span!(
        "ltvboost_webhook",
        event_id = field::Empty,
        event_type = field::Empty,
        secret_index = field::Empty,
        account = field::Empty,
        outcome = field::Empty,
        reason = field::Empty,
        otel.name = method.as_str(),
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = method.as_str(),
        url.path = path,
        http.response.status_code = field::Empty,
        error.type = field::Empty,
    );
    #[cfg(not(feature = "opentelemetry"))]
    let span = {
        let _ = (method, path);
        tracing::info_span!(
            "ltvboost_webhook",
            event_id = field::Empty,
            event_type = field::Empty,
            secret_index = field::Empty,
            account = field::Empty,
            outcome = field::Empty,
            reason = field::Empty,
        )
    };
    span
}

/// One tracing event at a level known only at run time (tracing's macros
/// take a constant one).
macro_rules! event_at {
    ($level:expr, $($event:tt)+) => {
        match $level {
            Level::DEBUG => tracing::debug!(target: ANSWER_TARGET, $($event)+),
            Level::INFO => tracing::info!(target: ANSWER_TARGET, $($event)+),
            _ => tracing::warn!(target: ANSWER_TARGET, $($event)+),
        }
    };
}

/// The target of the one line per delivery (`webhook answered`, `webhook
/// refused`): a filter can quiet it (`ltvboost_webhooks::answer=warn`)
/// and keep the delivery's span, whose fields every other line inside it
/// carries.
const ANSWER_TARGET: &str = "ltvboost_webhooks::answer";

/// The one log line per delivery, at its row's level.
fn report(outcome: &Outcome) {
    let span = tracing::Span::current();
    let status = outcome.status();
    span.record("outcome", outcome.kind());
    // The OpenTelemetry attributes (absent from the span without the feature).
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if let Some(reason) = outcome.reason() {
        span.record("reason", reason);
    }
    if status.is_server_error() {
        span.record("otel.status_code", "error");
        span.record("error.type", outcome.reason().unwrap_or(outcome.kind()));
    }
    match outcome {
        Outcome::Rejected(rejection) => log_refusal(rejection),
        _ => {
            event_at!(
                outcome.line().level(),
                status = status.as_u16(),
                "webhook answered"
            );
        }
    }
}

/// Logs a refusal at its row's level (`debug` for unauthenticated requests,
/// so that a flood of forged requests cannot flood the logs). The extractor
/// logs its refusals here too.
pub(crate) fn log_refusal(rejection: &Rejection) {
    let line = rejection.line();
    let (status, code) = (line.status().as_u16(), line.code());
    event_at!(line.level(), status, code, reason = %rejection, "webhook refused");
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
