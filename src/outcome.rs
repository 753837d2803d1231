//! Every way a delivery ends: the receiver's status table, in one type.
//!
//! The pipeline (`src/pipeline.rs`) returns one [`Outcome`] per request. Its
//! [`status`](Outcome::status) and [`text`](Outcome::text) are the answer
//! LTVboost gets; its [`kind`](Outcome::kind) and [`reason`](Outcome::reason)
//! are stable snake_case codes, and the log line and the metrics use the same
//! codes, so the README's table, the logs and the dashboards agree.
//!
//! | kind | reason | status | handler called |
//! | --- | --- | --- | --- |
//! | `handled` | | `200` | once |
//! | `duplicate` | | `200` | no |
//! | `in_flight` | | `409` | no |
//! | `mismatched` | | `400` (`200` when acknowledged) | fallback |
//! | `handler_failed` | | `500` | once |
//! | `handler_panicked` | | `500` | once |
//! | `store_unavailable` | | `503` | no |
//! | `enqueued` | | `202` | later, by a worker |
//! | `queue_unavailable` | | `503` | no |
//! | `rejected` | see [`Rejection::reason`] | `401`, `405`, `408`, `413`, `400`, `503` | no |
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

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::rejection::Rejection;

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

impl Outcome {
    /// The status LTVboost gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Handled | Outcome::Duplicate => StatusCode::OK,
            Outcome::InFlight => StatusCode::CONFLICT,
            Outcome::Mismatched { acknowledged: true } => StatusCode::OK,
            Outcome::Mismatched {
                acknowledged: false,
            } => StatusCode::BAD_REQUEST,
            Outcome::HandlerFailed | Outcome::HandlerPanicked => StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::StoreUnavailable | Outcome::QueueUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Outcome::Enqueued => StatusCode::ACCEPTED,
            Outcome::Rejected(rejection) => rejection.status(),
        }
    }

    /// The stable code of this outcome, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::InFlight => "in_flight",
            Outcome::Mismatched { .. } => "mismatched",
            Outcome::HandlerFailed => "handler_failed",
            Outcome::HandlerPanicked => "handler_panicked",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::Enqueued => "enqueued",
            Outcome::QueueUnavailable => "queue_unavailable",
            Outcome::Rejected(_) => "rejected",
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

    /// The short text answered: empty for a handled delivery (the status is
    /// the whole answer), one line naming the reason otherwise. It never
    /// contains a secret, an expected signature, or a value from the body.
    pub fn text(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Outcome::Handled => "",
            Outcome::Duplicate => "duplicate: already handled\n",
            Outcome::InFlight => "event is being handled by another delivery\n",
            Outcome::Mismatched { acknowledged: true } => {
                "acknowledged: event data does not fit its type\n"
            }
            Outcome::Mismatched {
                acknowledged: false,
            } => "event data does not fit its type\n",
            Outcome::HandlerFailed => "handler failed\n",
            Outcome::HandlerPanicked => "handler panicked\n",
            Outcome::StoreUnavailable => "dedupe store unavailable\n",
            Outcome::Enqueued => "",
            Outcome::QueueUnavailable => "queue unavailable\n",
            Outcome::Rejected(rejection) => {
                return Cow::Owned(format!("{}\n", rejection.body_text()));
            }
        })
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
        let text = match self.text() {
            Cow::Borrowed(text) => Bytes::from_static(text.as_bytes()),
            Cow::Owned(text) => Bytes::from(text),
        };
        let mut response = Response::new(B::from(text));
        *response.status_mut() = self.status();
        if !matches!(self, Outcome::Handled | Outcome::Enqueued) {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        if let Outcome::Rejected(Rejection::MethodNotAllowed) = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
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
        let readme = include_str!("../README.md");
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
