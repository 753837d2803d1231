//! `ltvboost endpoints`: registered endpoints at the registration API.
//!
//! What the API returns is shown by allow-list: the fields this version
//! knows, and an unknown field only when its name cannot be a credential.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use ltvboost_webhooks::client::{Endpoint, NewWebhook, WebhookUpdate};
use ltvboost_webhooks::signature::{SECRET_ENV, Secret};
use serde_json::{Map, Value, json};

use crate::args::{ApiArgs, event_name, warn_unknown};
use crate::output::{Output, hinted, note, safe, usage};
use crate::rotate::{self, RotateArgs};

#[derive(Subcommand)]
pub(crate) enum EndpointsCommand {
    /// List every endpoint.
    ///
    /// Example: ltvboost endpoints list --json
    List,
    /// Show one endpoint.
    ///
    /// Example: ltvboost endpoints get wh_123
    Get { id: String },
    /// Register an endpoint with a new secret, shown (or written to a file) before the request is sent.
    ///
    /// Event names this version does not know are sent as they are, with a warning.
    ///
    /// Example: ltvboost endpoints create https://app.example/webhooks/ltvboost response.created action.sent
    Create {
        url: String,
        /// Event types (space- or comma-separated).
        #[arg(required = true, value_delimiter = ',', value_parser = event_name)]
        events: Vec<String>,
        /// Write the new secret to FILE (mode 0600, never overwritten) instead of printing it.
        #[arg(long, value_name = "FILE")]
        new_secret_file: Option<PathBuf>,
    },
    /// Change an endpoint's URL or events.
    ///
    /// Example: ltvboost endpoints update wh_123 --events segment.ready,segment.updated
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_delimiter = ',', value_parser = event_name)]
        events: Option<Vec<String>>,
    },
    /// Delete an endpoint (asked for confirmation on a terminal).
    ///
    /// Example: ltvboost endpoints delete wh_123 --yes
    Delete {
        id: String,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
    },
    /// Rotate an endpoint's secret in two steps, so receivers hold the new secret before LTVboost signs with it.
    ///
    /// 1. Without --commit: writes a new secret to FILE (mode 0600; an existing file is never
    ///    overwritten) and prints LTVBOOST_WEBHOOK_SECRET=NEW,OLD to deploy. Changes nothing at
    ///    the API. The old secret comes from --secret, --secret-file or LTVBOOST_WEBHOOK_SECRET.
    /// 2. Once every receiver runs with that line: --commit registers the secret in FILE. On
    ///    failure it keeps FILE and exits 1; running the same command again is safe.
    ///
    /// Example: ltvboost endpoints rotate wh_123 --new-secret-file new.secret
    ///
    /// Example: ltvboost endpoints rotate wh_123 --commit --new-secret-file new.secret
    Rotate(RotateArgs),
}

pub(crate) async fn run(
    command: EndpointsCommand,
    api: &ApiArgs,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        EndpointsCommand::List => {
            let all = api.client()?.webhooks().list().await?;
            if out.json {
                out.print(Value::Array(all.iter().map(shown).collect()), String::new)
            } else {
                all.iter().try_for_each(|e| print(out, e))
            }
        }
        EndpointsCommand::Get { id } => print(out, &api.client()?.webhooks().get(&id).await?),
        EndpointsCommand::Create {
            url,
            events,
            new_secret_file,
        } => create(api, out, url, events, new_secret_file).await,
        EndpointsCommand::Update { id, url, events } => {
            let mut update = WebhookUpdate::new();
            if let Some(url) = url {
                update = update.url(url);
            }
            if let Some(names) = events {
                warn_unknown(&names);
                update = update.event_names(names);
            }
            print(out, &api.client()?.webhooks().update(&id, &update).await?)
        }
        EndpointsCommand::Delete { id, yes } => {
            if !yes && !confirmed(&format!("delete the endpoint {id}?"))? {
                anyhow::bail!("{id} not deleted");
            }
            api.client()?.webhooks().delete(&id).await?;
            out.print(json!({"deleted": id}), || format!("deleted {id}"))
        }
        EndpointsCommand::Rotate(args) => rotate::run(args, api, out).await,
    }
}

async fn create(
    api: &ApiArgs,
    out: Output,
    url: String,
    names: Vec<String>,
    new_secret_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let client = api.client()?;
    warn_unknown(&names);
    let secret = Secret::generate()?;
    let new = NewWebhook::with_event_names(url, names, secret.clone())
        .map_err(|e| usage(e.to_string()))?;
    let text = secret.expose_str().unwrap_or_default();
    // Kept before the request is sent: if the answer is lost or an error,
    // the endpoint may exist with this secret.
    match &new_secret_file {
        Some(path) => rotate::write_new_secret(path, text)?,
        None if out.json => note(format_args!("{SECRET_ENV}={text}")),
        None => out.text(|| format!("{SECRET_ENV}={text}"))?,
    }
    let endpoint = client.webhooks().create(&new).await.map_err(|e| {
        let kept = new_secret_file.as_ref().map_or_else(
            || "shown above".to_owned(),
            |path| format!("in {}", path.display()),
        );
        hinted(
            e.into(),
            &format!(
                "the endpoint may or may not have been created with the secret {kept}; \
                 `ltvboost endpoints list` shows whether it exists"
            ),
        )
    })?;
    let mut value = shown(&endpoint);
    match &new_secret_file {
        Some(path) => value["secret_file"] = json!(path),
        None => value["secret"] = json!(text),
    }
    out.print(value, || line(&endpoint))
}

/// Prints an endpoint: one line, or its JSON.
pub(crate) fn print(out: Output, endpoint: &Endpoint) -> anyhow::Result<()> {
    out.print(shown(endpoint), || line(endpoint))
}

/// `<id> <url> <event,…>`, with whatever came from the API made safe.
fn line(endpoint: &Endpoint) -> String {
    format!(
        "{} {} {}",
        safe(&endpoint.id),
        safe(endpoint.url.as_deref().unwrap_or("-")),
        safe(&names_of(endpoint).join(","))
    )
}

/// The endpoint's event names, known and unknown, the known first.
fn names_of(endpoint: &Endpoint) -> Vec<String> {
    let known = endpoint.events.known.iter().map(|e| e.as_str().to_owned());
    known
        .chain(endpoint.events.unknown.iter().cloned())
        .collect()
}

/// The fields of an endpoint this version knows, beside `id`, `url` and `events`.
const KNOWN_FIELDS: &[&str] = &[
    "description",
    "active",
    "enabled",
    "status",
    "created_at",
    "updated_at",
    "object",
];

/// The endpoint as JSON, by allow-list: the known fields, and any other
/// only when its name cannot be a credential, at any depth.
pub(crate) fn shown(endpoint: &Endpoint) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(endpoint.id));
    out.insert("url".into(), json!(endpoint.url));
    out.insert("events".into(), json!(names_of(endpoint)));
    for (key, value) in &endpoint.extra {
        if KNOWN_FIELDS.contains(&key.as_str()) || !may_be_credential(key) {
            out.entry(key.clone())
                .or_insert_with(|| without_credentials(value));
        }
    }
    Value::Object(out)
}

/// Whether a field's name could name a credential.
fn may_be_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "secret",
        "token",
        "key",
        "password",
        "passwd",
        "credential",
        "auth",
        "signing",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn without_credentials(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(name, _)| !may_be_credential(name))
                .map(|(name, value)| (name.clone(), without_credentials(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_credentials).collect()),
        other => other.clone(),
    }
}

/// Asks on a terminal; anything but y or yes is no. Off a terminal, yes.
fn confirmed(question: &str) -> anyhow::Result<bool> {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    let mut stderr = std::io::stderr();
    write!(stderr, "{question} [y/N] ")
        .and_then(|()| stderr.flush())
        .context("asking on stderr")?;
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fields_that_cannot_be_credentials_are_shown() {
        let endpoint: Endpoint = serde_json::from_value(json!({
            "id": "wh_1",
            "url": "https://app.example/hook",
            "events": ["response.created"],
            "description": "CRM sync",
            "secret": "s1",
            "signing_secret": "s2",
            "api_token": "s3",
            "privateKey": "s4",
            "Password": "s5",
            "retries": 3,
            "meta": {"owner": "ops", "hmac_key": "s6", "list": [{"token": "s7", "n": 1}]},
        }))
        .unwrap();
        let shown = shown(&endpoint);
        let text = shown.to_string();
        for secret in ["s1", "s2", "s3", "s4", "s5", "s6", "s7"] {
            assert!(!text.contains(&format!("\"{secret}\"")), "{text}");
        }
        assert_eq!(shown["description"], "CRM sync");
        assert_eq!(shown["retries"], 3);
        assert_eq!(shown["meta"]["owner"], "ops");
        assert_eq!(shown["meta"]["list"][0]["n"], 1);
    }
}
