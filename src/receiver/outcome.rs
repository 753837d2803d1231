//! Every way a delivery ends: the receiver's status table, in one type, and
//! the refusals ([`Rejection`]) that are its rows before any handler ran.
//!
//! Every request the receiver answers ends in one [`Outcome`]. Its
//! [`status`](Outcome::status) and [`text`](Outcome::text) are the answer
//! LTVboost gets; its [`kind`](Outcome::kind) and [`reason`](Outcome::reason)
//! are stable snake_case codes, and the log line and the metrics use the same
//! codes, so the README's table, the logs and the dashboards agree.
//!
//! Every row of the table is one line of the `status_table!` list in this
//! file: its status, code, log level, text and extra headers, written once;
//! [`Outcome::status`], [`Outcome::text`] and the log line read it, and the
//! metrics index their handles by the row's number. The README's "What the
//! receiver answers" is that table in prose, and a test holds the two
//! together.
//!
//! ```
//! use http::StatusCode;
//! use ltvboost_webhooks::{Outcome, Rejection};
//! use ltvboost_webhooks::signature::SignatureError;
//!
//! let refused = Outcome::Rejected(Rejection::Signature(SignatureError::Mismatch));
//! assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!((refused.kind(), refused.reason()), ("rejected", Some("signature_mismatch")));
//! assert_eq!(Outcome::Duplicate.status(), StatusCode::OK);
//! ```

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use tracing::Level;

use crate::event::{EnvelopeError, PayloadError};
use crate::handler::Dispatched;
use crate::replay::ReplayError;
use crate::signature::SignatureError;

/// How one delivery ended. See the [module docs](self) for the table.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// A typed handler, or the fallback for an unknown type, returned `Ok`.
    /// Answers `200`; the event is recorded as done.
    Handled,
    /// The event was handled before. Answers `200`; no handler runs.
    Duplicate,
    /// Another delivery of the same event is being handled right now.
    /// Answers `409`, so the sender retries later.
    InFlight,
    /// A known type whose `data` does not fit its payload; the fallback's
    /// `mismatched` returned `Ok`. Answers `400`, or `200` when the receiver
    /// is configured to acknowledge such events.
    Mismatched {
        /// Whether it was acknowledged with `200` (and recorded as done).
        acknowledged: bool,
    },
    /// A handler returned `Err`. Answers `500`, so the sender retries.
    HandlerFailed,
    /// A handler panicked. Answers `500`; the server keeps serving.
    HandlerPanicked,
    /// The dedupe store did not answer (or failed). Answers `503` and calls
    /// no handler: fail closed, the sender retries.
    StoreUnavailable,
    /// Enqueue mode: appended to the queue, and Redis acknowledged the
    /// write. Answers `202`; a worker handles it later.
    Enqueued,
    /// Enqueue mode: the queue did not answer in time. Answers `503`:
    /// nothing is acknowledged that is not stored, the sender retries.
    QueueUnavailable,
    /// Refused before any handler ran.
    Rejected(Rejection),
}

/// Declares the status table: one line per row, and from it [`Line`], the
/// row's number, with everything the row decides. The model is axum's
/// `define_rejection!`: a row's facts are written once, next to each other.
macro_rules! status_table {
    ($(
        $(#[$doc:meta])*
        $line:ident => $status:ident, $code:literal, $level:ident, $text:expr, allow_post: $allow:literal;
    )*) => {
        /// A row of the status table, by number: what the metrics index by.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Line {
            $( $(#[$doc])* $line, )*
        }

        impl Line {
            /// Every row, in the table's order.
            #[cfg(test)]
            pub(crate) const ALL: &[Line] = &[$(Line::$line),*];

            /// The row's status, code, level, text and `Allow: POST`.
            const fn facts(self) -> (StatusCode, &'static str, Level, Text, bool) {
                match self {
                    $( Line::$line => (StatusCode::$status, $code, Level::$level, $text, $allow), )*
                }
            }
        }
    };
}

/// A row's answer text: written in the table, or the refusal's own words.
#[derive(Debug, Clone, Copy)]
enum Text {
    /// This text, always (empty for a delivery taken in).
    Fixed(&'static str),
    /// The refusal's text ([`refusal_text`]).
    Refusal,
}

use Text::{Fixed, Refusal};

// The status table. Refusals of requests not yet authenticated log at
// `DEBUG`, so that a flood of forged requests cannot flood the logs.
status_table! {
    Handled => OK, "handled", INFO, Fixed(""), allow_post: false;
    Duplicate => OK, "duplicate", INFO, Fixed("duplicate: already handled\n"), allow_post: false;
    InFlight => CONFLICT, "in_flight", WARN,
        Fixed("event is being handled by another delivery\n"), allow_post: false;
    /// `Mismatched { acknowledged: true }`.
    MismatchedAcknowledged => OK, "mismatched", WARN,
        Fixed("acknowledged: event data does not fit its type\n"), allow_post: false;
    Mismatched => BAD_REQUEST, "mismatched", WARN,
        Fixed("event data does not fit its type\n"), allow_post: false;
    HandlerFailed => INTERNAL_SERVER_ERROR, "handler_failed", WARN,
        Fixed("handler failed\n"), allow_post: false;
    HandlerPanicked => INTERNAL_SERVER_ERROR, "handler_panicked", WARN,
        Fixed("handler panicked\n"), allow_post: false;
    StoreUnavailable => SERVICE_UNAVAILABLE, "store_unavailable", WARN,
        Fixed("dedupe store unavailable\n"), allow_post: false;
    Enqueued => ACCEPTED, "enqueued", INFO, Fixed(""), allow_post: false;
    QueueUnavailable => SERVICE_UNAVAILABLE, "queue_unavailable", WARN,
        Fixed("queue unavailable\n"), allow_post: false;
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed", DEBUG, Refusal, allow_post: true;
    BodyTooLarge => PAYLOAD_TOO_LARGE, "body_too_large", DEBUG, Refusal, allow_post: false;
    BodyTimeout => REQUEST_TIMEOUT, "body_timeout", DEBUG, Refusal, allow_post: false;
    BodyStalled => REQUEST_TIMEOUT, "body_stalled", DEBUG, Refusal, allow_post: false;
    BodyReadFailed => BAD_REQUEST, "body_read_failed", DEBUG, Refusal, allow_post: false;
    Overloaded => SERVICE_UNAVAILABLE, "overloaded", DEBUG, Refusal, allow_post: false;
    UnknownAccount => NOT_FOUND, "unknown_account", DEBUG, Refusal, allow_post: false;
    /// The receiver's own fault, whoever asked: the operator must hear of it.
    SecretsUnavailable => SERVICE_UNAVAILABLE, "secrets_unavailable", WARN, Refusal,
        allow_post: false;
    SignatureMissing => UNAUTHORIZED, "signature_missing", DEBUG, Refusal, allow_post: false;
    SignatureDuplicated => UNAUTHORIZED, "signature_duplicated", DEBUG, Refusal, allow_post: false;
    SignatureMalformed => UNAUTHORIZED, "signature_malformed", DEBUG, Refusal, allow_post: false;
    SignatureMismatch => UNAUTHORIZED, "signature_mismatch", DEBUG, Refusal, allow_post: false;
    NotAnEvent => BAD_REQUEST, "not_an_event", WARN, Refusal, allow_post: false;
    CreatedAtMissing => BAD_REQUEST, "created_at_missing", WARN, Refusal, allow_post: false;
    ReplayTooOld => BAD_REQUEST, "replay_too_old", WARN, Refusal, allow_post: false;
    ReplayInFuture => BAD_REQUEST, "replay_in_future", WARN, Refusal, allow_post: false;
    PayloadMismatch => BAD_REQUEST, "payload_mismatch", WARN, Refusal, allow_post: false;
}

/// The `outcome` code of every rejection; its [`reason`](Outcome::reason)
/// is its row's code.
pub(crate) const REJECTED: &str = "rejected";

impl Line {
    pub(crate) const fn status(self) -> StatusCode {
        self.facts().0
    }

    /// The row's code, in logs and metrics.
    pub(crate) const fn code(self) -> &'static str {
        self.facts().1
    }

    pub(crate) const fn level(self) -> Level {
        self.facts().2
    }

    const fn text(self) -> Text {
        self.facts().3
    }

    const fn allow_post(self) -> bool {
        self.facts().4
    }
}

impl Outcome {
    /// What a dispatch to the handlers answers: one mapping for inline
    /// mode, the worker and handlers inside a Postgres transaction.
    pub(crate) fn of(dispatched: &Dispatched, acknowledge_mismatched: bool) -> Self {
        match dispatched {
            Dispatched::Handled => Outcome::Handled,
            Dispatched::Mismatched => Outcome::Mismatched {
                acknowledged: acknowledge_mismatched,
            },
            Dispatched::Failed(_) => Outcome::HandlerFailed,
            Dispatched::Panicked(_) => Outcome::HandlerPanicked,
        }
    }

    /// This outcome's row of the status table.
    pub(crate) fn line(&self) -> Line {
        match self {
            Outcome::Handled => Line::Handled,
            Outcome::Duplicate => Line::Duplicate,
            Outcome::InFlight => Line::InFlight,
            Outcome::Mismatched { acknowledged: true } => Line::MismatchedAcknowledged,
            Outcome::Mismatched {
                acknowledged: false,
            } => Line::Mismatched,
            Outcome::HandlerFailed => Line::HandlerFailed,
            Outcome::HandlerPanicked => Line::HandlerPanicked,
            Outcome::StoreUnavailable => Line::StoreUnavailable,
            Outcome::Enqueued => Line::Enqueued,
            Outcome::QueueUnavailable => Line::QueueUnavailable,
            Outcome::Rejected(rejection) => rejection.line(),
        }
    }

    /// Counts this delivery's end in the metrics; `event_type` is `None`
    /// before the signature verified.
    pub(crate) fn count(&self, event_type: Option<Option<crate::event::EventType>>) {
        match self {
            Outcome::Rejected(rejection) => rejection.count(),
            other => {
                crate::metrics::delivery(other.line() as usize, other.kind(), None, event_type);
            }
        }
    }

    /// Records how long a handler ran, ending in this outcome.
    pub(crate) fn time_handler(
        &self,
        event_type: Option<crate::event::EventType>,
        elapsed: Duration,
    ) {
        crate::metrics::handler(self.line() as usize, self.kind(), event_type, elapsed);
    }

    /// The status LTVboost gets.
    pub fn status(&self) -> StatusCode {
        self.line().status()
    }

    /// The stable code of this outcome, for logs and metrics: `rejected` for
    /// every rejection (its [`reason`](Self::reason) says which).
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Rejected(_) => REJECTED,
            other => other.line().code(),
        }
    }

    /// Why a delivery was rejected, as a stable code; `None` for the other
    /// outcomes.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Outcome::Rejected(rejection) => Some(rejection.reason()),
            _ => None,
        }
    }

    /// The text answered: empty for a delivery taken in (the status is the
    /// whole answer), one line naming the reason otherwise. Never a secret,
    /// an expected signature, or a value from the body.
    pub fn text(&self) -> Cow<'static, str> {
        match (self.line().text(), self) {
            (Fixed(text), _) => Cow::Borrowed(text),
            (Refusal, Outcome::Rejected(rejection)) => Cow::Owned(refusal_text(rejection)),
            // Every row with a refusal's text is a rejection's.
            (Refusal, _) => Cow::Borrowed(""),
        }
    }

    /// Whether the sender counts this answer as delivered (a `2xx`).
    pub fn is_success(&self) -> bool {
        self.status().is_success()
    }

    /// The answer as an HTTP response whose body is any type made from
    /// [`Bytes`]: axum's `Body`, `http_body_util::Full<Bytes>`, ….
    ///
    /// ```
    /// use ltvboost_webhooks::Outcome;
    ///
    /// let response = Outcome::InFlight.into_response::<http_body_util::Full<bytes::Bytes>>();
    /// assert_eq!(response.status(), 409);
    /// ```
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let line = self.line();
        let (status, allow_post) = (line.status(), line.allow_post());
        let text = match self.text() {
            Cow::Borrowed(text) => Bytes::from_static(text.as_bytes()),
            Cow::Owned(text) => Bytes::from(text),
        };
        let empty = text.is_empty();
        let mut response = Response::new(B::from(text));
        *response.status_mut() = status;
        if !empty {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        if allow_post {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// A refusal's answer text: its own words, one line. The parser's detail
/// is logged, not echoed.
fn refusal_text(rejection: &Rejection) -> String {
    match rejection {
        Rejection::Envelope(_) => "body is not a JSON event envelope\n".to_owned(),
        Rejection::Payload(e) => format!("event data does not fit {}\n", e.event_type),
        other => format!("{other}\n"),
    }
}

/// A request refused before any handler ran.
///
/// Each variant maps to one row of the receiver's status table
/// ([`status`](Self::status)), and answers with short plain text naming the
/// reason — never a secret, never the expected signature.
///
/// With the `axum` feature it implements `IntoResponse`, so it is the
/// rejection of the [`VerifiedEvent`](super::extract::VerifiedEvent) extractor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The webhook path takes only `POST`. Answers `405`.
    #[error("method not allowed: webhooks are delivered with POST")]
    MethodNotAllowed,
    /// The body was larger than the limit, by `Content-Length` or while
    /// streaming. Answers `413`.
    #[error("payload too large: the limit is {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The body was not fully received within the read deadline. Answers `408`.
    #[error("body not received within {}s", .deadline.as_secs_f64())]
    BodyTimeout {
        /// The configured deadline.
        deadline: Duration,
    },
    /// The body stopped arriving: no byte within the stall timeout, or an
    /// average rate below the floor (see
    /// [`WebhookConfig::body_stall_timeout`](crate::WebhookConfig::body_stall_timeout)).
    /// Answers `408`.
    #[error("body arrived too slowly")]
    BodyStalled,
    /// The body could not be read (the connection broke). Answers `400`.
    #[error("request body could not be read")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Too many body bytes are held unverified already (see
    /// [`WebhookConfig::body_budget`](crate::WebhookConfig::body_budget)).
    /// Answers `503`: the sender retries later.
    #[error("receiver busy: try again later")]
    Overloaded,
    /// The receiver's [`SecretSource`](crate::secrets::SecretSource) knows
    /// no account for this request. Answers `404`; the body is not read.
    #[error("no such webhook endpoint")]
    UnknownAccount,
    /// The receiver's [`SecretSource`](crate::secrets::SecretSource)
    /// failed. Answers `503`, so the sender retries; the body is not read.
    #[error("receiver cannot verify deliveries right now: try again later")]
    SecretsUnavailable(#[source] crate::secrets::LookupError),
    /// The signature header was missing, malformed or did not match. Answers `401`.
    #[error("invalid signature: {0}")]
    Signature(#[from] SignatureError),
    /// The signature matched but the body is not a JSON event envelope.
    /// Answers `400`.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// The event has no readable `created_at`, and the receiver requires one
    /// (`WebhookConfig::require_created_at`). Answers `400`.
    #[error("event has no readable created_at")]
    CreatedAtMissing,
    /// The event's signed `created_at` is outside the replay window. Answers `400`.
    #[error("{0}")]
    Replay(#[from] ReplayError),
    /// The event's `data` does not fit its type's payload. Answers `400`.
    #[error("{0}")]
    Payload(#[from] PayloadError),
}

impl Rejection {
    /// The status this rejection answers with (its row of the status
    /// table).
    pub fn status(&self) -> StatusCode {
        self.line().status()
    }

    /// Counts this refusal in the metrics (no event type: nothing of a
    /// refused request is trusted).
    pub(crate) fn count(&self) {
        let line = self.line();
        crate::metrics::delivery(line as usize, REJECTED, Some(line.code()), None);
    }

    /// This rejection's row of the status table.
    pub(crate) fn line(&self) -> Line {
        match self {
            Rejection::MethodNotAllowed => Line::MethodNotAllowed,
            Rejection::PayloadTooLarge { .. } => Line::BodyTooLarge,
            Rejection::BodyTimeout { .. } => Line::BodyTimeout,
            Rejection::BodyStalled => Line::BodyStalled,
            Rejection::BodyRead(_) => Line::BodyReadFailed,
            Rejection::Overloaded => Line::Overloaded,
            Rejection::UnknownAccount => Line::UnknownAccount,
            Rejection::SecretsUnavailable(_) => Line::SecretsUnavailable,
            Rejection::Signature(SignatureError::Missing) => Line::SignatureMissing,
            Rejection::Signature(SignatureError::Duplicated) => Line::SignatureDuplicated,
            Rejection::Signature(SignatureError::Mismatch) => Line::SignatureMismatch,
            Rejection::Signature(_) => Line::SignatureMalformed,
            Rejection::Envelope(_) => Line::NotAnEvent,
            Rejection::CreatedAtMissing => Line::CreatedAtMissing,
            Rejection::Replay(ReplayError::TooOld { .. }) => Line::ReplayTooOld,
            Rejection::Replay(_) => Line::ReplayInFuture,
            Rejection::Payload(_) => Line::PayloadMismatch,
        }
    }

    /// The stable code of this rejection, for logs and metrics: one of
    /// `method_not_allowed`, `body_too_large`, `body_timeout`, `body_stalled`,
    /// `body_read_failed`, `overloaded`, `unknown_account`,
    /// `secrets_unavailable`, `signature_missing`, `signature_duplicated`,
    /// `signature_malformed`, `signature_mismatch`, `not_an_event`,
    /// `created_at_missing`,
    /// `replay_too_old`, `replay_in_future`, `payload_mismatch`.
    pub fn reason(&self) -> &'static str {
        self.line().code()
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Rejection {
    fn into_response(self) -> axum_core::response::Response {
        Outcome::Rejected(self).into_response()
    }
}

impl From<Rejection> for Outcome {
    fn from(rejection: Rejection) -> Self {
        Outcome::Rejected(rejection)
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Outcome {
    fn into_response(self) -> axum_core::response::Response {
        Outcome::into_response(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::replay::ReplayError;
    use crate::signature::SignatureError;

    /// One outcome of every kind and every rejection reason. The matches
    /// below have no wildcard: a new variant does not compile until it is
    /// listed here, and then the README table must have its row.
    fn every_outcome() -> Vec<Outcome> {
        let envelope = crate::event::Envelope::from_slice(b"[]").map_err(Rejection::from);
        let payload = crate::event::Envelope::from_slice(br#"{"type":"action.sent","data":7}"#)
            .ok()
            .and_then(|e| e.event().err())
            .map(Rejection::from);
        let rejections = [
            Some(Rejection::MethodNotAllowed),
            Some(Rejection::PayloadTooLarge { limit: 1 }),
            Some(Rejection::BodyTimeout {
                deadline: Duration::from_secs(1),
            }),
            Some(Rejection::BodyStalled),
            Some(Rejection::BodyRead("reset".into())),
            Some(Rejection::Overloaded),
            Some(Rejection::UnknownAccount),
            Some(Rejection::SecretsUnavailable(
                crate::secrets::LookupError::new("down"),
            )),
            Some(Rejection::Signature(SignatureError::Missing)),
            Some(Rejection::Signature(SignatureError::Duplicated)),
            Some(Rejection::Signature(SignatureError::Empty)),
            Some(Rejection::Signature(SignatureError::UnsupportedScheme)),
            Some(Rejection::Signature(SignatureError::WrongLength)),
            Some(Rejection::Signature(SignatureError::NotHex)),
            Some(Rejection::Signature(SignatureError::Mismatch)),
            envelope.err(),
            Some(Rejection::CreatedAtMissing),
            Some(Rejection::Replay(ReplayError::TooOld {
                age: Duration::from_secs(2),
                window: Duration::from_secs(1),
            })),
            Some(Rejection::Replay(ReplayError::InFuture {
                ahead: Duration::from_secs(2),
                window: Duration::from_secs(1),
            })),
            payload,
        ];
        let mut all = vec![
            Outcome::Handled,
            Outcome::Duplicate,
            Outcome::InFlight,
            Outcome::Mismatched {
                acknowledged: false,
            },
            Outcome::Mismatched { acknowledged: true },
            Outcome::HandlerFailed,
            Outcome::HandlerPanicked,
            Outcome::StoreUnavailable,
            Outcome::Enqueued,
            Outcome::QueueUnavailable,
        ];
        for rejection in rejections {
            all.push(Outcome::Rejected(
                rejection.expect("every rejection is built"),
            ));
        }
        for outcome in &all {
            match outcome {
                Outcome::Handled
                | Outcome::Duplicate
                | Outcome::InFlight
                | Outcome::Mismatched { .. }
                | Outcome::HandlerFailed
                | Outcome::HandlerPanicked
                | Outcome::StoreUnavailable
                | Outcome::Enqueued
                | Outcome::QueueUnavailable => {}
                Outcome::Rejected(rejection) => match rejection {
                    Rejection::MethodNotAllowed
                    | Rejection::PayloadTooLarge { .. }
                    | Rejection::BodyTimeout { .. }
                    | Rejection::BodyStalled
                    | Rejection::BodyRead(_)
                    | Rejection::Overloaded
                    | Rejection::UnknownAccount
                    | Rejection::SecretsUnavailable(_)
                    | Rejection::Signature(_)
                    | Rejection::Envelope(_)
                    | Rejection::CreatedAtMissing
                    | Rejection::Replay(_)
                    | Rejection::Payload(_) => {}
                },
            }
        }
        all
    }

    /// The README's status table: code → the status column's text.
    fn readme_table() -> HashMap<String, String> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## What the receiver answers")
            .nth(1)
            .expect("the README has the status table");
        let mut rows = HashMap::new();
        for line in section.lines().skip_while(|l| !l.starts_with('|')) {
            if !line.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (Some(code), Some(status)) = (cells.get(2), cells.get(3)) else {
                continue;
            };
            if let Some(code) = code.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
                rows.entry(code.to_owned())
                    .and_modify(|s: &mut String| s.push_str(status))
                    .or_insert_with(|| (*status).to_owned());
            }
        }
        rows
    }

    #[test]
    fn the_readme_table_and_outcome_agree() {
        let table = readme_table();
        let mut seen = std::collections::HashSet::new();
        for outcome in every_outcome() {
            let code = outcome.reason().unwrap_or(outcome.kind());
            let status = table
                .get(code)
                .unwrap_or_else(|| panic!("the README's table has no row for `{code}`"));
            let number = outcome.status().as_u16().to_string();
            assert!(
                status.contains(&number),
                "`{code}` answers {number}, the README says {status:?}"
            );
            seen.insert(code);
        }
        for code in table.keys() {
            assert!(
                seen.contains(code.as_str()),
                "the README's `{code}` is no outcome"
            );
        }
    }

    #[test]
    fn every_row_is_some_outcome_s_and_fits_the_metrics_handles() {
        let reached: Vec<Line> = every_outcome().iter().map(Outcome::line).collect();
        for line in Line::ALL {
            assert!(reached.contains(line), "no outcome answers {line:?}");
        }
        assert!(Line::ALL.len() <= crate::metrics::ROWS);
        // Only the two `mismatched` rows share a code: one row told apart
        // by a setting (acknowledged with 200, or refused with 400).
        for (i, a) in Line::ALL.iter().enumerate() {
            for b in &Line::ALL[i + 1..] {
                if a.code() == b.code() {
                    assert_eq!(a.code(), "mismatched", "{a:?} and {b:?}");
                }
            }
        }
    }

    #[test]
    fn codes_are_snake_case_and_texts_one_line() {
        for outcome in every_outcome() {
            for code in [Some(outcome.kind()), outcome.reason()]
                .into_iter()
                .flatten()
            {
                assert!(
                    code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{code}"
                );
            }
            let text = outcome.text();
            assert!(text.is_empty() || text.ends_with('\n') && text.matches('\n').count() == 1);
        }
    }
}
