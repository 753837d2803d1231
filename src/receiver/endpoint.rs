//! A tower service that answers only deliveries: for `route_service`, nested
//! routers, or a server of its own.
//!
//! [`WebhookEndpoint`] is made from a [`WebhookLayer`]
//! ([`WebhookLayer::endpoint`]): one constructor per mode, on the layer. It
//! answers every request it gets, whatever its path,
//! with the same steps as the layer (method, signature header, bounded body
//! read, signature check, envelope, replay window, then the deduplicated
//! handler call or the append to the queue): the router decides where it is
//! mounted. Its response body is `Full<Bytes>`, which axum serves directly.
//!
//! Path matching is the router's: `route_service("/webhooks/ltvboost", …)`
//! matches that path exactly (axum does not redirect `/webhooks/ltvboost/`).
//! Inside `Router::nest("/hooks", …)`, the endpoint answers at
//! `/hooks/webhooks/ltvboost`.
//!
//! ```
//! use axum::{Router, routing::get};
//! use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
//! use ltvboost_webhooks::handler::{Handlers, SegmentHandler};
//! use ltvboost_webhooks::signature::{Secret, Verifier};
//!
//! struct Segments;
//! impl SegmentHandler for Segments {}
//!
//! let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?);
//! let hooks = Router::new()
//!     .route_service("/ltvboost", WebhookLayer::new(config, Handlers::segments(Segments)).endpoint());
//! let app: Router = Router::new()
//!     .route("/healthz", get(|| async { "ok" }))
//!     .nest("/hooks", hooks); // LTVboost posts to /hooks/ltvboost
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use super::layer::WebhookLayer;
use super::pipeline::Pipeline;

/// A tower service that answers LTVboost deliveries, on whatever path it is
/// mounted. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct WebhookEndpoint {
    pipeline: Arc<Pipeline>,
}

impl WebhookEndpoint {
    pub(super) fn new(pipeline: Arc<Pipeline>) -> Self {
        Self { pipeline }
    }
}

/// The layer's receiver as an endpoint of its own (the same as
/// [`WebhookLayer::endpoint`]).
impl From<WebhookLayer> for WebhookEndpoint {
    fn from(layer: WebhookLayer) -> Self {
        layer.endpoint()
    }
}

/// The response future of [`WebhookEndpoint`].
pub type EndpointFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl<B> Service<Request<B>> for WebhookEndpoint
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let head = self.pipeline.check_head(
            request.method(),
            request.uri().path(),
            request.headers(),
            request.extensions(),
        );
        let pipeline = self.pipeline.clone();
        Box::pin(async move {
            let outcome = match head {
                Ok(head) => pipeline.run(head, request).await,
                Err(outcome) => outcome,
            };
            Ok(outcome.into_response())
        })
    }
}
