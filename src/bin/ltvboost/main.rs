//! `ltvboost`: the command line for LTVboost webhooks.
//!
//! ```sh
//! cargo install --locked --path . --features cli
//! ltvboost --help
//! ```
//!
//! One file per command, each an `Args` struct (clap's `--help` text) and a
//! `run`; this file parses the command line and dispatches. What every
//! command prints goes through `output`; the options several commands share
//! are in `args`.

// The doc comments below are clap's --help text, where URLs stay plain.
#![allow(rustdoc::bare_urls)]

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

mod args;
mod completions;
mod endpoints;
mod inbox;
mod listen;
mod output;
mod queue;
mod rotate;
mod send;
mod sign;
mod verify;

use args::ApiArgs;
use output::{Output, note};

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

#[derive(Subcommand)]
enum Command {
    Send(send::SendArgs),
    Sign(sign::SignArgs),
    Verify(verify::VerifyArgs),
    Listen(listen::ListenArgs),
    /// Manage registered endpoints (LTVBOOST_API_TOKEN; LTVBOOST_API_BASE).
    #[command(subcommand)]
    Endpoints(endpoints::EndpointsCommand),
    /// Inspect and operate the enqueue-mode queue (LTVBOOST_QUEUE_URL; LTVBOOST_NAMESPACE).
    Queue(queue::QueueArgs),
    /// The deliveries a Postgres receiver kept (LTVBOOST_DATABASE_URL).
    Inbox(inbox::InboxArgs),
    Completions(completions::CompletionsArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    match cli.command {
        Command::Send(args) => send::run(args, out).await,
        Command::Sign(args) => sign::run(args, out),
        Command::Verify(args) => verify::run(args, out),
        Command::Listen(args) => listen::run(args, &cli.api, out).await,
        Command::Endpoints(command) => endpoints::run(command, &cli.api, out).await,
        Command::Queue(args) => queue::run(args, out).await,
        Command::Inbox(args) => inbox::run(args, out).await,
        Command::Completions(args) => completions::run(args),
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
        note(format_args!(
            "ltvboost: --log-level {filter}: {e}; logging warnings"
        ));
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
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    output::exit_code(result)
}
