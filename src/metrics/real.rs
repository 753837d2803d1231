//! The recording functions with the `metrics` feature: each writes through
//! the `metrics` facade to whatever recorder the application installed.
//! `noop.rs` has the same functions, empty.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge, Histogram};

use super::*;
use crate::event::EventType;

pub(crate) fn describe() {
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

/// One delivery ended in the status table's row number `row`, whose codes
/// are `kind` and, for a rejection, `reason`.
pub(crate) fn delivery(
    row: usize,
    kind: &'static str,
    reason: Option<&'static str>,
    event_type: Option<Option<EventType>>,
) {
    let register = || {
        metrics::counter!(
            DELIVERIES,
            "outcome" => kind,
            "reason" => reason.unwrap_or(""),
            "event_type" => type_label(event_type),
        )
    };
    match slot(row, event_type).and_then(|i| DELIVERY_HANDLES.get(i, register)) {
        Some(counter) => counter.increment(1),
        None => register().increment(1),
    }
}

/// A handler ran for `elapsed`, ending in row number `row`, code `kind`.
pub(crate) fn handler(
    row: usize,
    kind: &'static str,
    event_type: Option<EventType>,
    elapsed: Duration,
) {
    let register = || {
        metrics::histogram!(
            HANDLER_DURATION,
            "event_type" => type_label(Some(event_type)),
            "outcome" => kind,
        )
    };
    match slot(row, Some(event_type)).and_then(|i| HANDLER_HANDLES.get(i, register)) {
        Some(histogram) => histogram.record(elapsed.as_secs_f64()),
        None => register().record(elapsed.as_secs_f64()),
    }
}

/// A body of `bytes` was read.
pub(crate) fn body(bytes: usize) {
    if let Some(histogram) = BODY_HANDLE.get(0, || metrics::histogram!(BODY_BYTES)) {
        histogram.record(bytes as f64);
    }
}

/// The secret at `index` verified a delivery.
pub(crate) fn secret_matched(index: usize) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let matches = || metrics::counter!(SECRET_MATCHES, "secret_index" => index.to_string());
    let last = || metrics::gauge!(SECRET_LAST_MATCH, "secret_index" => index.to_string());
    match (
        SECRET_MATCH_HANDLES.get(index, matches),
        SECRET_LAST_HANDLES.get(index, last),
    ) {
        (Some(matches), Some(last)) => {
            matches.increment(1);
            last.set(now);
        }
        // Past the secrets a verifier usually holds: registered each time.
        _ => {
            matches().increment(1);
            last().set(now);
        }
    }
}

/// A delivery skipped the replay check: `reason` is `created_at_missing`
/// or `created_at_unreadable`.
pub(crate) fn replay_skipped(reason: &'static str) {
    metrics::counter!(REPLAY_SKIPPED, "reason" => reason).increment(1);
}

/// A delivery's row was written to the Postgres inbox.
#[cfg(feature = "postgres")]
pub(crate) fn inbox_written(outcome: &'static str) {
    metrics::counter!(INBOX_WRITTEN, "outcome" => outcome).increment(1);
}

/// Inbox rows past their retention were deleted.
#[cfg(feature = "postgres")]
pub(crate) fn inbox_deleted(rows: u64) {
    metrics::counter!(INBOX_DELETED).increment(rows);
}

/// A changed secret file was read: its secrets applied (`ok`), or kept
/// the last good ones.
pub(crate) fn secret_file_reload(ok: bool) {
    metrics::counter!(SECRET_FILE_RELOADS, "result" => if ok { "ok" } else { "failed" })
        .increment(1);
}

/// A store operation took `elapsed`; `failed` when it returned an error.
pub(crate) fn store(operation: &'static str, elapsed: Duration, failed: bool) {
    let index = OPERATIONS.iter().position(|known| *known == operation);
    let duration = || metrics::histogram!(STORE_DURATION, "operation" => operation);
    match index.and_then(|i| STORE_HANDLES.get(i, duration)) {
        Some(histogram) => histogram.record(elapsed.as_secs_f64()),
        None => duration().record(elapsed.as_secs_f64()),
    }
    if failed {
        metrics::counter!(STORE_ERRORS, "operation" => operation).increment(1);
    }
}

/// A worker scheduled a retry.
#[cfg(feature = "queue")]
pub(crate) fn queue_retry() {
    metrics::counter!(QUEUE_RETRIES).increment(1);
}

/// A worker moved an event to the dead letters.
#[cfg(feature = "queue")]
pub(crate) fn queue_dead_letter() {
    metrics::counter!(QUEUE_DEAD_LETTERS).increment(1);
}

/// Dead letters the cap dropped.
#[cfg(feature = "queue")]
pub(crate) fn queue_dead_letters_dropped(count: u64) {
    metrics::counter!(QUEUE_DEAD_LETTERS_DROPPED).increment(count);
}

/// Pending entries found deleted.
#[cfg(feature = "queue")]
pub(crate) fn queue_entries_lost(count: u64) {
    metrics::counter!(QUEUE_ENTRIES_LOST).increment(count);
}

/// A worker passed on an entry whose secret it does not hold.
#[cfg(feature = "queue")]
pub(crate) fn queue_key_missing() {
    metrics::counter!(QUEUE_KEY_MISSING).increment(1);
}

/// The queue's state, as a worker last read it: entries, of which
/// pending, the oldest's age in seconds (0: none), scheduled retries, dead
/// letters.
#[cfg(feature = "queue")]
pub(crate) fn queue_stats(entries: u64, pending: u64, oldest_age: f64, retries: u64, dead: u64) {
    metrics::gauge!(QUEUE_ENTRIES).set(entries as f64);
    metrics::gauge!(QUEUE_PENDING).set(pending as f64);
    metrics::gauge!(QUEUE_LAG).set(entries.saturating_sub(pending) as f64);
    metrics::gauge!(QUEUE_OLDEST_AGE).set(oldest_age);
    metrics::gauge!(QUEUE_SCHEDULED_RETRIES).set(retries as f64);
    metrics::gauge!(QUEUE_DEAD_LETTERS_KEPT).set(dead as f64);
}

/// The `event_type` label of a delivery: `None` before authentication.
fn type_label(event_type: Option<Option<EventType>>) -> &'static str {
    match event_type {
        None => "none",
        Some(None) => "unknown",
        Some(Some(known)) => known.as_str(),
    }
}

/// Measures a span of time.
#[derive(Clone, Copy)]
pub(crate) struct Timer(std::time::Instant);

impl Timer {
    pub(crate) fn start() -> Self {
        Self(std::time::Instant::now())
    }

    pub(crate) fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}

/// Counts a delivery in flight until dropped.
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn start() -> Self {
        in_flight().increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight().decrement(1.0);
    }
}

fn in_flight() -> &'static Gauge {
    IN_FLIGHT_HANDLE
        .get(0, || metrics::gauge!(IN_FLIGHT))
        .unwrap_or_else(|| unreachable!("slot 0 exists"))
}

// Handles for the closed label sets, registered with the recorder on first
// use and reused: a lookup in the recorder's registry per record cost more
// than the rest of the metrics together (BENCHMARKS.md). So install the
// recorder before the first delivery, as an application does at start-up.

/// The store operations with handles of their own.
const OPERATIONS: &[&str] = &["claim", "renew", "mark_done", "release", "begin", "commit"];
/// The documented types, `unknown` and `none`.
const TYPES: usize = 9;
/// Secrets with handles of their own: more than a rotation ever holds.
const SECRETS: usize = 8;

static DELIVERY_HANDLES: Slots<Counter, { ROWS * TYPES }> = Slots::new();
static HANDLER_HANDLES: Slots<Histogram, { ROWS * TYPES }> = Slots::new();
static BODY_HANDLE: Slots<Histogram, 1> = Slots::new();
static IN_FLIGHT_HANDLE: Slots<Gauge, 1> = Slots::new();
static SECRET_MATCH_HANDLES: Slots<Counter, SECRETS> = Slots::new();
static SECRET_LAST_HANDLES: Slots<Gauge, SECRETS> = Slots::new();
static STORE_HANDLES: Slots<Histogram, { OPERATIONS.len() }> = Slots::new();

/// Handles registered on first use.
struct Slots<T, const N: usize>([OnceLock<T>; N]);

impl<T, const N: usize> Slots<T, N> {
    const fn new() -> Self {
        Self([const { OnceLock::new() }; N])
    }

    /// The handle at `index`, registered now if new; `None` past the end.
    fn get(&self, index: usize, register: impl FnOnce() -> T) -> Option<&T> {
        self.0.get(index).map(|slot| slot.get_or_init(register))
    }
}

/// The slot of (`row`, `event_type`): `None` past the rows with handles.
fn slot(row: usize, event_type: Option<Option<EventType>>) -> Option<usize> {
    let column = match event_type {
        None => TYPES - 1,
        Some(None) => TYPES - 2,
        Some(Some(known)) => EventType::ALL.iter().position(|t| *t == known)?,
    };
    (row < ROWS).then_some(row * TYPES + column)
}
