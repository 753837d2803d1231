//! `ltvboost listen`: a local receiver for development. It verifies and
//! prints each delivery, forwards it on request to the app being built,
//! and can register a temporary endpoint for its run (LTVboost's
//! deliveries need a public URL: a tunnel to the listening address).
//!
//! With `--register` it faces the internet, so it receives the way any
//! receiver built on the crate does: [`serve::Server`] holds the
//! connections (header deadline, shedding at the cap), and the
//! [`Delivery`] extractor reads each request within a [`WebhookConfig`]'s
//! limits (signature header checked before the body is read, size limit,
//! body budget, deadlines, replay window). Any shape of `data` is printed
//! and forwarded: what LTVboost sends is what the developer sees.
//!
//! [`serve::Server`]: ltvboost_webhooks::serve::Server

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{FromRef, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use clap::Args;
use ltvboost_webhooks::handler::Delivery;
use ltvboost_webhooks::secrets::EnvSecrets;
use ltvboost_webhooks::{Outcome as Answer, Rejection, WebhookConfig};
use serde_json::{Value, json};

use crate::args::{ApiArgs, SecretArgs, event_name, seconds, warn_unknown};
use crate::output::{Output, note, safe};

mod forward;
mod register;

use register::{Stops, TemporaryEndpoint};

/// A local receiver for development: verifies, prints, and optionally forwards.
///
/// Off a loopback address it needs a secret (--secret, --secret-file or
/// LTVBOOST_WEBHOOK_SECRET); on loopback it falls back to the development secret.
///
/// LTVboost delivers only to a public https URL: run a tunnel to --addr (cloudflared,
/// ngrok, tailscale funnel, ssh -R) and pass its URL as --register, which creates an
/// endpoint with a secret of its own for this run and deletes it on exit (a second
/// Ctrl-C stops at once and deletes it within 5 seconds).
///
/// Example: ltvboost listen --forward-to http://127.0.0.1:3000/webhooks/ltvboost
///
/// Example: ltvboost listen --register https://abc.trycloudflare.com/ --events response.created
#[derive(Args)]
pub(crate) struct ListenArgs {
    /// Where to listen (the example receiver's default is 127.0.0.1:3000, so both run side by side).
    #[arg(long, default_value = "127.0.0.1:3030")]
    addr: std::net::SocketAddr,
    /// Forward each verified delivery here: its original bytes and LTVboost's headers.
    #[arg(long, value_name = "URL")]
    forward_to: Option<String>,
    /// How long the app forwarded to may take before the delivery is answered 504.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    forward_timeout: Duration,
    /// Only these event types (comma-separated); others are acknowledged and skipped.
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...", value_parser = event_name)]
    events: Vec<String>,
    /// Register a temporary endpoint at this public URL (a tunnel to --addr) for
    /// --events (default: every type), and delete it on exit (Ctrl-C or SIGTERM).
    #[arg(long, value_name = "PUBLIC_URL")]
    register: Option<String>,
    /// Print each delivery's body too.
    #[arg(long)]
    print_body: bool,
    #[command(flatten)]
    secret: SecretArgs,
}

pub(crate) async fn run(args: ListenArgs, api: &ApiArgs, out: Output) -> anyhow::Result<()> {
    warn_unknown(&args.events);
    // Without --register the secret comes from the arguments: refused before anything starts.
    let given = match &args.register {
        Some(_) => None,
        None => Some(args.secret.receiver_secrets(args.addr)?),
    };
    // Caught from here on: a Ctrl-C while registering still ends the run in order.
    let stops = Stops::install()?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    // A registered endpoint gets a secret of its own, which is the one to verify with.
    let registered = match &args.register {
        None => None,
        Some(public_url) => tokio::select! {
            biased;
            () = stops.reached(1) => anyhow::bail!(
                "interrupted while registering: the endpoint may or may not have been created; \
                 `ltvboost endpoints list` shows whether it exists"
            ),
            created = TemporaryEndpoint::create(api, public_url, &args.events) => Some(created?),
        },
    };
    let secrets = match (&registered, given) {
        (Some(endpoint), _) => EnvSecrets::Fixed(endpoint.verifier()?),
        (_, Some(secrets)) => secrets,
        (None, None) => anyhow::bail!("no secret to verify with"),
    };
    // From here on the endpoint exists: whatever happens, it is deleted below.
    let served = async {
        if let Some(endpoint) = &registered {
            endpoint.announce(out)?;
        }
        serve(listener, &args, secrets, out, &stops).await
    }
    .await;
    let Some(endpoint) = registered else {
        return served;
    };
    let deleted = endpoint.delete(api, out, &stops).await;
    match (served, deleted) {
        (served, Ok(())) => served,
        (Err(served), Err(deleted)) => {
            note(format_args!("ltvboost: {}", safe(&format!("{served:#}"))));
            Err(deleted)
        }
        (Ok(()), Err(deleted)) => Err(deleted),
    }
}

/// Serves until the first stop (drained in order) or the second (at once).
async fn serve(
    listener: tokio::net::TcpListener,
    args: &ListenArgs,
    secrets: EnvSecrets,
    out: Output,
    stops: &Stops,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let state = Listening {
        config: WebhookConfig::new(secrets),
        settings: Arc::new(Settings {
            http,
            forward_to: args.forward_to.clone(),
            forward_timeout: args.forward_timeout,
            events: args.events.clone(),
            out,
            print_body: args.print_body,
            stops: stops.clone(),
            output_failed: Mutex::new(None),
        }),
    };
    let settings = state.settings.clone();
    let app = axum::Router::new()
        .fallback(axum::routing::post(deliver))
        .with_state(state);
    note(format_args!("listening on http://{local}"));
    let server = ltvboost_webhooks::serve::Server::new(listener);
    tokio::select! {
        biased;
        () = stops.reached(2) => note("asked again: requests in flight are not waited for"),
        served = server.serve_with_shutdown(app, stops.reached(1)) => served?,
    }
    match settings.output_failed.lock().map(|mut e| e.take()) {
        Ok(Some(error)) => Err(error),
        _ => Ok(()),
    }
}

/// The listener's state: the receiver's limits, and what to do with a delivery.
#[derive(Clone)]
struct Listening {
    config: WebhookConfig,
    settings: Arc<Settings>,
}

impl FromRef<Listening> for WebhookConfig {
    fn from_ref(listening: &Listening) -> Self {
        listening.config.clone()
    }
}

struct Settings {
    http: reqwest::Client,
    forward_to: Option<String>,
    forward_timeout: Duration,
    events: Vec<String>,
    out: Output,
    print_body: bool,
    stops: Stops,
    /// The first failure to print a delivery's line: the run stops with it.
    output_failed: Mutex<Option<anyhow::Error>>,
}

/// One request: answered as a receiver answers it (the status table's
/// rows), or as the app it is forwarded to answers; then one line printed.
/// A line that cannot be printed stops the run.
async fn deliver(
    State(listening): State<Listening>,
    headers: HeaderMap,
    received: Result<Delivery, Rejection>,
) -> Response {
    let settings = &listening.settings;
    let (response, report) = answer(settings, &headers, received).await;
    if let Err(error) = report.print(settings.out, settings.print_body) {
        // The first failure stops the run in order; later ones (the drain's
        // lines) are not a second stop.
        let first = settings.output_failed.lock().is_ok_and(|mut failed| {
            let first = failed.is_none();
            failed.get_or_insert(error);
            first
        });
        if first {
            settings.stops.request();
        }
    }
    response
}

async fn answer(
    settings: &Settings,
    headers: &HeaderMap,
    received: Result<Delivery, Rejection>,
) -> (Response, Report) {
    let delivery = match received {
        Ok(delivery) => delivery,
        Err(rejection) => {
            let report = Report::refused(rejection.status().as_u16(), rejection.to_string());
            return (rejection.into_response(), report);
        }
    };
    let body = delivery.envelope().body().clone();
    let mut report = Report {
        status: 200,
        event_type: Some(delivery.type_name().to_owned()),
        event_id: delivery.id().map(str::to_owned),
        secret_index: Some(delivery.secret_index()),
        refused: None,
        skipped: false,
        forwarded: None,
        body: serde_json::from_slice(&body).ok(),
    };
    let wanted =
        settings.events.is_empty() || settings.events.iter().any(|t| t == delivery.type_name());
    if !wanted {
        report.skipped = true;
        return (Answer::Handled.into_response(), report);
    }
    let Some(target) = &settings.forward_to else {
        return (Answer::Handled.into_response(), report);
    };
    let (response, forwarded) = forward::forward(
        &settings.http,
        target,
        settings.forward_timeout,
        headers,
        body,
    )
    .await;
    report.status = response.status().as_u16();
    report.forwarded = Some(forwarded);
    (response, report)
}

/// What one request came to, printed as a line or a JSON object.
struct Report {
    status: u16,
    event_type: Option<String>,
    event_id: Option<String>,
    secret_index: Option<usize>,
    refused: Option<String>,
    skipped: bool,
    forwarded: Option<Value>,
    body: Option<Value>,
}

impl Report {
    fn refused(status: u16, reason: String) -> Self {
        Self {
            status,
            event_type: None,
            event_id: None,
            secret_index: None,
            refused: Some(reason),
            skipped: false,
            forwarded: None,
            body: None,
        }
    }

    fn print(&self, out: Output, print_body: bool) -> anyhow::Result<()> {
        out.print(self.json(print_body), || self.text(print_body))
    }

    fn json(&self, print_body: bool) -> Value {
        let mut line = json!({
            "status": self.status,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "secret_index": self.secret_index,
        });
        if let Some(reason) = &self.refused {
            line["refused"] = json!(reason);
        }
        if self.skipped {
            line["skipped"] = json!(true);
        }
        if let Some(forwarded) = &self.forwarded {
            line["forwarded"] = forwarded.clone();
        }
        if let Some(body) = self.body.as_ref().filter(|_| print_body) {
            line["body"] = body.clone();
        }
        line
    }

    /// The line, and the body's when asked; every part from the request
    /// made safe for a terminal.
    fn text(&self, print_body: bool) -> String {
        if let Some(reason) = &self.refused {
            return format!("refused ({}): {}", self.status, safe(reason));
        }
        let event_type = safe(self.event_type.as_deref().unwrap_or("(unreadable)"));
        let event_id = safe(self.event_id.as_deref().unwrap_or("(no id)"));
        let secret = self.secret_index.unwrap_or(0);
        if self.skipped {
            return format!("{event_type} {event_id} (secret #{secret}) skipped: not in --events");
        }
        let mut text = format!("{event_type} {event_id} (secret #{secret})");
        if let Some(forwarded) = &self.forwarded {
            let url = safe(forwarded["url"].as_str().unwrap_or_default()).into_owned();
            match (&forwarded["status"], &forwarded["error"]) {
                (Value::Number(status), _) => {
                    text.push_str(&format!("\n  forwarded to {url}: {status}"));
                }
                (_, error) => text.push_str(&format!(
                    "\n  forwarding to {url} failed: {}",
                    safe(error.as_str().unwrap_or_default())
                )),
            }
        }
        if let Some(body) = self.body.as_ref().filter(|_| print_body) {
            text.push_str(&format!("\n  {}", safe(&body.to_string())));
        }
        text
    }
}
