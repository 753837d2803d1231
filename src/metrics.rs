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
//! | `ltvboost_webhook_store_duration_seconds` | histogram | `operation` |
//! | `ltvboost_webhook_store_errors_total` | counter | `operation` |
//! | `ltvboost_webhook_queue_pending` | gauge | |
//! | `ltvboost_webhook_queue_lag` | gauge | |
//! | `ltvboost_webhook_queue_retries_total` | counter | |
//! | `ltvboost_webhook_queue_dead_letters_total` | counter | |
//!
//! Every label value comes from a closed set: `outcome` and `reason` are
//! [`Outcome::kind`] and [`Outcome::reason`] (`reason` is `""` but for a
//! rejection), `event_type` is one of the seven documented types,
//! `unknown`, or `none` before the signature verified (unauthenticated
//! input never becomes a label value), `secret_index` counts the active
//! secrets, `operation` is `claim`, `renew`, `mark_done` or `release`.
//!
//! Install your exporter before the first delivery, as an application does
//! at start-up: the receiver registers each metric with the recorder in
//! place at its first use, and records on that handle from then on.
//!
//! Each thread keeps what it records and hands it to the recorder in a
//! batch, about every 64 deliveries and at least once a second, so a
//! scrape may lag the deliveries by up to a second. Call [`flush`] to hand
//! everything over at once, say before a test reads the recorder.
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

use crate::event::EventType;
use crate::outcome::Outcome;
use crate::rejection::Rejection;

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
/// When each secret last matched, in seconds since the Unix epoch (to within
/// the second records take to reach the recorder).
pub const SECRET_LAST_MATCH: &str = "ltvboost_webhook_secret_last_match_timestamp_seconds";
/// Deliveries whose replay check was skipped: `reason` is
/// `created_at_missing` or `created_at_unreadable`.
pub const REPLAY_SKIPPED: &str = "ltvboost_webhook_replay_check_skipped_total";
/// How long dedupe store operations took.
pub const STORE_DURATION: &str = "ltvboost_webhook_store_duration_seconds";
/// Dedupe store operations that failed.
pub const STORE_ERRORS: &str = "ltvboost_webhook_store_errors_total";
/// Queue entries read by a worker and not yet acknowledged.
pub const QUEUE_PENDING: &str = "ltvboost_webhook_queue_pending";
/// Queue entries no worker has read yet.
pub const QUEUE_LAG: &str = "ltvboost_webhook_queue_lag";
/// Retries workers scheduled.
pub const QUEUE_RETRIES: &str = "ltvboost_webhook_queue_retries_total";
/// Events workers moved to the dead letters.
pub const QUEUE_DEAD_LETTERS: &str = "ltvboost_webhook_queue_dead_letters_total";

/// Describes every metric (help text and unit) to the installed recorder.
/// Call it once, after installing your exporter: Prometheus then prints
/// `# HELP` lines, which `promtool check metrics` asks for.
///
/// ```
/// // With metrics-exporter-prometheus, say:
/// // let handle = PrometheusBuilder::new().install_recorder()?;
/// ltvboost_webhooks::metrics::describe();
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
    }
}

/// Hands every record the receiver holds to the recorder now. Records
/// reach it within a second anyway; call this where that second matters,
/// such as a test that reads the recorder right after a delivery.
///
/// ```
/// // let handle = PrometheusBuilder::new().install_recorder()?;
/// // … deliveries …
/// ltvboost_webhooks::metrics::flush();
/// // let text = handle.render();
/// ```
pub fn flush() {
    #[cfg(feature = "metrics")]
    batch::flush_all();
}

/// The `event_type` label of a delivery: `None` before authentication.
pub(crate) fn type_label(event_type: Option<Option<EventType>>) -> &'static str {
    match event_type {
        None => "none",
        Some(None) => "unknown",
        Some(Some(known)) => known.as_str(),
    }
}

/// One delivery ended.
pub(crate) fn delivery(outcome: &Outcome, event_type: &'static str) {
    count(outcome.kind(), outcome.reason(), event_type);
}

/// One delivery was refused before it was authenticated or parsed (the
/// extractor).
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) fn rejected(rejection: &Rejection) {
    count("rejected", Some(rejection.reason()), type_label(None));
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
        let slot = match reason {
            None => cache::position(cache::KINDS, kind)
                .and_then(|k| cache::slot(k, event_type))
                .and_then(|i| cache::DELIVERIES.get(i, register)),
            Some(reason) => cache::position(cache::REASONS, reason)
                .and_then(|r| cache::slot(r, event_type))
                .and_then(|i| cache::REJECTED.get(i, register)),
        };
        match slot {
            Some(counter) => batch::record(|pending| pending.count(counter)),
            None => register().increment(1),
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, reason, event_type);
}

/// A handler ran for `elapsed`, ending as `outcome`.
pub(crate) fn handler(event_type: &'static str, outcome: &Outcome, elapsed: Duration) {
    #[cfg(feature = "metrics")]
    {
        let kind = outcome.kind();
        let register =
            || metrics::histogram!(HANDLER_DURATION, "event_type" => event_type, "outcome" => kind);
        let slot = cache::position(cache::KINDS, kind)
            .and_then(|k| cache::slot(k, event_type))
            .and_then(|i| cache::HANDLER.get(i, register));
        match slot {
            Some(histogram) => batch::record(|pending| pending.time(histogram, elapsed)),
            None => register().record(elapsed.as_secs_f64()),
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (event_type, outcome, elapsed);
}

/// A body of `bytes` was read.
pub(crate) fn body(bytes: usize) {
    #[cfg(feature = "metrics")]
    if let Some(histogram) = cache::BODY.get(0, || metrics::histogram!(BODY_BYTES)) {
        batch::record(|pending| pending.sample(histogram, bytes as f64));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = bytes;
}

/// The secret at `index` verified a delivery.
pub(crate) fn secret_matched(index: usize) {
    #[cfg(feature = "metrics")]
    match cache::SECRET_MATCHES.get(index, || secret_matches(index)) {
        Some(counter) => batch::record(|pending| {
            pending.count(counter);
            pending.matched(index);
        }),
        // Past the secrets a verifier usually holds: straight to the recorder.
        None => {
            secret_matches(index).increment(1);
            secret_last_match(index).set(batch::unix_now());
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

/// A store operation took `elapsed`; `failed` when it returned an error.
pub(crate) fn store(operation: &'static str, elapsed: Duration, failed: bool) {
    #[cfg(feature = "metrics")]
    {
        let index = cache::position(cache::OPERATIONS, operation);
        let duration = || metrics::histogram!(STORE_DURATION, "operation" => operation);
        match index.and_then(|i| cache::STORE.get(i, duration)) {
            Some(histogram) => batch::record(|pending| pending.time(histogram, elapsed)),
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
#[cfg(feature = "metrics")]
mod cache {
    use std::sync::OnceLock;

    use metrics::{Counter, Gauge, Histogram};

    use crate::event::EventType;

    pub(super) const KINDS: &[&str] = &[
        "handled",
        "duplicate",
        "in_flight",
        "mismatched",
        "handler_failed",
        "handler_panicked",
        "store_unavailable",
        "enqueued",
        "queue_unavailable",
    ];
    pub(super) const REASONS: &[&str] = &[
        "method_not_allowed",
        "body_too_large",
        "body_timeout",
        "body_stalled",
        "body_read_failed",
        "overloaded",
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
    pub(super) const OPERATIONS: &[&str] = &["claim", "renew", "mark_done", "release"];
    /// The documented types, `unknown` and `none`.
    const TYPES: usize = 9;

    pub(super) static DELIVERIES: Slots<Counter, { 9 * TYPES }> = Slots::new();
    pub(super) static REJECTED: Slots<Counter, { 15 * TYPES }> = Slots::new();
    pub(super) static HANDLER: Slots<Histogram, { 9 * TYPES }> = Slots::new();
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

/// The queue's depth, as a worker last saw it.
#[cfg(feature = "queue")]
pub(crate) fn queue_depth(pending: u64, lag: Option<u64>) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!(QUEUE_PENDING).set(pending as f64);
        if let Some(lag) = lag {
            metrics::gauge!(QUEUE_LAG).set(lag as f64);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (pending, lag);
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

/// Counts a delivery in flight until dropped.
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn start() -> Self {
        #[cfg(feature = "metrics")]
        batch::record(|pending| pending.in_flight += 1);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        batch::record(|pending| pending.in_flight -= 1);
    }
}

/// What each thread records, handed to the recorder in batches: every
/// record written to the recorder's shared handles as it happened moved
/// their cache lines from one core to the other on every delivery.
#[cfg(feature = "metrics")]
mod batch {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use metrics::{Counter, Histogram};

    use super::{IN_FLIGHT, cache};

    /// Records a thread holds before it hands them over itself (about 64
    /// deliveries' worth): this bounds what a thread holds.
    const FULL: usize = 128;
    /// How often the records of threads gone quiet are handed over.
    const EVERY: Duration = Duration::from_secs(1);

    /// One thread's records not yet handed to the recorder.
    #[derive(Default)]
    pub(super) struct Pending {
        counts: Vec<(&'static Counter, u64)>,
        samples: Vec<(&'static Histogram, f64)>,
        /// Deliveries started less those ended: either may be on another
        /// thread, so this may be below zero; the sum over threads is not.
        pub(super) in_flight: i64,
        /// Which secrets matched, by `secret_index`.
        matched: [bool; cache::SECRETS],
    }

    impl Pending {
        pub(super) fn count(&mut self, counter: &'static Counter) {
            match self.counts.last_mut() {
                Some((last, n)) if std::ptr::eq(*last, counter) => *n += 1,
                _ => self.counts.push((counter, 1)),
            }
        }

        pub(super) fn time(&mut self, histogram: &'static Histogram, elapsed: Duration) {
            self.sample(histogram, elapsed.as_secs_f64());
        }

        pub(super) fn sample(&mut self, histogram: &'static Histogram, value: f64) {
            self.samples.push((histogram, value));
        }

        pub(super) fn matched(&mut self, index: usize) {
            if let Some(matched) = self.matched.get_mut(index) {
                *matched = true;
            }
        }

        fn hand_over_if_full(&mut self) {
            if self.counts.len() + self.samples.len() >= FULL {
                self.hand_over();
            }
        }

        fn hand_over(&mut self) {
            for (counter, n) in self.counts.drain(..) {
                counter.increment(n);
            }
            for (histogram, value) in self.samples.drain(..) {
                histogram.record(value);
            }
            // Registered even when nothing changed, so a scrape shows 0
            // rather than no gauge at all.
            let in_flight = cache::IN_FLIGHT.get(0, || metrics::gauge!(IN_FLIGHT));
            let change = std::mem::take(&mut self.in_flight);
            if let Some(gauge) = in_flight.filter(|_| change != 0) {
                gauge.increment(change as f64);
            }
            if self.matched.contains(&true) {
                let now = unix_now();
                for (index, matched) in self.matched.iter_mut().enumerate() {
                    let gauge = || super::secret_last_match(index);
                    if std::mem::take(matched)
                        && let Some(gauge) = cache::SECRET_LAST.get(index, gauge)
                    {
                        gauge.set(now);
                    }
                }
            }
        }
    }

    /// Every thread's records, for the background hand-over and [`flush_all`].
    static THREADS: Mutex<Vec<Arc<Mutex<Pending>>>> = Mutex::new(Vec::new());
    static FLUSHER: Once = Once::new();
    /// Whether the background thread runs.
    static FLUSHING: AtomicBool = AtomicBool::new(false);

    thread_local! {
        static LOCAL: Arc<Mutex<Pending>> = register();
    }

    fn register() -> Arc<Mutex<Pending>> {
        let pending = Arc::new(Mutex::new(Pending::default()));
        lock(&THREADS).push(pending.clone());
        FLUSHER.call_once(|| {
            let flusher = std::thread::Builder::new()
                .name("ltvboost-metrics".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(EVERY);
                        flush_all();
                    }
                });
            match flusher {
                Ok(_) => FLUSHING.store(true, Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "no thread for metrics; recording unbatched"),
            }
        });
        pending
    }

    /// Adds to this thread's records.
    pub(super) fn record(add: impl FnOnce(&mut Pending)) {
        let mut add = Some(add);
        let _ = LOCAL.try_with(|pending| {
            if let Some(add) = add.take() {
                let mut pending = lock(pending);
                add(&mut pending);
                // Without the background thread nothing else would hand over.
                if FLUSHING.load(Ordering::Relaxed) {
                    pending.hand_over_if_full();
                } else {
                    pending.hand_over();
                }
            }
        });
        if let Some(add) = add {
            // This thread is being torn down: straight to the recorder.
            let mut pending = Pending::default();
            add(&mut pending);
            pending.hand_over();
        }
    }

    pub(super) fn flush_all() {
        let mut threads = lock(&THREADS);
        for pending in threads.iter() {
            lock(pending).hand_over();
        }
        // A thread that ended dropped its handle; its records are over now.
        threads.retain(|pending| Arc::strong_count(pending) > 1);
    }

    pub(super) fn unix_now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as f64
    }

    /// A panic in a recorder leaves the records usable.
    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    mod tests {
        use std::sync::atomic::{AtomicU64, Ordering};

        use super::*;

        /// What a test counter has added up, or how many samples a test
        /// histogram took.
        #[derive(Default)]
        struct Tally(AtomicU64);

        impl metrics::HistogramFn for Tally {
            fn record(&self, _: f64) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }

        impl metrics::CounterFn for Tally {
            fn increment(&self, n: u64) {
                self.0.fetch_add(n, Ordering::Relaxed);
            }
            fn absolute(&self, n: u64) {
                self.0.store(n, Ordering::Relaxed);
            }
        }

        impl Tally {
            fn total(&self) -> u64 {
                self.0.load(Ordering::Relaxed)
            }
        }

        fn counter() -> (&'static Counter, Arc<Tally>) {
            let tally = Arc::new(Tally::default());
            let counter = Box::leak(Box::new(Counter::from_arc(tally.clone())));
            (counter, tally)
        }

        fn histogram() -> (&'static Histogram, Arc<Tally>) {
            let tally = Arc::new(Tally::default());
            let histogram = Box::leak(Box::new(Histogram::from_arc(tally.clone())));
            (histogram, tally)
        }

        #[test]
        fn a_thread_hands_its_records_over_once_it_holds_128() {
            let (deliveries, counted) = counter();
            let (bodies, sampled) = histogram();
            let mut pending = Pending::default();
            for _ in 0..FULL / 2 - 1 {
                pending.count(deliveries);
                pending.sample(bodies, 1035.0);
                pending.hand_over_if_full();
            }
            pending.count(deliveries);
            pending.hand_over_if_full();
            // A run of one counter is one record.
            assert_eq!(
                (pending.counts.len(), pending.samples.len()),
                (1, FULL / 2 - 1)
            );
            assert_eq!((counted.total(), sampled.total()), (0, 0));
            for _ in 0..FULL / 2 {
                pending.sample(bodies, 1035.0);
                pending.hand_over_if_full();
            }
            assert_eq!(counted.total(), FULL as u64 / 2);
            assert_eq!(sampled.total(), FULL as u64 - 1);
            assert!(pending.counts.is_empty() && pending.samples.is_empty());
        }

        #[test]
        fn the_records_of_a_thread_that_ended_are_handed_over() {
            let (deliveries, total) = counter();
            std::thread::spawn(move || record(|pending| pending.count(deliveries)))
                .join()
                .unwrap();
            flush_all();
            assert_eq!(total.total(), 1);
        }
    }
}
