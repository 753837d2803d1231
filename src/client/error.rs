use http::StatusCode;

/// Why a request to the registration API failed.
///
/// No variant carries the API token: its `Display` and `Debug` are safe to
/// log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request was refused before it was sent.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The client could not be configured (a missing environment variable,
    /// a TLS back-end that failed to start).
    #[error("client configuration: {0}")]
    Config(String),
    /// The request did not complete in time (after any retries).
    #[error("request timed out")]
    Timeout,
    /// The request could not be sent or its answer not read (DNS,
    /// connection refused, TLS, a connection that broke).
    #[error("transport error: {}", crate::error_text::with_causes(.0))]
    Transport(#[source] reqwest::Error),
    /// The API answered with a non-success status.
    #[error("{}", describe_api_error(*.status, .code.as_deref(), .message.as_deref(), .request_id.as_deref()))]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The API's error code, when its body had one.
        code: Option<String>,
        /// The API's message, when its body had one.
        message: Option<String>,
        /// The raw body, kept when it could not be parsed (at most 4 KiB).
        body: Option<String>,
        /// The API's request id (`x-request-id` or `request-id`), for its
        /// support.
        request_id: Option<String>,
    },
    /// A request body could not be serialised.
    #[error("could not encode the request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The API answered a listing with a `next` URL on another origin: the
    /// client does not send its token there.
    #[error("the API's next page is on another origin: {0}")]
    ForeignPage(String),
    /// The API answered with a success status, but the body was not what the
    /// client expected.
    #[error("could not decode the API's answer ({status}): {source}")]
    Decode {
        /// The HTTP status.
        status: StatusCode,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status, for API and decode errors.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn describe_api_error(
    status: StatusCode,
    code: Option<&str>,
    message: Option<&str>,
    request_id: Option<&str>,
) -> String {
    let mut text = format!("LTVboost API answered {status}");
    match (code, message) {
        (Some(code), Some(message)) => text.push_str(&format!(": {code}: {message}")),
        (Some(one), None) | (None, Some(one)) => text.push_str(&format!(": {one}")),
        (None, None) => {}
    }
    if let Some(id) = request_id {
        text.push_str(&format!(" (request id {id})"));
    }
    text
}

/// A request refused before it was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The endpoint URL did not parse as an absolute URL.
    #[error("{0:?} is not an absolute URL")]
    NotAbsolute(String),
    /// The endpoint URL is not `https` (plain `http` is allowed only for
    /// loopback hosts, for local development).
    #[error("{0:?} must use https (http only for localhost, 127.0.0.0/8 or [::1])")]
    NotHttps(String),
    /// The event list was empty.
    #[error("the event list is empty: subscribe to at least one event type")]
    NoEvents,
    /// The secret is not text, which the registration API needs.
    #[error("the webhook secret is not UTF-8 text")]
    SecretNotText,
    /// An endpoint id was empty.
    #[error("the endpoint id is empty")]
    EmptyId,
    /// An endpoint id could not be one path segment: `.`, `..`, or text
    /// with `/`, `?`, `#`, `%`, whitespace or a control character.
    #[error("{0:?} is not an endpoint id")]
    BadId(String),
    /// An event name was empty, or held anything but printable ASCII.
    #[error("{0:?} is not an event name")]
    BadEventName(String),
}
