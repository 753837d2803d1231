//! The servers the end-to-end benchmark (`bench/e2e/run.sh`) compares.
//!
//! ```sh
//! cargo run --release --example bench_server -- bare  127.0.0.1:4001
//! cargo run --release --example bench_server -- layer 127.0.0.1:4002
//! cargo run --release --example bench_server -- router-layer 127.0.0.1:4003
//! ```
//!
//! * `bare`: axum that only reads the body: the ceiling.
//! * `layer`: the same router wrapped by `WebhookLayer` (`WebhookLayer::wrap`,
//!   the recommended mounting), every delivery handled in full (verify,
//!   parse, typed payload, handler).
//! * `router-layer`: the same, mounted with axum's `Router::layer`, which
//!   puts the layer on every route and on the fallback. Deduplication uses
//!   `NoDedupe`, which always grants the claim, because the load generator repeats one
//!   signed event: with a real store every request after the first would take
//!   the cheaper duplicate path. The in-memory store's own cost is measured by
//!   `cargo bench --bench throughput` (`service/ltvboost_layer`).

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use ltvboost_webhooks::WebhookLayer;
use ltvboost_webhooks::dedupe::NoDedupe;
use ltvboost_webhooks::event::ResponseCreated;
use ltvboost_webhooks::handler::*;
use ltvboost_webhooks::serve::Server;
use ltvboost_webhooks::signature::{Secret, Verifier};

const SECRET: &str = "ltvboost-development-secret-do-not-use-in-production";

/// Does what a real handler's cheapest work would: looks at the payload.
struct Touch;

impl ResponseHandler for Touch {
    async fn created(&self, _: &Delivery, response: &ResponseCreated) -> HandlerResult {
        std::hint::black_box(&response.id);
        Ok(())
    }
}
impl ActionHandler for Touch {}
impl SegmentHandler for Touch {}
impl FallbackHandler for Touch {}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("layer");
    let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:4002");
    let bare = Router::new().route(
        "/webhooks/ltvboost",
        post(|body: Bytes| async move {
            std::hint::black_box(body);
            "ok"
        }),
    );
    let layer = WebhookLayer::new(Verifier::new([Secret::new(SECRET)?])?)
        .handler(Touch)
        .dedupe_store(NoDedupe);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bench_server {mode} on {addr}");
    let server = Server::new(listener);
    // In both layer modes the layer answers the webhook path itself; the
    // bare route is never reached there.
    match mode {
        "bare" => server.serve(bare).await?,
        "layer" => server.serve(layer.wrap(bare)).await?,
        "router-layer" => server.serve(bare.layer(layer)).await?,
        other => {
            return Err(format!("unknown mode {other:?}: bare, layer or router-layer").into());
        }
    }
    Ok(())
}
