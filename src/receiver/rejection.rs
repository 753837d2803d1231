//! Why a request was refused before any handler ran, and the status it gets.
//!
//! A [`Rejection`] is one row group of the status table ([`crate::Outcome`]
//! holds it as [`Outcome::Rejected`](crate::Outcome::Rejected)), and the
//! rejection of the [`VerifiedEvent`](super::extract::VerifiedEvent)
//! extractor.

use std::time::Duration;

use http::StatusCode;

use super::outcome::rejection_row;
use crate::event::{EnvelopeError, PayloadError};
use crate::replay::ReplayError;
use crate::signature::SignatureError;

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
    /// The status this rejection answers with (its row of the status table,
    /// [`Outcome::row`](crate::Outcome::row)).
    pub fn status(&self) -> StatusCode {
        rejection_row(self).status
    }

    /// The stable code of this rejection, for logs and metrics: one of
    /// `method_not_allowed`, `body_too_large`, `body_timeout`, `body_stalled`,
    /// `body_read_failed`, `overloaded`, `signature_missing`, `signature_duplicated`,
    /// `signature_malformed`, `signature_mismatch`, `not_an_event`,
    /// `created_at_missing`,
    /// `replay_too_old`, `replay_in_future`, `payload_mismatch`.
    pub fn reason(&self) -> &'static str {
        rejection_row(self).code
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Rejection {
    fn into_response(self) -> axum_core::response::Response {
        crate::Outcome::Rejected(self).into_response()
    }
}
