//! Helpers for your own tests (feature `testing`): signed events built like
//! LTVboost's, and a sender that delivers them with LTVboost's retry policy.
//!
//! * [`EventBuilder`] and [`fixture`]: event bodies for all seven types (and
//!   unknown ones), with an id and `created_at` of now unless told otherwise.
//! * [`signed_request`]: an `http::Request` ready for a tower service.
//! * [`Recorder`]: handlers for every family that count their calls and
//!   can be scripted to fail or panic; [`verified_delivery`]: the
//!   [`Delivery`](crate::handler::Delivery) your own handler methods take,
//!   for calling them directly.
//! * [`SenderSimulator`]: delivers a signed body to a URL or straight to a
//!   tower service, retrying on any non-2xx answer or failure with
//!   exponential backoff — first attempt plus up to 5 retries within 24
//!   hours — and reports every attempt. A time scale runs the whole
//!   24-hour schedule in milliseconds.
//!
//! ```
//! use ltvboost_webhooks::EventType;
//! use ltvboost_webhooks::signature::Secret;
//! use ltvboost_webhooks::testing::{fixture, signed_request};
//!
//! let secret = Secret::new("a-test-secret-0123456789")?;
//! let body = fixture(EventType::ActionFailed).id("evt_test_1").to_bytes();
//! let request = signed_request(&secret, body);
//! assert!(request.headers().contains_key("x-ltvboost-signature"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod recorder;
mod simulator;

pub use builder::{EventBuilder, fixture, signed_request, signed_request_to};
pub use recorder::{Behaviour, Recorder, verified_delivery};
pub use simulator::{Attempt, DeliveryReport, RetryPolicy, SenderSimulator, SimulatorError};
