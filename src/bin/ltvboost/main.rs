//! `ltvboost`: the command line for LTVboost webhooks.
//!
//! ```sh
//! cargo install --locked --path . --features cli
//! ltvboost --help
//! ```

// The doc comments below are clap's --help text, where URLs stay plain.
#![allow(rustdoc::bare_urls)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use ltvboost_webhooks::EventType;
use ltvboost_webhooks::client::{Client, Endpoint, NewWebhook, WebhookUpdate};
use ltvboost_webhooks::signature::{DEVELOPMENT_SECRET, SECRET_ENV, Secret, Verifier, sign};
use ltvboost_webhooks::testing::{EventBuilder, RetryPolicy, SenderSimulator, fixture};
use serde_json::{Value, json};

mod listen;
mod queue;

/// Send, sign, verify and receive LTVboost webhooks, and manage endpoints.
#[derive(Parser)]
#[command(name = "ltvboost", version, propagate_version = true)]
struct Cli {
    /// Machine-readable output: JSON on stdout (`listen`: one object per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
    /// More log output: -v info, -vv debug, -vvv trace (default: warnings).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// The log level or filter, e.g. debug or ltvboost_webhooks=trace (overrides -v).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log lines as text or as one JSON object each.
    #[arg(
        long,
        global = true,
        env = "LTVBOOST_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Text, coloured only on a terminal and never with NO_COLOR.
    Text,
    /// One JSON object per line.
    Json,
}

/// The registration API: its token, its base URL and a time-out.
#[derive(Args)]
pub(crate) struct ApiArgs {
    /// The registration API's token (endpoints commands, listen --register).
    #[arg(
        long,
        global = true,
        env = "LTVBOOST_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    api_key: Option<String>,
    /// The registration API's base URL (default: LTVboost's).
    #[arg(long, global = true, env = "LTVBOOST_API_BASE", value_name = "URL")]
    api_base: Option<String>,
    /// How long one API call may take, retries included. Default: 120.
    #[arg(long, global = true, value_name = "SECONDS")]
    api_timeout: Option<f64>,
}

#[derive(Subcommand)]
enum Command {
    /// Send a signed event, with LTVboost's retry policy on request.
    ///
    /// Example: ltvboost send http://127.0.0.1:3000/webhooks/ltvboost response.created --set data.quiz_id=quiz_7
    Send {
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
    },
    /// Print the signature header value of the body on stdin.
    ///
    /// Example: printf '%s' "$BODY" | ltvboost sign --secret "$SECRET"
    Sign {
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Check a signature against the body on stdin: exit 0 if it verifies, 1 if not.
    ///
    /// Example: printf '%s' "$BODY" | ltvboost verify --signature "sha256=…"
    Verify {
        /// The x-ltvboost-signature header's value.
        #[arg(long)]
        signature: String,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// A local receiver for development: verifies, prints, and optionally forwards.
    ///
    /// Off a loopback address it needs a secret (--secret, --secret-file or
    /// LTVBOOST_WEBHOOK_SECRET); on loopback it falls back to the development secret.
    ///
    /// LTVboost delivers only to a public https URL: run a tunnel to --addr (cloudflared,
    /// ngrok, tailscale funnel, ssh -R) and pass its URL as --register, which creates an
    /// endpoint with a secret of its own for this session and deletes it on exit.
    ///
    /// Example: ltvboost listen --forward-to http://127.0.0.1:3000/webhooks/ltvboost
    /// Example: ltvboost listen --register https://abc.trycloudflare.com/ --events response.created
    Listen(listen::ListenArgs),
    /// Manage registered endpoints (LTVBOOST_API_TOKEN; LTVBOOST_API_BASE).
    #[command(subcommand)]
    Endpoints(Endpoints),
    /// Inspect and operate the enqueue-mode queue (LTVBOOST_QUEUE_URL; LTVBOOST_NAMESPACE).
    Queue(queue::QueueArgs),
    /// Print a shell completion script.
    ///
    /// Example: ltvboost completions bash > ~/.local/share/bash-completion/completions/ltvboost
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum Endpoints {
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
        #[arg(required = true)]
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
        #[arg(long, value_delimiter = ',')]
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
    /// Example: ltvboost endpoints rotate wh_123 --commit --new-secret-file new.secret
    Rotate {
        id: String,
        /// Where the new secret is written (step 1) or read from (step 2).
        #[arg(long, value_name = "FILE")]
        new_secret_file: PathBuf,
        /// Register the secret in FILE with LTVboost (step 2).
        #[arg(long)]
        commit: bool,
        #[command(flatten)]
        old: SecretArgs,
    },
}

/// Where a secret comes from: --secret-file, --secret, or LTVBOOST_WEBHOOK_SECRET.
#[derive(Args)]
pub(crate) struct SecretArgs {
    /// The secret (or a comma-separated list, newest first, for verifying).
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    secret: Option<String>,
    /// A file holding the secret (used before --secret and the environment).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

/// A failure: usage errors exit 2, the rest 1.
pub(crate) enum Failure {
    Usage(String),
    Failed(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Failed(error.to_string())
    }
}

pub(crate) type Outcome = Result<(), Failure>;

impl SecretArgs {
    /// The secret list as given, or the environment's; the development
    /// secret (said on stderr) when `development` allows and nothing is set.
    fn list(&self, development: bool) -> Result<String, Failure> {
        if let Some(path) = &self.secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("--secret-file {}: {e}", path.display())))?;
            return Ok(text.trim().to_owned());
        }
        match self.given() {
            Some(list) => Ok(list.to_owned()),
            None if development => {
                eprintln!("{SECRET_ENV} is unset: using the development secret");
                Ok(DEVELOPMENT_SECRET.to_owned())
            }
            None => Err(Failure::Usage(format!(
                "no secret: give --secret, --secret-file or {SECRET_ENV}"
            ))),
        }
    }

    /// --secret or the environment's, unless blank.
    fn given(&self) -> Option<&str> {
        self.secret
            .as_deref()
            .filter(|list| !list.replace(',', "").trim().is_empty())
    }

    /// The first secret of the list: the one to sign with.
    fn signing(&self) -> Result<Secret, Failure> {
        let list = self.list(true)?;
        let first = list
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        Secret::new(first).map_err(|e| Failure::Usage(e.to_string()))
    }

    fn verifier(&self) -> Result<Verifier, Failure> {
        Verifier::from_list(&self.list(true)?).map_err(|e| Failure::Usage(e.to_string()))
    }

    /// The verifier of a receiver bound to `bind`, by the library's policy:
    /// the development secret only on a loopback address.
    pub(crate) fn receiver_verifier(
        &self,
        bind: std::net::SocketAddr,
    ) -> Result<Verifier, Failure> {
        if self.given().is_none() && self.secret_file.is_none() {
            return Verifier::from_env(bind).map_err(|e| {
                Failure::Usage(format!(
                    "{e}: listening on {bind} needs a secret (--secret, --secret-file or {SECRET_ENV})"
                ))
            });
        }
        self.verifier()
    }
}

fn stdin_bytes() -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    Ok(body)
}

/// Sets `path` (dot-separated) in `value` to `text`, read as JSON or else as a string.
fn set_path(value: &mut Value, assignment: &str) -> Result<(), Failure> {
    let (path, text) = assignment
        .split_once('=')
        .ok_or_else(|| Failure::Usage(format!("--set {assignment:?}: expected PATH=VALUE")))?;
    let new: Value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    let mut target = value;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let object = target.as_object_mut().ok_or_else(|| {
            Failure::Usage(format!("--set {path}: {part} is inside a non-object"))
        })?;
        if i + 1 == parts.len() {
            object.insert((*part).to_owned(), new);
            return Ok(());
        }
        target = object.entry(*part).or_insert_with(|| json!({}));
    }
    Err(Failure::Usage(format!("--set {assignment:?}: empty path")))
}

#[allow(clippy::too_many_arguments)]
async fn send(
    json_out: bool,
    url: &str,
    event_type: &str,
    data: Option<&str>,
    set: &[String],
    id: Option<&str>,
    retries: u32,
    time_scale: f64,
    secret: &SecretArgs,
) -> Outcome {
    let mut event = match event_type.parse::<EventType>() {
        Ok(known) => fixture(known),
        Err(_) => EventBuilder::of_type(event_type),
    };
    if let Some(id) = id {
        event = event.id(id);
    }
    if let Some(data) = data {
        let text = match data.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("--data @{path}: {e}")))?,
            None => data.to_owned(),
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Failure::Usage(format!("--data is not JSON: {e}")))?;
        event = event.data(value);
    }
    let mut body: Value = serde_json::from_slice(&event.to_bytes())?;
    for assignment in set {
        set_path(&mut body, assignment)?;
    }
    let body = serde_json::to_vec(&body)?;
    let mut policy = RetryPolicy::default();
    policy.max_retries = retries;
    if !json_out {
        println!("sending {event_type} ({} bytes) to {url}", body.len());
    }
    let report = SenderSimulator::new(secret.signing()?)
        .policy(policy)
        .time_scale(time_scale)
        .on_attempt(move |a| {
            if !json_out {
                let answer = match (a.status, &a.error) {
                    (Some(status), _) => status.to_string(),
                    (None, Some(error)) => format!("no answer: {error}"),
                    (None, None) => "no answer".to_owned(),
                };
                println!("attempt {}: {answer} in {:?}", a.number, a.latency);
            }
        })
        .deliver(url, &body)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    if json_out {
        let attempts: Vec<Value> = report
            .attempts
            .iter()
            .map(|a| json!({"attempt": a.number, "status": a.status, "error": a.error}))
            .collect();
        println!(
            "{}",
            json!({"delivered": report.succeeded(), "attempts": attempts})
        );
    } else {
        println!(
            "{}",
            if report.succeeded() {
                "delivered"
            } else {
                "not delivered"
            }
        );
    }
    if report.succeeded() {
        Ok(())
    } else {
        Err(Failure::Failed(String::new()))
    }
}

/// Event names from arguments, each of which may be a comma-separated list.
fn event_names(names: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The names, with a warning for each this version does not know: they are
/// used as they are (LTVboost may have added them since).
pub(crate) fn checked_names(names: &[String]) -> Vec<String> {
    let names = event_names(names);
    for name in &names {
        if name.parse::<EventType>().is_err() {
            eprintln!("warning: {name} is not an event type this version knows; used as it is");
        }
    }
    names
}

/// The endpoint's event names, known and unknown, in the API's order where known first.
fn names_of(endpoint: &Endpoint) -> Vec<String> {
    let known = endpoint.events.known.iter().map(|e| e.as_str().to_owned());
    known
        .chain(endpoint.events.unknown.iter().cloned())
        .collect()
}

fn show(json_out: bool, endpoint: &Endpoint) {
    if json_out {
        println!("{}", endpoint_json(endpoint));
    } else {
        println!(
            "{} {} {}",
            endpoint.id,
            endpoint.url.as_deref().unwrap_or("-"),
            names_of(endpoint).join(",")
        );
    }
}

/// The endpoint as the API sent it, every field kept, but any secret.
fn endpoint_json(endpoint: &Endpoint) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("id".into(), json!(endpoint.id));
    out.insert("url".into(), json!(endpoint.url));
    out.insert("events".into(), json!(names_of(endpoint)));
    for (key, value) in &endpoint.extra {
        out.entry(key.clone()).or_insert_with(|| value.clone());
    }
    Value::Object(out)
}

/// The API client from --api-key/LTVBOOST_API_TOKEN and --api-base/LTVBOOST_API_BASE.
pub(crate) fn api_client(api: &ApiArgs) -> Result<Client, Failure> {
    let token = api
        .api_key
        .clone()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            Failure::Usage("no API token: give --api-key or set LTVBOOST_API_TOKEN".into())
        })?;
    let mut builder = Client::builder(token);
    if let Some(base) = &api.api_base {
        builder = builder.base_url(base.clone());
    }
    if let Some(seconds) = api.api_timeout {
        let timeout = std::time::Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| Failure::Usage(format!("--api-timeout {seconds}: not a duration")))?;
        builder = builder.timeout(timeout).deadline(timeout);
    }
    builder.build().map_err(|e| Failure::Usage(e.to_string()))
}

/// Asks on a terminal; anything but y or yes is no. Off a terminal, yes.
fn confirmed(question: &str) -> Result<bool, Failure> {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn endpoints(json_out: bool, api: &ApiArgs, command: Endpoints) -> Outcome {
    // Rotation's first step changes nothing at the API: no token needed.
    if let Endpoints::Rotate {
        id,
        new_secret_file,
        commit: false,
        old,
    } = &command
    {
        return prepare_rotation(json_out, id, new_secret_file, old);
    }
    let client = api_client(api)?;
    let webhooks = client.webhooks();
    match command {
        Endpoints::List => {
            let all = webhooks.list().await?;
            if json_out {
                println!("{}", Value::Array(all.iter().map(endpoint_json).collect()));
            } else {
                all.iter().for_each(|e| show(false, e));
            }
        }
        Endpoints::Get { id } => show(json_out, &webhooks.get(&id).await?),
        Endpoints::Create {
            url,
            events: names,
            new_secret_file,
        } => {
            let secret = Secret::generate()?;
            let new = NewWebhook::with_event_names(url, checked_names(&names), secret.clone())
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let text = secret.expose_str().unwrap_or_default();
            // Kept before the request is sent: if the answer is lost or an
            // error, the endpoint may exist with this secret.
            match &new_secret_file {
                Some(path) => write_new_secret(path, text)?,
                None if json_out => eprintln!("{SECRET_ENV}={text}"),
                None => println!("{SECRET_ENV}={text}"),
            }
            let endpoint = webhooks.create(&new).await.map_err(|e| {
                Failure::Failed(format!(
                    "{e}\nthe endpoint may or may not have been created with the secret {}; \
                     `ltvboost endpoints list` shows whether it exists",
                    new_secret_file.as_ref().map_or_else(
                        || "shown above".to_owned(),
                        |path| format!("in {}", path.display())
                    )
                ))
            })?;
            if json_out {
                let mut out = endpoint_json(&endpoint);
                match &new_secret_file {
                    Some(path) => out["secret_file"] = json!(path),
                    None => out["secret"] = json!(text),
                }
                println!("{out}");
            } else {
                show(false, &endpoint);
            }
        }
        Endpoints::Update {
            id,
            url,
            events: names,
        } => {
            let mut update = WebhookUpdate::new();
            if let Some(url) = url {
                update = update.url(url);
            }
            if let Some(names) = names {
                update = update.event_names(checked_names(&names));
            }
            show(json_out, &webhooks.update(&id, &update).await?);
        }
        Endpoints::Delete { id, yes } => {
            if !yes && !confirmed(&format!("delete the endpoint {id}?"))? {
                return Err(Failure::Failed(format!("{id} not deleted")));
            }
            webhooks.delete(&id).await?;
            if json_out {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted {id}");
            }
        }
        // Without --commit it returned above.
        Endpoints::Rotate {
            id,
            new_secret_file,
            ..
        } => {
            let text = std::fs::read_to_string(&new_secret_file).map_err(|e| {
                Failure::Usage(format!(
                    "--new-secret-file {}: {e} (run the command without --commit first)",
                    new_secret_file.display()
                ))
            })?;
            // Step 1 writes 64 hex digits: anything else is not its file.
            let text = text.trim();
            if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Failure::Usage(format!(
                    "--new-secret-file {}: not a secret written by step 1 (64 hex digits)",
                    new_secret_file.display()
                )));
            }
            let new = Secret::new(text).map_err(|e| {
                Failure::Usage(format!(
                    "--new-secret-file {}: {e}",
                    new_secret_file.display()
                ))
            })?;
            webhooks.set_secret(&id, &new).await.map_err(|e| {
                Failure::Failed(format!(
                    "{e}\nthe new secret may or may not have been registered; receivers accept \
                     both meanwhile. {} is kept: running the same command again is safe",
                    new_secret_file.display()
                ))
            })?;
            if json_out {
                println!("{}", json!({"id": id, "committed": true}));
            } else {
                println!(
                    "registered the secret in {} for {id}",
                    new_secret_file.display()
                );
                eprintln!(
                    "once ltvboost_webhook_secret_matches_total{{secret_index=\"1\"}} has not \
                     moved for 24 h, deploy {SECRET_ENV}=<the secret in {}> alone",
                    new_secret_file.display()
                );
            }
        }
    }
    Ok(())
}

/// Rotation's first step: a new secret in `path`, and the line to deploy.
fn prepare_rotation(json_out: bool, id: &str, path: &std::path::Path, old: &SecretArgs) -> Outcome {
    let old = old.list(false)?;
    let new = Secret::generate()?;
    let new = new.expose_str().unwrap_or_default();
    write_new_secret(path, new)?;
    let line = format!("{SECRET_ENV}={new},{}", old.trim());
    let commit = format!(
        "ltvboost endpoints rotate {id} --commit --new-secret-file {}",
        path.display()
    );
    if json_out {
        println!(
            "{}",
            json!({"id": id, "deploy": line, "secret_file": path, "then": commit})
        );
    } else {
        println!("{line}");
        eprintln!(
            "the new secret is in {}; LTVboost still signs with the old one. Deploy that line to \
             every receiver, then run: {commit}",
            path.display()
        );
    }
    Ok(())
}

/// Writes a new secret to `path`, readable by its owner only, refusing to
/// replace a file that exists (it may hold a secret already registered).
fn write_new_secret(path: &std::path::Path, secret: &str) -> Outcome {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "exists already; it may hold a secret in use: choose another path".to_owned()
        } else {
            e.to_string()
        };
        Failure::Usage(format!("--new-secret-file {}: {why}", path.display()))
    })?;
    let written = file
        .write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        // The file's name must survive a crash too: sync its directory.
        .and_then(|()| {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            std::fs::File::open(parent.unwrap_or(std::path::Path::new(".")))?.sync_all()
        });
    if let Err(e) = written {
        // Nothing was sent with it: a half-written file would only mislead.
        let _ = std::fs::remove_file(path);
        return Err(Failure::Failed(format!(
            "--new-secret-file {}: {e}",
            path.display()
        )));
    }
    Ok(())
}

async fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Send {
            url,
            event_type,
            data,
            set,
            id,
            retries,
            time_scale,
            secret,
        } => {
            send(
                cli.json,
                &url,
                &event_type,
                data.as_deref(),
                &set,
                id.as_deref(),
                retries,
                time_scale,
                &secret,
            )
            .await
        }
        Command::Sign { secret } => {
            let signature = sign(&secret.signing()?, &stdin_bytes()?);
            if cli.json {
                println!("{}", json!({ "signature": signature }));
            } else {
                println!("{signature}");
            }
            Ok(())
        }
        Command::Verify { signature, secret } => {
            let verifier = secret.verifier()?;
            match verifier.verify(signature.as_bytes(), stdin_bytes()?) {
                Ok(verified) => {
                    if cli.json {
                        println!(
                            "{}",
                            json!({"verified": true, "secret_index": verified.secret_index()})
                        );
                    } else {
                        println!("verified (secret #{})", verified.secret_index());
                    }
                    Ok(())
                }
                Err(e) => {
                    if cli.json {
                        println!("{}", json!({"verified": false, "reason": e.to_string()}));
                    }
                    Err(Failure::Failed(e.to_string()))
                }
            }
        }
        Command::Listen(args) => listen::run(args, cli.json, &cli.api).await,
        Command::Endpoints(command) => endpoints(cli.json, &cli.api, command).await,
        Command::Queue(args) => queue::run(cli.json, args).await,
        Command::Completions { shell } => {
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ltvboost", &mut script);
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
    }
}

/// Log lines on stderr: warnings by default, so the library's reach the
/// operator; colour only on a terminal and never with NO_COLOR.
fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    let filter = cli.log_level.clone().unwrap_or_else(|| {
        match cli.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
        .to_owned()
    });
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("ltvboost: --log-level {filter}: {e}; logging warnings");
        tracing_subscriber::EnvFilter::new("warn")
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            logs.with_ansi(colour).init();
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ltvboost: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("ltvboost: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            if !message.is_empty() {
                eprintln!("ltvboost: {message}");
            }
            ExitCode::from(1)
        }
    }
}
