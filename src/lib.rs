//! Receive [LTVboost] webhooks in Rust: verified in constant time over the raw
//! bytes, parsed into typed events, handled once per event though the sender
//! delivers at least once.
//!
//! LTVboost POSTs JSON events to your endpoint, signed with
//! `x-ltvboost-signature: sha256=<hex HMAC-SHA256 of the raw body>`, and
//! retries failed deliveries (any non-2xx answer, or a timeout) with
//! exponential backoff, up to 5 times within 24 hours.
//!
//! # The shape
//!
//! One POST, top to bottom:
//!
//! ```text
//! request ─► adapter: WebhookLayer (wraps a router) │ WebhookEndpoint (route_service) │ VerifiedEvent (extractor)
//!              │
//!              ▼  pipeline: method, signature header, bounded body, signature,
//!                 envelope, replay window, then either
//!                 dedupe claim, handler (claim renewed), done/released   (inline)
//!                 or an append to a Redis stream guarded by the dedupe key (enqueue)
//!                 or BEGIN, claim + inbox row, handler's writes, COMMIT   (Postgres)
//!              │
//!              ▼
//!           Outcome ─► response (status + short text) · log line · metrics (same code)
//!
//! Redis stream ─► queue::Worker ─► the same handlers ─► done + XACK / retry / dead letter
//! ```
//!
//! | module | job | does I/O |
//! | --- | --- | --- |
//! | [`signature`] | secrets, header parsing, `sign`, constant-time `verify` | no |
//! | [`event`] | the envelope, the [`Event`] enum, typed payloads | no |
//! | [`replay`] | the replay window on the signed `created_at` | no |
//! | [`metrics`] | counters and histograms by outcome and reason (feature `metrics`) | no |
//! | [`dedupe`] | claims and done-records: effectively-once handling | store |
//! | [`secrets`] | where a delivery's secrets come from: fixed, a followed file, accounts | files |
//! | [`handler`] | the traits you implement, one per event family | no |
//! | [`receiver`] | the pipeline, steps 1–9, and its parts: | HTTP body |
//! | &nbsp;&nbsp;[`receiver::config`] | every setting, one builder | no |
//! | &nbsp;&nbsp;[`receiver::layer`], [`receiver::endpoint`], `receiver::extract` | the adapters: HTTP in, [`Outcome`] out (`extract`: feature `axum`) | HTTP |
//! | &nbsp;&nbsp;[`receiver::enqueue`] | enqueue mode's hand-off to a durable queue | no |
//! | &nbsp;&nbsp;[`receiver::outcome`] | every way a delivery ends: the status table | no |
//! | `postgres` | handlers inside the delivery's transaction, the inbox, a dedupe store (feature `postgres`) | Postgres |
//! | `queue` | enqueue mode's Redis queue and the worker (feature `queue`) | Redis |
//! | `serve` | a hardened hyper server (feature `serve`) | TCP |
//! | `client` | the registration API client (feature `client`) | HTTPS |
//! | `testing` | event builders, signed requests, recording handlers, a sender simulator (feature `testing`) | HTTP |
//!
//! The modules are in layers, in this order: each imports only from those
//! above it in the table (`tests/layers.rs` checks it).
//!
//! # Quick start
//!
//! ```
//! use axum::{Router, routing::get};
//! use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
//! use ltvboost_webhooks::event::ResponseScored;
//! use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
//! use ltvboost_webhooks::signature::{Secret, Verifier};
//!
//! struct Scores;
//! impl ResponseHandler for Scores {
//!     async fn scored(&self, delivery: &Delivery, scored: &ResponseScored) -> HandlerResult {
//!         println!("{:?}: {} scored {:?}", delivery.id(), scored.id, scored.score);
//!         Ok(())
//!     }
//! }
//!
//! let secret = Secret::new(std::env::var("LTVBOOST_WEBHOOK_SECRET")
//!     .unwrap_or_else(|_| "a-development-secret-0123".into()))?;
//! let config = WebhookConfig::new(Verifier::new([secret])?).path("/webhooks/ltvboost");
//! let router: Router = Router::new().route("/healthz", get(|| async { "ok" }));
//! // Deliveries are answered before any routing; other paths reach the router.
//! let app = WebhookLayer::new(config, Handlers::responses(Scores)).wrap(router);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [LTVboost]: https://ltvboost.com

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unsafe_code)]

// The modules in layers, lowest first: a module imports only from the
// modules declared before it (tests/layers.rs holds the crate to this order).
//
// Helpers with no knowledge of webhooks.
mod backoff;
mod erase;
#[cfg(any(feature = "client", feature = "postgres"))]
mod error_text;
// The ground floor: the protocol, no I/O, no HTTP.
pub mod event;
pub mod replay;
pub mod signature;
// What every part reports through, and the Redis connections stores share.
pub mod metrics;
#[cfg(feature = "redis")]
mod redis;
pub mod trace;
// What remembers an event, where secrets come from, what handles an event.
pub mod dedupe;
pub mod handler;
pub mod secrets;
// The receiver: adapters, the pipeline, the status table.
pub mod receiver;
// Destinations that plug into the receiver from above: handlers inside a
// Postgres transaction, and the Redis queue with its workers.
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "queue")]
pub mod queue;
// Around it.
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "testing")]
pub mod testing;

// The front door: what most receivers name, at the root.
pub use backoff::Backoff;
pub use event::{Event, EventType};
pub use receiver::config::WebhookConfig;
pub use receiver::endpoint::WebhookEndpoint;
pub use receiver::handover::PeerAddr;
pub use receiver::layer::{WebhookLayer, WebhookService};
pub use receiver::outcome::{Outcome, Rejection};

// The README's code compiles as it is written.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
