//! `ltvboost inbox`: the deliveries a Postgres receiver kept (feature
//! `postgres` in the receiver; `ltvboost_webhooks::postgres`).

use clap::{Args, Subcommand};
use ltvboost_webhooks::postgres::{InboxEntry, InboxFilter, PostgresStore, parse_duration};
use serde_json::json;

use crate::output::{Output, safe, usage};

/// Where the inbox is: the same variables as the example receiver.
#[derive(Args)]
pub(crate) struct InboxArgs {
    /// The receiver's Postgres (required).
    #[arg(
        long,
        global = true,
        env = "LTVBOOST_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// The schema the receiver's tables are in.
    #[arg(long, global = true, default_value = ltvboost_webhooks::postgres::DEFAULT_SCHEMA)]
    schema: String,
    #[command(subcommand)]
    command: InboxCommand,
}

#[derive(Subcommand)]
enum InboxCommand {
    /// One line per delivery kept, oldest first: received at, type, event id, outcome, error.
    ///
    /// Example: ltvboost inbox list --type action.failed --since 2h --json
    List {
        /// Only deliveries of this event type.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        /// Only deliveries received within this long (7d, 12h, 90m, 30s).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
    },
    /// The event's body exactly as received and verified, nothing added
    /// (the latest delivery of it). Exits 1 when the inbox has none.
    ///
    /// Example: ltvboost inbox show evt_123 | jq .
    Show {
        /// The event id.
        event_id: String,
    },
}

pub(crate) async fn run(args: InboxArgs, out: Output) -> anyhow::Result<()> {
    let Some(url) = args.database_url else {
        return Err(usage(
            "no database: give --database-url or LTVBOOST_DATABASE_URL",
        ));
    };
    let store = PostgresStore::new(&url)
        .and_then(|store| store.schema(&args.schema))
        .map_err(|e| usage(e.to_string()))?;
    match args.command {
        InboxCommand::List { event_type, since } => {
            let mut filter = InboxFilter::default();
            if let Some(event_type) = event_type {
                filter = filter.event_type(event_type);
            }
            if let Some(since) = since {
                filter = filter
                    .since(parse_duration(&since).map_err(|e| usage(format!("--since: {e}")))?);
            }
            for entry in read(store.inbox(&filter).await)? {
                out.print(entry_json(&entry), || {
                    // Ids, types and errors came from outside: shown escaped.
                    format!(
                        "{}\t{}\t{}\t{}\t{}",
                        entry.received_at,
                        safe(&entry.event_type),
                        safe(entry.event_id.as_deref().unwrap_or("-")),
                        entry.outcome.as_str(),
                        safe(entry.error.as_deref().unwrap_or("")),
                    )
                })?;
            }
            Ok(())
        }
        InboxCommand::Show { event_id } => {
            let entries = store
                .inbox(&InboxFilter::default().event_id(&event_id))
                .await?;
            let Some(entry) = entries.last() else {
                anyhow::bail!("the inbox has no delivery of {}", safe(&event_id));
            };
            // The bytes as signed, exactly: no newline added.
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&entry.body)?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// The inbox's rows, or an error that says what could not be read (the
/// store's own cause, not "dedupe store unavailable").
fn read(
    rows: Result<Vec<InboxEntry>, ltvboost_webhooks::dedupe::StoreError>,
) -> anyhow::Result<Vec<InboxEntry>> {
    rows.map_err(|error| {
        let cause = std::error::Error::source(&error)
            .map_or_else(|| error.to_string(), ToString::to_string);
        anyhow::anyhow!("could not read the inbox: {cause}")
    })
}

fn entry_json(entry: &InboxEntry) -> serde_json::Value {
    json!({
        "id": entry.event_id,
        "type": entry.event_type,
        "account": entry.account,
        "received_at": entry.received_at,
        "outcome": entry.outcome.as_str(),
        "error": entry.error,
    })
}
