//! The inbox: every delivery whose handler ran, kept for the retention.
//!
//! A row per delivery, written in the delivery's transaction when it
//! commits (`handled`), or after its rollback (`failed`, with the handler's
//! error). It holds the raw body exactly as it was received and verified, so
//! `ltvboost inbox show <event-id>` prints what LTVboost signed. Only
//! verified deliveries enter it; a duplicate or an in-flight answer writes
//! nothing (no handler ran).

use std::time::Duration;

use super::PostgresStore;
use crate::dedupe::StoreError;

/// How a delivery in the inbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxOutcome {
    /// The handler returned `Ok` and the transaction committed.
    Handled,
    /// The handler failed, panicked, or the payload did not fit: its
    /// writes were rolled back and LTVboost was asked to retry.
    Failed,
}

impl InboxOutcome {
    /// `handled` or `failed`, as stored and printed.
    ///
    /// ```
    /// use ltvboost_webhooks::postgres::InboxOutcome;
    /// assert_eq!(InboxOutcome::Failed.as_str(), "failed");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handled => "handled",
            Self::Failed => "failed",
        }
    }
}

/// One delivery in the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboxEntry {
    /// The row's number: later deliveries have larger ones.
    pub seq: i64,
    /// The event's id, when it had one.
    pub event_id: Option<String>,
    /// The event type's wire name.
    pub event_type: String,
    /// The account it was received for, when the receiver has accounts.
    pub account: Option<String>,
    /// When it was received, RFC 3339 in UTC with microseconds.
    pub received_at: String,
    /// How it ended.
    pub outcome: InboxOutcome,
    /// The handler's error, for a failure.
    pub error: Option<String>,
    /// The raw body, byte for byte as received.
    pub body: Vec<u8>,
}

/// Which deliveries [`PostgresStore::inbox`] lists: all of them by
/// default, newest last.
///
/// ```
/// use std::time::Duration;
/// use ltvboost_webhooks::postgres::InboxFilter;
///
/// let failed_scores_today = InboxFilter::default()
///     .event_type("response.scored")
///     .since(Duration::from_secs(24 * 3600));
/// ```
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    event_type: Option<String>,
    since: Option<Duration>,
    event_id: Option<String>,
}

impl InboxFilter {
    /// Only deliveries of this type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Only deliveries received within this long before now.
    pub fn since(mut self, since: Duration) -> Self {
        self.since = Some(since);
        self
    }

    /// Only deliveries of this event id.
    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }
}

impl PostgresStore {
    /// The deliveries in the inbox that `filter` selects, oldest first.
    ///
    /// It reads the tables as they are, creating none: a schema no
    /// receiver has used yet is an error that names it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use ltvboost_webhooks::postgres::{InboxFilter, PostgresStore};
    ///
    /// let store = PostgresStore::new("postgres://app@127.0.0.1/app")?;
    /// for entry in store.inbox(&InboxFilter::default().event_type("action.failed")).await? {
    ///     println!("{} {:?} {}", entry.received_at, entry.event_id, entry.outcome.as_str());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn inbox(&self, filter: &InboxFilter) -> Result<Vec<InboxEntry>, StoreError> {
        let client = self.pooled().await?;
        let since = filter.since.map(|since| since.as_secs_f64());
        let query = format!(
            "{} WHERE ($1::text IS NULL OR event_type = $1)
                  AND ($2::float8 IS NULL OR received_at >= now() - make_interval(secs => $2))
                  AND ($3::text IS NULL OR event_id = $3)
             ORDER BY seq",
            self.shared.sql.inbox_select
        );
        let rows = self
            .bounded(client.query(&query, &[&filter.event_type, &since, &filter.event_id]))
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.get(5);
                Ok(InboxEntry {
                    seq: row.get(0),
                    event_id: row.get(1),
                    event_type: row.get(2),
                    account: row.get(3),
                    received_at: row.get(4),
                    outcome: match outcome.as_str() {
                        "handled" => InboxOutcome::Handled,
                        "failed" => InboxOutcome::Failed,
                        other => {
                            return Err(StoreError::new(format!(
                                "the inbox holds an outcome this version does not know: {other:?}"
                            )));
                        }
                    },
                    error: row.get(6),
                    body: row.get(7),
                })
            })
            .collect()
    }
}

/// Reads a duration such as `7d`, `90m`, `2s`, `12h` or `1w`, or several
/// (`1h30m`).
///
/// ```
/// use std::time::Duration;
/// use ltvboost_webhooks::postgres::parse_duration;
///
/// assert_eq!(parse_duration("7d")?, Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(parse_duration("1h30m")?, Duration::from_secs(5400));
/// assert!(parse_duration("soon").is_err());
/// # Ok::<(), String>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let refuse = || format!("{text:?} is not a duration such as 7d, 12h, 90m or 2s");
    if text.is_empty() {
        return Err(refuse());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(refuse)?;
        let number: u64 = rest[..digits].parse().map_err(|_| refuse())?;
        let rest_after = &rest[digits..];
        let unit_len = rest_after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest_after.len());
        let seconds = match &rest_after[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 24 * 3600,
            "w" => 7 * 24 * 3600,
            _ => return Err(refuse()),
        };
        let part = number.checked_mul(seconds).ok_or_else(refuse)?;
        total = total
            .checked_add(Duration::from_secs(part))
            .ok_or_else(refuse)?;
        rest = &rest_after[unit_len..];
    }
    Ok(total)
}
