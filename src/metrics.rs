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

use std::time::Duration;
#[cfg(feature = "metrics")]
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::EventType;

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
    #[cfg(feature = "metrics")]
    {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            DELIVERIES,
            Unit::Count,
            "LTVboost deliveries, by how they ended"
        );
        describe_histogram!(HANDLER_DURATION, Unit::Seconds, "How long handlers ran");
        describe_histogram!(BODY_BYTES, Unit::Bytes, "Sizes of delivery bodies read");
        describe_gauge!(
            IN_FLIGHT,
            Unit::Count,
            "Deliveries being received or handled"
        );
        describe_counter!(
            SECRET_MATCHES,
            Unit::Count,
            "Deliveries verified, by the secret that matched"
        );
        describe_gauge!(
            SECRET_LAST_MATCH,
            Unit::Seconds,
            "When each secret last matched (Unix time)"
        );
        describe_counter!(
            SECRET_FILE_RELOADS,
            Unit::Count,
            "Reads of a changed secret file, by result (failed: the last good secrets stay)"
        );
        describe_counter!(
            REPLAY_SKIPPED,
            Unit::Count,
            "Deliveries whose replay check was skipped, by why"
        );
        describe_histogram!(
            STORE_DURATION,
            Unit::Seconds,
            "How long dedupe store operations took"
        );
        describe_counter!(
            STORE_ERRORS,
            Unit::Count,
            "Dedupe store operations that failed"
        );
        describe_counter!(
            INBOX_WRITTEN,
            Unit::Count,
            "Rows written to the Postgres inbox, by outcome"
        );
        describe_counter!(
            INBOX_DELETED,
            Unit::Count,
            "Inbox rows deleted past their retention"
        );
        describe_gauge!(
            QUEUE_ENTRIES,
            Unit::Count,
            "Queue entries waiting or being handled"
        );
        describe_gauge!(
            QUEUE_OLDEST_AGE,
            Unit::Seconds,
            "How long the oldest queue entry has waited"
        );
        describe_gauge!(
            QUEUE_SCHEDULED_RETRIES,
            Unit::Count,
            "Queue retries scheduled and not yet due"
        );
        describe_gauge!(QUEUE_DEAD_LETTERS_KEPT, Unit::Count, "Dead letters kept");
        describe_gauge!(
            QUEUE_PENDING,
            Unit::Count,
            "Queue entries read and not yet acknowledged"
        );
        describe_gauge!(
            QUEUE_LAG,
            Unit::Count,
            "Queue entries no worker has read yet"
        );
        describe_counter!(QUEUE_RETRIES, Unit::Count, "Retries workers scheduled");
        describe_counter!(
            QUEUE_DEAD_LETTERS,
            Unit::Count,
            "Events moved to the dead letters"
        );
        describe_counter!(
            QUEUE_DEAD_LETTERS_DROPPED,
            Unit::Count,
            "Dead letters dropped to keep the dead-letter stream within its caps (count and bytes)"
        );
        describe_counter!(
            QUEUE_ENTRIES_LOST,
            Unit::Count,
            "Pending queue entries found deleted before a worker finished them"
        );
        describe_counter!(
            QUEUE_KEY_MISSING,
            Unit::Count,
            "Queue entries a worker passed on: it does not hold the secret that verified them"
        );
    }
}

/// Every code of the status table's rows
/// ([`Outcome::row`](crate::Outcome::row)), in its order: the closed set the
/// `outcome` and `reason` labels take, and what handles are indexed by. A
/// test holds it to the table.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const CODES: &[&str] = &[
    "handled",
    "duplicate",
    "in_flight",
    "mismatched",
    "handler_failed",
    "handler_panicked",
    "store_unavailable",
    "enqueued",
    "queue_unavailable",
    "method_not_allowed",
    "body_too_large",
    "body_timeout",
    "body_stalled",
    "body_read_failed",
    "overloaded",
    "unknown_account",
    "secrets_unavailable",
    "signature_missing",
    "signature_duplicated",
    "signature_malformed",
    "signature_mismatch",
    "not_an_event",
    "created_at_missing",
    "replay_too_old",
    "replay_in_future",
    "payload_mismatch",
];

/// The `event_type` label of a delivery: `None` before authentication.
pub(crate) fn type_label(event_type: Option<Option<EventType>>) -> &'static str {
    match event_type {
        None => "none",
        Some(None) => "unknown",
        Some(Some(known)) => known.as_str(),
    }
}

/// One delivery ended: `kind` and, for a rejection, `reason` are its
/// outcome's codes.
pub(crate) fn delivery(kind: &'static str, reason: Option<&'static str>, event_type: &'static str) {
    count(kind, reason, event_type);
}

fn count(kind: &'static str, reason: Option<&'static str>, event_type: &'static str) {
    #[cfg(feature = "metrics")]
    {
        let register = || {
            metrics::counter!(
                DELIVERIES,
                "outcome" => kind,
                "reason" => reason.unwrap_or(""),
                "event_type" => event_type,
            )
        };
        // Indexed by the row's code: the kind, or for a rejection its reason.
        let slot = cache::position(CODES, reason.unwrap_or(kind))
            .and_then(|row| cache::slot(row, event_type))
            .and_then(|i| cache::DELIVERIES.get(i, register));
        match slot {
            Some(counter) => counter.increment(1),
            None => register().increment(1),
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, reason, event_type);
}

/// A handler ran for `elapsed`, ending as the outcome `kind`.
pub(crate) fn handler(event_type: &'static str, kind: &'static str, elapsed: Duration) {
    #[cfg(feature = "metrics")]
    {
        let register =
            || metrics::histogram!(HANDLER_DURATION, "event_type" => event_type, "outcome" => kind);
        let slot = cache::position(CODES, kind)
            .and_then(|k| cache::slot(k, event_type))
            .and_then(|i| cache::HANDLER.get(i, register));
        match slot {
            Some(histogram) => histogram.record(elapsed.as_secs_f64()),
            None => register().record(elapsed.as_secs_f64()),
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (event_type, kind, elapsed);
}

/// A body of `bytes` was read.
pub(crate) fn body(bytes: usize) {
    #[cfg(feature = "metrics")]
    if let Some(histogram) = cache::BODY.get(0, || metrics::histogram!(BODY_BYTES)) {
        histogram.record(bytes as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = bytes;
}

/// The secret at `index` verified a delivery.
pub(crate) fn secret_matched(index: usize) {
    #[cfg(feature = "metrics")]
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        match (
            cache::SECRET_MATCHES.get(index, || secret_matches(index)),
            cache::SECRET_LAST.get(index, || secret_last_match(index)),
        ) {
            (Some(matches), Some(last)) => {
                matches.increment(1);
                last.set(now);
            }
            // Past the secrets a verifier usually holds: registered each time.
            _ => {
                secret_matches(index).increment(1);
                secret_last_match(index).set(now);
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = index;
}

#[cfg(feature = "metrics")]
fn secret_matches(index: usize) -> metrics::Counter {
    metrics::counter!(SECRET_MATCHES, "secret_index" => index.to_string())
}

#[cfg(feature = "metrics")]
fn secret_last_match(index: usize) -> metrics::Gauge {
    metrics::gauge!(SECRET_LAST_MATCH, "secret_index" => index.to_string())
}

/// A delivery skipped the replay check: `reason` is `created_at_missing`
/// or `created_at_unreadable`.
pub(crate) fn replay_skipped(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(REPLAY_SKIPPED, "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// A delivery's row was written to the Postgres inbox.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn inbox_written(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(INBOX_WRITTEN, "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// Inbox rows past their retention were deleted.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn inbox_deleted(rows: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(INBOX_DELETED).increment(rows);
    #[cfg(not(feature = "metrics"))]
    let _ = rows;
}

/// A changed secret file was read: its secrets applied (`ok`), or kept
/// the last good ones.
pub(crate) fn secret_file_reload(ok: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!(SECRET_FILE_RELOADS, "result" => if ok { "ok" } else { "failed" })
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = ok;
}

/// A store operation took `elapsed`; `failed` when it returned an error.
pub(crate) fn store(operation: &'static str, elapsed: Duration, failed: bool) {
    #[cfg(feature = "metrics")]
    {
        let index = cache::position(cache::OPERATIONS, operation);
        let duration = || metrics::histogram!(STORE_DURATION, "operation" => operation);
        match index.and_then(|i| cache::STORE.get(i, duration)) {
            Some(histogram) => histogram.record(elapsed.as_secs_f64()),
            None => duration().record(elapsed.as_secs_f64()),
        }
        if failed {
            metrics::counter!(STORE_ERRORS, "operation" => operation).increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (operation, elapsed, failed);
}

/// Handles for the closed label sets, registered with the recorder on first
/// use and reused: a lookup in the recorder's registry per record cost more
/// than the rest of the metrics together (BENCHMARKS.md). So install the
/// recorder before the first delivery, as an application does at start-up.
/// Indexed by the status table's codes ([`CODES`]).
#[cfg(feature = "metrics")]
mod cache {
    use std::sync::OnceLock;

    use metrics::{Counter, Gauge, Histogram};

    use super::CODES;
    use crate::event::EventType;

    pub(super) const OPERATIONS: &[&str] =
        &["claim", "renew", "mark_done", "release", "begin", "commit"];
    /// The documented types, `unknown` and `none`.
    const TYPES: usize = 9;

    pub(super) static DELIVERIES: Slots<Counter, { CODES.len() * TYPES }> = Slots::new();
    pub(super) static HANDLER: Slots<Histogram, { CODES.len() * TYPES }> = Slots::new();
    pub(super) static BODY: Slots<Histogram, 1> = Slots::new();
    pub(super) static IN_FLIGHT: Slots<Gauge, 1> = Slots::new();
    /// Secrets with cached handles: more than a rotation ever holds.
    pub(super) const SECRETS: usize = 8;
    pub(super) static SECRET_MATCHES: Slots<Counter, SECRETS> = Slots::new();
    pub(super) static SECRET_LAST: Slots<Gauge, SECRETS> = Slots::new();
    pub(super) static STORE: Slots<Histogram, 4> = Slots::new();

    /// Handles registered on first use.
    pub(super) struct Slots<T, const N: usize>([OnceLock<T>; N]);

    impl<T, const N: usize> Slots<T, N> {
        const fn new() -> Self {
            Self([const { OnceLock::new() }; N])
        }

        /// The handle at `index`, registered now if new; `None` past the end.
        pub(super) fn get(&self, index: usize, register: impl FnOnce() -> T) -> Option<&T> {
            self.0.get(index).map(|slot| slot.get_or_init(register))
        }
    }

    pub(super) fn position(set: &[&str], value: &str) -> Option<usize> {
        set.iter().position(|v| *v == value)
    }

    /// The slot of (`row`, `event_type`).
    pub(super) fn slot(row: usize, event_type: &str) -> Option<usize> {
        let column = match event_type {
            "none" => TYPES - 1,
            "unknown" => TYPES - 2,
            known => EventType::ALL.iter().position(|t| t.as_str() == known)?,
        };
        Some(row * TYPES + column)
    }
}

/// A worker scheduled a retry.
#[cfg(feature = "queue")]
pub(crate) fn queue_retry() {
    #[cfg(feature = "metrics")]
    metrics::counter!(QUEUE_RETRIES).increment(1);
}

/// A worker moved an event to the dead letters.
#[cfg(feature = "queue")]
pub(crate) fn queue_dead_letter() {
    #[cfg(feature = "metrics")]
    metrics::counter!(QUEUE_DEAD_LETTERS).increment(1);
}

/// Dead letters the cap dropped.
#[cfg(feature = "queue")]
pub(crate) fn queue_dead_letters_dropped(count: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(QUEUE_DEAD_LETTERS_DROPPED).increment(count);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// Pending entries found deleted.
#[cfg(feature = "queue")]
pub(crate) fn queue_entries_lost(count: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(QUEUE_ENTRIES_LOST).increment(count);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// A worker passed on an entry whose secret it does not hold.
#[cfg(feature = "queue")]
pub(crate) fn queue_key_missing() {
    #[cfg(feature = "metrics")]
    metrics::counter!(QUEUE_KEY_MISSING).increment(1);
}

/// The queue's state, as a worker last read it: entries, of which
/// pending, the oldest's age in seconds (0: none), scheduled retries, dead
/// letters.
#[cfg(feature = "queue")]
pub(crate) fn queue_stats(entries: u64, pending: u64, oldest_age: f64, retries: u64, dead: u64) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!(QUEUE_ENTRIES).set(entries as f64);
        metrics::gauge!(QUEUE_PENDING).set(pending as f64);
        metrics::gauge!(QUEUE_LAG).set(entries.saturating_sub(pending) as f64);
        metrics::gauge!(QUEUE_OLDEST_AGE).set(oldest_age);
        metrics::gauge!(QUEUE_SCHEDULED_RETRIES).set(retries as f64);
        metrics::gauge!(QUEUE_DEAD_LETTERS_KEPT).set(dead as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (entries, pending, oldest_age, retries, dead);
}

/// Measures a span of time, only when metrics are recorded: without the
/// feature, no clock is read.
#[derive(Clone, Copy)]
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Timer {
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    pub(crate) fn elapsed(self) -> Duration {
        #[cfg(feature = "metrics")]
        return self.started.elapsed();
        #[cfg(not(feature = "metrics"))]
        Duration::ZERO
    }
}

#[cfg(feature = "metrics")]
fn in_flight() -> &'static metrics::Gauge {
    cache::IN_FLIGHT
        .get(0, || metrics::gauge!(IN_FLIGHT))
        .unwrap_or_else(|| unreachable!("slot 0 exists"))
}

/// Counts a delivery in flight until dropped.
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn start() -> Self {
        #[cfg(feature = "metrics")]
        in_flight().increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        in_flight().decrement(1.0);
    }
}

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
        let source = include_str!("metrics.rs");
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
        let readme = include_str!("../README.md");
        assert_eq!(table_names(readme, ""), constants, "the README's table");
    }
}
