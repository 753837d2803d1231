//! Forwarding a verified delivery to the app being built.
//!
//! The app sees what LTVboost sent and nothing of the hop: the body's bytes
//! and an allow-list of headers. Everything else — the tunnel's headers,
//! proxies' client addresses, cookies, credentials, headers yet to be
//! invented — stays behind, since the app may trust what a loopback peer
//! tells it.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ltvboost_webhooks::signature::SIGNATURE_HEADER;
use serde_json::{Value, json};

/// LTVboost's own headers start with this; all are passed on.
const LTVBOOST_PREFIX: &str = "x-ltvboost-";

/// The headers passed on besides LTVboost's own: what the body is, who
/// sent it, and the W3C trace context the crate's receivers continue.
const PASSED_ON: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::USER_AGENT,
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// The headers the app gets, by allow-list.
pub(super) fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        if PASSED_ON.contains(name)
            || name.as_str() == SIGNATURE_HEADER
            || name.as_str().starts_with(LTVBOOST_PREFIX)
        {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// Posts `body` to `target` and answers with the app's status and text:
/// `502` when it cannot be reached, `504` past `timeout`. Also returns what
/// happened, for the printed line.
pub(super) async fn forward(
    http: &reqwest::Client,
    target: &str,
    timeout: Duration,
    headers: &HeaderMap,
    body: Bytes,
) -> (Response, Value) {
    let sent = http
        .post(target)
        .headers(forwarded_headers(headers))
        .timeout(timeout)
        .body(body)
        .send()
        .await;
    let answered = match sent {
        Ok(answer) => {
            let status = answer.status();
            // The text is read within the same time-out.
            answer.text().await.map(|text| (status, text))
        }
        Err(e) => Err(e),
    };
    // Printed and reported without any credentials the URL carries.
    let shown = without_credentials(target);
    match answered {
        Ok((status, text)) => {
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let forwarded = json!({"url": shown, "status": status.as_u16()});
            ((status, text).into_response(), forwarded)
        }
        Err(e) => {
            let (status, error) = if e.is_timeout() {
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no answer within {timeout:?}"),
                )
            } else {
                (StatusCode::BAD_GATEWAY, e.without_url().to_string())
            };
            let forwarded = json!({"url": shown, "error": error});
            // The sender learns only that the app did not answer.
            let answer = if status == StatusCode::GATEWAY_TIMEOUT {
                "the app did not answer in time\n"
            } else {
                "the app could not be reached\n"
            };
            ((status, answer).into_response(), forwarded)
        }
    }
}

/// `target` without a user name or password, for output.
fn without_credentials(target: &str) -> String {
    match url::Url::parse(target) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarding_url_is_shown_without_credentials() {
        assert_eq!(
            without_credentials("http://user:pa55@127.0.0.1:3000/hook"),
            "http://127.0.0.1:3000/hook"
        );
        assert_eq!(
            without_credentials("http://127.0.0.1:3000/hook"),
            "http://127.0.0.1:3000/hook"
        );
    }

    #[test]
    fn only_what_the_app_needs_is_passed_on() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("user-agent", "LTVboost-Webhooks/1.0"),
            ("x-ltvboost-signature", "sha256=00"),
            ("x-ltvboost-delivery", "dlv_1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("via", "1.1 tunnel"),
            ("true-client-ip", "203.0.113.9"),
            ("x-client-ip", "203.0.113.9"),
            ("fly-client-ip", "203.0.113.9"),
            ("tailscale-user-login", "someone@example.com"),
            ("x-forwarded-for", "203.0.113.9"),
            ("cf-connecting-ip", "203.0.113.9"),
            ("authorization", "Bearer t"),
            ("cookie", "s=1"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "this hop only"),
            ("host", "tunnel.example"),
        ] {
            headers.append(HeaderName::from_static(name), value.parse().unwrap());
        }
        // A Connection header that is not text names nothing we would keep.
        headers.append(
            header::CONNECTION,
            axum::http::HeaderValue::from_bytes(b"x-\xff").unwrap(),
        );
        let kept = forwarded_headers(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "user-agent",
                "x-ltvboost-signature",
                "x-ltvboost-delivery",
                "traceparent"
            ]
        );
    }
}
