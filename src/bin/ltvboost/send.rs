//! `ltvboost send`: a signed event to a URL, with LTVboost's retry policy on
//! request.

use anyhow::Context as _;
use clap::Args;
use ltvboost_webhooks::EventType;
use ltvboost_webhooks::testing::{EventBuilder, RetryPolicy, SenderSimulator, fixture};
use serde_json::{Value, json};

use crate::args::SecretArgs;
use crate::output::{Output, Reported, safe, usage};

/// Send a signed event, with LTVboost's retry policy on request.
///
/// Example: ltvboost send http://127.0.0.1:3000/webhooks/ltvboost response.created --set data.quiz_id=quiz_7
#[derive(Args)]
pub(crate) struct SendArgs {
    /// Where to post it.
    url: String,
    /// The event type, e.g. response.created (any name is sent as is).
    event_type: String,
    /// The event's data as JSON, or @FILE to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    data: Option<String>,
    /// Set a field, e.g. data.score=87 or id=evt_1 (the value is JSON, or text).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<String>,
    /// The event id (default: a new one).
    #[arg(long)]
    id: Option<String>,
    /// Retries after a failed attempt (LTVboost's policy: 5).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Multiplies the retry waits: 0.001 runs the 24-hour schedule in 86 s.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    #[command(flatten)]
    secret: SecretArgs,
}

pub(crate) async fn run(args: SendArgs, out: Output) -> anyhow::Result<()> {
    let body = event_body(&args)?;
    let mut policy = RetryPolicy::default();
    policy.max_retries = args.retries;
    out.text(|| {
        format!(
            "sending {} ({} bytes) to {}",
            safe(&args.event_type),
            body.len(),
            args.url
        )
    })?;
    let report = SenderSimulator::new(args.secret.signing()?)
        .policy(policy)
        .time_scale(args.time_scale)
        .on_attempt(move |a| {
            let answer = match (a.status, &a.error) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => format!("no answer: {error}"),
                (None, None) => "no answer".to_owned(),
            };
            // A closed stdout stops nothing here: the outcome is the exit code.
            let _ = out.text(|| format!("attempt {}: {answer} in {:?}", a.number, a.latency));
        })
        .deliver(&args.url, &body)
        .await
        .map_err(|e| usage(e.to_string()))?;
    let attempts: Vec<Value> = report
        .attempts
        .iter()
        .map(|a| json!({"attempt": a.number, "status": a.status, "error": a.error}))
        .collect();
    out.print(
        json!({"delivered": report.succeeded(), "attempts": attempts}),
        || {
            if report.succeeded() {
                "delivered"
            } else {
                "not delivered"
            }
            .to_owned()
        },
    )?;
    if report.succeeded() {
        Ok(())
    } else {
        Err(Reported.into())
    }
}

/// The event as JSON bytes: a fixture of the type (or an empty event of an
/// unknown one), with --id, --data and each --set applied.
fn event_body(args: &SendArgs) -> anyhow::Result<Vec<u8>> {
    let mut event = match args.event_type.parse::<EventType>() {
        Ok(known) => fixture(known),
        Err(_) => EventBuilder::of_type(&args.event_type),
    };
    if let Some(id) = &args.id {
        event = event.id(id);
    }
    if let Some(data) = &args.data {
        let text = match data.strip_prefix('@') {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|e| usage(format!("--data @{path}: {e}")))?
            }
            None => data.clone(),
        };
        let value: Value =
            serde_json::from_str(&text).map_err(|e| usage(format!("--data is not JSON: {e}")))?;
        event = event.data(value);
    }
    let mut body: Value =
        serde_json::from_slice(&event.to_bytes()).context("the built event is not JSON")?;
    for assignment in &args.set {
        set_path(&mut body, assignment)?;
    }
    serde_json::to_vec(&body).context("encoding the event")
}

/// Sets `path` (dot-separated) in `value` to `text`, read as JSON or else as a string.
fn set_path(value: &mut Value, assignment: &str) -> anyhow::Result<()> {
    let (path, text) = assignment
        .split_once('=')
        .ok_or_else(|| usage(format!("--set {assignment:?}: expected PATH=VALUE")))?;
    let new: Value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    let mut target = value;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let object = target
            .as_object_mut()
            .ok_or_else(|| usage(format!("--set {path}: {part} is inside a non-object")))?;
        if i + 1 == parts.len() {
            object.insert((*part).to_owned(), new);
            return Ok(());
        }
        target = object.entry(*part).or_insert_with(|| json!({}));
    }
    Err(usage(format!("--set {assignment:?}: empty path")))
}
