//! The same receiver on plain hyper: no axum, only tower services.
//!
//! ```sh
//! cargo run --example hyper_receiver
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use ltvboost_webhooks::event::*;
use ltvboost_webhooks::handler::*;
use ltvboost_webhooks::serve::{Server, shutdown_signal};
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use std::net::SocketAddr;
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
    init_tracing();
    serve_metrics_from_env()?;
    let addr = addr_from_env()?;
    // With an accounts file, one path per account, as in examples/receiver.rs.
    let path = if ltvboost_webhooks::secrets::accounts_file_from_env().is_some() {
        "/webhooks/ltvboost/{account}"
    } else {
        "/webhooks/ltvboost"
    };
    let config =
        WebhookConfig::new(ltvboost_webhooks::secrets::from_env(addr).map_err(|e| e.to_string())?)
            .path(path);
    let service =
        WebhookLayer::new(config, Handlers::all(PrintingHandlers)).layer(service_fn(routes));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{}{path}", listener.local_addr()?);
    Server::new(listener)
        .serve_with_shutdown(service, shutdown_signal())
        .await?;
    Ok(())
}

// ---- Configuration from the environment, and handlers that print ----

/// `LTVBOOST_WEBHOOK_ADDR`, default `127.0.0.1:3000`.
fn addr_from_env() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let addr = std::env::var("LTVBOOST_WEBHOOK_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    addr.parse()
        .map_err(|e| format!("LTVBOOST_WEBHOOK_ADDR={addr:?} is not a socket address: {e}").into())
}

/// With `LTVBOOST_METRICS_ADDR` set, serves the Prometheus text format on
/// its own listener there (`GET /metrics`), so the figures are not exposed
/// where LTVboost posts. Needs the `metrics` feature.
fn serve_metrics_from_env() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(addr) = std::env::var("LTVBOOST_METRICS_ADDR") else {
        return Ok(());
    };
    #[cfg(feature = "metrics")]
    {
        use ltvboost_webhooks::metrics::{
            BODY_BYTES, BODY_BYTES_BUCKETS, HANDLER_DURATION, HANDLER_DURATION_BUCKETS,
            STORE_DURATION, STORE_DURATION_BUCKETS,
        };
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| format!("LTVBOOST_METRICS_ADDR={addr:?}: {e}"))?;
        // Real histograms, which a fleet can aggregate (not summaries).
        PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets_for_metric(
                Matcher::Full(HANDLER_DURATION.to_owned()),
                HANDLER_DURATION_BUCKETS,
            )?
            .set_buckets_for_metric(
                Matcher::Full(STORE_DURATION.to_owned()),
                STORE_DURATION_BUCKETS,
            )?
            .set_buckets_for_metric(Matcher::Full(BODY_BYTES.to_owned()), BODY_BYTES_BUCKETS)?
            .install()?;
        ltvboost_webhooks::metrics::describe();
        tracing::info!("metrics on http://{addr}/metrics");
        Ok(())
    }
    #[cfg(not(feature = "metrics"))]
    Err(format!(
        "LTVBOOST_METRICS_ADDR={addr:?} is set, but this build has no `metrics` feature: \
         run with `--features metrics`"
    )
    .into())
}

/// Logs to stderr; `RUST_LOG` overrides the default level. Colour only on
/// a terminal and never with `NO_COLOR`; `LTVBOOST_LOG_FORMAT=json` writes
/// one JSON object per line (for journald, Loki and the like).
fn init_tracing() {
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ltvboost_webhooks=info".into()),
        )
        .with_writer(std::io::stderr);
    if std::env::var("LTVBOOST_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        logs.json().init();
    } else {
        let colour = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        logs.with_ansi(colour).init();
    }
}

/// Handlers that print one line per call: the event type and the event id.
struct PrintingHandlers;

fn print(delivery: &Delivery, what: &str) -> HandlerResult {
    let account = delivery
        .account()
        .map(|name| format!(" account={name}"))
        .unwrap_or_default();
    println!(
        "{} {}{account} secret#{}: {what}",
        delivery.type_name(),
        delivery.id().unwrap_or("(no id)"),
        delivery.secret_index()
    );
    Ok(())
}

impl ResponseHandler for PrintingHandlers {
    async fn created(&self, d: &Delivery, p: &ResponseCreated) -> HandlerResult {
        let quiz = p.quiz_id.as_deref().unwrap_or("(none)");
        print(d, &format!("response {} on quiz {quiz}", p.id))
    }
    async fn scored(&self, d: &Delivery, p: &ResponseScored) -> HandlerResult {
        let score = p
            .score
            .map_or_else(|| "(none)".to_owned(), |s| s.to_string());
        let outcome = p.outcome.as_deref().unwrap_or("(none)");
        print(d, &format!("response {} scored {score} -> {outcome}", p.id))
    }
}

impl ActionHandler for PrintingHandlers {
    async fn queued(&self, d: &Delivery, p: &ActionQueued) -> HandlerResult {
        print(d, &format!("action {} queued", p.id))
    }
    async fn sent(&self, d: &Delivery, p: &ActionSent) -> HandlerResult {
        print(d, &format!("action {} sent", p.id))
    }
    async fn failed(&self, d: &Delivery, p: &ActionFailed) -> HandlerResult {
        // "code: message", either part left out when LTVboost sends none.
        let error = p.error.as_ref().map_or_else(
            || "(no reason given)".to_owned(),
            |e| match (e.code.as_deref(), e.message.as_deref()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(text), None) | (None, Some(text)) => text.to_owned(),
                (None, None) => "(no reason given)".to_owned(),
            },
        );
        print(d, &format!("action {} failed: {error}", p.id))
    }
}

impl SegmentHandler for PrintingHandlers {
    async fn updated(&self, d: &Delivery, p: &SegmentUpdated) -> HandlerResult {
        let members = p
            .member_count
            .map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
        print(d, &format!("segment {} now has {members} members", p.id))
    }
    async fn ready(&self, d: &Delivery, p: &SegmentReady) -> HandlerResult {
        print(d, &format!("segment {} ready", p.id))
    }
}

impl FallbackHandler for PrintingHandlers {
    async fn unknown(&self, d: &Delivery) -> HandlerResult {
        print(d, "unknown event type, acknowledged")
    }
    async fn mismatched(&self, d: &Delivery, reason: &PayloadError) -> HandlerResult {
        print(d, &format!("data does not fit: {reason}"))
    }
}
