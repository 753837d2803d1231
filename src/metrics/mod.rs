//! Metrics through the `metrics` crate's facade (feature `metrics`): install
//! any exporter (Prometheus, OpenTelemetry, StatsD) and the receiver reports
//! to it.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `ltvboost_webhook_deliveries_total` | counter | `outcome`, `reason`, `event_type` |
//! | `ltvboost_webhook_handler_duration_seconds` | histogram | `event_type`, `outcome` |
//! | `ltvboost_webhook_body_bytes` | histogram | |
//! | `ltvboost_webhook_in_flight` | gauge | |
//! | `ltvboost_webhook_secret_matches_total` | counter | `secret_index` |
//! | `ltvboost_webhook_secret_last_match_timestamp_seconds` | gauge | `secret_index` |
//! | `ltvboost_webhook_replay_check_skipped_total` | counter | `reason` |
//! | `ltvboost_webhook_secret_file_reloads_total` | counter | `result` |
//! | `ltvboost_webhook_store_duration_seconds` | histogram | `operation` |
//! | `ltvboost_webhook_store_errors_total` | counter | `operation` |
//! | `ltvboost_webhook_inbox_rows_written_total` | counter | `outcome` |
//! | `ltvboost_webhook_inbox_rows_deleted_total` | counter | |
//! | `ltvboost_webhook_queue_entries` | gauge | |
//! | `ltvboost_webhook_queue_pending` | gauge | |
//! | `ltvboost_webhook_queue_lag` | gauge | |
//! | `ltvboost_webhook_queue_oldest_entry_age_seconds` | gauge | |
//! | `ltvboost_webhook_queue_scheduled_retries` | gauge | |
//! | `ltvboost_webhook_queue_dead_letters` | gauge | |
//! | `ltvboost_webhook_queue_retries_total` | counter | |
//! | `ltvboost_webhook_queue_dead_letters_total` | counter | |
//! | `ltvboost_webhook_queue_dead_letters_dropped_total` | counter | |
//! | `ltvboost_webhook_queue_entries_lost_total` | counter | |
//! | `ltvboost_webhook_queue_key_missing_total` | counter | |
//!
//! Every label value comes from a closed set: `outcome` and `reason` are
//! [`Outcome::kind`](crate::Outcome::kind) and [`Outcome::reason`](crate::Outcome::reason) (`reason` is `""` but for a
//! rejection), `event_type` is one of the seven documented types,
//! `unknown`, or `none` before the signature verified (unauthenticated
//! input never becomes a label value), `secret_index` counts the active
//! secrets, `operation` is `claim`, `renew`, `mark_done` or `release` (and,
//! for handlers inside a Postgres transaction, `begin`: a connection, `BEGIN`
//! and the claim; `commit`: the inbox row and `COMMIT`).
//!
//! Install your exporter before the first delivery, as an application does
//! at start-up: the receiver registers each metric with the recorder in
//! place at its first use, and records on that handle from then on.
//!
//! Records go straight to the recorder, so a scrape sees a delivery as soon
//! as it is answered.
//!
//! Without the feature every function here compiles to nothing.
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! use ltvboost_webhooks::metrics::DELIVERIES;
//! assert_eq!(DELIVERIES, "ltvboost_webhook_deliveries_total");
//! # }
//! ```

/// Deliveries by how they ended.
pub const DELIVERIES: &str = "ltvboost_webhook_deliveries_total";
/// How long handlers ran.
pub const HANDLER_DURATION: &str = "ltvboost_webhook_handler_duration_seconds";
/// Sizes of bodies read.
pub const BODY_BYTES: &str = "ltvboost_webhook_body_bytes";
/// Deliveries being received or handled right now.
pub const IN_FLIGHT: &str = "ltvboost_webhook_in_flight";
/// Deliveries verified, by the secret that matched.
pub const SECRET_MATCHES: &str = "ltvboost_webhook_secret_matches_total";
/// When each secret last matched, in seconds since the Unix epoch.
pub const SECRET_LAST_MATCH: &str = "ltvboost_webhook_secret_last_match_timestamp_seconds";
/// Reads of a changed secret file ([`SecretFile`](crate::secrets::SecretFile)),
/// by `result`: `ok`, or `failed` (empty, unreadable, absent or invalid;
/// the last good secrets stay in force).
pub const SECRET_FILE_RELOADS: &str = "ltvboost_webhook_secret_file_reloads_total";
/// Deliveries whose replay check was skipped: `reason` is
/// `created_at_missing` or `created_at_unreadable`.
pub const REPLAY_SKIPPED: &str = "ltvboost_webhook_replay_check_skipped_total";
/// How long dedupe store operations took.
pub const STORE_DURATION: &str = "ltvboost_webhook_store_duration_seconds";
/// Dedupe store operations that failed.
pub const STORE_ERRORS: &str = "ltvboost_webhook_store_errors_total";
/// Rows written to the Postgres inbox, by `outcome`: `handled` or `failed`.
pub const INBOX_WRITTEN: &str = "ltvboost_webhook_inbox_rows_written_total";
/// Inbox rows deleted past their retention.
pub const INBOX_DELETED: &str = "ltvboost_webhook_inbox_rows_deleted_total";
/// Queue entries waiting or being handled, as a worker last saw them.
pub const QUEUE_ENTRIES: &str = "ltvboost_webhook_queue_entries";
/// How long the oldest queue entry has waited, in seconds (0: none).
pub const QUEUE_OLDEST_AGE: &str = "ltvboost_webhook_queue_oldest_entry_age_seconds";
/// Retries scheduled and not yet due.
pub const QUEUE_SCHEDULED_RETRIES: &str = "ltvboost_webhook_queue_scheduled_retries";
/// Dead letters kept.
pub const QUEUE_DEAD_LETTERS_KEPT: &str = "ltvboost_webhook_queue_dead_letters";
/// Queue entries read by a worker and not yet acknowledged.
pub const QUEUE_PENDING: &str = "ltvboost_webhook_queue_pending";
/// Queue entries no worker has read yet.
pub const QUEUE_LAG: &str = "ltvboost_webhook_queue_lag";
/// Retries workers scheduled.
pub const QUEUE_RETRIES: &str = "ltvboost_webhook_queue_retries_total";
/// Events workers moved to the dead letters.
pub const QUEUE_DEAD_LETTERS: &str = "ltvboost_webhook_queue_dead_letters_total";
/// Dead letters dropped, oldest first, to keep the dead-letter stream
/// within its caps (count and bytes).
pub const QUEUE_DEAD_LETTERS_DROPPED: &str = "ltvboost_webhook_queue_dead_letters_dropped_total";
/// Pending queue entries found deleted before any worker finished them
/// (removed by hand, or by an older version's trimming): events lost.
pub const QUEUE_ENTRIES_LOST: &str = "ltvboost_webhook_queue_entries_lost_total";
/// Entries a worker passed on to the others because it does not hold the
/// secret that verified them (by key id): a worker deployed without a
/// secret the receivers have.
pub const QUEUE_KEY_MISSING: &str = "ltvboost_webhook_queue_key_missing_total";

/// Recommended histogram buckets for [`HANDLER_DURATION`], in seconds: from
/// half a millisecond to ten seconds. Prometheus exporters record a
/// histogram as a summary unless they are given buckets, and a summary's
/// quantiles cannot be summed across a fleet.
///
/// ```
/// use ltvboost_webhooks::metrics::HANDLER_DURATION_BUCKETS;
/// assert!(HANDLER_DURATION_BUCKETS.is_sorted());
/// ```
pub const HANDLER_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Recommended histogram buckets for [`STORE_DURATION`], in seconds: a
/// dedupe store answers in well under a millisecond on a healthy network,
/// and its client gives up after a second.
///
/// ```
/// use ltvboost_webhooks::metrics::STORE_DURATION_BUCKETS;
/// assert_eq!(STORE_DURATION_BUCKETS.last(), Some(&1.0));
/// ```
pub const STORE_DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Recommended histogram buckets for [`BODY_BYTES`]: 256 bytes to the
/// 1 MiB default body limit, by fours.
///
/// ```
/// use ltvboost_webhooks::metrics::BODY_BYTES_BUCKETS;
/// assert_eq!(BODY_BYTES_BUCKETS.last(), Some(&1_048_576.0));
/// ```
pub const BODY_BYTES_BUCKETS: &[f64] = &[
    256.0,
    1024.0,
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
];

/// Describes every metric (help text and unit) to the installed recorder.
/// Call it once, after installing your exporter: Prometheus then prints
/// `# HELP` lines, which `promtool check metrics` asks for. Give the
/// exporter the recommended buckets, so the histograms are histograms a
/// fleet can sum, not per-process summaries:
///
/// ```
/// # #[cfg(feature = "metrics")] {
/// use ltvboost_webhooks::metrics::{
///     BODY_BYTES, BODY_BYTES_BUCKETS, HANDLER_DURATION, HANDLER_DURATION_BUCKETS, STORE_DURATION,
///     STORE_DURATION_BUCKETS,
/// };
/// use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
///
/// let handle = PrometheusBuilder::new()
///     .set_buckets_for_metric(Matcher::Full(HANDLER_DURATION.into()), HANDLER_DURATION_BUCKETS)?
///     .set_buckets_for_metric(Matcher::Full(STORE_DURATION.into()), STORE_DURATION_BUCKETS)?
///     .set_buckets_for_metric(Matcher::Full(BODY_BYTES.into()), BODY_BYTES_BUCKETS)?
///     .install_recorder()?;
/// ltvboost_webhooks::metrics::describe();
///
/// metrics::histogram!(HANDLER_DURATION).record(0.003);
/// assert!(handle.render().contains("ltvboost_webhook_handler_duration_seconds_bucket"));
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn describe() {
    record::describe();
}

/// Rows of the status table with handles of their own: more than the table
/// has (a test in `outcome.rs` holds it so). The receiver hands the metrics
/// a row's number, and they index by it.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const ROWS: usize = 32;

// What records: the `metrics` facade with the feature, nothing without it.
// Both offer the same functions, so callers need no `cfg`.
#[cfg(feature = "metrics")]
#[path = "real.rs"]
mod record;
#[cfg(not(feature = "metrics"))]
#[path = "noop.rs"]
mod record;

pub(crate) use record::{
    InFlight, Timer, body, delivery, handler, replay_skipped, secret_file_reload, secret_matched,
    store,
};
#[cfg(feature = "postgres")]
pub(crate) use record::{inbox_deleted, inbox_written};
#[cfg(feature = "queue")]
pub(crate) use record::{
    queue_dead_letter, queue_dead_letters_dropped, queue_entries_lost, queue_key_missing,
    queue_retry, queue_stats,
};

#[cfg(test)]
mod tests {
    /// The metric names in a Markdown table's first column.
    fn table_names(text: &str, prefix: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix(prefix)?.strip_prefix("| `"))
            .filter_map(|rest| Some(rest.split('`').next()?.to_owned()))
            .filter(|name| name.starts_with("ltvboost_webhook_"))
            .collect()
    }

    #[test]
    fn the_module_docs_and_the_readme_list_every_metric() {
        let source = include_str!("mod.rs");
        let constants: std::collections::BTreeSet<String> = source
            .lines()
            .filter_map(|line| line.strip_prefix("pub const ")?.split('"').nth(1))
            .map(str::to_owned)
            .collect();
        assert!(constants.len() > 10, "{constants:?}");
        assert_eq!(
            table_names(source, "//! "),
            constants,
            "the module docs' table"
        );
        let readme = include_str!("../../README.md");
        assert_eq!(table_names(readme, ""), constants, "the README's table");
    }
}
