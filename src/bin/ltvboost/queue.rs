//! `ltvboost queue`: the enqueue-mode queue from the shell: its state, its
//! dead letters, re-queueing and purging them.

use clap::{Args, Subcommand};
use ltvboost_webhooks::queue::{DeadLetter, RedisQueue};
use serde_json::json;

use crate::{Failure, Outcome};

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
    /// The dead letter's event, as LTVboost signed it.
    ///
    /// Example: ltvboost queue dead show 1764700000000-0
    Show {
        /// The dead letter id.
        id: String,
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

pub(crate) async fn run(json: bool, args: QueueArgs) -> Outcome {
    let Some(url) = args.redis_url else {
        return Err(Failure::Usage(
            "no queue: give --redis-url or LTVBOOST_QUEUE_URL".to_owned(),
        ));
    };
    let queue = RedisQueue::lazy(&url)
        .and_then(|queue| queue.namespace(&args.namespace))
        .map_err(|e| Failure::Usage(e.to_string()))?;
    match args.command {
        QueueCommand::Stats => {
            let stats = queue.stats().await?;
            let oldest = stats.oldest_age.map(|age| age.as_secs_f64());
            if json {
                println!(
                    "{}",
                    json!({
                        "entries": stats.entries,
                        "waiting": stats.waiting(),
                        "in_progress": stats.pending,
                        "oldest_age_seconds": oldest,
                        "scheduled_retries": stats.scheduled_retries,
                        "dead_letters": stats.dead_letters,
                        "consumers": stats.consumers,
                    })
                );
            } else {
                println!("waiting            {}", stats.waiting());
                println!("in progress        {}", stats.pending);
                match oldest {
                    Some(seconds) => println!("oldest             {seconds:.1} s"),
                    None => println!("oldest             -"),
                }
                println!("scheduled retries  {}", stats.scheduled_retries);
                println!("dead letters       {}", stats.dead_letters);
                println!("consumers          {}", stats.consumers);
            }
            Ok(())
        }
        QueueCommand::Dead(Dead::List { limit, after }) => {
            let letters = queue.dead_letters_after(after.as_deref(), limit).await?;
            if json {
                let letters: Vec<_> = letters.iter().map(letter_json).collect();
                println!("{}", json!({ "dead_letters": letters }));
            } else {
                for letter in &letters {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        letter.id,
                        or_dash(&letter.type_name),
                        or_dash(letter.event_id.as_deref().unwrap_or("")),
                        letter.attempts,
                        letter.error.replace(['\n', '\t'], " ")
                    );
                }
            }
            Ok(())
        }
        QueueCommand::Dead(Dead::Show { id }) => {
            let Some(body) = queue.dead_letter_body(&id).await? else {
                return Err(Failure::Failed(format!("no dead letter {id}")));
            };
            // The bytes as signed: printed as they are, not re-encoded.
            let text = String::from_utf8_lossy(&body);
            if json {
                let event: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or_else(|_| json!(text));
                println!("{}", json!({ "id": id, "event": event }));
            } else {
                println!("{text}");
            }
            Ok(())
        }
        QueueCommand::Dead(Dead::Purge { before }) => {
            let time = ltvboost_webhooks::replay::parse_timestamp(&before).ok_or_else(|| {
                Failure::Usage(format!(
                    "--before {before:?}: give RFC 3339 or Unix seconds"
                ))
            })?;
            let purged = queue.purge_dead_letters_before(time).await?;
            if json {
                println!("{}", json!({ "purged": purged }));
            } else {
                println!("purged {purged} dead letters");
            }
            Ok(())
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
            if json {
                println!("{}", json!({ "requeued": moved, "missing": missing }));
            } else {
                println!("requeued {moved}");
                for id in &missing {
                    eprintln!("no dead letter {id}");
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(Failure::Failed(String::new()))
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
