//! An axum extractor for a verified, typed event, for those who prefer plain
//! axum handlers to the [`WebhookLayer`](crate::WebhookLayer).
//!
//! [`VerifiedEvent`] reads the body within the limits of the router state's
//! [`WebhookConfig`], verifies the signature, and parses the event. It refuses
//! with a [`Rejection`] that answers by the same status table as the layer.
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
//! use ltvboost_webhooks::extract::VerifiedEvent;
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
use crate::metrics;

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
        let config = WebhookConfig::from_ref(state);
        let (parts, body) = request.into_parts();
        let received = async {
            let head = check_head(&config, &parts.headers, &parts.extensions)?;
            let delivery = receive(&config, head, body).await?;
            let event = delivery.envelope().event()?.clone();
            Ok(Self { delivery, event })
        };
        let received: Result<Self, Rejection> = received.await;
        match &received {
            // Handed to your handler: counted as handled.
            Ok(VerifiedEvent { event, .. }) => {
                let event_type = metrics::type_label(Some(event.event_type()));
                let handled = Outcome::Handled;
                metrics::delivery(handled.kind(), handled.reason(), event_type);
            }
            Err(rejection) => {
                metrics::delivery(
                    "rejected",
                    Some(rejection.reason()),
                    metrics::type_label(None),
                );
            }
        }
        received.inspect_err(log_refusal)
    }
}
