//! A worker for enqueue mode: handles what receivers appended to the Redis
//! stream.
//!
//! ```sh
//! LTVBOOST_QUEUE_URL=redis://127.0.0.1:6379/ cargo run --release --features queue --example worker
//! ```
//!
//! Prints one line per handler call (the event type and the event id), and
//! `dead-letter <type> <id>` for each event moved to the dead letters. Exits
//! 0 on SIGTERM or SIGINT, after the handler calls in flight finish.
//!
//! | variable | what | default |
//! | --- | --- | --- |
//! | `LTVBOOST_QUEUE_URL` | the queue's Redis | required |
//! | `LTVBOOST_NAMESPACE` | the service's keys, as the receivers' | `default` |
//! | `LTVBOOST_WEBHOOK_SECRET` | the receivers' secrets, newest first, comma-separated: entries are verified before they run | the development secret, with a warning |
//! | `LTVBOOST_WEBHOOK_SECRET_FILE` | instead: the receivers' secret file, one secret per line, newest first, followed without a restart (within two seconds, at once on SIGHUP) | unset |
//! | `LTVBOOST_WEBHOOK_ACCOUNTS_FILE` | instead: the receivers' accounts file; each entry is verified with its account's secrets | unset |
//! | `LTVBOOST_WORKER_HANDLER_TIMEOUT_MS` | a deadline for one handler call (`0`: none) | 600000 |
//! | `LTVBOOST_WORKER_CONCURRENCY` | handler calls at once | 16 |
//! | `LTVBOOST_WORKER_MAX_ATTEMPTS` | calls before an event is dead-lettered | 8 |
//! | `LTVBOOST_WORKER_RETRY_BASE_MS` | the first retry's delay; later ones grow 4× (at most 6 h) | 60000 |
//! | `LTVBOOST_WORKER_CLAIM_IDLE_MS` | how long an entry stays with a silent worker before another takes it | 300000 |
//! | `LTVBOOST_WORKER_SHUTDOWN_GRACE_MS` | after SIGTERM, how long running handlers may finish before their entries are handed back | 25000 |
//! | `LTVBOOST_WORKER_DELAY_MS` | demonstration: each handler call sleeps this long | 0 |
//! | `LTVBOOST_WORKER_FAIL_TYPES` | demonstration: comma-separated event types whose handler fails | none |
//! | `LTVBOOST_WORKER_CRASH_TYPES` | demonstration: comma-separated event types whose handler aborts the process | none |

use std::time::Duration;

use ltvboost_webhooks::Backoff;
use ltvboost_webhooks::handler::{
    ActionHandler, Delivery, FallbackHandler, HandlerResult, Handlers, ResponseHandler,
    SegmentHandler,
};
use ltvboost_webhooks::queue::{RedisQueue, Worker};
use ltvboost_webhooks::serve::shutdown_signal;

/// Prints each call; sleeps, fails and crashes as the demonstration
/// variables say.
struct Printing {
    delay: Duration,
    fail_types: Vec<String>,
    crash_types: Vec<String>,
}

impl Printing {
    async fn call(&self, delivery: &Delivery) -> HandlerResult {
        // `<type> <id>`, and ` account=<name>` for a multi-account receiver's event.
        let account = delivery
            .account()
            .map(|name| format!(" account={name}"))
            .unwrap_or_default();
        println!(
            "{} {}{account}",
            delivery.type_name(),
            delivery.id().unwrap_or("(no id)")
        );
        if self.crash_types.iter().any(|t| t == delivery.type_name()) {
            eprintln!("{} is set to crash: aborting", delivery.type_name());
            std::process::abort();
        }
        tokio::time::sleep(self.delay).await;
        if self.fail_types.iter().any(|t| t == delivery.type_name()) {
            return Err(format!("{} is set to fail", delivery.type_name()).into());
        }
        Ok(())
    }
}

impl ResponseHandler for Printing {
    async fn created(
        &self,
        d: &Delivery,
        _: &ltvboost_webhooks::event::ResponseCreated,
    ) -> HandlerResult {
        self.call(d).await
    }
    async fn scored(
        &self,
        d: &Delivery,
        _: &ltvboost_webhooks::event::ResponseScored,
    ) -> HandlerResult {
        self.call(d).await
    }
}

impl ActionHandler for Printing {
    async fn queued(
        &self,
        d: &Delivery,
        _: &ltvboost_webhooks::event::ActionQueued,
    ) -> HandlerResult {
        self.call(d).await
    }
    async fn sent(&self, d: &Delivery, _: &ltvboost_webhooks::event::ActionSent) -> HandlerResult {
        self.call(d).await
    }
    async fn failed(
        &self,
        d: &Delivery,
        _: &ltvboost_webhooks::event::ActionFailed,
    ) -> HandlerResult {
        self.call(d).await
    }
}

impl SegmentHandler for Printing {
    async fn updated(
        &self,
        d: &Delivery,
        _: &ltvboost_webhooks::event::SegmentUpdated,
    ) -> HandlerResult {
        self.call(d).await
    }
    async fn ready(
        &self,
        d: &Delivery,
        _: &ltvboost_webhooks::event::SegmentReady,
    ) -> HandlerResult {
        self.call(d).await
    }
}

impl FallbackHandler for Printing {
    async fn unknown(&self, d: &Delivery) -> HandlerResult {
        self.call(d).await
    }
}

fn list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn number(name: &str, default: u64) -> Result<u64, Box<dyn std::error::Error>> {
    match std::env::var(name) {
        Ok(text) => Ok(text
            .trim()
            .parse()
            .map_err(|e| format!("{name}={text:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level. Colour only on
/// a terminal and never with `NO_COLOR`; `LTVBOOST_LOG_FORMAT=json` writes
/// one JSON object per line (for journald, Loki and the like).
fn init_tracing() {
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let url = std::env::var("LTVBOOST_QUEUE_URL").map_err(|_| "LTVBOOST_QUEUE_URL is unset")?;
    let handlers = Printing {
        delay: Duration::from_millis(number("LTVBOOST_WORKER_DELAY_MS", 0)?),
        fail_types: list("LTVBOOST_WORKER_FAIL_TYPES"),
        crash_types: list("LTVBOOST_WORKER_CRASH_TYPES"),
    };
    // The worker listens nowhere: the development secret is allowed, with
    // the same warning as a receiver on loopback.
    let secrets = ltvboost_webhooks::secrets::from_env(([127, 0, 0, 1], 0).into())?;
    let namespace = std::env::var("LTVBOOST_NAMESPACE")
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ltvboost_webhooks::dedupe::DEFAULT_NAMESPACE.to_owned());
    tracing::info!("queue namespace {namespace}");
    let queue = RedisQueue::lazy(&url)?
        .namespace(&namespace)?
        .checked()
        .await
        .map_err(|e| e.to_string())?;
    let mut worker = Worker::new(queue, secrets, Handlers::all(handlers))
        .concurrency(usize::try_from(number("LTVBOOST_WORKER_CONCURRENCY", 16)?)?)
        .max_attempts(u32::try_from(number("LTVBOOST_WORKER_MAX_ATTEMPTS", 8)?)?)
        .retry_backoff(Backoff::new(
            Duration::from_millis(number("LTVBOOST_WORKER_RETRY_BASE_MS", 60_000)?),
            4.0,
            Duration::from_secs(6 * 3600),
        ))
        .claim_idle(Duration::from_millis(number(
            "LTVBOOST_WORKER_CLAIM_IDLE_MS",
            300_000,
        )?))
        .shutdown_grace(Duration::from_millis(number(
            "LTVBOOST_WORKER_SHUTDOWN_GRACE_MS",
            25_000,
        )?))
        .on_dead_letter(|dead| {
            println!(
                "dead-letter {} {}",
                dead.type_name,
                dead.event_id.as_deref().unwrap_or("(no id)")
            );
        });
    if let Ok(timeout) = std::env::var("LTVBOOST_WORKER_HANDLER_TIMEOUT_MS") {
        let millis = timeout
            .trim()
            .parse()
            .map_err(|e| format!("LTVBOOST_WORKER_HANDLER_TIMEOUT_MS={timeout:?}: {e}"))?;
        worker = worker.handler_timeout((millis > 0).then(|| Duration::from_millis(millis)));
    }
    eprintln!("worker ready");
    worker.run(shutdown_signal()).await;
    Ok(())
}
