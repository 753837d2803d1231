//! Reading a delivery: a bounded body read under a total deadline, then the
//! signature check. Shared by the tower layer and the axum extractor.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;

use crate::event::Envelope;
use crate::handler::Delivery;
use crate::rejection::Rejection;
use crate::replay::{Clock, ReplayWindow, SystemClock};
use crate::signature::{SIGNATURE_HEADER, Signature, SignatureError, Verified, Verifier};

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default deadline for receiving the whole body: 10 seconds.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a receiver needs to accept a delivery: the active secrets, how large a
/// body may be, how long it may take to arrive, and how old its event may be.
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
#[derive(Clone)]
pub struct WebhookConfig {
    verifier: Arc<Verifier>,
    body_limit: usize,
    read_timeout: Duration,
    replay_window: ReplayWindow,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("verifier", &self.verifier)
            .field("body_limit", &self.body_limit)
            .field("read_timeout", &self.read_timeout)
            .field("replay_window", &self.replay_window)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// A configuration with the default limits: 1 MiB, 10 seconds.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            body_limit: DEFAULT_BODY_LIMIT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            replay_window: ReplayWindow::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// How far from now an event's signed `created_at` may be; outside it the
    /// delivery answers `400`. Default: 25 h into the past, 5 min into the
    /// future. [`ReplayWindow::UNBOUNDED`] turns the check off.
    pub fn replay_window(mut self, window: ReplayWindow) -> Self {
        self.replay_window = window;
        self
    }

    /// Where "now" comes from for the replay window. Default: the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The replay window in force.
    pub fn window(&self) -> ReplayWindow {
        self.replay_window
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
        let head = self.check_head(headers)?;
        self.read_verified(head, body).await
    }

    /// [`receive`](Self::receive), then parse the envelope and check the
    /// replay window: everything up to, not including, deduplication.
    pub async fn receive_delivery<B>(
        &self,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Delivery, Rejection>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let verified = self.receive(headers, body).await?;
        self.delivery(verified)
    }

    /// What can be checked before the body is read: one well-formed
    /// signature header, and a `Content-Length` within the limit. Needs no
    /// I/O, so a request that fails here costs no read and no allocation.
    pub(crate) fn check_head(&self, headers: &HeaderMap) -> Result<Head, Rejection> {
        let signature = signature_header(headers)?;
        if content_length(headers).is_some_and(|len| len > self.body_limit as u64) {
            return Err(self.too_large());
        }
        Ok(Head { signature })
    }

    /// Reads the body within the limits and verifies it against the
    /// signature [`check_head`](Self::check_head) found.
    pub(crate) async fn read_verified<B>(&self, head: Head, body: B) -> Result<Verified, Rejection>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = self.read_body(body).await?;
        Ok(self.verifier.verify_signature(head.signature, body)?)
    }

    /// Parses a verified body and checks its replay window.
    pub(crate) fn delivery(&self, verified: Verified) -> Result<Delivery, Rejection> {
        let envelope = Envelope::from_bytes(verified.body().clone())?;
        self.replay_window
            .check(envelope.created_at(), self.clock.now())?;
        Ok(Delivery::new(envelope, &verified))
    }

    fn too_large(&self) -> Rejection {
        Rejection::PayloadTooLarge {
            limit: self.body_limit,
        }
    }

    async fn read_body<B>(&self, body: B) -> Result<Bytes, Rejection>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut read = std::pin::pin!(read_limited(body, self.body_limit));
        // A small body usually arrives with the head: then it is complete at
        // the first poll, and no deadline needs arming.
        let read = match read.as_mut().now_or_never() {
            Some(read) => read,
            // Boxed: only bodies that trickle in pay for the timer's room.
            None => Box::pin(tokio::time::timeout(self.read_timeout, read))
                .await
                .map_err(|_| Rejection::BodyTimeout {
                    deadline: self.read_timeout,
                })?,
        };
        read.map_err(|e| match e {
            ReadError::TooLarge => self.too_large(),
            ReadError::Body(e) => Rejection::BodyRead(e),
        })
    }
}

enum ReadError {
    TooLarge,
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// Collects a body of at most `limit` bytes. A body that arrives as one
/// frame, as a small one usually does, is kept as it is: no copy, no list
/// of chunks.
async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| ReadError::Body(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers carry nothing that is signed
        };
        let received = first.len() + joined.as_ref().map_or(0, BytesMut::len);
        if data.remaining() > limit.saturating_sub(received) {
            return Err(ReadError::TooLarge);
        }
        let chunk = data.copy_to_bytes(data.remaining());
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&chunk),
            None if first.is_empty() => first = chunk,
            None => {
                let mut both = BytesMut::with_capacity(first.len() + chunk.len());
                both.extend_from_slice(&first);
                both.extend_from_slice(&chunk);
                first = Bytes::new();
                joined = Some(both);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// The parts of a request's head a delivery needs once its body is read.
#[derive(Debug)]
pub(crate) struct Head {
    signature: Signature,
}

impl From<Verifier> for WebhookConfig {
    fn from(verifier: Verifier) -> Self {
        Self::new(verifier)
    }
}

/// The one `x-ltvboost-signature` header, parsed.
fn signature_header(headers: &HeaderMap) -> Result<Signature, SignatureError> {
    // A `HeaderName` constant: looking up by `&str` would parse the name
    // on every request.
    const NAME: http::HeaderName = http::HeaderName::from_static(SIGNATURE_HEADER);
    let mut values = headers.get_all(NAME).iter();
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    type FrameResult = Result<Frame<Bytes>, std::io::Error>;
    type Frames = Vec<FrameResult>;
    type FrameStream = futures_util::stream::Iter<std::vec::IntoIter<FrameResult>>;

    fn body(frames: Frames) -> StreamBody<FrameStream> {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn data(text: &'static str) -> FrameResult {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    async fn read(frames: Frames, limit: usize) -> Result<Bytes, &'static str> {
        read_limited(body(frames), limit)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => "too large",
                ReadError::Body(_) => "body error",
            })
    }

    #[tokio::test]
    async fn frames_are_joined_in_order_within_the_limit() {
        assert_eq!(read(vec![], 8).await.unwrap(), "");
        assert_eq!(read(vec![data("abc")], 8).await.unwrap(), "abc");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", "1".parse().unwrap());
        let frames = vec![
            data(""),
            data("ab"),
            data(""),
            data("cd"),
            Ok(Frame::trailers(trailers)),
            data("ef"),
        ];
        assert_eq!(read(frames, 6).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn the_limit_is_exact_and_holds_across_frames() {
        assert_eq!(read(vec![data("abcdefg")], 6).await, Err("too large"));
        assert_eq!(
            read(vec![data("abc"), data("defg")], 6).await,
            Err("too large")
        );
        assert_eq!(
            read(vec![data("abc"), data("def")], 6).await.unwrap(),
            "abcdef"
        );
        assert_eq!(read(vec![data("a")], 0).await, Err("too large"));
    }

    #[tokio::test]
    async fn a_broken_body_is_an_error() {
        let broken = vec![data("ab"), Err(std::io::Error::other("reset"))];
        assert_eq!(read(broken, 8).await, Err("body error"));
    }
}
