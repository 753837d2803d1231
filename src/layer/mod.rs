//! The tower middleware that receives LTVboost webhooks in front of any router.
//!
//! [`WebhookLayer`] wraps a service — an axum `Router`, or any tower service
//! over `http::Request<B>` where `B` implements [`http_body::Body`], so plain
//! hyper works too. Requests to the webhook path are answered by the layer;
//! every other request passes through to the wrapped service untouched.
//! Wrapping the whole router ([`WebhookLayer::wrap`]) is the fastest
//! mounting; axum's `Router::layer`, as in the example below, works too (see
//! [`WebhookLayer::wrap`] for the difference).
//!
//! On the webhook path, each request goes through these steps, and each step
//! can end it with the status named:
//!
//! | step | refused with |
//! | --- | --- |
//! | method is `POST` | `405` |
//! | one well-formed `x-ltvboost-signature` header | `401` |
//! | body within the size limit, by `Content-Length` and while streaming | `413` |
//! | whole body received within the read deadline | `408` |
//! | signature matches the body under an active secret (constant time) | `401` |
//! | body is a JSON event envelope | `400` |
//! | signed `created_at` inside the replay window | `400` |
//! | dedupe claim: not done before, not in flight, store reachable | `200` / `409` / `503` |
//! | handler: `Ok` / `Err` or panic / data does not fit its type | `200` / `500` / `400` |
//!
//! A sender that hangs up mid-request neither cancels a half-done handler nor
//! strands its claim: the handler runs on the request's task, and if that
//! task stops waiting, the rest of the handling moves to a task of its own
//! and runs to the end.
//!
//! ```
//! use axum::{Router, routing::get};
//! use ltvboost_webhooks::WebhookLayer;
//! use ltvboost_webhooks::event::ResponseCreated;
//! use ltvboost_webhooks::handler::{
//!     ActionHandler, Delivery, FallbackHandler, HandlerResult, ResponseHandler, SegmentHandler,
//! };
//! use ltvboost_webhooks::signature::{Secret, Verifier};
//!
//! struct MyHandlers;
//! impl ResponseHandler for MyHandlers {
//!     async fn created(&self, _: &Delivery, response: &ResponseCreated) -> HandlerResult {
//!         println!("new response {}", response.id);
//!         Ok(())
//!     }
//! }
//! impl ActionHandler for MyHandlers {}
//! impl SegmentHandler for MyHandlers {}
//! impl FallbackHandler for MyHandlers {}
//!
//! let verifier = Verifier::new([Secret::new("a-development-secret-0123")?])?;
//! let app: Router = Router::new()
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(WebhookLayer::new(verifier).at("/webhooks/ltvboost").handler(MyHandlers));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod body;
mod finish;
mod future;

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument, field};

pub use body::ResponseBody;
pub use future::ResponseFuture;

use self::finish::FinishOnDrop;
use crate::dedupe::{Claim, DedupeStore, MemoryStore};
use crate::handler::{Acknowledge, Delivery, Dispatched, Handlers, dispatch};
use crate::receive::{Head, WebhookConfig};
use crate::rejection::{Rejection, plain_text};
use crate::replay::{Clock, ReplayWindow};

/// The default webhook path.
pub const DEFAULT_PATH: &str = "/webhooks/ltvboost";

/// How long a claim holds by default before a crashed receiver's event can be
/// handled again: longer than any sender waits for an answer.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(120);

/// How long a done-record lives by default: the default replay window
/// (24 h of retries + 1 h) plus the 5 minutes of allowed clock skew.
pub const DEFAULT_DONE_TTL: Duration = Duration::from_secs(25 * 3600 + 5 * 60);

/// A tower [`Layer`] that answers LTVboost deliveries on one path and passes
/// every other request through.
///
/// Built with defaults — path [`DEFAULT_PATH`], 1 MiB body limit, 10 s read
/// deadline, an in-memory dedupe store, handlers that acknowledge everything —
/// and refined with the builder methods. See the [module docs](self).
pub struct WebhookLayer<H = Acknowledge, S = MemoryStore> {
    config: WebhookConfig,
    path: Arc<str>,
    handlers: Arc<H>,
    store: Arc<S>,
    claim_lease: Duration,
    done_ttl: Duration,
    acknowledge_mismatched: bool,
}

impl WebhookLayer {
    /// A layer with the given verifier (or [`WebhookConfig`]) and every other
    /// setting at its default.
    pub fn new(config: impl Into<WebhookConfig>) -> Self {
        Self {
            config: config.into(),
            path: Arc::from(DEFAULT_PATH),
            handlers: Arc::new(Acknowledge),
            store: Arc::new(MemoryStore::new()),
            claim_lease: DEFAULT_CLAIM_LEASE,
            done_ttl: DEFAULT_DONE_TTL,
            acknowledge_mismatched: false,
        }
    }
}

impl<H, S> WebhookLayer<H, S> {
    /// The path LTVboost posts to (exact match). Default: [`DEFAULT_PATH`].
    pub fn at(mut self, path: impl AsRef<str>) -> Self {
        self.path = Arc::from(path.as_ref());
        self
    }

    /// The handlers events are routed to.
    pub fn handler<H2: Handlers>(self, handlers: H2) -> WebhookLayer<H2, S> {
        self.handler_arc(Arc::new(handlers))
    }

    /// The handlers events are routed to, already shared.
    pub fn handler_arc<H2: Handlers>(self, handlers: Arc<H2>) -> WebhookLayer<H2, S> {
        WebhookLayer {
            config: self.config,
            path: self.path,
            handlers,
            store: self.store,
            claim_lease: self.claim_lease,
            done_ttl: self.done_ttl,
            acknowledge_mismatched: self.acknowledge_mismatched,
        }
    }

    /// Where claims and done-records are kept. Default: a [`MemoryStore`]
    /// shared by every service this layer makes. A fleet of receivers needs
    /// one shared store.
    pub fn dedupe_store<S2: DedupeStore>(self, store: S2) -> WebhookLayer<H, S2> {
        WebhookLayer {
            config: self.config,
            path: self.path,
            handlers: self.handlers,
            store: Arc::new(store),
            claim_lease: self.claim_lease,
            done_ttl: self.done_ttl,
            acknowledge_mismatched: self.acknowledge_mismatched,
        }
    }

    /// See [`WebhookConfig::body_limit`].
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config = self.config.body_limit(bytes);
        self
    }

    /// See [`WebhookConfig::replay_window`].
    pub fn replay_window(mut self, window: ReplayWindow) -> Self {
        self.config = self.config.replay_window(window);
        self
    }

    /// See [`WebhookConfig::clock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config = self.config.clock(clock);
        self
    }

    /// See [`WebhookConfig::read_timeout`].
    pub fn read_timeout(mut self, deadline: Duration) -> Self {
        self.config = self.config.read_timeout(deadline);
        self
    }

    /// How long a claim holds before a delivery whose receiver died can be
    /// handled again. Keep it longer than your slowest handler. Default:
    /// [`DEFAULT_CLAIM_LEASE`].
    pub fn claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = lease;
        self
    }

    /// How long an event is remembered as done. Default: [`DEFAULT_DONE_TTL`].
    /// Never shorter than the replay window's span: a record that expired
    /// inside the window would let a replay through.
    pub fn done_ttl(mut self, ttl: Duration) -> Self {
        self.done_ttl = ttl;
        self
    }

    /// Wraps `inner`, a router or any other service: the same as
    /// [`Layer::layer`], without importing the trait.
    ///
    /// Wrapping the whole router is the fastest way to mount the receiver:
    /// a delivery is answered after one comparison of its path, before any
    /// routing. (axum's `Router::layer` works too, but puts the layer on
    /// every route and on the fallback, so each delivery first misses the
    /// router's matching and clones two boxed services: 9% fewer requests/s
    /// end to end, see BENCHMARKS.md.) The wrapped router is served by this
    /// crate's `serve::Server` or anything that takes a tower service;
    /// `axum::serve` wants axum's own response body, so with it use
    /// `Router::layer`.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use ltvboost_webhooks::WebhookLayer;
    /// use ltvboost_webhooks::signature::{Secret, Verifier};
    ///
    /// let router: Router = Router::new().route("/healthz", get(|| async { "ok" }));
    /// let app = WebhookLayer::new(Verifier::new([Secret::new("a-development-secret-0123")?])?)
    ///     .at("/webhooks/ltvboost")
    ///     .wrap(router);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wrap<Svc>(&self, inner: Svc) -> WebhookService<Svc, H, S> {
        Layer::layer(self, inner)
    }

    /// Whether a known event type whose `data` does not fit its payload is
    /// acknowledged (`200`) after the fallback handler saw it, instead of
    /// answered `400`. Default: `false`.
    pub fn acknowledge_mismatched(mut self, acknowledge: bool) -> Self {
        self.acknowledge_mismatched = acknowledge;
        self
    }
}

impl<H, S> Clone for WebhookLayer<H, S> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            path: self.path.clone(),
            handlers: self.handlers.clone(),
            store: self.store.clone(),
            claim_lease: self.claim_lease,
            done_ttl: self.done_ttl,
            acknowledge_mismatched: self.acknowledge_mismatched,
        }
    }
}

impl<H, S> std::fmt::Debug for WebhookLayer<H, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookLayer")
            .field("config", &self.config)
            .field("path", &self.path)
            .field("claim_lease", &self.claim_lease)
            .field("done_ttl", &self.done_ttl)
            .field("acknowledge_mismatched", &self.acknowledge_mismatched)
            .finish_non_exhaustive()
    }
}

impl<Svc, H, S> Layer<Svc> for WebhookLayer<H, S> {
    type Service = WebhookService<Svc, H, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        WebhookService {
            inner,
            receiver: Arc::new(self.clone()),
        }
    }
}

/// The service [`WebhookLayer`] makes: answers the webhook path, passes the
/// rest to `Svc`.
pub struct WebhookService<Svc, H = Acknowledge, S = MemoryStore> {
    inner: Svc,
    receiver: Arc<WebhookLayer<H, S>>,
}

impl<Svc: Clone, H, S> Clone for WebhookService<Svc, H, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            receiver: self.receiver.clone(),
        }
    }
}

impl<Svc: std::fmt::Debug, H, S> std::fmt::Debug for WebhookService<Svc, H, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookService")
            .field("inner", &self.inner)
            .field("receiver", &self.receiver)
            .finish()
    }
}

impl<Svc, H, S, ReqBody, ResBody> Service<Request<ReqBody>> for WebhookService<Svc, H, S>
where
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>>,
    H: Handlers,
    S: DedupeStore,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Svc::Error;
    type Future = ResponseFuture<Svc::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if request.uri().path() != &*self.receiver.path {
            return ResponseFuture::inner(self.inner.call(request));
        }
        let span = delivery_span();
        // Method and head are checked here, before any future is built: a
        // request that fails them is answered without a read or an
        // allocation, and the future that reads the body holds nothing of
        // the request but its body.
        let head = if request.method() == Method::POST {
            self.receiver.config.check_head(request.headers())
        } else {
            Err(Rejection::MethodNotAllowed)
        };
        match head {
            Ok(head) => ResponseFuture::webhook(Box::pin(
                self.receiver
                    .clone()
                    .answer(head, request.into_body())
                    .instrument(span),
            )),
            Err(rejection) => ResponseFuture::ready(span.in_scope(|| reject(&rejection))),
        }
    }
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
    )
}

/// Logs a rejection in the current span and answers it.
fn reject(rejection: &Rejection) -> Response<Full<Bytes>> {
    tracing::Span::current().record("outcome", Outcome::Rejected.as_str());
    tracing::warn!(status = rejection.status().as_u16(), reason = %rejection, "webhook rejected");
    rejection.to_response()
}

/// How a delivery ended, for the span and the log.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Rejected,
    Handled,
    Duplicate,
    InFlight,
    StoreUnavailable,
    Mismatched,
    HandlerFailed,
    HandlerPanicked,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Rejected => "rejected",
            Outcome::Handled => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::InFlight => "in_flight",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::Mismatched => "mismatched",
            Outcome::HandlerFailed => "handler_failed",
            Outcome::HandlerPanicked => "handler_panicked",
        }
    }
}

type Answer = (Outcome, Response<Full<Bytes>>);

impl<H: Handlers, S: DedupeStore> WebhookLayer<H, S> {
    /// Reads and verifies the body, then handles the delivery. Runs in
    /// the span [`delivery_span`] made.
    async fn answer<B>(self: Arc<Self>, head: Head, body: B) -> Response<Full<Bytes>>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let verified = self.config.read_verified(head, body).await;
        let delivery = match verified.and_then(|v| self.config.delivery(v)) {
            Ok(delivery) => delivery,
            Err(rejection) => return reject(&rejection),
        };
        let span = tracing::Span::current();
        span.record("event_id", delivery.id());
        span.record("event_type", delivery.type_name());
        span.record("secret_index", delivery.secret_index());
        // Run here, but finished on a task of its own if the sender hangs
        // up: a half-run handler must not be cancelled, nor its claim left
        // behind. Boxed now, so that this future stays small.
        let handling = FinishOnDrop::new(
            AssertUnwindSafe(self.clone().handle(delivery))
                .catch_unwind()
                .in_current_span(),
        );
        // One yield between reading the request and handling it, when other
        // tasks share the runtime: the server's connection task goes round
        // its loop once (its read-side work) before the handler runs.
        // Measured end to end (see BENCHMARKS.md): 10% more requests/s than
        // going straight on. It wakes its own task rather than calling
        // `tokio::task::yield_now`, which also makes the worker poll its
        // sockets: a system call that measured 1% slower end to end and
        // 0.5 µs dearer in process. Alone on the runtime (a test, a
        // `block_on`) nothing is waiting for the thread, so it is skipped.
        if other_tasks_alive() {
            yield_once().await;
        }
        let (outcome, response) = match handling.await {
            Ok(answer) => answer,
            Err(panic) => {
                // Handler panics are caught inside `handle`; this is a panic
                // in a dedupe store.
                tracing::error!(
                    panic = panic_message(&*panic),
                    "webhook delivery panicked outside its handler"
                );
                (
                    Outcome::HandlerPanicked,
                    plain_text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "handler did not finish\n",
                    ),
                )
            }
        };
        tracing::Span::current().record("outcome", outcome.as_str());
        tracing::info!(status = response.status().as_u16(), "webhook answered");
        response
    }

    /// Claim, dispatch, record: the effectively-once part.
    async fn handle(self: Arc<Self>, delivery: Delivery) -> Answer {
        let key = delivery.dedupe_key();
        let token = match self.store.claim(key, self.claim_lease).await {
            Ok(Claim::Acquired(token)) => token,
            Ok(Claim::Done) => {
                return (
                    Outcome::Duplicate,
                    plain_text(StatusCode::OK, "duplicate: already handled\n"),
                );
            }
            Ok(Claim::InFlight) => {
                return (
                    Outcome::InFlight,
                    plain_text(
                        StatusCode::CONFLICT,
                        "event is being handled by another delivery\n",
                    ),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "dedupe store unavailable; asking the sender to retry");
                return (
                    Outcome::StoreUnavailable,
                    plain_text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "dedupe store unavailable\n",
                    ),
                );
            }
        };

        let dispatched = AssertUnwindSafe(dispatch(&*self.handlers, &delivery))
            .catch_unwind()
            .await;

        let (outcome, response, done) = match dispatched {
            // Nothing to explain: the status is the whole answer. An empty
            // 200 is 6% more requests/s end to end than a text one
            // (BENCHMARKS.md); refusals and duplicates still say why.
            Ok(Dispatched::Handled) => (Outcome::Handled, Response::new(Full::default()), true),
            Ok(Dispatched::Mismatched) if self.acknowledge_mismatched => (
                Outcome::Mismatched,
                plain_text(
                    StatusCode::OK,
                    "acknowledged: event data does not fit its type\n",
                ),
                true,
            ),
            Ok(Dispatched::Mismatched) => (
                Outcome::Mismatched,
                plain_text(
                    StatusCode::BAD_REQUEST,
                    format!("event data does not fit {}\n", delivery.type_name()),
                ),
                false,
            ),
            Ok(Dispatched::Failed(error)) => {
                tracing::error!(%error, "webhook handler failed; the sender will retry");
                (
                    Outcome::HandlerFailed,
                    plain_text(StatusCode::INTERNAL_SERVER_ERROR, "handler failed\n"),
                    false,
                )
            }
            Err(panic) => {
                tracing::error!(
                    panic = panic_message(&*panic),
                    "webhook handler panicked; the sender will retry"
                );
                (
                    Outcome::HandlerPanicked,
                    plain_text(StatusCode::INTERNAL_SERVER_ERROR, "handler panicked\n"),
                    false,
                )
            }
        };

        let recorded = if done {
            let ttl = self.done_ttl.max(self.config.window().span());
            self.store.mark_done(key, &token, ttl).await
        } else {
            self.store.release(key, &token).await
        };
        if let Err(e) = recorded {
            // The handler's result stands: answering otherwise would make the
            // sender redo work that happened (after done) or was already
            // refused (after release). A lapsed lease cleans up either way.
            tracing::warn!(error = %e, done, "could not record the delivery's end in the dedupe store");
        }
        (outcome, response)
    }
}

/// Whether the runtime has tasks besides the one running this delivery
/// (which may be none, under `block_on`).
fn other_tasks_alive() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.metrics().num_alive_tasks() > 1)
}

/// Returns `Pending` once, having woken its own task: the task is polled
/// again as soon as the scheduler comes back to it.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
