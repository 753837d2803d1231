//! Reading a delivery: a bounded body read under a total deadline, then the
//! signature check. Shared by the tower layer and the axum extractor.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::rejection::Rejection;
use crate::signature::{SIGNATURE_HEADER, Signature, SignatureError, Verified, Verifier};

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default deadline for receiving the whole body: 10 seconds.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a receiver needs to accept a delivery: the active secrets, how large a
/// body may be, and how long it may take to arrive.
///
/// Cheap to clone. The [`WebhookLayer`](crate::WebhookLayer) holds one; the
/// axum extractor takes one from the router's state.
///
/// ```
/// use std::time::Duration;
/// use ltvboost_webhooks::WebhookConfig;
/// use ltvboost_webhooks::signature::{Secret, Verifier};
///
/// let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?)
///     .body_limit(256 * 1024)
///     .read_timeout(Duration::from_secs(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    verifier: Arc<Verifier>,
    body_limit: usize,
    read_timeout: Duration,
}

impl WebhookConfig {
    /// A configuration with the default limits: 1 MiB, 10 seconds.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            body_limit: DEFAULT_BODY_LIMIT,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }

    /// The largest body accepted, in bytes. Larger ones answer `413`, before
    /// they are read when `Content-Length` says so, and as soon as the limit
    /// is crossed when it does not.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How long the whole body may take to arrive. This is one deadline for
    /// the whole read, not a per-frame timeout, so a client that trickles a
    /// byte at a time cannot hold the request open. Past it: `408`.
    pub fn read_timeout(mut self, deadline: Duration) -> Self {
        self.read_timeout = deadline;
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Checks the signature header, reads the body within the limits, and
    /// verifies the body against it.
    ///
    /// The header is checked first: a request without a well-formed signature
    /// is refused before any of its body is read.
    pub async fn receive<B>(&self, headers: &HeaderMap, body: B) -> Result<Verified, Rejection>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let signature = signature_header(headers)?;
        let body = self.read_body(headers, body).await?;
        Ok(self.verifier.verify_signature(signature, body)?)
    }

    async fn read_body<B>(&self, headers: &HeaderMap, body: B) -> Result<Bytes, Rejection>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = Rejection::PayloadTooLarge {
            limit: self.body_limit,
        };
        if content_length(headers).is_some_and(|len| len > self.body_limit as u64) {
            return Err(too_large);
        }
        let read = Limited::new(body, self.body_limit).collect();
        match tokio::time::timeout(self.read_timeout, read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large),
            Ok(Err(e)) => Err(Rejection::BodyRead(e)),
            Err(_) => Err(Rejection::BodyTimeout {
                deadline: self.read_timeout,
            }),
        }
    }
}

impl From<Verifier> for WebhookConfig {
    fn from(verifier: Verifier) -> Self {
        Self::new(verifier)
    }
}

/// The one `x-ltvboost-signature` header, parsed.
fn signature_header(headers: &HeaderMap) -> Result<Signature, SignatureError> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let value = values.next().ok_or(SignatureError::Missing)?;
    if values.next().is_some() {
        return Err(SignatureError::Duplicated);
    }
    Signature::parse(value.as_bytes())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
