//! Why a request was refused before any handler ran, and the status it gets.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::Full;

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
/// rejection of the [`VerifiedEvent`](crate::extract::VerifiedEvent) extractor.
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
    /// The body could not be read (the connection broke). Answers `400`.
    #[error("request body could not be read")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The signature header was missing, malformed or did not match. Answers `401`.
    #[error("invalid signature: {0}")]
    Signature(#[from] SignatureError),
    /// The signature matched but the body is not a JSON event envelope.
    /// Answers `400`.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// The event's signed `created_at` is outside the replay window. Answers `400`.
    #[error("{0}")]
    Replay(#[from] ReplayError),
    /// The event's `data` does not fit its type's payload. Answers `400`.
    #[error("{0}")]
    Payload(#[from] PayloadError),
}

impl Rejection {
    /// The status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Rejection::Signature(_) => StatusCode::UNAUTHORIZED,
            Rejection::BodyRead(_)
            | Rejection::Envelope(_)
            | Rejection::Replay(_)
            | Rejection::Payload(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The text sent back: short, and free of anything the sender did not
    /// already know.
    pub fn body_text(&self) -> String {
        match self {
            // The parser's detail is logged, not echoed.
            Rejection::Envelope(_) => "body is not a JSON event envelope".to_owned(),
            Rejection::Payload(e) => format!("event data does not fit {}", e.event_type),
            other => other.to_string(),
        }
    }

    /// The rejection as a plain-text HTTP response.
    pub fn to_response(&self) -> http::Response<Full<Bytes>> {
        let mut response = plain_text(self.status(), format!("{}\n", self.body_text()));
        if let Rejection::MethodNotAllowed = self {
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        }
        response
    }
}

/// A short plain-text response. Fixed texts are sent without copying.
pub(crate) fn plain_text(
    status: StatusCode,
    text: impl Into<Cow<'static, str>>,
) -> http::Response<Full<Bytes>> {
    let body = match text.into() {
        Cow::Borrowed(text) => Bytes::from_static(text.as_bytes()),
        Cow::Owned(text) => Bytes::from(text),
    };
    // Room for content-type and one more (`allow`): the default map's
    // first insert reserves room for six headers.
    let mut headers = http::HeaderMap::with_capacity(2);
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let mut response = http::Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Rejection {
    fn into_response(self) -> axum_core::response::Response {
        self.to_response().map(axum_core::body::Body::new)
    }
}
