//! `ltvboost queue`: the enqueue-mode queue from the shell: its state, its
//! dead letters, re-queueing and purging them.

use clap::{Args, Subcommand};
use ltvboost_webhooks::queue::{DeadLetter, RedisQueue};
use serde_json::json;

use crate::output::{Output, Reported, note, safe, safe_block, usage};

/// Where the queue is: the same variables as the examples.
#[derive(Args)]
pub(crate) struct QueueArgs {
    /// The queue's Redis (required).
    #[arg(long, global = true, env = "LTVBOOST_QUEUE_URL", value_name = "URL")]
    redis_url: Option<String>,
    /// The service's namespace, as its receivers and workers use it.
    #[arg(
        long,
        global = true,
        env = "LTVBOOST_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Entries waiting and being handled, the oldest's age, retries, dead letters, consumers.
    ///
    /// Example: ltvboost queue stats --json
    Stats,
    /// Dead letters: list, show, purge.
    #[command(subcommand)]
    Dead(Dead),
    /// Move dead letters back onto the queue, their attempts reset.
    ///
    /// Example: ltvboost queue requeue 1764700000000-0 1764700000001-0
    Requeue {
        /// Dead letter ids, as `dead list` prints them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum Dead {
    /// One line per dead letter, oldest first: id, type, event id, attempts, reason.
    ///
    /// Example: ltvboost queue dead list --limit 50 --after 1764700000000-0
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Start after this dead letter id (the last of the previous page).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
    },
    /// The dead letter's event, as LTVboost signed it (control characters shown escaped).
    ///
    /// Example: ltvboost queue dead show 1764700000000-0
    Show {
        /// The dead letter id.
        id: String,
        /// The body's bytes exactly as stored, control characters and all.
        #[arg(long)]
        raw: bool,
    },
    /// Delete the dead letters given up on before a time.
    ///
    /// Example: ltvboost queue dead purge --before 2026-12-01T00:00:00Z
    Purge {
        /// RFC 3339, or Unix seconds.
        #[arg(long, value_name = "TIME")]
        before: String,
    },
}

pub(crate) async fn run(args: QueueArgs, out: Output) -> anyhow::Result<()> {
    let Some(url) = args.redis_url else {
        return Err(usage("no queue: give --redis-url or LTVBOOST_QUEUE_URL"));
    };
    let queue = RedisQueue::lazy(&url)
        .and_then(|queue| queue.namespace(&args.namespace))
        .map_err(|e| usage(e.to_string()))?;
    match args.command {
        QueueCommand::Stats => {
            let stats = queue.stats().await?;
            let oldest = stats.oldest_age.map(|age| age.as_secs_f64());
            let value = json!({
                "entries": stats.entries,
                "waiting": stats.waiting(),
                "in_progress": stats.pending,
                "oldest_age_seconds": oldest,
                "scheduled_retries": stats.scheduled_retries,
                "dead_letters": stats.dead_letters,
                "consumers": stats.consumers,
            });
            out.print(value, || {
                let oldest = oldest.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
                [
                    format!("waiting            {}", stats.waiting()),
                    format!("in progress        {}", stats.pending),
                    format!("oldest             {oldest}"),
                    format!("scheduled retries  {}", stats.scheduled_retries),
                    format!("dead letters       {}", stats.dead_letters),
                    format!("consumers          {}", stats.consumers),
                ]
                .join("\n")
            })
        }
        QueueCommand::Dead(Dead::List { limit, after }) => {
            let letters = queue.dead_letters_after(after.as_deref(), limit).await?;
            if out.json {
                let letters: Vec<_> = letters.iter().map(letter_json).collect();
                return out.print(json!({ "dead_letters": letters }), String::new);
            }
            // Type, id and reason come from bodies that may never have
            // verified: shown escaped, one line each whatever they hold.
            letters.iter().try_for_each(|letter| {
                out.text(|| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}",
                        safe(&letter.id),
                        or_dash(&safe(&letter.type_name)),
                        or_dash(&safe(letter.event_id.as_deref().unwrap_or(""))),
                        letter.attempts,
                        safe(&letter.error)
                    )
                })
            })
        }
        QueueCommand::Dead(Dead::Show { id, raw }) => {
            let Some(body) = queue.dead_letter_body(&id).await? else {
                anyhow::bail!("no dead letter {}", safe(&id));
            };
            if raw && out.json {
                return Err(usage(
                    "--raw prints the body's bytes, --json an object: choose one",
                ));
            }
            if raw {
                // The bytes as signed, exactly: asked for by name.
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                return stdout
                    .write_all(&body)
                    .and_then(|()| stdout.write_all(b"\n"))
                    .and_then(|()| stdout.flush())
                    .map_err(Into::into);
            }
            let text = String::from_utf8_lossy(&body);
            let event: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or_else(|_| json!(text));
            out.print(json!({ "id": id, "event": event }), || {
                safe_block(&text).into_owned()
            })
        }
        QueueCommand::Dead(Dead::Purge { before }) => {
            let time = ltvboost_webhooks::replay::parse_timestamp(&before).ok_or_else(|| {
                usage(format!(
                    "--before {before:?}: give RFC 3339 or Unix seconds"
                ))
            })?;
            let purged = queue.purge_dead_letters_before(time).await?;
            out.print(json!({ "purged": purged }), || {
                format!("purged {purged} dead letters")
            })
        }
        QueueCommand::Requeue { ids, all } => {
            let (moved, missing) = if all {
                (queue.requeue_all().await?, Vec::new())
            } else {
                let mut moved = 0;
                let mut missing = Vec::new();
                for id in ids {
                    if queue.requeue(&id).await? {
                        moved += 1;
                    } else {
                        missing.push(id);
                    }
                }
                (moved, missing)
            };
            out.print(json!({ "requeued": moved, "missing": missing }), || {
                format!("requeued {moved}")
            })?;
            if !out.json {
                for id in &missing {
                    note(format_args!("no dead letter {}", safe(id)));
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(Reported.into())
            }
        }
    }
}

fn letter_json(letter: &DeadLetter) -> serde_json::Value {
    json!({
        "id": letter.id,
        "type": letter.type_name,
        "event_id": letter.event_id,
        "attempts": letter.attempts,
        "reason": letter.error,
    })
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}
