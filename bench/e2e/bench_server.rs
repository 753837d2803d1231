//! The servers the end-to-end benchmark (`bench/e2e/run.sh`) compares.
//!
//! ```sh
//! cargo run --release -p ltvboost-bench --bin bench_server -- bare  127.0.0.1:4001
//! cargo run --release -p ltvboost-bench --bin bench_server -- layer 127.0.0.1:4002
//! ```
//!
//! * `bare`: axum that only reads the body: the ceiling.
//! * `layer`: the same router wrapped by `WebhookLayer` (`WebhookLayer::wrap`)
//!   with every default, the in-memory dedupe store included: what a user
//!   runs. Every delivery is handled in full (verify, parse, claim, typed
//!   handler, done-record) when the load generator sends distinct events.
//! * `layer-no-dedupe`: the same with `NoDedupe`, the best case.
//! * `router-layer`: the default layer mounted with axum's `Router::layer`.
//! * `endpoint`: `WebhookEndpoint` mounted with `Router::route_service`.
//! * `layer-metrics` (built with `--features metrics`): `layer` with a
//!   Prometheus recorder installed, every metric recorded.
//! * `redis` and `enqueue` (built with `--features queue`, Redis at
//!   `BENCH_REDIS_URL`): the layer with a `RedisStore`, handlers inline; and
//!   in enqueue mode, answering `202` once the event is in the stream.
//! * `handwritten`: what a user writes for an inline receiver without this
//!   crate: axum that verifies the HMAC (`hmac`, `sha2`, a constant-time
//!   compare), parses the envelope with serde derive (its `data` kept raw,
//!   as this crate does) and then the `response.created` payload, looks at
//!   the payload as `layer`'s handler does, and
//!   answers `200`; no dedupe, no replay window, no body limits beyond
//!   axum's default.
//! * `handoff` (`--features queue`): what a user writes for a durable
//!   hand-off without this crate: axum that verifies the HMAC (`hmac`,
//!   `sha2`), parses the envelope with serde derive, appends body and
//!   signature to a Redis stream (`XADD` on a multiplexed connection) and
//!   answers `202`; no dedupe guard, no replay window.
//! * `xadd` (`--features queue`): the floor of any durable hand-off: axum
//!   that appends the body to a Redis stream (`XADD`, one per request, on a
//!   multiplexed connection) and answers `202`; no verification, no dedupe.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use ltvboost_webhooks::dedupe::NoDedupe;
use ltvboost_webhooks::event::ResponseCreated;
use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
use ltvboost_webhooks::serve::Server;
use ltvboost_webhooks::signature::{Secret, Verifier};
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};

const SECRET: &str = "ltvboost-development-secret-do-not-use-in-production";

/// Does what a real handler's cheapest work would: looks at the payload.
struct Touch;

impl ResponseHandler for Touch {
    async fn created(&self, _: &Delivery, response: &ResponseCreated) -> HandlerResult {
        std::hint::black_box(&response.id);
        Ok(())
    }
}

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
    let config = WebhookConfig::new(Verifier::new([Secret::new(SECRET)?])?);
    let layer = WebhookLayer::new(config.clone(), Handlers::responses(Touch));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bench_server {mode} on {addr}");
    let server = Server::new(listener);
    // In the layer modes the layer answers the webhook path itself; the
    // bare route is never reached there.
    match mode {
        "bare" => server.serve(bare).await?,
        "layer" => server.serve(layer.wrap(bare)).await?,
        "layer-no-dedupe" => {
            let layer =
                WebhookLayer::new(config.dedupe_store(NoDedupe), Handlers::responses(Touch));
            server.serve(layer.wrap(bare)).await?;
        }
        "router-layer" => server.serve(bare.layer(layer)).await?,
        #[cfg(feature = "metrics")]
        "layer-metrics" => {
            // Recorded as a Prometheus exporter would, rendered by nobody.
            // Buckets as examples/receiver sets them: histograms, not summaries.
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])?
                .build_recorder();
            // The upkeep `install()` runs: it drains the histograms' samples,
            // which would otherwise pile up for the whole run.
            let handle = recorder.handle();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    handle.run_upkeep();
                }
            });
            metrics::set_global_recorder(recorder)?;
            ltvboost_webhooks::metrics::describe();
            server.serve(layer.wrap(bare)).await?;
        }
        "endpoint" => {
            let endpoint = WebhookLayer::new(config, Handlers::responses(Touch)).endpoint();
            server
                .serve(Router::new().route_service("/webhooks/ltvboost", endpoint))
                .await?;
        }
        #[cfg(feature = "queue")]
        "redis" | "enqueue" => {
            // The Redis dedupe store, handlers inline; or enqueue mode.
            let url = std::env::var("BENCH_REDIS_URL")?;
            let layer = if mode == "redis" {
                let store = ltvboost_webhooks::dedupe::RedisStore::connect(&url).await?;
                WebhookLayer::new(config.dedupe_store(store), Handlers::responses(Touch))
            } else {
                let queue = ltvboost_webhooks::queue::RedisQueue::connect(&url).await?;
                WebhookLayer::enqueue(config, queue)
            };
            server.serve(layer.wrap(bare)).await?;
        }
        "handwritten" => server.serve(handwritten::router()).await?,
        #[cfg(feature = "queue")]
        "handoff" => server.serve(handoff::router().await?).await?,
        #[cfg(feature = "queue")]
        "xadd" => {
            let client = redis::Client::open(std::env::var("BENCH_REDIS_URL")?)?;
            let redis = redis::aio::ConnectionManager::new(client).await?;
            let floor = Router::new().route(
                "/webhooks/ltvboost",
                post(move |body: Bytes| {
                    let mut redis = redis.clone();
                    async move {
                        let added: redis::RedisResult<String> = redis::cmd("XADD")
                            .arg("bench:floor")
                            .arg("*")
                            .arg("body")
                            .arg(body.as_ref())
                            .query_async(&mut redis)
                            .await;
                        match added {
                            Ok(_) => axum::http::StatusCode::ACCEPTED,
                            Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        }
                    }
                }),
            );
            server.serve(floor).await?;
        }
        other => {
            return Err(format!(
                "unknown mode {other:?}: bare, layer, layer-no-dedupe, router-layer or endpoint"
            )
            .into());
        }
    }
    Ok(())
}

/// The hand-written inline receiver (`handwritten`).
mod handwritten {
    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use hmac::{KeyInit, Mac};

    /// The envelope, its `data` kept raw until its type is known: the
    /// cheapest correct way (a `serde_json::Value` first costs a tree).
    #[derive(serde::Deserialize)]
    #[allow(dead_code)] // read as a user's code would
    struct Event<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        created_at: &'a str,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct ResponseCreated {
        id: String,
        quiz_id: Option<String>,
        customer_id: Option<String>,
        email: Option<String>,
        #[serde(default)]
        answers: Vec<Answer>,
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Answer {
        question: String,
        answer: serde_json::Value,
    }

    /// The signature header, once it verified the body: the HMAC, compared
    /// in constant time (`verify_slice`).
    pub fn verify<'h>(headers: &'h HeaderMap, body: &[u8]) -> Result<&'h str, StatusCode> {
        let header = headers
            .get("x-ltvboost-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let mac = header
            .strip_prefix("sha256=")
            .and_then(|hex| hex::decode(hex).ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let mut expected = hmac::Hmac::<sha2::Sha256>::new_from_slice(super::SECRET.as_bytes())
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        expected.update(body);
        expected
            .verify_slice(&mac)
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        Ok(header)
    }

    pub fn router() -> Router {
        Router::new().route(
            "/webhooks/ltvboost",
            post(|headers: HeaderMap, body: Bytes| async move {
                if let Err(refused) = verify(&headers, &body) {
                    return refused;
                }
                let Ok(event) = serde_json::from_slice::<Event>(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                if event.kind == "response.created" {
                    let Ok(payload) = serde_json::from_str::<ResponseCreated>(event.data.get())
                    else {
                        return StatusCode::BAD_REQUEST;
                    };
                    std::hint::black_box(&payload.id);
                }
                StatusCode::OK
            }),
        )
    }
}

/// The hand-written durable hand-off (`handoff`).
#[cfg(feature = "queue")]
mod handoff {
    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)] // read to check the envelope, as a user's code would
    struct Envelope<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        created_at: &'a str,
    }

    pub async fn router() -> Result<Router, Box<dyn std::error::Error>> {
        let client = redis::Client::open(std::env::var("BENCH_REDIS_URL")?)?;
        let redis = redis::aio::ConnectionManager::new(client).await?;
        Ok(Router::new().route(
            "/webhooks/ltvboost",
            post(move |headers: HeaderMap, body: Bytes| {
                let mut redis = redis.clone();
                async move {
                    let header = match super::handwritten::verify(&headers, &body) {
                        Ok(header) => header,
                        Err(refused) => return refused,
                    };
                    let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else {
                        return StatusCode::BAD_REQUEST;
                    };
                    std::hint::black_box(&envelope);
                    let added: redis::RedisResult<String> = redis::cmd("XADD")
                        .arg("bench:handoff")
                        .arg("*")
                        .arg("body")
                        .arg(body.as_ref())
                        .arg("signature")
                        .arg(header)
                        .query_async(&mut redis)
                        .await;
                    match added {
                        Ok(_) => StatusCode::ACCEPTED,
                        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
                    }
                }
            }),
        ))
    }
}
