//! Exponential backoff: one schedule for everything that retries here — the
//! registration client, the queue's workers and the sender simulator.

use std::time::Duration;

/// Waits that grow exponentially: `first` before the first retry, each next
/// one `factor` times longer, never longer than `max`.
///
/// ```
/// use std::time::Duration;
/// use ltvboost_webhooks::Backoff;
///
/// let backoff = Backoff::new(Duration::from_secs(60), 4.0, Duration::from_secs(3600));
/// let minutes: Vec<u64> = (1..=4).map(|retry| backoff.delay(retry).as_secs() / 60).collect();
/// assert_eq!(minutes, [1, 4, 16, 60]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The wait before the first retry.
    pub first: Duration,
    /// How much each wait grows (at least 1).
    pub factor: f64,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// A schedule from its first wait, growth factor and longest wait.
    pub fn new(first: Duration, factor: f64, max: Duration) -> Self {
        Self { first, factor, max }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let growth = self
            .factor
            .max(1.0)
            .powi(i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX));
        // Past what a Duration holds, `max` is the answer anyway.
        Duration::try_from_secs_f64(self.first.as_secs_f64() * growth)
            .map_or(self.max, |wait| wait.min(self.max))
    }
}
