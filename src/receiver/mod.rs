//! The receiving side, in the order one POST takes through it: a map of the
//! files in `src/receiver/`. Each public module is one file (`layer`,
//! `endpoint`, `extract`, `enqueue`, `outcome`, `config`); the types most
//! receivers name ([`WebhookLayer`](crate::WebhookLayer),
//! [`WebhookConfig`](crate::WebhookConfig), [`Outcome`](crate::Outcome), …)
//! are also at the crate root. `pipeline.rs` and `body.rs` stay private.
//!
//! ```text
//!   request ──► adapter: WebhookLayer (wraps a router) │ WebhookEndpoint (route_service) │ VerifiedEvent (extractor)
//!                  │        layer.rs                        endpoint.rs                       extract.rs
//!                  ▼
//!               pipeline.rs: one pass, top to bottom   (handover.rs: what serve::Server puts in
//!                                                       the request: peer address, deliveries it waits for)
//!               1. method + path            (405 / pass through; {account} segment)
//!               2. signature header         (401)   before any body is read
//!               3. the request's secrets    (404 / 503)   crate::secrets, body unread
//!               4. bounded body read        (413 / 408 / 503)   body.rs: clocks, budget
//!               5. signature check          (401)   constant time, that account's secrets
//!               6. envelope parse           (400)   typed Event, Unknown for new types
//!               7. replay window            (400)
//!               8. dedupe claim             (200 dup / 409 in flight / 503 store down)
//!               9a. inline: the handlers; done or released       (200 / 500)
//!               9b. enqueue: append to a Redis stream            (202)   enqueue.rs
//!                  │
//!                  ▼
//!               outcome.rs: Outcome ──► its row: status, code, text, log level
//! ```
//!
//! [`config`] holds every setting; [`outcome`]
//! is the one status table (the `status_table!` list), with
//! [`Rejection`](crate::Rejection), its refusals. The domain below it
//! ([`signature`](crate::signature), [`event`](crate::event),
//! [`replay`](crate::replay)) knows nothing of HTTP, nor do the handlers
//! ([`handler`](crate::handler)). Enqueue mode takes any
//! [`Enqueue`](enqueue::Enqueue): the queue (feature `queue`) plugs in
//! from above, and its workers answer through the same [`Outcome`](crate::Outcome).
//! So do handlers inside a Postgres transaction (feature `postgres`): that
//! module builds its layer (`WebhookLayer::in_transaction`) around a
//! destination the pipeline knows only as a trait, so nothing here imports
//! from above.

mod body;
pub mod config;
pub mod endpoint;
pub mod enqueue;
#[cfg(feature = "axum")]
pub mod extract;
pub(crate) mod handover;
pub mod layer;
pub mod outcome;
pub(crate) mod pipeline;
