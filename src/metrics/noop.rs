//! The recording functions without the `metrics` feature: the same
//! functions as `real.rs`, doing nothing, and a timer that reads no clock.

use std::time::Duration;

use crate::event::EventType;

pub(crate) fn describe() {}

pub(crate) fn delivery(
    _row: usize,
    _kind: &'static str,
    _reason: Option<&'static str>,
    _event_type: Option<Option<EventType>>,
) {
}

pub(crate) fn handler(
    _row: usize,
    _kind: &'static str,
    _event_type: Option<EventType>,
    _elapsed: Duration,
) {
}

pub(crate) fn body(_bytes: usize) {}

pub(crate) fn secret_matched(_index: usize) {}

pub(crate) fn replay_skipped(_reason: &'static str) {}

#[cfg(feature = "postgres")]
pub(crate) fn inbox_written(_outcome: &'static str) {}

#[cfg(feature = "postgres")]
pub(crate) fn inbox_deleted(_rows: u64) {}

pub(crate) fn secret_file_reload(_ok: bool) {}

pub(crate) fn store(_operation: &'static str, _elapsed: Duration, _failed: bool) {}

#[cfg(feature = "queue")]
pub(crate) fn queue_retry() {}

#[cfg(feature = "queue")]
pub(crate) fn queue_dead_letter() {}

#[cfg(feature = "queue")]
pub(crate) fn queue_dead_letters_dropped(_count: u64) {}

#[cfg(feature = "queue")]
pub(crate) fn queue_entries_lost(_count: u64) {}

#[cfg(feature = "queue")]
pub(crate) fn queue_key_missing() {}

#[cfg(feature = "queue")]
pub(crate) fn queue_stats(_entries: u64, _pending: u64, _oldest: f64, _retries: u64, _dead: u64) {}

/// Reads no clock: nothing records what it would measure.
#[derive(Clone, Copy)]
pub(crate) struct Timer;

impl Timer {
    pub(crate) fn start() -> Self {
        Self
    }

    pub(crate) fn elapsed(self) -> Duration {
        Duration::ZERO
    }
}

pub(crate) struct InFlight;

impl InFlight {
    pub(crate) fn start() -> Self {
        Self
    }
}
