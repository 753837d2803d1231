//! What your code implements: one trait per event family.
//!
//! | trait | events |
//! | --- | --- |
//! | [`ResponseHandler`] | `response.created`, `response.scored` |
//! | [`ActionHandler`] | `action.queued`, `action.sent`, `action.failed` |
//! | [`SegmentHandler`] | `segment.updated`, `segment.ready` |
//! | [`FallbackHandler`] | unknown types, and known types whose `data` does not fit |
//!
//! Every method has a default that acknowledges the event, so you implement
//! only what you use. [`Handlers`] is what a receiver routes to: register
//! one type per family you care about (`Handlers::responses(…)`,
//! `.actions(…)`, …), or one type for all four with [`Handlers::all`].
//! Events of a family nobody registered are acknowledged.
//!
//! What a method returns decides the answer to LTVboost: `Ok(())` answers
//! `200` and records the event as done, so a retry of it is not handled again;
//! `Err(_)` (or a panic) answers `500`, which makes LTVboost retry later, and
//! the next delivery runs the handler again. Make handlers idempotent where
//! you can: a process that dies after the work but before the answer leaves
//! the sender no way to know.
//!
//! Handlers reach your application's state through their own fields: a
//! database pool, an HTTP client, a channel. They are shared by every
//! delivery, so they take `&self`.
//!
//! ```
//! use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
//! use ltvboost_webhooks::event::ResponseCreated;
//!
//! /// Application state lives in the handler; here, a channel to a worker.
//! struct Responses {
//!     new_responses: tokio::sync::mpsc::Sender<String>,
//! }
//!
//! impl ResponseHandler for Responses {
//!     async fn created(&self, delivery: &Delivery, response: &ResponseCreated) -> HandlerResult {
//!         println!("{} {:?}: new response {}", delivery.type_name(), delivery.id(), response.id);
//!         // An error answers 500: LTVboost delivers this event again later.
//!         self.new_responses.send(response.id.clone()).await?;
//!         Ok(())
//!     }
//! }
//!
//! let (sender, _receiver) = tokio::sync::mpsc::channel(100);
//! // Only responses are handled; action and segment events are acknowledged.
//! let handlers = Handlers::responses(Responses { new_responses: sender });
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::signature::{KeyId, Signature, Verified};

use crate::event::{
    ActionFailed, ActionQueued, ActionSent, Envelope, Event, EventType, PayloadError, RawJson,
    ResponseCreated, ResponseScored, SegmentReady, SegmentUpdated,
};

/// What a handler method returns.
pub type HandlerResult = Result<(), HandlerError>;

/// A handler's failure. It answers `500`, so LTVboost retries the delivery.
///
/// Any error converts into it with `?`, as with `anyhow::Error`. Its text is
/// logged, never sent back to the sender.
pub struct HandlerError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl HandlerError {
    /// Wraps an error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self(error.into())
    }

    /// The wrapped error.
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.0
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One verified delivery: its envelope and which secret signed it.
///
/// Every handler method receives it beside the typed payload.
#[derive(Debug, Clone)]
pub struct Delivery {
    envelope: Envelope,
    signature: Signature,
    secret_index: usize,
    key_id: KeyId,
    account: Option<std::sync::Arc<str>>,
    dedupe_key: String,
}

impl Delivery {
    /// A delivery of `envelope`, parsed from the body that `verified` holds.
    pub fn new(envelope: Envelope, verified: &Verified) -> Self {
        let dedupe_key = crate::dedupe::event_key(envelope.id(), verified.signature());
        Self {
            envelope,
            signature: *verified.signature(),
            secret_index: verified.secret_index(),
            key_id: verified.key_id(),
            account: None,
            dedupe_key,
        }
    }

    /// The signature it was delivered with (public: it travelled in the
    /// request). The queue stores it beside the body, so that a worker
    /// verifies what it runs.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The same delivery, received for `account` (a
    /// [`SecretSource`](crate::secrets::SecretSource) with accounts found it):
    /// its dedupe key is the account's, so the same event id under two
    /// accounts is two events.
    ///
    /// ```
    /// # use ltvboost_webhooks::event::Envelope;
    /// # use ltvboost_webhooks::handler::Delivery;
    /// # use ltvboost_webhooks::signature::{sign, Secret, Verifier};
    /// # let secret = Secret::new("acme-secret-0123456789")?;
    /// # let body = br#"{"id":"evt_1","type":"segment.ready","data":{}}"#;
    /// # let verified = Verifier::new([secret.clone()])?.verify(sign(&secret, body).as_bytes(), &body[..])?;
    /// # let envelope = Envelope::from_slice(body)?;
    /// let delivery = Delivery::new(envelope, &verified).with_account("acme");
    /// assert_eq!(delivery.account(), Some("acme"));
    /// assert_eq!(delivery.dedupe_key(), "acct:4:acme:evt:evt_1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_account(mut self, account: impl Into<std::sync::Arc<str>>) -> Self {
        let account = account.into();
        self.dedupe_key = format!("acct:{}:{account}:{}", account.len(), self.dedupe_key);
        self.account = Some(account);
        self
    }

    /// The account this delivery was received for, when the receiver's
    /// [`SecretSource`](crate::secrets::SecretSource) has accounts.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The key deduplication uses (see [`crate::dedupe::event_key`]),
    /// within its account when it has one ([`Self::with_account`]).
    pub fn dedupe_key(&self) -> &str {
        &self.dedupe_key
    }

    /// The event's id, when the sender includes one.
    pub fn id(&self) -> Option<&str> {
        self.envelope.id()
    }

    /// The event type's wire name.
    pub fn type_name(&self) -> &str {
        self.envelope.type_name()
    }

    /// The typed event; [`Event::Unknown`] for a type this crate does not
    /// know, a [`PayloadError`] for a known type whose `data` does not fit.
    pub fn event(&self) -> Result<&Event, PayloadError> {
        self.envelope.event()
    }

    /// The documented event type, or `None` for an unknown one.
    pub fn event_type(&self) -> Option<EventType> {
        self.envelope.event_type()
    }

    /// `created_at` as sent.
    pub fn created_at(&self) -> Option<&str> {
        self.envelope.created_at()
    }

    /// The raw `data` JSON, found in the verified body when asked (each call
    /// reads the body again; keep the result rather than call it in a loop).
    pub fn data(&self) -> RawJson {
        self.envelope.data()
    }

    /// The whole envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Which active secret signed this delivery (an index into the list the
    /// verifier was built with).
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// Which secret signed this delivery, by its
    /// [`KeyId`]: in enqueue mode the entry
    /// carries it, so that only a worker holding that secret runs it.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

/// A handler method's future, boxed: what [`Handlers`] stores and calls.
type HandlerFuture<'a> = crate::erase::BoxFuture<'a, HandlerResult>;

macro_rules! family {
    (
        $(#[$meta:meta])*
        $trait:ident as $erased:ident {
            $( $(#[$mmeta:meta])* fn $method:ident($payload:ty); )*
        }
    ) => {
        $(#[$meta])*
        pub trait $trait: Send + Sync + 'static {
            $(
                $(#[$mmeta])*
                ///
                /// The default acknowledges the event.
                fn $method(
                    &self,
                    delivery: &Delivery,
                    payload: &$payload,
                ) -> impl Future<Output = HandlerResult> + Send {
                    let _ = (delivery, payload);
                    async { Ok(()) }
                }
            )*
        }

        /// The trait behind a pointer, so that [`Handlers`] holds any type
        /// (the crate's one pattern, see `erase.rs`).
        trait $erased: Send + Sync + 'static {
            $(
                fn $method<'a>(&'a self, delivery: &'a Delivery, payload: &'a $payload)
                    -> HandlerFuture<'a>;
            )*
        }

        impl<T: $trait> $erased for T {
            $(
                fn $method<'a>(&'a self, delivery: &'a Delivery, payload: &'a $payload)
                    -> HandlerFuture<'a>
                {
                    Box::pin($trait::$method(self, delivery, payload))
                }
            )*
        }

        impl<T: $trait> $trait for Arc<T> {
            $(
                fn $method(
                    &self,
                    delivery: &Delivery,
                    payload: &$payload,
                ) -> impl Future<Output = HandlerResult> + Send {
                    (**self).$method(delivery, payload)
                }
            )*
        }
    };
}

family! {
    /// Handles `response.*` events.
    ResponseHandler as ErasedResponseHandler {
        /// `response.created`: a new quiz response was received.
        fn created(ResponseCreated);
        /// `response.scored`: a response was scored and its outcome determined.
        fn scored(ResponseScored);
    }
}

family! {
    /// Handles `action.*` events.
    ActionHandler as ErasedActionHandler {
        /// `action.queued`: an action was added to the processing queue.
        fn queued(ActionQueued);
        /// `action.sent`: an action was executed successfully.
        fn sent(ActionSent);
        /// `action.failed`: an action failed to execute.
        fn failed(ActionFailed);
    }
}

family! {
    /// Handles `segment.*` events.
    SegmentHandler as ErasedSegmentHandler {
        /// `segment.updated`: a segment's membership changed.
        fn updated(SegmentUpdated);
        /// `segment.ready`: a segment's calculation completed.
        fn ready(SegmentReady);
    }
}

/// Handles what the typed traits cannot: event types this crate does not know,
/// and known types whose `data` does not fit the payload struct.
pub trait FallbackHandler: Send + Sync + 'static {
    /// An event type this crate does not know (LTVboost added one). Its raw
    /// `data` is in [`Delivery::data`].
    ///
    /// The default acknowledges it (`200`), so a new event type never causes
    /// a retry storm.
    fn unknown(&self, delivery: &Delivery) -> impl Future<Output = HandlerResult> + Send {
        let _ = delivery;
        async { Ok(()) }
    }

    /// A known type whose `data` did not decode (it is not an object, or it
    /// has no usable identifier), with the reason. The receiver answers
    /// `400` after this returns `Ok` (unless configured to acknowledge such
    /// events), and `500` if it returns `Err`.
    ///
    /// The default returns `Ok`; the receiver logs the reason.
    fn mismatched(
        &self,
        delivery: &Delivery,
        reason: &PayloadError,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (delivery, reason);
        async { Ok(()) }
    }
}

/// [`FallbackHandler`] behind a pointer.
trait ErasedFallbackHandler: Send + Sync + 'static {
    fn unknown<'a>(&'a self, delivery: &'a Delivery) -> HandlerFuture<'a>;
    fn mismatched<'a>(
        &'a self,
        delivery: &'a Delivery,
        reason: &'a PayloadError,
    ) -> HandlerFuture<'a>;
}

impl<T: FallbackHandler> ErasedFallbackHandler for T {
    fn unknown<'a>(&'a self, delivery: &'a Delivery) -> HandlerFuture<'a> {
        Box::pin(FallbackHandler::unknown(self, delivery))
    }
    fn mismatched<'a>(
        &'a self,
        delivery: &'a Delivery,
        reason: &'a PayloadError,
    ) -> HandlerFuture<'a> {
        Box::pin(FallbackHandler::mismatched(self, delivery, reason))
    }
}

impl<T: FallbackHandler> FallbackHandler for Arc<T> {
    fn unknown(&self, delivery: &Delivery) -> impl Future<Output = HandlerResult> + Send {
        (**self).unknown(delivery)
    }
    fn mismatched(
        &self,
        delivery: &Delivery,
        reason: &PayloadError,
    ) -> impl Future<Output = HandlerResult> + Send {
        (**self).mismatched(delivery, reason)
    }
}

/// What a receiver routes events to: at most one handler per family.
///
/// Built from at least one handler, so a receiver cannot be built with none
/// (which would acknowledge every event and lose them all). A family nobody
/// registered is acknowledged with `200`: registering only
/// [`responses`](Self::responses) says "I do not care about actions and
/// segments". Cheap to clone (the handlers are shared).
///
/// ```
/// use ltvboost_webhooks::handler::{
///     ActionHandler, FallbackHandler, Handlers, ResponseHandler, SegmentHandler,
/// };
///
/// struct Responses;
/// impl ResponseHandler for Responses {}
/// struct Everything;
/// impl ResponseHandler for Everything {}
/// impl ActionHandler for Everything {}
/// impl SegmentHandler for Everything {}
/// impl FallbackHandler for Everything {}
///
/// let one_family = Handlers::responses(Responses);
/// let every_family = Handlers::all(Everything);
/// ```
#[derive(Clone)]
pub struct Handlers {
    responses: Option<Arc<dyn ErasedResponseHandler>>,
    actions: Option<Arc<dyn ErasedActionHandler>>,
    segments: Option<Arc<dyn ErasedSegmentHandler>>,
    fallback: Option<Arc<dyn ErasedFallbackHandler>>,
    any: Option<AnyHandler>,
}

/// One function for every event: see [`Handlers::any`].
type AnyHandler = Arc<dyn Fn(Delivery) -> HandlerFuture<'static> + Send + Sync>;

impl Handlers {
    const NONE: Self = Self {
        responses: None,
        actions: None,
        segments: None,
        fallback: None,
        any: None,
    };

    /// One function for every event, known, unknown or mismatched: it gets
    /// the [`Delivery`] and matches on [`Delivery::event`] itself. Its
    /// result is the delivery's, as a typed handler's would be; for an event
    /// whose `data` does not fit, `Ok` counts as the fallback's `mismatched`
    /// returning `Ok`.
    ///
    /// ```
    /// use ltvboost_webhooks::Event;
    /// use ltvboost_webhooks::handler::{Delivery, Handlers};
    ///
    /// let handlers = Handlers::any(|delivery: Delivery| async move {
    ///     match delivery.event() {
    ///         Ok(Event::ResponseCreated(response)) => println!("response {}", response.id),
    ///         Ok(other) => println!("{} acknowledged", delivery.type_name()),
    ///         Err(mismatch) => println!("{mismatch}"),
    ///     }
    ///     Ok(())
    /// });
    /// ```
    pub fn any<F, Fut>(handler: F) -> Self
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let any: AnyHandler = Arc::new(move |delivery| Box::pin(handler(delivery)));
        Self {
            any: Some(any),
            ..Self::NONE
        }
    }

    /// One type for all four families.
    pub fn all<H>(handler: H) -> Self
    where
        H: ResponseHandler + ActionHandler + SegmentHandler + FallbackHandler,
    {
        let shared = Arc::new(handler);
        Self {
            responses: Some(shared.clone()),
            actions: Some(shared.clone()),
            segments: Some(shared.clone()),
            fallback: Some(shared),
            any: None,
        }
    }

    /// Handlers with `response.*` events going to `handler`.
    pub fn responses(handler: impl ResponseHandler) -> Self {
        Self::NONE.and_responses(handler)
    }

    /// Handlers with `action.*` events going to `handler`.
    pub fn actions(handler: impl ActionHandler) -> Self {
        Self::NONE.and_actions(handler)
    }

    /// Handlers with `segment.*` events going to `handler`.
    pub fn segments(handler: impl SegmentHandler) -> Self {
        Self::NONE.and_segments(handler)
    }

    /// Handlers with unknown and mismatched events going to `handler`.
    pub fn fallback(handler: impl FallbackHandler) -> Self {
        Self::NONE.and_fallback(handler)
    }

    /// Adds (or replaces) the `response.*` handler.
    pub fn and_responses(mut self, handler: impl ResponseHandler) -> Self {
        self.responses = Some(Arc::new(handler));
        self
    }

    /// Adds (or replaces) the `action.*` handler.
    pub fn and_actions(mut self, handler: impl ActionHandler) -> Self {
        self.actions = Some(Arc::new(handler));
        self
    }

    /// Adds (or replaces) the `segment.*` handler.
    pub fn and_segments(mut self, handler: impl SegmentHandler) -> Self {
        self.segments = Some(Arc::new(handler));
        self
    }

    /// Adds (or replaces) the fallback for unknown and mismatched events.
    pub fn and_fallback(mut self, handler: impl FallbackHandler) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// Calls the handler `delivery`'s event is for (the payload decoded,
    /// the method its type names), guarded: one place for inline mode and
    /// the worker.
    pub(crate) async fn dispatch(
        &self,
        delivery: &Delivery,
        deadline: Option<Duration>,
    ) -> Dispatched {
        guarded(deadline, self.call(delivery)).await
    }

    async fn call(&self, delivery: &Delivery) -> Dispatched {
        if let Some(any) = &self.any {
            let fits = delivery.envelope.event().is_ok();
            return Dispatched::of(any(delivery.clone()).await, fits);
        }
        let event = match delivery.envelope.event() {
            Ok(event) => event,
            Err(reason) => {
                tracing::warn!(%reason, "event data does not fit its type");
                let result = match &self.fallback {
                    Some(fallback) => fallback.mismatched(delivery, &reason).await,
                    None => Ok(()),
                };
                return Dispatched::of(result, false);
            }
        };
        let acknowledged = || -> HandlerFuture<'_> { Box::pin(async { Ok(()) }) };
        let result = match event {
            Event::ResponseCreated(p) => self.responses.as_ref().map(|h| h.created(delivery, p)),
            Event::ResponseScored(p) => self.responses.as_ref().map(|h| h.scored(delivery, p)),
            Event::ActionQueued(p) => self.actions.as_ref().map(|h| h.queued(delivery, p)),
            Event::ActionSent(p) => self.actions.as_ref().map(|h| h.sent(delivery, p)),
            Event::ActionFailed(p) => self.actions.as_ref().map(|h| h.failed(delivery, p)),
            Event::SegmentUpdated(p) => self.segments.as_ref().map(|h| h.updated(delivery, p)),
            Event::SegmentReady(p) => self.segments.as_ref().map(|h| h.ready(delivery, p)),
            Event::Unknown { .. } => self.fallback.as_ref().map(|h| h.unknown(delivery)),
        };
        match result.unwrap_or_else(acknowledged).await {
            Ok(()) => Dispatched::Handled,
            Err(e) => Dispatched::Failed(e),
        }
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("responses", &self.responses.is_some())
            .field("actions", &self.actions.is_some())
            .field("segments", &self.segments.is_some())
            .field("fallback", &self.fallback.is_some())
            .field("any", &self.any.is_some())
            .finish()
    }
}

/// How a delivery ended in the handlers.
#[derive(Debug)]
pub(crate) enum Dispatched {
    /// A typed handler or the unknown-type fallback returned `Ok`.
    Handled,
    /// The payload did not fit; the fallback returned `Ok`.
    Mismatched,
    /// A handler returned `Err`.
    Failed(HandlerError),
    /// A handler panicked, with this message.
    Panicked(String),
}

impl Dispatched {
    /// What a handler's `result` comes to, for an event whose data `fits`
    /// its type or not.
    pub(crate) fn of(result: HandlerResult, fits: bool) -> Self {
        match result {
            Ok(()) if fits => Dispatched::Handled,
            Ok(()) => Dispatched::Mismatched,
            Err(e) => Dispatched::Failed(e),
        }
    }

    /// Logs a failure or a panic at `error`, saying the sender will retry.
    pub(crate) fn log_failure(&self) {
        match self {
            Dispatched::Failed(error) => {
                tracing::error!(%error, "webhook handler failed; the sender will retry");
            }
            Dispatched::Panicked(panic) => {
                tracing::error!(panic, "webhook handler panicked; the sender will retry");
            }
            Dispatched::Handled | Dispatched::Mismatched => {}
        }
    }

    /// The text of a failure or a panic, as a dead letter or the inbox keeps
    /// it.
    #[cfg_attr(not(any(feature = "queue", feature = "postgres")), allow(dead_code))]
    pub(crate) fn failure(&self) -> Option<String> {
        match self {
            Dispatched::Failed(error) => Some(error.to_string()),
            Dispatched::Panicked(panic) => Some(format!("handler panicked: {panic}")),
            Dispatched::Handled | Dispatched::Mismatched => None,
        }
    }
}

/// How long one handler call may run by default before it is dropped and
/// counts as a failure: a hung handler ends, and is retried. The receiver's
/// [`WebhookConfig::handler_timeout`](crate::WebhookConfig::handler_timeout)
/// and the worker's `handler_timeout` (feature `queue`) both start here.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(ltvboost_webhooks::handler::DEFAULT_HANDLER_TIMEOUT, Duration::from_secs(600));
/// ```
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A handler call with its panics caught and, with a `deadline`, dropped
/// once past it as a failure: inline, in a worker and in a Postgres
/// transaction alike.
pub(crate) async fn guarded(
    deadline: Option<Duration>,
    call: impl Future<Output = Dispatched>,
) -> Dispatched {
    use futures_util::FutureExt;
    let caught = std::panic::AssertUnwindSafe(call).catch_unwind();
    let caught = match deadline {
        None => caught.await,
        Some(deadline) => match tokio::time::timeout(deadline, caught).await {
            Ok(caught) => caught,
            Err(_) => {
                let error = format!("the handler did not finish within {deadline:?}");
                return Dispatched::Failed(error.into());
            }
        },
    };
    caught.unwrap_or_else(|panic| Dispatched::Panicked(panic_message(&*panic).to_owned()))
}

/// The text a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
