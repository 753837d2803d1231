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
//! only what you use; a type that implements all four traits is a
//! [`Handlers`] and can be given to [`WebhookLayer::handler`].
//!
//! What a method returns decides the answer to LTVboost: `Ok(())` answers
//! `200` and records the event as done, so a retry of it is not handled again;
//! `Err(_)` (or a panic) answers `500`, which makes LTVboost retry later, and
//! the next delivery runs the handler again. Make handlers idempotent where
//! you can: a process that dies after the work but before the answer leaves
//! the sender no way to know.
//!
//! ```
//! use ltvboost_webhooks::handler::{
//!     ActionHandler, Delivery, FallbackHandler, HandlerResult, ResponseHandler, SegmentHandler,
//! };
//! use ltvboost_webhooks::event::{ActionFailed, ResponseCreated};
//!
//! struct MyHandlers;
//!
//! impl ResponseHandler for MyHandlers {
//!     async fn created(&self, delivery: &Delivery, response: &ResponseCreated) -> HandlerResult {
//!         println!("{} {:?}: new response {}", delivery.type_name(), delivery.id(), response.id);
//!         Ok(())
//!     }
//! }
//!
//! impl ActionHandler for MyHandlers {
//!     async fn failed(&self, _: &Delivery, action: &ActionFailed) -> HandlerResult {
//!         // An error answers 500: LTVboost delivers this event again later.
//!         Err(format!("could not record failure of {}", action.id).into())
//!     }
//! }
//!
//! impl SegmentHandler for MyHandlers {} // acknowledge every segment event
//! impl FallbackHandler for MyHandlers {} // acknowledge unknown types
//!
//! let layer = ltvboost_webhooks::WebhookLayer::new(
//!     ltvboost_webhooks::signature::Verifier::new([
//!         ltvboost_webhooks::signature::Secret::new("a-development-secret-0123")?,
//!     ])?,
//! )
//! .handler(MyHandlers);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`WebhookLayer::handler`]: crate::WebhookLayer::handler

use std::fmt;
use std::future::Future;

use crate::signature::Verified;

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
    secret_index: usize,
    dedupe_key: String,
}

impl Delivery {
    /// A delivery of `envelope`, parsed from the body that `verified` holds.
    pub fn new(envelope: Envelope, verified: &Verified) -> Self {
        // Built by hand: this runs for every delivery, and the formatting
        // machinery costs more than the copy.
        let dedupe_key = match envelope.id() {
            Some(id) => ["evt:", id].concat(),
            // Without an id, a retry is recognised by its identical bytes,
            // hence its identical signature.
            None => format!("sig:{}", verified.signature()),
        };
        Self {
            envelope,
            secret_index: verified.secret_index(),
            dedupe_key,
        }
    }

    /// The key deduplication uses: `evt:<id>`, or `sig:<hex signature>` for an
    /// event without an id.
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

    /// The documented event type, or `None` for an unknown one.
    pub fn event_type(&self) -> Option<EventType> {
        self.envelope.event_type()
    }

    /// `created_at` as sent.
    pub fn created_at(&self) -> Option<&str> {
        self.envelope.created_at()
    }

    /// The raw `data` JSON.
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
}

macro_rules! family {
    (
        $(#[$meta:meta])*
        $trait:ident {
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
    };
}

family! {
    /// Handles `response.*` events.
    ResponseHandler {
        /// `response.created`: a new quiz response was received.
        fn created(ResponseCreated);
        /// `response.scored`: a response was scored and its outcome determined.
        fn scored(ResponseScored);
    }
}

family! {
    /// Handles `action.*` events.
    ActionHandler {
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
    SegmentHandler {
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

    /// A known type whose `data` did not decode, with the reason. The receiver
    /// answers `400` after this returns `Ok` (unless configured to acknowledge
    /// such events), and `500` if it returns `Err`.
    ///
    /// The default logs the reason and returns `Ok`.
    fn mismatched(
        &self,
        delivery: &Delivery,
        reason: &PayloadError,
    ) -> impl Future<Output = HandlerResult> + Send {
        tracing::warn!(
            event_id = delivery.id(),
            event_type = delivery.type_name(),
            %reason,
            "event data does not fit its type"
        );
        async { Ok(()) }
    }
}

/// Everything the receiver routes to: all four traits on one type.
///
/// Implemented for every type that implements [`ResponseHandler`],
/// [`ActionHandler`], [`SegmentHandler`] and [`FallbackHandler`].
pub trait Handlers: ResponseHandler + ActionHandler + SegmentHandler + FallbackHandler {}

impl<T> Handlers for T where T: ResponseHandler + ActionHandler + SegmentHandler + FallbackHandler {}

/// Handlers that acknowledge every event and do nothing else: the layer's
/// default until [`WebhookLayer::handler`](crate::WebhookLayer::handler) is called.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acknowledge;

impl ResponseHandler for Acknowledge {}
impl ActionHandler for Acknowledge {}
impl SegmentHandler for Acknowledge {}
impl FallbackHandler for Acknowledge {}

/// How a delivery ended in the handlers.
#[derive(Debug)]
pub(crate) enum Dispatched {
    /// A typed handler or the unknown-type fallback returned `Ok`.
    Handled,
    /// The payload did not fit; the fallback returned `Ok`.
    Mismatched,
    /// A handler returned `Err`.
    Failed(HandlerError),
}

/// Decodes the payload and calls the method its type names.
pub(crate) async fn dispatch<H: Handlers>(handlers: &H, delivery: &Delivery) -> Dispatched {
    let event = match delivery.envelope.event() {
        Ok(event) => event,
        Err(reason) => {
            return match handlers.mismatched(delivery, &reason).await {
                Ok(()) => Dispatched::Mismatched,
                Err(e) => Dispatched::Failed(e),
            };
        }
    };
    let result = match &event {
        Event::ResponseCreated(p) => handlers.created(delivery, p).await,
        Event::ResponseScored(p) => handlers.scored(delivery, p).await,
        Event::ActionQueued(p) => handlers.queued(delivery, p).await,
        Event::ActionSent(p) => handlers.sent(delivery, p).await,
        Event::ActionFailed(p) => handlers.failed(delivery, p).await,
        Event::SegmentUpdated(p) => handlers.updated(delivery, p).await,
        Event::SegmentReady(p) => handlers.ready(delivery, p).await,
        Event::Unknown { .. } => handlers.unknown(delivery).await,
    };
    match result {
        Ok(()) => Dispatched::Handled,
        Err(e) => Dispatched::Failed(e),
    }
}
