//! A working LTVboost webhook receiver on axum.
//!
//! ```sh
//! cargo run --example receiver
//! LTVBOOST_REDIS_URL=redis://127.0.0.1:6379/ cargo run --features redis --example receiver
//! LTVBOOST_QUEUE_URL=redis://127.0.0.1:6379/ cargo run --release --features queue --example receiver
//! LTVBOOST_METRICS_ADDR=127.0.0.1:9090 cargo run --features metrics --example receiver
//! LTVBOOST_DATABASE_URL=postgres://app@127.0.0.1/app cargo run --features postgres --example receiver
//! ```
//!
//! Listens on `LTVBOOST_WEBHOOK_ADDR` (default `127.0.0.1:3000`), verifies
//! with `LTVBOOST_WEBHOOK_SECRET` (comma-separated for rotation; unset, an
//! embedded development secret, on a loopback address only) or the file
//! `LTVBOOST_WEBHOOK_SECRET_FILE` names (one secret per line, newest first;
//! followed without a restart: a change applies within two seconds, at once on
//! SIGHUP, and a file that turns empty or unreadable keeps the last good
//! secrets), or, for many LTVboost accounts, the TOML file
//! `LTVBOOST_WEBHOOK_ACCOUNTS_FILE` names (`[accounts.<name>] secrets =
//! ["new", "old"]`, followed the same way; each account is served at
//! `POST /webhooks/ltvboost/<name>`, verified with its own secrets only,
//! and deduplicated apart from the others; an unknown account answers 404),
//! serves
//! `POST /webhooks/ltvboost` and `GET /healthz`, and prints one line per
//! handled event. With `LTVBOOST_REDIS_URL` set (and the `redis` feature),
//! deduplication is shared through Redis, so several instances can run
//! behind a load balancer. With `LTVBOOST_QUEUE_URL` (feature `queue`), it
//! runs in enqueue mode: each delivery is answered `202` once it is in the
//! Redis stream, and `examples/worker.rs` handles it; the Redis settings
//! that could forget a `202` are logged at start (refused with
//! `LTVBOOST_QUEUE_REQUIRE_DURABLE=1`), and `LTVBOOST_QUEUE_WAIT_REPLICAS=N`
//! makes each `202` wait (up to a second) until N replicas have it. In
//! both Redis modes, `LTVBOOST_NAMESPACE` (default `default`) names the
//! service's keys: services sharing one Redis each take their own. With
//! `LTVBOOST_METRICS_ADDR` (feature `metrics`), it serves Prometheus metrics
//! on that address.
//!
//! With `LTVBOOST_DATABASE_URL` (feature `postgres`), each delivery runs in
//! one Postgres transaction: the handler inserts a row `(event_id,
//! event_type)` into `ltvboost_example_effects` (created if missing), which
//! commits together with the event's done-record and its inbox row
//! (`ltvboost inbox list`), kept for `LTVBOOST_INBOX_RETENTION` (default
//! `7d`). Postgres down at start: the receiver starts and answers 503 until
//! it is back. Fault knobs, for tests: `LTVBOOST_EXAMPLE_ABORT_BEFORE_COMMIT=<type>`
//! aborts the process after the insert and before the commit,
//! `LTVBOOST_EXAMPLE_ABORT_AFTER_COMMIT=<type>` after the commit and before
//! the answer, `LTVBOOST_EXAMPLE_FAIL_TYPES=<type,…>` makes the handler
//! insert and then fail, and `LTVBOOST_EXAMPLE_HANDLER_DELAY_MS=<ms>` makes it
//! wait after its insert (time for a `kill -9` inside the transaction).

use axum::{Router, routing::get};
use ltvboost_webhooks::event::*;
use ltvboost_webhooks::handler::*;
use ltvboost_webhooks::serve::{Server, shutdown_signal};
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    serve_metrics_from_env()?;
    let addr = addr_from_env()?;
    // With an accounts file, one path per account: /webhooks/ltvboost/acme, …
    let path = if ltvboost_webhooks::secrets::accounts_file_from_env().is_some() {
        "/webhooks/ltvboost/{account}"
    } else {
        "/webhooks/ltvboost"
    };
    let config =
        WebhookConfig::new(ltvboost_webhooks::secrets::from_env(addr).map_err(|e| e.to_string())?)
            .path(path);
    let config = match std::env::var("LTVBOOST_REDIS_URL") {
        #[cfg(feature = "redis")]
        Ok(url) => {
            let namespace = namespace_from_env();
            let store = ltvboost_webhooks::dedupe::RedisStore::connect(&url)
                .await?
                .namespace(&namespace)?;
            tracing::info!(
                "dedupe store: Redis (shared by every instance using it), namespace {namespace}: \
                 keys ltvboost:{{{namespace}}}:webhook:*"
            );
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
        // With LTVBOOST_DATABASE_URL, Postgres holds the done-records.
        Err(_) if std::env::var_os("LTVBOOST_DATABASE_URL").is_some() => config,
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
            let replicas: u32 = std::env::var("LTVBOOST_QUEUE_WAIT_REPLICAS")
                .map_or(Ok(0), |n| n.trim().parse())
                .map_err(|e| format!("LTVBOOST_QUEUE_WAIT_REPLICAS: {e}"))?;
            let namespace = namespace_from_env();
            tracing::info!("queue namespace {namespace}");
            let queue = ltvboost_webhooks::queue::RedisQueue::lazy(&url)
                .map_err(|e| e.to_string())?
                .namespace(&namespace)?
                .require_durable(
                    std::env::var("LTVBOOST_QUEUE_REQUIRE_DURABLE").is_ok_and(|v| v.trim() == "1"),
                )
                .wait_for_replicas(replicas, std::time::Duration::from_secs(1))
                .checked()
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
        Err(_) => match in_transaction_from_env(config)? {
            Ok(layer) => layer,
            Err(config) => WebhookLayer::new(config, Handlers::all(PrintingHandlers)),
        },
    };
    let app = layer.wrap(router);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{}{path}", listener.local_addr()?);
    // Serves until SIGTERM or Ctrl-C, then drains in-flight deliveries.
    Server::new(listener)
        .serve_with_shutdown(app, shutdown_signal())
        .await?;
    Ok(())
}

// ---- Configuration from the environment, and handlers that print ----

/// With `LTVBOOST_DATABASE_URL`, a layer whose handler writes inside each
/// delivery's transaction; otherwise the configuration back.
fn in_transaction_from_env(
    config: WebhookConfig,
) -> Result<Result<WebhookLayer, WebhookConfig>, Box<dyn std::error::Error>> {
    #[cfg(feature = "postgres")]
    if let Some(store) =
        ltvboost_webhooks::postgres::PostgresStore::from_env().map_err(|e| e.to_string())?
    {
        let url = std::env::var(ltvboost_webhooks::postgres::DATABASE_URL_ENV)?;
        let effects = effects::Effects::from_env(url.trim());
        tracing::info!(
            "handlers inside Postgres transactions: tables in schema {}, effects in \
             ltvboost_example_effects",
            store.schema_name()
        );
        return Ok(Ok(WebhookLayer::in_transaction(config, store, effects)));
    }
    #[cfg(not(feature = "postgres"))]
    if std::env::var_os("LTVBOOST_DATABASE_URL").is_some() {
        return Err(
            "LTVBOOST_DATABASE_URL is set, but this build has no `postgres` feature: \
                    run with `--features postgres`"
                .into(),
        );
    }
    Ok(Err(config))
}

/// The handler that writes through the delivery's transaction.
#[cfg(feature = "postgres")]
mod effects {
    use ltvboost_webhooks::handler::{Delivery, HandlerResult};
    use ltvboost_webhooks::postgres::{Transaction, TransactionHandler, tokio_postgres};

    /// Inserts one row per event into `ltvboost_example_effects`.
    pub(crate) struct Effects {
        url: String,
        table: tokio::sync::OnceCell<()>,
        abort_before_commit: Option<String>,
        abort_after_commit: Option<String>,
        fail_types: Vec<String>,
        delay: std::time::Duration,
    }

    impl Effects {
        pub(crate) fn from_env(url: &str) -> Self {
            let knob = |name| std::env::var(name).ok().map(|v| v.trim().to_owned());
            Self {
                url: url.to_owned(),
                table: tokio::sync::OnceCell::new(),
                abort_before_commit: knob("LTVBOOST_EXAMPLE_ABORT_BEFORE_COMMIT"),
                abort_after_commit: knob("LTVBOOST_EXAMPLE_ABORT_AFTER_COMMIT"),
                fail_types: knob("LTVBOOST_EXAMPLE_FAIL_TYPES")
                    .map(|types| types.split(',').map(|t| t.trim().to_owned()).collect())
                    .unwrap_or_default(),
                delay: knob("LTVBOOST_EXAMPLE_HANDLER_DELAY_MS")
                    .and_then(|ms| ms.parse().ok())
                    .map(std::time::Duration::from_millis)
                    .unwrap_or_default(),
            }
        }

        /// Creates the table once (on a connection of its own, so that a
        /// delivery's rollback cannot undo it); a database that is down
        /// fails the delivery, and the next one tries again.
        async fn table(&self) -> HandlerResult {
            self.table
                .get_or_try_init(|| async {
                    let (client, connection) =
                        tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(
                            "SELECT pg_advisory_xact_lock(hashtext('ltvboost_example_effects'));
                             CREATE TABLE IF NOT EXISTS ltvboost_example_effects (
                                 event_id text,
                                 event_type text NOT NULL,
                                 inserted_at timestamptz NOT NULL DEFAULT now()
                             )",
                        )
                        .await
                })
                .await?;
            Ok(())
        }
    }

    impl TransactionHandler for Effects {
        async fn handle(
            &self,
            delivery: &Delivery,
            transaction: &Transaction<'_>,
        ) -> HandlerResult {
            self.table().await?;
            // Prepared once per pooled connection, not once per delivery.
            let insert = transaction
                .prepare_cached(
                    "INSERT INTO ltvboost_example_effects (event_id, event_type) VALUES ($1, $2)",
                )
                .await?;
            transaction
                .execute(&insert, &[&delivery.id(), &delivery.type_name()])
                .await?;
            tokio::time::sleep(self.delay).await;
            let event_type = delivery.type_name();
            if self.abort_before_commit.as_deref() == Some(event_type) {
                eprintln!("LTVBOOST_EXAMPLE_ABORT_BEFORE_COMMIT: aborting before the commit");
                std::process::abort();
            }
            if self.fail_types.iter().any(|t| t == event_type) {
                return Err(format!("LTVBOOST_EXAMPLE_FAIL_TYPES names {event_type}").into());
            }
            Ok(())
        }

        async fn committed(&self, delivery: &Delivery) {
            if self.abort_after_commit.as_deref() == Some(delivery.type_name()) {
                eprintln!("LTVBOOST_EXAMPLE_ABORT_AFTER_COMMIT: aborting after the commit");
                std::process::abort();
            }
            let _ = super::print(delivery, "recorded in ltvboost_example_effects");
        }
    }
}

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
///
/// By default the receiver's line per delivery (target
/// `ltvboost_webhooks::answer`) is logged from `warn` up (failures,
/// refusals of signed events): a delivery handled is already this
/// example's printed line, and a second line per delivery was most of the
/// example's cost over a hand-written receiver (BENCHMARKS.md). Every other
/// line keeps the delivery's span (event id, type, outcome).
/// `RUST_LOG=info` logs every delivery.
fn init_tracing() {
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ltvboost_webhooks::answer=warn".into()),
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

/// `LTVBOOST_NAMESPACE`, or `default`.
#[cfg(feature = "redis")]
fn namespace_from_env() -> String {
    std::env::var("LTVBOOST_NAMESPACE")
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ltvboost_webhooks::dedupe::DEFAULT_NAMESPACE.to_owned())
}
