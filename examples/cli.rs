//! Try an endpoint the way LTVboost would call it.
//!
//! ```sh
//! # deliver one signed fixture event, retrying on LTVboost's schedule
//! cargo run --features testing --example cli -- send http://127.0.0.1:3000/webhooks/ltvboost response.created
//! # print the signature header for a body
//! printf '%s' '{"type":"segment.ready","data":{"id":"seg_1"}}' | cargo run --features testing --example cli -- sign
//! ```
//!
//! The secret is the first of `LTVBOOST_WEBHOOK_SECRET`, or the receiver
//! example's development secret. `send` options: `--id <event id>`,
//! `--time-scale <factor>` (default 0.001: the 24-hour schedule in ~6 min;
//! 1 is real time).

use std::io::Read;
use std::process::ExitCode;

use ltvboost_webhooks::EventType;
use ltvboost_webhooks::signature::{Secret, sign};
use ltvboost_webhooks::testing::{EventBuilder, SenderSimulator, fixture};

const DEVELOPMENT_SECRET: &str = "ltvboost-development-secret-do-not-use-in-production";
const USAGE: &str = "usage: cli send <url> <event-type> [--id ID] [--time-scale F]\n       cli sign   (body on stdin)";

fn secret() -> Result<Secret, String> {
    let text = std::env::var("LTVBOOST_WEBHOOK_SECRET").unwrap_or_else(|_| {
        eprintln!("LTVBOOST_WEBHOOK_SECRET is unset: signing with the development secret");
        DEVELOPMENT_SECRET.to_owned()
    });
    let first = text.split(',').next().unwrap_or_default().trim().to_owned();
    Secret::new(first).map_err(|e| e.to_string())
}

async fn send(args: &[String]) -> Result<bool, String> {
    let [url, type_name, ..] = args else {
        return Err(USAGE.to_owned());
    };
    let mut event = match type_name.parse::<EventType>() {
        Ok(t) => fixture(t),
        Err(_) => {
            eprintln!("{type_name:?} is not a documented type: sending it with empty data");
            EventBuilder::of_type(type_name.as_str())
        }
    };
    let mut scale = 0.001;
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--id" => event = event.id(value.as_str()),
            "--time-scale" => {
                scale = value
                    .parse()
                    .map_err(|_| format!("--time-scale {value:?} is not a number"))?;
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let body = event.to_bytes();
    println!(
        "sending {type_name} {} ({} bytes) to {url}",
        event.event_id().unwrap_or("-"),
        body.len()
    );
    let report = SenderSimulator::new(secret()?)
        .time_scale(scale)
        .deliver(url, &body)
        .await
        .map_err(|e| e.to_string())?;
    for a in &report.attempts {
        let answer = match (a.status, &a.error) {
            (Some(status), _) => status.to_string(),
            (None, Some(error)) => format!("no answer: {error}"),
            (None, None) => "no answer".to_owned(),
        };
        println!(
            "attempt {} at +{:?} (nominal): {answer} in {:?}",
            a.number, a.at, a.latency
        );
    }
    println!(
        "{}",
        if report.succeeded() {
            "delivered"
        } else {
            "gave up: retries exhausted"
        }
    );
    Ok(report.succeeded())
}

fn sign_stdin() -> Result<(), String> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    println!("x-ltvboost-signature: {}", sign(&secret()?, &body));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("send") => send(&args[1..]).await,
        Some("sign") => sign_stdin().map(|()| true),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
