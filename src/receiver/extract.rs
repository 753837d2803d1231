//! An axum extractor for a verified, typed event, for those who prefer plain
//! axum handlers to the [`WebhookLayer`](crate::WebhookLayer).
//!
//! [`VerifiedEvent`] reads the body within the limits of the router state's
//! [`WebhookConfig`], verifies the signature, and parses the event. It refuses
//! with a [`Rejection`] that answers by the same status table as the layer.
//!
//! A handler that takes any shape of any event (one that forwards or keeps
//! the raw body) takes a [`Delivery`] instead: the same steps, without
//! decoding `data`.
//!
//! It takes the same steps as the layer up to the replay window (signature
//! header, bounded read, signature, envelope, replay window) and stops
//! there: it does not deduplicate. LTVboost delivers at least once, so
//! either make the handler idempotent, or use a
//! [`DedupeStore`](crate::dedupe::DedupeStore) keyed on
//! [`Delivery::dedupe_key`], or use the
//! [`WebhookEndpoint`](crate::WebhookEndpoint), which does both for you.
//!
//! ```
//! use axum::{Router, routing::post};
//! use ltvboost_webhooks::WebhookConfig;
//! use ltvboost_webhooks::event::Event;
//! use ltvboost_webhooks::receiver::extract::VerifiedEvent;
//! use ltvboost_webhooks::signature::{Secret, Verifier};
//!
//! async fn webhook(VerifiedEvent { delivery, event }: VerifiedEvent) -> &'static str {
//!     if let Event::ResponseCreated(response) = event {
//!         println!("{:?}: new response {}", delivery.id(), response.id);
//!     }
//!     "ok"
//! }
//!
//! let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?);
//! let app: Router = Router::new()
//!     .route("/webhooks/ltvboost", post(webhook))
//!     .with_state(config);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use axum_core::extract::{FromRef, FromRequest, Request};

use super::config::WebhookConfig;
use super::outcome::Outcome;
use super::outcome::Rejection;
use super::pipeline::{check_head, log_refusal, receive};
use crate::event::Event;
use crate::handler::Delivery;

/// A delivery whose signature verified, with its decoded event.
///
/// An unknown event type is not a rejection: it arrives as
/// [`Event::Unknown`]. A known type whose `data` does not fit is refused with
/// [`Rejection::Payload`] (`400`).
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    /// The envelope and which secret signed it.
    pub delivery: Delivery,
    /// The decoded event.
    pub event: Event,
}

impl<S> FromRequest<S> for VerifiedEvent
where
    S: Send + Sync,
    WebhookConfig: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let received = async {
            let delivery = verified(request, state).await?;
            let event = delivery.envelope().event()?.clone();
            Ok(Self { delivery, event })
        };
        counted(received.await, |received| received.delivery.event_type())
    }
}

/// A delivery whose signature verified and whose envelope parsed, its
/// `data` not decoded: for a handler that takes any shape of any event
/// type, such as one that forwards or stores the raw body. Same steps and
/// rejections as [`VerifiedEvent`], but a known type whose `data` does not
/// fit its payload is not refused.
///
/// ```
/// use axum::{Router, routing::post};
/// use ltvboost_webhooks::WebhookConfig;
/// use ltvboost_webhooks::handler::Delivery;
/// use ltvboost_webhooks::signature::{Secret, Verifier};
///
/// async fn webhook(delivery: Delivery) -> &'static str {
///     let bytes = delivery.envelope().body().len();
///     println!("{} {:?}: {bytes} bytes", delivery.type_name(), delivery.id());
///     "ok"
/// }
///
/// let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?);
/// let app: Router = Router::new()
///     .route("/webhooks/ltvboost", post(webhook))
///     .with_state(config);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<S> FromRequest<S> for Delivery
where
    S: Send + Sync,
    WebhookConfig: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        counted(verified(request, state).await, Delivery::event_type)
    }
}

/// Steps 2–6 of the pipeline, within the state's configuration.
async fn verified<S>(request: Request, state: &S) -> Result<Delivery, Rejection>
where
    WebhookConfig: FromRef<S>,
{
    let config = WebhookConfig::from_ref(state);
    let (parts, body) = request.into_parts();
    let head = check_head(&config, &parts.headers, &parts.extensions)?;
    receive(&config, head, &parts, body).await
}

/// Counts what was extracted (handed to your handler: counted as handled)
/// or refused, and logs a refusal.
fn counted<T>(
    received: Result<T, Rejection>,
    event_type: impl FnOnce(&T) -> Option<crate::event::EventType>,
) -> Result<T, Rejection> {
    match &received {
        Ok(received) => Outcome::Handled.count(Some(event_type(received))),
        Err(rejection) => rejection.count(),
    }
    received.inspect_err(log_refusal)
}
