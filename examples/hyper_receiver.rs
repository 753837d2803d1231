//! The same receiver on plain hyper: no axum, only tower services.
//!
//! ```sh
//! cargo run --example hyper_receiver
//! ```

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use ltvboost_webhooks::handler::Handlers;
use ltvboost_webhooks::serve::{Server, shutdown_signal};
use ltvboost_webhooks::signature::Verifier;
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use tower::{Layer, service_fn};

/// Everything that is not the webhook path: a health check and 404s.
async fn routes(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, text) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    common::serve_metrics_from_env()?;
    let addr = common::addr_from_env()?;
    let config = WebhookConfig::new(Verifier::from_env(addr).map_err(|e| e.to_string())?)
        .path("/webhooks/ltvboost");
    let service = WebhookLayer::new(config, Handlers::all(common::PrintingHandlers))
        .layer(service_fn(routes));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        "listening on http://{}/webhooks/ltvboost",
        listener.local_addr()?
    );
    Server::new(listener)
        .serve_with_shutdown(service, shutdown_signal())
        .await?;
    Ok(())
}
