//! A receiver on plain hyper and tower, without axum: the crate's layer in
//! front of a `service_fn`, served by the crate's hardened server. What a
//! user copies to receive with hyper; `examples/receiver.rs` shows the rest
//! (stores, the queue, Postgres, metrics, typed handlers).
//!
//! ```sh
//! cargo run --example hyper_receiver
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use ltvboost_webhooks::handler::{Delivery, Handlers};
use ltvboost_webhooks::serve::{Server, shutdown_signal};
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // `LTVBOOST_WEBHOOK_ADDR`, default `127.0.0.1:3000`.
    let addr: SocketAddr = std::env::var("LTVBOOST_WEBHOOK_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    // `LTVBOOST_WEBHOOK_SECRET` (or `…_SECRET_FILE`), or on loopback the
    // development secret. One account only: examples/receiver.rs serves
    // an accounts file, each account at its own path.
    if ltvboost_webhooks::secrets::accounts_file_from_env().is_some() {
        return Err("LTVBOOST_WEBHOOK_ACCOUNTS_FILE is for examples/receiver.rs".into());
    }
    let secrets = ltvboost_webhooks::secrets::from_env(addr)?;
    let config = WebhookConfig::new(secrets).path("/webhooks/ltvboost");
    // One line per event: `<type> <id> secret#<n>`.
    let handlers = Handlers::any(|delivery: Delivery| async move {
        let id = delivery.id().unwrap_or("(no id)");
        println!(
            "{} {id} secret#{}",
            delivery.type_name(),
            delivery.secret_index()
        );
        Ok(())
    });
    let service = WebhookLayer::new(config, handlers).layer(service_fn(routes));

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
