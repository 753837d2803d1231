//! The tower middleware that answers LTVboost deliveries in front of any
//! router.
//!
//! [`WebhookLayer`] wraps a service — an axum `Router`, or any tower service
//! over `http::Request<B>` where `B` implements [`http_body::Body`], so
//! plain hyper works too. Requests to the configured path
//! ([`WebhookConfig::path`], matched exactly) are answered by the layer:
//! method, signature header, bounded body read, signature check, envelope,
//! replay window, then the deduplicated handler call (or, in enqueue mode,
//! the append to the queue), ending in one [`Outcome`].
//! Every other request passes through to the wrapped service untouched.
//!
//! The wrapped service's response body must be constructible from
//! [`Bytes`] (axum's `Body` and `http_body_util::Full<Bytes>` are), so the
//! layer answers in the same body type: `axum::serve` serves a wrapped
//! router as it serves the router itself.
//!
//! Two ways to mount it on axum, both served by `axum::serve` and by
//! [`serve::Server`](crate::serve::Server):
//!
//! * `WebhookLayer::new(config, handlers).wrap(router)`: around the whole
//!   router. A delivery is answered after one comparison of its path,
//!   before any routing (the fastest mounting, see BENCHMARKS.md).
//! * `router.layer(WebhookLayer::new(config, handlers))`: axum puts the
//!   layer on every route and on the fallback. Put it on the router that is
//!   served, not on one given to `Router::nest`: a nested router only sees
//!   paths under its prefix (with the prefix stripped), and a router that
//!   has no route at the webhook path never calls the layer there. For a
//!   nested or per-route mounting, use
//!   [`WebhookEndpoint`] with `route_service`.
//!
//! ```
//! use axum::{Router, routing::get};
//! use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
//! use ltvboost_webhooks::event::ResponseCreated;
//! use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
//! use ltvboost_webhooks::signature::{Secret, Verifier};
//!
//! struct Responses;
//! impl ResponseHandler for Responses {
//!     async fn created(&self, _: &Delivery, response: &ResponseCreated) -> HandlerResult {
//!         println!("new response {}", response.id);
//!         Ok(())
//!     }
//! }
//!
//! let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?)
//!     .path("/webhooks/ltvboost");
//! let router: Router = Router::new().route("/healthz", get(|| async { "ok" }));
//! let app = WebhookLayer::new(config, Handlers::responses(Responses)).wrap(router);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::config::WebhookConfig;
use super::endpoint::WebhookEndpoint;
use super::enqueue::Enqueue;
use super::outcome::Outcome;
use super::pipeline::Pipeline;
use crate::handler::Handlers;

/// A tower [`Layer`] that answers LTVboost deliveries on one path and passes
/// every other request through. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct WebhookLayer {
    pipeline: Arc<Pipeline>,
}

impl WebhookLayer {
    /// A layer that receives with `config` (or a bare `Verifier`, every
    /// other setting at its default) and routes events to `handlers`.
    pub fn new(config: impl Into<WebhookConfig>, handlers: Handlers) -> Self {
        Self {
            pipeline: Pipeline::inline(config.into(), handlers),
        }
    }

    /// Enqueue mode: a verified delivery is appended to `queue` (such as
    /// `queue::RedisQueue`, feature `queue`) and answered `202` once the
    /// write is confirmed; a worker calls the handlers later.
    /// Deduplication happens at enqueue, in the queue (the configuration's
    /// dedupe store is not used).
    ///
    /// ```no_run
    /// # #[cfg(feature = "queue")]
    /// # async fn run(verifier: ltvboost_webhooks::signature::Verifier) -> Result<(), Box<dyn std::error::Error>> {
    /// use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
    /// use ltvboost_webhooks::queue::RedisQueue;
    ///
    /// let queue = RedisQueue::connect("redis://127.0.0.1:6379/").await?;
    /// let layer = WebhookLayer::enqueue(WebhookConfig::new(verifier), queue);
    /// # Ok(()) }
    /// ```
    pub fn enqueue(config: impl Into<WebhookConfig>, queue: impl Enqueue) -> Self {
        Self {
            pipeline: Pipeline::enqueue(config.into(), queue),
        }
    }

    /// A layer around a pipeline built elsewhere in the crate (the
    /// `postgres` module's [`in_transaction`](Self::in_transaction)).
    #[cfg(feature = "postgres")]
    pub(crate) fn from_pipeline(pipeline: Arc<Pipeline>) -> Self {
        Self { pipeline }
    }

    /// The same receiver as a tower service that answers only deliveries,
    /// on whatever path a router mounts it (`Router::route_service`, a
    /// nested router, a server of its own); the configuration's `path` is
    /// not used.
    ///
    /// ```
    /// # use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
    /// # use ltvboost_webhooks::handler::{Handlers, SegmentHandler};
    /// # use ltvboost_webhooks::signature::{Secret, Verifier};
    /// # struct Segments;
    /// # impl SegmentHandler for Segments {}
    /// let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?);
    /// let endpoint = WebhookLayer::new(config, Handlers::segments(Segments)).endpoint();
    /// let app: axum::Router = axum::Router::new().route_service("/webhooks/ltvboost", endpoint);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn endpoint(&self) -> WebhookEndpoint {
        WebhookEndpoint::new(self.pipeline.clone())
    }

    /// Wraps `inner`, a router or any other service: the same as
    /// [`Layer::layer`], without importing the trait.
    pub fn wrap<S>(&self, inner: S) -> WebhookService<S> {
        Layer::layer(self, inner)
    }
}

impl<S> Layer<S> for WebhookLayer {
    type Service = WebhookService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebhookService {
            inner,
            pipeline: self.pipeline.clone(),
        }
    }
}

/// The service [`WebhookLayer`] makes: answers the webhook path, passes the
/// rest to `S`.
#[derive(Clone, Debug)]
pub struct WebhookService<S> {
    inner: S,
    pipeline: Arc<Pipeline>,
}

impl<S> WebhookService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the wrapped service back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WebhookService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self
            .pipeline
            .config
            .match_path(request.uri().path())
            .is_none()
        {
            return ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(request),
                },
            };
        }
        let kind = match self.pipeline.check_head(
            request.method(),
            request.uri().path(),
            request.headers(),
            request.extensions(),
        ) {
            Ok(head) => Kind::Delivery {
                future: Box::pin(self.pipeline.clone().run(head, request)),
            },
            Err(outcome) => Kind::Refused {
                outcome: Some(outcome),
            },
        };
        ResponseFuture { kind }
    }
}

type Delivering = Pin<Box<dyn Future<Output = Outcome> + Send>>;

pin_project! {
    /// The response future of [`WebhookService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Delivery { future: Delivering },
        Refused { outcome: Option<Outcome> },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<Bytes>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Delivery { future } => {
                Poll::Ready(Ok(ready!(future.as_mut().poll(cx)).into_response()))
            }
            // Polled again after completing (a misuse): stay pending.
            KindProj::Refused { outcome } => match outcome.take() {
                Some(outcome) => Poll::Ready(Ok(outcome.into_response())),
                None => Poll::Pending,
            },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
