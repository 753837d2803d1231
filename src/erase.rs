//! How the crate holds a user's type behind a pointer: one pattern for the
//! dedupe store, the enqueue hand-off, the secret source and the handlers.
//!
//! A trait users implement is written with `async fn` (or `-> impl Future`),
//! which reads as plain Rust but cannot be a `dyn` type. Beside it sits a
//! private twin whose methods return a [`BoxFuture`], with one blanket
//! `impl<T: Trait> Twin for T` that boxes each call. The receiver and the
//! worker hold `Arc<dyn Twin>` / `Box<dyn Twin>`, so their public types need
//! no type parameter, and a user's implementation never sees a `Pin<Box<…>>`:
//!
//! ```text
//! pub trait DedupeStore { fn claim(..) -> impl Future<..> + Send; .. }   // users implement
//! pub(crate) trait ErasedStore { fn claim_boxed(..) -> BoxFuture<..>; .. } // the crate holds
//! impl<S: DedupeStore> ErasedStore for S { .. Box::pin(DedupeStore::claim(..)) .. }
//! ```
//!
//! The handler families are seven such pairs; `handler.rs` writes them with
//! one macro.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what every erased twin's methods return.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
