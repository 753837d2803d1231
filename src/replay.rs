//! The replay window: refuse a validly signed event that is too old, or from
//! the future.
//!
//! A signature proves who wrote the bytes, not when they were sent: anyone who
//! captured one delivery could send it again next month. The event's
//! `created_at` is inside the signed bytes, so the receiver can refuse
//! deliveries whose event is older than the sender would still retry.
//!
//! The default window is LTVboost's 24-hour retry window plus one hour into
//! the past, and 5 minutes into the future for clock skew. Done-records in the
//! dedupe store outlive the window, so inside it a retry is recognised, and
//! outside it a replay is refused.
//!
//! An event without `created_at` skips the check; so does one whose
//! `created_at` is neither RFC 3339 nor a Unix timestamp (a warning is
//! logged), since refusing every delivery over a format this crate guessed
//! wrong would be worse. This module does no I/O.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use ltvboost_webhooks::replay::{ReplayError, ReplayWindow};
//!
//! let window = ReplayWindow::default();
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! assert!(window.check(Some("2027-01-15T08:00:00Z"), now).is_ok());
//! assert!(matches!(
//!     window.check(Some("2026-01-01T00:00:00Z"), now),
//!     Err(ReplayError::TooOld { .. })
//! ));
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How far from now an event's `created_at` may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayWindow {
    /// How old an event may be. Default: 25 hours.
    pub past: Duration,
    /// How far ahead of the receiver's clock it may be. Default: 5 minutes.
    pub future: Duration,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            past: Duration::from_secs(25 * 3600),
            future: Duration::from_secs(5 * 60),
        }
    }
}

/// Why an event fell outside the replay window. Answers `400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// `created_at` is further in the past than the window allows.
    #[error("event is outside the replay window: created {}s ago, window is {}s", .age.as_secs(), .window.as_secs())]
    TooOld {
        /// How old the event is.
        age: Duration,
        /// The window's `past`.
        window: Duration,
    },
    /// `created_at` is further in the future than the skew allowance.
    #[error("event is outside the replay window: created {}s in the future, allowance is {}s", .ahead.as_secs(), .window.as_secs())]
    InFuture {
        /// How far ahead the event is.
        ahead: Duration,
        /// The window's `future`.
        window: Duration,
    },
}

impl ReplayWindow {
    /// A window `past` into the past and `future` into the future of now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ltvboost_webhooks::replay::ReplayWindow;
    ///
    /// let window = ReplayWindow::new(Duration::from_secs(3600), Duration::from_secs(60));
    /// assert_eq!(window.span(), Duration::from_secs(3660));
    /// ```
    pub const fn new(past: Duration, future: Duration) -> Self {
        Self { past, future }
    }

    /// A window that accepts every event: the check is off.
    pub const UNBOUNDED: ReplayWindow = ReplayWindow {
        past: Duration::MAX,
        future: Duration::MAX,
    };

    /// Checks `created_at` (as sent) against `now`. `None`, or a value in an
    /// unrecognised format, passes (see the [module docs](self)); the
    /// receiver warns about those once per process, or refuses them with
    /// `WebhookConfig::require_created_at`.
    pub fn check(&self, created_at: Option<&str>, now: SystemTime) -> Result<(), ReplayError> {
        match created_at.and_then(parse_timestamp) {
            Some(created) => self.check_time(created, now),
            None => Ok(()),
        }
    }

    /// Checks a creation time against `now`.
    pub fn check_time(&self, created: SystemTime, now: SystemTime) -> Result<(), ReplayError> {
        match now.duration_since(created) {
            Ok(age) if age > self.past => Err(ReplayError::TooOld {
                age,
                window: self.past,
            }),
            Ok(_) => Ok(()),
            Err(ahead) if ahead.duration() > self.future => Err(ReplayError::InFuture {
                ahead: ahead.duration(),
                window: self.future,
            }),
            Err(_) => Ok(()),
        }
    }

    /// The longest span an accepted event's `created_at` can cover: done
    /// records must live at least this long.
    pub fn span(&self) -> Duration {
        self.past.saturating_add(self.future)
    }
}

/// RFC 3339, or a Unix timestamp in seconds (milliseconds above 10^11).
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    if let Ok(parsed) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(SystemTime::from(parsed));
    }
    let number: u64 = text.parse().ok()?;
    let duration = if number > 100_000_000_000 {
        Duration::from_millis(number)
    } else {
        Duration::from_secs(number)
    };
    SystemTime::UNIX_EPOCH.checked_add(duration)
}

/// Where the receiver reads the time. Injectable, so tests can stand at the
/// window's edges.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until moved, for tests.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use ltvboost_webhooks::replay::{Clock, ManualClock};
///
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(now)))
    }

    /// Sets the time.
    pub fn set(&self, now: SystemTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        parse_timestamp(text).unwrap()
    }

    #[test]
    fn edges_of_the_default_window() {
        let window = ReplayWindow::default();
        let now = at("2026-11-27T12:00:00Z");
        let second = Duration::from_secs(1);
        let check = |t: SystemTime| {
            let text = OffsetDateTime::from(t).format(&Rfc3339).unwrap();
            window.check(Some(&text), now)
        };
        assert!(check(now).is_ok());
        assert!(check(now - window.past).is_ok(), "just inside, past");
        assert!(matches!(
            check(now - window.past - second),
            Err(ReplayError::TooOld { .. })
        ));
        assert!(check(now + window.future).is_ok(), "just inside, future");
        assert!(matches!(
            check(now + window.future + second),
            Err(ReplayError::InFuture { .. })
        ));
    }

    #[test]
    fn offsets_and_fractions_parse() {
        assert_eq!(at("2026-11-27T13:00:00+01:00"), at("2026-11-27T12:00:00Z"));
        assert!(parse_timestamp("2026-11-27T12:00:00.123456Z").is_some());
        assert_eq!(at("1700000000"), at("2023-11-14T22:13:20Z"));
        assert_eq!(at("1700000000000"), at("2023-11-14T22:13:20Z"));
    }

    #[test]
    fn absent_or_unrecognised_timestamps_skip_the_check() {
        let window = ReplayWindow::default();
        assert!(window.check(None, SystemTime::now()).is_ok());
        assert!(
            window
                .check(Some("last tuesday"), SystemTime::now())
                .is_ok()
        );
    }

    #[test]
    fn unbounded_accepts_everything() {
        let now = at("2026-11-27T12:00:00Z");
        assert!(
            ReplayWindow::UNBOUNDED
                .check(Some("1970-01-01T00:00:00Z"), now)
                .is_ok()
        );
        assert!(
            ReplayWindow::UNBOUNDED
                .check(Some("9999-01-01T00:00:00Z"), now)
                .is_ok()
        );
    }
}
