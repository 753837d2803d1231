//! What both receiver examples share: configuration from the environment and
//! handlers that print one line per call.

use std::net::SocketAddr;

use ltvboost_webhooks::event::*;
use ltvboost_webhooks::handler::*;

/// `LTVBOOST_WEBHOOK_ADDR`, default `127.0.0.1:3000`.
pub(crate) fn addr_from_env() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let addr = std::env::var("LTVBOOST_WEBHOOK_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    addr.parse()
        .map_err(|e| format!("LTVBOOST_WEBHOOK_ADDR={addr:?} is not a socket address: {e}").into())
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub(crate) fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ltvboost_webhooks=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Handlers that print one line per call: the event type and the event id.
pub(crate) struct PrintingHandlers;

fn print(delivery: &Delivery, what: &str) -> HandlerResult {
    println!(
        "{} {} secret#{}: {what}",
        delivery.type_name(),
        delivery.id().unwrap_or("(no id)"),
        delivery.secret_index()
    );
    Ok(())
}

impl ResponseHandler for PrintingHandlers {
    async fn created(&self, d: &Delivery, p: &ResponseCreated) -> HandlerResult {
        print(d, &format!("response {} on quiz {:?}", p.id, p.quiz_id))
    }
    async fn scored(&self, d: &Delivery, p: &ResponseScored) -> HandlerResult {
        print(
            d,
            &format!("response {} scored {:?} -> {:?}", p.id, p.score, p.outcome),
        )
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
        print(d, &format!("action {} failed: {:?}", p.id, p.error))
    }
}

impl SegmentHandler for PrintingHandlers {
    async fn updated(&self, d: &Delivery, p: &SegmentUpdated) -> HandlerResult {
        print(
            d,
            &format!("segment {} now has {:?} members", p.id, p.member_count),
        )
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
