//! Register a receiver with LTVboost.
//!
//! ```sh
//! LTVBOOST_API_TOKEN=… cargo run --features client --example register -- \
//!     https://your-app.example/webhooks/ltvboost response.created action.sent
//! ```
//!
//! `LTVBOOST_API_BASE` overrides the API base. The secret comes from
//! `LTVBOOST_WEBHOOK_SECRET`, or is generated and printed once: give it to the
//! receiver. Prints the new endpoint's id.

use std::process::ExitCode;

use ltvboost_webhooks::EventType;
use ltvboost_webhooks::client::{Client, NewWebhook};
use ltvboost_webhooks::signature::Secret;

const USAGE: &str = "usage: register <receiver-url> <event> [<event>…]";

async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, events @ ..] = args.as_slice() else {
        return Err(USAGE.to_owned());
    };
    if events.is_empty() {
        return Err(format!("name at least one event\n{USAGE}"));
    }
    let events = events
        .iter()
        .map(|name| {
            name.parse::<EventType>().map_err(|_| {
                let known: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown event {name:?}; LTVboost sends: {}",
                    known.join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let (secret, generated) = match std::env::var("LTVBOOST_WEBHOOK_SECRET") {
        Ok(text) => (Secret::new(text).map_err(|e| e.to_string())?, false),
        Err(_) => (Secret::generate().map_err(|e| e.to_string())?, true),
    };
    let webhook =
        NewWebhook::new(url.as_str(), events, secret.clone()).map_err(|e| e.to_string())?;
    let client = Client::from_env().map_err(|e| e.to_string())?;
    let endpoint = client
        .webhooks()
        .create(&webhook)
        .await
        .map_err(|e| format!("registration failed: {e}"))?;
    eprintln!("registered endpoint {}", endpoint.id);
    if generated {
        // Alone on stdout, once: the line to run the receiver with.
        eprintln!("the receiver needs this secret; it is not stored anywhere else:");
        println!(
            "LTVBOOST_WEBHOOK_SECRET={}",
            secret.expose_str().unwrap_or_default()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
