//! Handlers that record what they were called with, and a verified
//! delivery for calling your own handlers directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::event::{
    ActionFailed, ActionQueued, ActionSent, Envelope, PayloadError, ResponseCreated,
    ResponseScored, SegmentReady, SegmentUpdated,
};
use crate::handler::{
    ActionHandler, Delivery, FallbackHandler, HandlerResult, Handlers, ResponseHandler,
    SegmentHandler,
};
use crate::signature::{Secret, Verifier, sign};

/// What a [`Recorder`] does on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Returns `Ok`.
    Succeed,
    /// Returns an error (`scripted failure`): the receiver answers `500`.
    Fail,
    /// Panics: the receiver answers `500` and keeps serving.
    Panic,
}

/// Handlers for every family that count their calls, by the event's type,
/// and can be told to fail, panic, wait or hold each call: what a test of
/// a receiver's wiring needs (is each event handled, and once?).
///
/// A call is named by the event's type (`response.created`), or
/// `unknown:<type>` and `mismatched:<type>` for the fallback's two methods.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ltvboost_webhooks::{EventType, WebhookLayer};
/// use ltvboost_webhooks::signature::{Secret, Verifier};
/// use ltvboost_webhooks::testing::{Behaviour, Recorder, fixture, signed_request};
/// use tower::{Layer, ServiceExt};
///
/// let secret = Secret::new("a-test-secret-0123456789")?;
/// let recorder = Recorder::new();
/// recorder.script(&[Behaviour::Fail]);
/// let layer = WebhookLayer::new(Verifier::new([secret.clone()])?, recorder.handlers());
/// let app = layer.layer(tower::service_fn(|_: http::Request<_>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// }));
///
/// let body = fixture(EventType::ResponseCreated).id("evt_1").to_bytes();
/// let first = app.clone().oneshot(signed_request(&secret, body.clone())).await?;
/// let retry = app.oneshot(signed_request(&secret, body)).await?;
/// assert_eq!((first.status().as_u16(), retry.status().as_u16()), (500, 200));
/// assert_eq!(recorder.calls("response.created"), 2);
/// assert_eq!(recorder.event_ids(), ["evt_1", "evt_1"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Recorder {
    calls: Mutex<HashMap<String, usize>>,
    event_ids: Mutex<Vec<String>>,
    total: AtomicUsize,
    /// What the next calls do, last first; `Succeed` once empty.
    script: Mutex<Vec<Behaviour>>,
    gate: Option<Arc<Semaphore>>,
    delay: Option<Duration>,
    mismatches: Mutex<Vec<String>>,
}

impl Recorder {
    /// A recorder whose calls succeed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A recorder whose calls each wait for a permit of `gate` before they
    /// finish: a test holds handlers in flight, then releases them.
    pub fn gated(gate: Arc<Semaphore>) -> Arc<Self> {
        Arc::new(Self {
            gate: Some(gate),
            ..Self::default()
        })
    }

    /// A recorder whose calls each take `delay`.
    pub fn delayed(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay: Some(delay),
            ..Self::default()
        })
    }

    /// What the next calls do, in order; calls past the script succeed.
    pub fn script(&self, behaviours: &[Behaviour]) {
        *lock(&self.script) = behaviours.iter().rev().copied().collect();
    }

    /// Every family routed to this recorder.
    pub fn handlers(self: &Arc<Self>) -> Handlers {
        Handlers::all(self.clone())
    }

    /// How many calls were named `name` (see the type's docs).
    pub fn calls(&self, name: &str) -> usize {
        lock(&self.calls).get(name).copied().unwrap_or(0)
    }

    /// How many calls there were, of every name.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// The ids of the events the calls were given, in call order (an event
    /// without an id is left out).
    pub fn event_ids(&self) -> Vec<String> {
        lock(&self.event_ids).clone()
    }

    /// The reasons the fallback's `mismatched` was given, in call order.
    pub fn mismatches(&self) -> Vec<String> {
        lock(&self.mismatches).clone()
    }

    async fn record(&self, name: &str, delivery: &Delivery) -> HandlerResult {
        *lock(&self.calls).entry(name.to_owned()).or_default() += 1;
        if let Some(id) = delivery.id() {
            lock(&self.event_ids).push(id.to_owned());
        }
        self.total.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            // A closed semaphore lets every call through.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let next = lock(&self.script).pop().unwrap_or(Behaviour::Succeed);
        match next {
            Behaviour::Succeed => Ok(()),
            Behaviour::Fail => Err("scripted failure".into()),
            Behaviour::Panic => panic!("scripted panic in {name}"),
        }
    }
}

/// A test's lock: a panic elsewhere (a scripted one) poisons nothing here.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ResponseHandler for Recorder {
    async fn created(&self, delivery: &Delivery, _: &ResponseCreated) -> HandlerResult {
        self.record("response.created", delivery).await
    }
    async fn scored(&self, delivery: &Delivery, _: &ResponseScored) -> HandlerResult {
        self.record("response.scored", delivery).await
    }
}

impl ActionHandler for Recorder {
    async fn queued(&self, delivery: &Delivery, _: &ActionQueued) -> HandlerResult {
        self.record("action.queued", delivery).await
    }
    async fn sent(&self, delivery: &Delivery, _: &ActionSent) -> HandlerResult {
        self.record("action.sent", delivery).await
    }
    async fn failed(&self, delivery: &Delivery, _: &ActionFailed) -> HandlerResult {
        self.record("action.failed", delivery).await
    }
}

impl SegmentHandler for Recorder {
    async fn updated(&self, delivery: &Delivery, _: &SegmentUpdated) -> HandlerResult {
        self.record("segment.updated", delivery).await
    }
    async fn ready(&self, delivery: &Delivery, _: &SegmentReady) -> HandlerResult {
        self.record("segment.ready", delivery).await
    }
}

impl FallbackHandler for Recorder {
    async fn unknown(&self, delivery: &Delivery) -> HandlerResult {
        let name = format!("unknown:{}", delivery.type_name());
        self.record(&name, delivery).await
    }
    async fn mismatched(&self, delivery: &Delivery, reason: &PayloadError) -> HandlerResult {
        lock(&self.mismatches).push(reason.to_string());
        let name = format!("mismatched:{}", delivery.type_name());
        self.record(&name, delivery).await
    }
}

/// `body` signed with `secret`, verified and parsed as the receiver does:
/// the [`Delivery`] your handler methods take, for calling them directly
/// in a unit test.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use ltvboost_webhooks::EventType;
/// use ltvboost_webhooks::event::Event;
/// use ltvboost_webhooks::signature::Secret;
/// use ltvboost_webhooks::testing::{fixture, verified_delivery};
///
/// let secret = Secret::new("a-test-secret-0123456789")?;
/// let body = fixture(EventType::ActionSent).id("evt_7").to_bytes();
/// let delivery = verified_delivery(&secret, body)?;
/// assert_eq!(delivery.id(), Some("evt_7"));
/// assert!(matches!(delivery.event()?, Event::ActionSent(_)));
/// # Ok(()) }
/// ```
pub fn verified_delivery(
    secret: &Secret,
    body: impl Into<Bytes>,
) -> Result<Delivery, Box<dyn std::error::Error + Send + Sync>> {
    let body = body.into();
    let header = sign(secret, &body);
    let verified = Verifier::new([secret.clone()])?.verify(header.as_bytes(), body)?;
    let envelope = Envelope::from_bytes(verified.body().clone())?;
    Ok(Delivery::new(envelope, &verified))
}
