//! A client for LTVboost's webhook registration API (feature `client`).
//!
//! Register the endpoint that [`WebhookLayer`](crate::WebhookLayer) serves,
//! with the same [`EventType`](crate::EventType) and
//! [`Secret`](crate::signature::Secret) types.
//!
//! LTVboost documents `POST /v1/webhooks` with a Bearer token and a JSON body
//! `{"url", "events", "secret"}`. The rest follows the REST conventions of the
//! same base (an assumption): `GET /v1/webhooks`, and `GET`, `PATCH`,
//! `DELETE /v1/webhooks/{id}`.
//!
//! ```no_run
//! use ltvboost_webhooks::EventType;
//! use ltvboost_webhooks::client::{Client, NewWebhook};
//! use ltvboost_webhooks::signature::Secret;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::from_env()?; // LTVBOOST_API_TOKEN, LTVBOOST_API_BASE
//! let secret = Secret::generate()?;
//! let endpoint = client
//!     .webhooks()
//!     .create(&NewWebhook::new(
//!         "https://your-app.example/webhooks/ltvboost",
//!         [EventType::ResponseCreated, EventType::ActionSent],
//!         secret.clone(),
//!     )?)
//!     .await?;
//! println!("registered {}", endpoint.id);
//! # Ok(()) }
//! ```
//!
//! # Rotating a secret
//!
//! LTVboost signs each delivery with one secret, so receivers must accept the
//! new secret *before* LTVboost signs with it. In this order:
//!
//! 1. Generate a new secret ([`Secret::generate`](crate::signature::Secret::generate))
//!    and keep it somewhere durable (a file, a secret manager).
//! 2. Run every receiver with **both**, new first: `Verifier::new([new, old])`
//!    (`LTVBOOST_WEBHOOK_SECRET=<new>,<old>`).
//! 3. Register the new one: [`Webhooks::set_secret`]. On an error the change
//!    may or may not have been applied; calling again with the same secret is
//!    safe, and receivers accept either meanwhile.
//! 4. Deliveries signed with the old secret (retries already scheduled) still
//!    verify. [`Verifier::last_matched`](crate::signature::Verifier::last_matched)`(1)`
//!    tells when the old one last matched; once that is longer ago than
//!    LTVboost's 24-hour retry window, drop it from the verifier.
//!
//! `ltvboost endpoints rotate` runs these steps from the shell.
//!
//! # On the wire
//!
//! Every request carries `Authorization: Bearer …`, `Content-Type:
//! application/json` and a user agent naming this crate. Requests are
//! retried with exponential backoff and jitter ([`RetryConfig`]): on `429`
//! (honouring `Retry-After`) for every method; on `502`, `503`, `504`, time-outs
//! and connection failures for idempotent methods (`GET`, `PUT`, `DELETE`);
//! `PATCH` only on `429` or when the connection was never made, so the
//! request provably never reached the server. `create` sends an
//! `Idempotency-Key` (generated, or the caller's), the same on every attempt,
//! so it is retried like an idempotent method. Every call has an overall
//! deadline ([`ClientBuilder::deadline`]), retries included; an API error
//! keeps the API's request id.
//!
//! # Pagination (an assumption)
//!
//! LTVboost's page shows only `POST`. [`Webhooks::list`] accepts a bare
//! array or an object with `data` (or `webhooks`), and follows whatever
//! continuation the answer carries: a `next` URL (on the API's own origin
//! only), a `cursor`/`next_cursor`, or `has_more` with `starting_after` the
//! last id; at most [`MAX_PAGES`] pages. [`Webhooks::pages`] walks them one at
//! a time.

mod error;
mod retry;
mod webhooks;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;
use zeroize::Zeroizing;

pub use error::{ClientError, ValidationError};
pub use retry::RetryConfig;
pub use webhooks::{Endpoint, Events, MAX_PAGES, NewWebhook, Pages, WebhookUpdate, Webhooks};

/// The documented API base.
pub const DEFAULT_API_BASE: &str = "https://api.ltvboost.com/v1";

/// The default deadline for one request attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default deadline for one call, every retry included.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

const USER_AGENT: &str = concat!("ltvboost-webhooks/", env!("CARGO_PKG_VERSION"), " (rust)");

/// The registration API client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: ApiToken,
    retry: RetryConfig,
    deadline: Duration,
}

/// The bearer token: redacted in `Debug`, wiped on drop.
#[derive(Clone)]
struct ApiToken(Zeroizing<String>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken([redacted])")
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the documented API base with default settings.
    pub fn new(token: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(token).build()
    }

    /// A client from `LTVBOOST_API_TOKEN` and, when set, `LTVBOOST_API_BASE`.
    pub fn from_env() -> Result<Self, ClientError> {
        let token = std::env::var("LTVBOOST_API_TOKEN")
            .map_err(|_| ClientError::Config("LTVBOOST_API_TOKEN is not set".into()))?;
        let mut builder = Self::builder(token);
        if let Ok(base) = std::env::var("LTVBOOST_API_BASE") {
            builder = builder.base_url(base);
        }
        builder.build()
    }

    /// A builder, for the base URL, timeout, user agent and retries.
    pub fn builder(token: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            token: Zeroizing::new(token.into()),
            base: DEFAULT_API_BASE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            user_agent: USER_AGENT.to_owned(),
            retry: RetryConfig::default(),
            http: None,
        }
    }

    /// The webhook endpoints API.
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks::new(self)
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request (with retries) and decodes a JSON answer.
    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.send_raw(method, url, body, None).await?;
        decode(status, &bytes)
    }

    /// Sends a request with retries, all within the client's deadline. With
    /// an idempotency key, every attempt carries the same one.
    async fn send_raw(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<Bytes>,
        idempotency_key: Option<&str>,
    ) -> Result<(http::StatusCode, Bytes), ClientError> {
        let attempts =
            retry::send_with_retries(&self.retry, &method, idempotency_key.is_some(), || {
                let mut request = self
                    .http
                    .request(method.clone(), url.clone())
                    .bearer_auth(self.token.0.as_str());
                if let Some(key) = idempotency_key {
                    request = request.header("idempotency-key", key);
                }
                if let Some(json) = &body {
                    // Bytes: every retry sends the same buffer without copying it.
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(json.clone());
                }
                request.send()
            });
        tokio::time::timeout(self.deadline, attempts)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }
}

/// A request body, serialised once and reused by every retry.
fn json_body(value: &impl Serialize) -> Result<Bytes, ClientError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(ClientError::Encode)
}

fn decode<T: DeserializeOwned>(status: http::StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|source| ClientError::Decode { status, source })
}

/// Builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    token: Zeroizing<String>,
    base: String,
    timeout: Duration,
    deadline: Duration,
    user_agent: String,
    retry: RetryConfig,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The API base. Default: [`DEFAULT_API_BASE`]. Must be `https`, except
    /// on a loopback host.
    pub fn base_url(mut self, base: impl Into<String>) -> Self {
        self.base = base.into();
        self
    }

    /// The deadline for one attempt. Default: 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deadline for one call, every retry included: past it the call
    /// fails with [`ClientError::Timeout`]. Default: [`DEFAULT_DEADLINE`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sends with the caller's own `reqwest::Client` (its proxy, CA roots,
    /// connection pool). Then its settings are the caller's: this builder's
    /// per-attempt timeout and user agent are not applied, and the client
    /// should not follow redirects (the request body carries the webhook
    /// secret).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The `User-Agent`. Default: `ltvboost-webhooks/<version> (rust)`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The retry policy. Default: [`RetryConfig::default`];
    /// [`RetryConfig::disabled`] turns retries off.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, ClientError> {
        let base = webhooks::checked_url(&self.base)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        if let Some(http) = self.http {
            return Ok(Client {
                http,
                base,
                token: ApiToken(self.token),
                retry: self.retry,
                deadline: self.deadline,
            });
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(self.user_agent)
            .default_headers(headers)
            // This client decides what is retried (see the module docs).
            .retry(reqwest::retry::never())
            // The request body carries the webhook secret: never re-sent
            // elsewhere by a redirect, never over plain http but to loopback.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(base.scheme() == "https")
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Client {
            http,
            base,
            token: ApiToken(self.token),
            retry: self.retry,
            deadline: self.deadline,
        })
    }
}
