use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use reqwest::Method;

use super::ClientError;
use crate::Backoff;

/// When and how the client retries a failed request.
///
/// Waits follow [`backoff`](Self::backoff) (a [`Backoff`]), each drawn at
/// random between half and all of its value (jitter), so that
/// many clients failing together do not retry together. A `Retry-After`
/// header on `429` (and on `503`, for a method that may be retried)
/// replaces the computed wait, up to `max_retry_after`; beyond that the
/// answer is returned at once.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt. Default: 3.
    pub max_retries: u32,
    /// The waits between attempts. Default: 250 ms, doubling, at most 8 s.
    pub backoff: Backoff,
    /// The longest `Retry-After` honoured. Default: 60 s.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff: Backoff::new(Duration::from_millis(250), 2.0, Duration::from_secs(8)),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryConfig {
    /// Sets [`max_retries`](Self::max_retries).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets [`backoff`](Self::backoff).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// No retries at all.
    pub fn disabled() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The jittered wait before retry `retry + 1`.
    fn wait(&self, retry: u32) -> Duration {
        self.backoff
            .delay(retry + 1)
            .mul_f64(0.5 + 0.5 * unit_random())
    }
}

/// What one attempt's result allows.
enum Verdict {
    Done,
    RetryAfter(Duration),
    Retry,
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// Runs `attempt` until it succeeds, fails for good, or the retries run out.
pub(super) async fn send_with_retries<F, Fut>(
    config: &RetryConfig,
    method: &Method,
    idempotency_key: bool,
    mut attempt: F,
) -> Result<(StatusCode, Bytes), ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<reqwest::Response, reqwest::Error>>,
{
    // A request carrying an idempotency key may be sent again whatever its
    // method: the API answers a repeat with the first one's result.
    let may_repeat = |method: &Method| idempotency_key || idempotent(method);
    let mut retry = 0;
    loop {
        let result = read(attempt().await).await;
        let verdict = match &result {
            Ok(_) => Verdict::Done,
            Err(Failure::Status {
                status,
                retry_after,
                ..
            }) if *status == StatusCode::TOO_MANY_REQUESTS => match retry_after {
                Some(wait) if *wait > config.max_retry_after => Verdict::Done,
                Some(wait) => Verdict::RetryAfter(*wait),
                None => Verdict::Retry,
            },
            // Told when to come back: as for 429.
            Err(Failure::Status {
                status,
                retry_after: Some(wait),
                ..
            }) if *status == StatusCode::SERVICE_UNAVAILABLE && may_repeat(method) => {
                if *wait > config.max_retry_after {
                    Verdict::Done
                } else {
                    Verdict::RetryAfter(*wait)
                }
            }
            Err(Failure::Status { status, .. })
                if may_repeat(method)
                    && matches!(
                        *status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) =>
            {
                Verdict::Retry
            }
            // Never connected: the request provably did not reach the server.
            Err(Failure::Transport(e)) if e.is_connect() => Verdict::Retry,
            Err(Failure::Transport(_)) if may_repeat(method) => Verdict::Retry,
            Err(_) => Verdict::Done,
        };
        let wait = match verdict {
            _ if retry >= config.max_retries => None,
            Verdict::Done => None,
            Verdict::RetryAfter(wait) => Some(wait),
            Verdict::Retry => Some(config.wait(retry)),
        };
        match wait {
            Some(wait) => {
                tracing::debug!(retry = retry + 1, ?wait, "retrying LTVboost API request");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            None => return result.map_err(Failure::into_error),
        }
    }
}

enum Failure {
    Transport(reqwest::Error),
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
        body: Bytes,
        request_id: Option<String>,
    },
}

impl Failure {
    fn into_error(self) -> ClientError {
        match self {
            Failure::Transport(e) if e.is_timeout() => ClientError::Timeout,
            // The URL is the API's, not a secret, but keep errors short.
            Failure::Transport(e) => ClientError::Transport(e.without_url()),
            Failure::Status {
                status,
                body,
                request_id,
                ..
            } => api_error(status, &body, request_id),
        }
    }
}

async fn read(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<(StatusCode, Bytes), Failure> {
    let response = response.map_err(Failure::Transport)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let request_id = ["x-request-id", "request-id"]
        .iter()
        .find_map(|name| response.headers().get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await.map_err(Failure::Transport)?;
    if status.is_success() {
        Ok((status, body))
    } else {
        Err(Failure::Status {
            status,
            retry_after,
            body,
            request_id,
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date in any of its three formats
/// (IMF-fixdate, RFC 850, asctime).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The API's error body: `{"error": {"code", "message"}}`, `{"code",
/// "message"}` or `{"error": "…"}`; anything else is kept raw.
fn api_error(status: StatusCode, body: &[u8], request_id: Option<String>) -> ClientError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let object = parsed.as_ref().map(|v| match v.get("error") {
        Some(inner) if inner.is_object() => inner,
        _ => v,
    });
    let text = |key: &str| {
        object
            .and_then(|o| o.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let code = text("code").or_else(|| text("type"));
    let message = text("message").or_else(|| {
        parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    });
    let raw = (code.is_none() && message.is_none() && !body.is_empty()).then(|| {
        let end = body.len().min(4096);
        String::from_utf8_lossy(&body[..end]).into_owned()
    });
    ClientError::Api {
        status,
        code,
        message,
        body: raw,
        request_id,
    }
}

fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    // Jitter needs no cryptographic quality; without OS randomness, no jitter.
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        for old in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(old), Some(Duration::ZERO), "{old}");
        }
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let wait = parse_retry_after(&soon).expect("an IMF-fixdate");
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37"), None);
    }

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let config = RetryConfig::default();
        for retry in 0..10 {
            let full = Duration::from_millis(250)
                .saturating_mul(1 << retry)
                .min(Duration::from_secs(8));
            let wait = config.wait(retry);
            assert!(
                wait >= full / 2 && wait <= full,
                "{retry}: {wait:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn api_error_bodies() {
        let nested = api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":{"code":"invalid_url","message":"bad"}}"#,
            Some("req_1".into()),
        );
        assert!(
            matches!(nested, ClientError::Api { code: Some(ref c), message: Some(ref m), body: None, .. } if c == "invalid_url" && m == "bad")
        );
        let flat = api_error(StatusCode::NOT_FOUND, br#"{"error":"not found"}"#, None);
        assert!(matches!(flat, ClientError::Api { message: Some(ref m), .. } if m == "not found"));
        let raw = api_error(StatusCode::BAD_GATEWAY, b"<html>upstream</html>", None);
        assert!(
            matches!(raw, ClientError::Api { body: Some(ref b), .. } if b.contains("upstream"))
        );
    }
}
