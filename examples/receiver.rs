//! A working LTVboost webhook receiver on axum.
//!
//! ```sh
//! cargo run --example receiver
//! LTVBOOST_REDIS_URL=redis://127.0.0.1:6379/ cargo run --features redis --example receiver
//! ```
//!
//! Listens on `LTVBOOST_WEBHOOK_ADDR` (default `127.0.0.1:3000`), verifies
//! with `LTVBOOST_WEBHOOK_SECRET` (comma-separated for rotation; unset, an
//! embedded development secret), serves `POST /webhooks/ltvboost` and
//! `GET /healthz`, and prints one line per handled event. With
//! `LTVBOOST_REDIS_URL` set (and the `redis` feature), deduplication is shared
//! through Redis, so several instances can run behind a load balancer.

mod common;

use axum::{Router, routing::get};
use ltvboost_webhooks::dedupe::DedupeStore;
use ltvboost_webhooks::serve::Server;
use ltvboost_webhooks::signature::Verifier;
use ltvboost_webhooks::{WebhookLayer, WebhookService};

/// The router, wrapped by the webhook layer: deliveries are answered before
/// any routing, every other path reaches the router.
fn app<S: DedupeStore>(
    verifier: Verifier,
    store: S,
) -> WebhookService<Router, common::PrintingHandlers, S> {
    let router = Router::new().route("/healthz", get(|| async { "ok\n" }));
    WebhookLayer::new(verifier)
        .at("/webhooks/ltvboost")
        .handler(common::PrintingHandlers)
        .dedupe_store(store)
        .wrap(router)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let addr = common::addr_from_env()?;
    let verifier = common::verifier_from_env()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;

    match std::env::var("LTVBOOST_REDIS_URL") {
        #[cfg(feature = "redis")]
        Ok(url) => {
            let store = ltvboost_webhooks::dedupe::RedisStore::connect(&url).await?;
            tracing::info!("dedupe store: Redis (shared by every instance using it)");
            serve(listener, app(verifier, store)).await
        }
        #[cfg(not(feature = "redis"))]
        Ok(_) => Err(
            "LTVBOOST_REDIS_URL is set, but this build has no `redis` feature: \
             run with `--features redis`"
                .into(),
        ),
        Err(_) => {
            tracing::info!(
                "dedupe store: in memory (this process only); set LTVBOOST_REDIS_URL to share it"
            );
            let store = ltvboost_webhooks::dedupe::MemoryStore::new();
            serve(listener, app(verifier, store)).await
        }
    }
}

/// Serves until Ctrl-C, then drains in-flight deliveries.
async fn serve<S: DedupeStore>(
    listener: tokio::net::TcpListener,
    app: WebhookService<Router, common::PrintingHandlers, S>,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(
        "listening on http://{}/webhooks/ltvboost",
        listener.local_addr()?
    );
    Server::new(listener)
        .serve_with_shutdown(app, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
