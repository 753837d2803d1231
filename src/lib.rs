//! Receive [LTVboost] webhooks in Rust: verified in constant time over the raw
//! bytes, parsed into typed events, handled once per event though the sender
//! delivers at least once.
//!
//! LTVboost POSTs JSON events to your endpoint, signed with
//! `x-ltvboost-signature: sha256=<hex HMAC-SHA256 of the raw body>`, and
//! retries failed deliveries (any non-2xx answer, or a timeout) with
//! exponential backoff, up to 5 times within 24 hours.
//!
//! # The pieces
//!
//! | module | job | does I/O |
//! | --- | --- | --- |
//! | [`signature`] | secrets, header parsing, `sign`, constant-time `verify` | no |
//! | [`event`] | the envelope, the [`Event`] enum, typed payloads | no |
//! | [`handler`] | the traits you implement, one per event family | no |
//! | [`replay`] | the replay window on the signed `created_at` | no |
//! | [`dedupe`] | claims and done-records: effectively-once handling | store |
//! | [`layer`] | the tower middleware that ties it together | HTTP |
//! | `extract` | an axum extractor, for plain axum handlers (feature `axum`) | HTTP |
//! | `serve` | a hyper server with a header-read timeout (feature `serve`) | TCP |
//! | `client` | the registration API client (feature `client`) | HTTPS |
//! | `testing` | event builders, signed requests, a sender simulator (feature `testing`) | HTTP |
//!
//! # Quick start
//!
//! ```
//! use axum::{Router, routing::get};
//! use ltvboost_webhooks::{WebhookLayer, handler::*, event::*, signature::*};
//!
//! struct MyHandlers;
//! impl ResponseHandler for MyHandlers {
//!     async fn scored(&self, delivery: &Delivery, scored: &ResponseScored) -> HandlerResult {
//!         println!("{:?}: {} scored {:?}", delivery.id(), scored.id, scored.score);
//!         Ok(())
//!     }
//! }
//! impl ActionHandler for MyHandlers {}
//! impl SegmentHandler for MyHandlers {}
//! impl FallbackHandler for MyHandlers {}
//!
//! let secret = Secret::new(std::env::var("LTVBOOST_WEBHOOK_SECRET")
//!     .unwrap_or_else(|_| "a-development-secret-0123".into()))?;
//! let router: Router = Router::new().route("/healthz", get(|| async { "ok" }));
//! // Deliveries are answered before any routing; other paths reach the router.
//! let app = WebhookLayer::new(Verifier::new([secret])?)
//!     .at("/webhooks/ltvboost")
//!     .handler(MyHandlers)
//!     .wrap(router);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [LTVboost]: https://ltvboost.com

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
pub mod dedupe;
pub mod event;
#[cfg(feature = "axum")]
pub mod extract;
pub mod handler;
pub mod layer;
mod receive;
mod rejection;
pub mod replay;
#[cfg(feature = "serve")]
pub mod serve;
pub mod signature;
#[cfg(feature = "testing")]
pub mod testing;

pub use event::{Event, EventType};
pub use layer::{WebhookLayer, WebhookService};
pub use receive::{DEFAULT_BODY_LIMIT, DEFAULT_READ_TIMEOUT, WebhookConfig};
pub use rejection::Rejection;

// The README's code compiles as it is written.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
