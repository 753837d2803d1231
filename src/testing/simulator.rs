use std::future::{Future, poll_fn};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use super::builder::signed_request_to;
use crate::Backoff;
use crate::receiver::config::DEFAULT_PATH;
use crate::signature::Secret;

/// When a sender retries: exponential backoff, a cap on retries, and a window.
///
/// LTVboost documents "exponential backoff, at most 5 retries, within 24
/// hours"; the base and factor are not documented. The default waits 1 min,
/// then 4, 16, 64 and 256 min (about 5 h 41 min in all).
///
/// ```
/// use std::time::Duration;
/// use ltvboost_webhooks::testing::RetryPolicy;
///
/// let minutes: Vec<u64> = RetryPolicy::default().backoffs().iter().map(|d| d.as_secs() / 60).collect();
/// assert_eq!(minutes, [1, 4, 16, 64, 256]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt. Default: 5.
    pub max_retries: u32,
    /// The waits between attempts. Default: 60 s, growing 4 times, at most
    /// the window.
    pub backoff: Backoff,
    /// No retry is scheduled later than this after the first attempt.
    /// Default: 24 h.
    pub window: Duration,
    /// How long one attempt may take before it counts as failed. Not scaled
    /// by the time scale (it is real network time). Default: 30 s.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            backoff: Backoff::new(Duration::from_secs(60), 4.0, Duration::from_secs(24 * 3600)),
            window: Duration::from_secs(24 * 3600),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The nominal wait before each retry, stopping at `max_retries` or at the
    /// window, whichever comes first.
    pub fn backoffs(&self) -> Vec<Duration> {
        let mut waits = Vec::new();
        let mut elapsed = Duration::ZERO;
        for retry in 1..=self.max_retries {
            let wait = self.backoff.delay(retry);
            elapsed = elapsed.saturating_add(wait);
            if elapsed > self.window {
                break;
            }
            waits.push(wait);
        }
        waits
    }
}

/// One delivery attempt, as the sender saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt, 2 for the first retry, …
    pub number: u32,
    /// When it was made, nominally, after the first attempt (unscaled).
    pub at: Duration,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// What went wrong when it did not answer (connection refused, timeout…).
    pub error: Option<String>,
    /// How long the attempt took, in real time.
    pub latency: Duration,
}

impl Attempt {
    /// Whether the sender counts it as delivered: a 2xx answer.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Every attempt of one delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The attempts in order; the last one succeeded unless retries ran out.
    pub attempts: Vec<Attempt>,
}

impl DeliveryReport {
    /// Whether an attempt succeeded.
    pub fn succeeded(&self) -> bool {
        self.attempts.last().is_some_and(Attempt::succeeded)
    }

    /// The last attempt's status, if it got one.
    pub fn final_status(&self) -> Option<u16> {
        self.attempts.last().and_then(|a| a.status)
    }

    /// The statuses of every attempt (`None` where there was no answer).
    pub fn statuses(&self) -> Vec<Option<u16>> {
        self.attempts.iter().map(|a| a.status).collect()
    }
}

/// The simulator could not start a delivery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulatorError {
    /// The URL did not parse, or is not plain `http://`.
    #[error("cannot deliver to {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// Called after each attempt.
type AttemptHook = std::sync::Arc<dyn Fn(&Attempt) + Send + Sync>;

/// Delivers signed events the way LTVboost does, for tests and for trying an
/// endpoint: the same signed bytes on every attempt, a retry after any non-2xx
/// answer, timeout or connection failure, on the [`RetryPolicy`] schedule.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ltvboost_webhooks::{EventType, WebhookLayer};
/// use ltvboost_webhooks::handler::{Handlers, ResponseHandler};
/// use ltvboost_webhooks::signature::{Secret, Verifier};
/// use ltvboost_webhooks::testing::{SenderSimulator, fixture};
///
/// struct Responses;
/// impl ResponseHandler for Responses {}
///
/// let secret = Secret::new("a-test-secret-0123456789")?;
/// let verifier = Verifier::new([secret.clone()])?;
/// let service = WebhookLayer::new(verifier, Handlers::responses(Responses)).endpoint();
///
/// let report = SenderSimulator::new(secret)
///     .time_scale(0.0) // the whole 24-hour schedule, instantly
///     .deliver_to_service(service, &fixture(EventType::ResponseCreated).to_bytes())
///     .await;
/// assert!(report.succeeded());
/// assert_eq!(report.statuses(), [Some(200)]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SenderSimulator {
    secret: Secret,
    policy: RetryPolicy,
    time_scale: f64,
    on_attempt: Option<AttemptHook>,
}

impl std::fmt::Debug for SenderSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderSimulator")
            .field("secret", &self.secret)
            .field("policy", &self.policy)
            .field("time_scale", &self.time_scale)
            .finish_non_exhaustive()
    }
}

impl SenderSimulator {
    /// A sender signing with `secret`, on the default policy, in real time.
    pub fn new(secret: Secret) -> Self {
        Self {
            secret,
            policy: RetryPolicy::default(),
            time_scale: 1.0,
            on_attempt: None,
        }
    }

    /// Called after each attempt, as it happens (the report has them all
    /// at the end).
    pub fn on_attempt(mut self, hook: impl Fn(&Attempt) + Send + Sync + 'static) -> Self {
        self.on_attempt = Some(std::sync::Arc::new(hook));
        self
    }

    /// The retry policy.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Multiplies every backoff wait: `1e-6` runs the 24-hour schedule in a
    /// fraction of a second, `0.0` without waiting at all.
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale.max(0.0);
        self
    }

    /// Delivers `body` to `url` (`http://` only) until it is acknowledged or
    /// the retries run out.
    pub async fn deliver(&self, url: &str, body: &[u8]) -> Result<DeliveryReport, SimulatorError> {
        let bad = |reason| SimulatorError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("the simulator speaks plain http:// only"));
        }
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let body = Bytes::copy_from_slice(body);
        Ok(self
            .run(|| {
                let request = signed_request_to(url, &self.secret, body.clone());
                let client = client.clone();
                async move {
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    // Read the answer to the end, as a sender would.
                    let _ = response.into_body().collect().await;
                    Ok(status)
                }
            })
            .await)
    }

    /// Delivers `body` to the default webhook path of a tower service, in
    /// process, until it is acknowledged or the retries run out.
    pub async fn deliver_to_service<S, B>(&self, service: S, body: &[u8]) -> DeliveryReport
    where
        S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
        S::Error: std::fmt::Display,
        B: Body,
    {
        let body = Bytes::copy_from_slice(body);
        self.run(|| {
            let request = signed_request_to(DEFAULT_PATH, &self.secret, body.clone());
            let mut service = service.clone();
            async move {
                poll_fn(|cx| service.poll_ready(cx))
                    .await
                    .map_err(|e| e.to_string())?;
                let response = service.call(request).await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                Ok(status)
            }
        })
        .await
    }

    async fn run<F, Fut>(&self, mut send: F) -> DeliveryReport
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<u16, String>>,
    {
        let mut report = DeliveryReport::default();
        let mut at = Duration::ZERO;
        let waits = self.policy.backoffs();
        for number in 1..=waits.len() as u32 + 1 {
            if number > 1 {
                let wait = waits[number as usize - 2];
                at += wait;
                tokio::time::sleep(wait.mul_f64(self.time_scale)).await;
            }
            let started = Instant::now();
            let outcome = tokio::time::timeout(self.policy.attempt_timeout, send()).await;
            let (status, error) = match outcome {
                Ok(Ok(status)) => (Some(status), None),
                Ok(Err(e)) => (None, Some(e)),
                Err(_) => (None, Some("timed out".to_owned())),
            };
            let attempt = Attempt {
                number,
                at,
                status,
                error,
                latency: started.elapsed(),
            };
            let done = attempt.succeeded();
            if let Some(hook) = &self.on_attempt {
                hook(&attempt);
            }
            report.attempts.push(attempt);
            if done {
                break;
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_cuts_the_schedule() {
        let policy = RetryPolicy {
            window: Duration::from_secs(10 * 60),
            ..RetryPolicy::default()
        };
        // 1 min, then 4 (5 in all); 16 more would end at 21 min > 10.
        assert_eq!(
            policy.backoffs(),
            [Duration::from_secs(60), Duration::from_secs(240)]
        );
        let none = RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        };
        assert!(none.backoffs().is_empty());
    }

    #[tokio::test]
    async fn only_plain_http_urls_are_delivered_to() {
        let sim = SenderSimulator::new(Secret::new("a-test-secret-0123456789").unwrap());
        for url in ["https://example.com/hook", "not a url", "ftp://x/"] {
            assert!(sim.deliver(url, b"{}").await.is_err(), "{url}");
        }
    }
}
