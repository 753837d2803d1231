//! A working LTVboost webhook receiver on axum.
//!
//! ```sh
//! cargo run --example receiver
//! LTVBOOST_REDIS_URL=redis://127.0.0.1:6379/ cargo run --features redis --example receiver
//! LTVBOOST_QUEUE_URL=redis://127.0.0.1:6379/ cargo run --release --features queue --example receiver
//! LTVBOOST_METRICS_ADDR=127.0.0.1:9090 cargo run --features metrics --example receiver
//! ```
//!
//! Listens on `LTVBOOST_WEBHOOK_ADDR` (default `127.0.0.1:3000`), verifies
//! with `LTVBOOST_WEBHOOK_SECRET` (comma-separated for rotation; unset, an
//! embedded development secret, on a loopback address only), serves
//! `POST /webhooks/ltvboost` and `GET /healthz`, and prints one line per
//! handled event. With `LTVBOOST_REDIS_URL` set (and the `redis` feature),
//! deduplication is shared through Redis, so several instances can run
//! behind a load balancer. With `LTVBOOST_QUEUE_URL` (feature `queue`), it
//! runs in enqueue mode: each delivery is answered `202` once it is in the
//! Redis stream, and `examples/worker.rs` handles it. With
//! `LTVBOOST_METRICS_ADDR` (feature `metrics`), it serves Prometheus metrics
//! on that address.

mod common;

use axum::{Router, routing::get};
use ltvboost_webhooks::handler::Handlers;
use ltvboost_webhooks::serve::{Server, shutdown_signal};
use ltvboost_webhooks::signature::Verifier;
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    common::serve_metrics_from_env()?;
    let addr = common::addr_from_env()?;
    let config = WebhookConfig::new(Verifier::from_env(addr).map_err(|e| e.to_string())?)
        .path("/webhooks/ltvboost");
    let config = match std::env::var("LTVBOOST_REDIS_URL") {
        #[cfg(feature = "redis")]
        Ok(url) => {
            let store = ltvboost_webhooks::dedupe::RedisStore::connect(&url).await?;
            tracing::info!("dedupe store: Redis (shared by every instance using it)");
            config.dedupe_store(store)
        }
        #[cfg(not(feature = "redis"))]
        Ok(_) => {
            return Err(
                "LTVBOOST_REDIS_URL is set, but this build has no `redis` feature: \
                        run with `--features redis`"
                    .into(),
            );
        }
        Err(_) => {
            tracing::info!(
                "dedupe store: in memory (this process only); set LTVBOOST_REDIS_URL to share it"
            );
            config
        }
    };

    // The router, wrapped by the webhook layer: deliveries are answered
    // before any routing, every other path reaches the router. Inline, the
    // handlers run here; in enqueue mode (LTVBOOST_QUEUE_URL), deliveries are
    // acknowledged after a durable write and a worker handles them.
    let router = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let layer = match std::env::var("LTVBOOST_QUEUE_URL") {
        #[cfg(feature = "queue")]
        Ok(url) => {
            let queue = ltvboost_webhooks::queue::RedisQueue::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!("enqueue mode: deliveries answered 202 once in Redis; run the worker");
            WebhookLayer::enqueue(config, queue)
        }
        #[cfg(not(feature = "queue"))]
        Ok(_) => {
            return Err(
                "LTVBOOST_QUEUE_URL is set, but this build has no `queue` feature: \
                        run with `--features queue`"
                    .into(),
            );
        }
        Err(_) => WebhookLayer::new(config, Handlers::all(common::PrintingHandlers)),
    };
    let app = layer.wrap(router);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        "listening on http://{}/webhooks/ltvboost",
        listener.local_addr()?
    );
    // Serves until SIGTERM or Ctrl-C, then drains in-flight deliveries.
    Server::new(listener)
        .serve_with_shutdown(app, shutdown_signal())
        .await?;
    Ok(())
}
