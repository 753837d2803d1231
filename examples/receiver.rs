//! A working LTVboost webhook receiver on axum.
//!
//! ```sh
//! cargo run --example receiver
//! ```
//!
//! Listens on `LTVBOOST_WEBHOOK_ADDR` (default `127.0.0.1:3000`), verifies
//! with `LTVBOOST_WEBHOOK_SECRET` (comma-separated for rotation; unset, an
//! embedded development secret), serves `POST /webhooks/ltvboost` and
//! `GET /healthz`, and prints one line per handled event.

mod common;

use axum::{Router, routing::get};
use ltvboost_webhooks::WebhookLayer;
use ltvboost_webhooks::serve::Server;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let addr = common::addr_from_env()?;
    let verifier = common::verifier_from_env()?;

    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(
            WebhookLayer::new(verifier)
                .at("/webhooks/ltvboost")
                .handler(common::PrintingHandlers),
        );

    let listener = tokio::net::TcpListener::bind(addr).await?;
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
