//! The registration client against a fake LTVboost API: a real axum server on
//! 127.0.0.1 that records each request and answers from a script.
#![cfg(feature = "client")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use ltvboost_webhooks::client::{
    Client, ClientError, NewWebhook, RetryConfig, ValidationError, WebhookUpdate,
};
use ltvboost_webhooks::signature::Secret;
use ltvboost_webhooks::{Backoff, EventType};
use serde_json::{Value, json};

const TOKEN: &str = "ltvb_test_token_do_not_log_7f3a9c";

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Canned {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn answer(status: u16, body: Value) -> Canned {
    Canned {
        status: StatusCode::from_u16(status).unwrap(),
        headers: vec![("content-type", "application/json".into())],
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
        delay: Duration::ZERO,
    }
}

#[derive(Default)]
struct Fake {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Canned>>,
}

async fn handle(State(fake): State<Arc<Fake>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    fake.requests.lock().unwrap().push(Recorded {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    });
    let canned = fake
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| answer(500, json!({"error": "script ran out"})));
    tokio::time::sleep(canned.delay).await;
    let mut response = (canned.status, canned.body).into_response();
    for (name, value) in canned.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

async fn fake_api(script: Vec<Canned>) -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake {
        script: Mutex::new(script.into()),
        ..Fake::default()
    });
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, addr)
}

fn client(addr: SocketAddr) -> Client {
    client_with(
        addr,
        RetryConfig::default().backoff(Backoff::new(
            Duration::from_millis(10),
            2.0,
            Duration::from_secs(8),
        )),
    )
}

fn client_with(addr: SocketAddr, retry: RetryConfig) -> Client {
    Client::builder(TOKEN)
        .base_url(format!("http://{addr}/v1"))
        .retry(retry)
        .build()
        .unwrap()
}

fn endpoint_json(id: &str) -> Value {
    json!({"id": id, "url": "https://app.example/webhooks/ltvboost", "events": ["response.created", "action.sent"],
           "created_at": "2026-11-27T10:00:00Z", "status": "active"})
}

fn new_webhook() -> NewWebhook {
    NewWebhook::new(
        "https://app.example/webhooks/ltvboost",
        [EventType::ResponseCreated, EventType::ActionSent],
        Secret::new("registered-secret-0123456789").unwrap(),
    )
    .unwrap()
}

/// Every error's Display and Debug, checked for the token.
fn assert_no_token(error: &ClientError) {
    let text = format!("{error} / {error:?}");
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
}

fn assert_common_headers(request: &Recorded) {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("authorization"), format!("Bearer {TOKEN}"));
    assert!(
        header("user-agent").starts_with("ltvboost-webhooks/"),
        "{}",
        header("user-agent")
    );
    assert_eq!(header("accept"), "application/json");
}

#[tokio::test]
async fn create_posts_the_documented_body_and_round_trips_a_201() {
    let (fake, addr) = fake_api(vec![answer(201, endpoint_json("wh_1"))]).await;
    let endpoint = client(addr)
        .webhooks()
        .create(&new_webhook())
        .await
        .unwrap();
    assert_eq!(endpoint.id, "wh_1");
    assert_eq!(
        endpoint.url.as_deref(),
        Some("https://app.example/webhooks/ltvboost")
    );
    assert_eq!(
        endpoint.events.known,
        [EventType::ResponseCreated, EventType::ActionSent]
    );
    assert_eq!(endpoint.extra["status"], "active");

    let requests = fake.requests.lock().unwrap();
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/webhooks")
    );
    assert_common_headers(request);
    assert_eq!(request.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({"url": "https://app.example/webhooks/ltvboost", "events": ["response.created", "action.sent"],
               "secret": "registered-secret-0123456789"})
    );
}

#[tokio::test]
async fn list_get_update_and_delete_use_rest_conventions() {
    let (fake, addr) = fake_api(vec![
        answer(
            200,
            json!({"data": [endpoint_json("wh_1"), endpoint_json("wh_2")]}),
        ),
        answer(200, json!([endpoint_json("wh_3")])),
        answer(200, endpoint_json("wh_1")),
        answer(200, endpoint_json("wh_1")),
        answer(204, Value::Null),
    ])
    .await;
    let client = client(addr);
    let hooks = client.webhooks();
    assert_eq!(hooks.list().await.unwrap().len(), 2);
    assert_eq!(
        hooks.list().await.unwrap()[0].id,
        "wh_3",
        "a bare array is accepted too"
    );
    assert_eq!(hooks.get("wh_1").await.unwrap().id, "wh_1");
    let update = WebhookUpdate::new().events([EventType::SegmentReady, EventType::SegmentUpdated]);
    hooks.update("wh_1", &update).await.unwrap();
    // The future is Send: it can run on another task.
    let moved = client.clone();
    tokio::spawn(async move { moved.webhooks().delete("wh_1").await })
        .await
        .unwrap()
        .unwrap();

    let requests = fake.requests.lock().unwrap();
    let seen: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/v1/webhooks"),
            ("GET", "/v1/webhooks"),
            ("GET", "/v1/webhooks/wh_1"),
            ("PATCH", "/v1/webhooks/wh_1"),
            ("DELETE", "/v1/webhooks/wh_1"),
        ]
    );
    requests.iter().for_each(assert_common_headers);
    let patch: Value = serde_json::from_slice(&requests[3].body).unwrap();
    assert_eq!(
        patch,
        json!({"events": ["segment.ready", "segment.updated"]})
    );
    assert!(requests[0].body.is_empty());
}

#[tokio::test]
async fn api_errors_are_typed_with_the_apis_reason() {
    let (fake, addr) = fake_api(vec![
        answer(
            401,
            json!({"error": {"code": "unauthorized", "message": "invalid token"}}),
        ),
        answer(404, json!({"error": "webhook not found"})),
        answer(
            422,
            json!({"code": "invalid_url", "message": "url must be reachable"}),
        ),
        Canned {
            body: "<html>teapot</html>".into(),
            headers: vec![],
            ..answer(418, Value::Null)
        },
    ])
    .await;
    let hooks_client = client(addr);
    let hooks = hooks_client.webhooks();
    let errors = [
        hooks.create(&new_webhook()).await.unwrap_err(),
        hooks.get("wh_missing").await.unwrap_err(),
        hooks.create(&new_webhook()).await.unwrap_err(),
        hooks.list().await.unwrap_err(),
    ];
    let summary: Vec<(Option<u16>, String)> = errors
        .iter()
        .map(|e| (e.status().map(|s| s.as_u16()), e.to_string()))
        .collect();
    assert_eq!(
        summary[0],
        (
            Some(401),
            "LTVboost API answered 401 Unauthorized: unauthorized: invalid token".into()
        )
    );
    assert_eq!(
        summary[1],
        (
            Some(404),
            "LTVboost API answered 404 Not Found: webhook not found".into()
        )
    );
    assert_eq!(
        summary[2],
        (
            Some(422),
            "LTVboost API answered 422 Unprocessable Entity: invalid_url: url must be reachable"
                .into()
        )
    );
    assert!(
        matches!(&errors[3], ClientError::Api { body: Some(b), .. } if b == "<html>teapot</html>")
    );
    errors.iter().for_each(assert_no_token);
    assert_eq!(
        fake.requests.lock().unwrap().len(),
        4,
        "4xx answers are not retried"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_after_header() {
    let mut limited = answer(429, json!({"error": "slow down"}));
    limited.headers.push(("retry-after", "1".into()));
    let (fake, addr) = fake_api(vec![limited, answer(201, endpoint_json("wh_9"))]).await;
    let started = Instant::now();
    let endpoint = client(addr)
        .webhooks()
        .create(&new_webhook())
        .await
        .unwrap();
    assert_eq!(endpoint.id, "wh_9");
    assert_eq!(
        fake.requests.lock().unwrap().len(),
        2,
        "POST is retried on 429"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After was not honoured"
    );
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_after_it() {
    let mut unavailable = answer(503, json!({"error": "maintenance"}));
    unavailable.headers.push(("retry-after", "1".into()));
    let mut too_long = answer(503, json!({"error": "maintenance"}));
    too_long.headers.push(("retry-after", "86400".into()));
    let (fake, addr) = fake_api(vec![
        unavailable,
        answer(200, endpoint_json("wh_3")),
        too_long,
    ])
    .await;
    let started = Instant::now();
    let endpoint = client(addr).webhooks().get("wh_3").await.unwrap();
    assert_eq!(endpoint.id, "wh_3");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After was not honoured on 503"
    );
    let error = client(addr).webhooks().get("wh_3").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(fake.requests.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    // The request body carries the secret: a redirect must not re-send it.
    let mut moved = answer(307, Value::Null);
    moved
        .headers
        .push(("location", "http://127.0.0.1:9/v1/webhooks".into()));
    let (fake, addr) = fake_api(vec![moved]).await;
    let error = client(addr)
        .webhooks()
        .create(&new_webhook())
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::TEMPORARY_REDIRECT));
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
    assert_no_token(&error);
}

#[tokio::test]
async fn ids_that_are_not_one_path_segment_are_refused_before_sending() {
    let (fake, addr) = fake_api(vec![]).await;
    let webhooks = client(addr);
    for id in ["..", ".", "a/b", "x?y=1", "x#y", "a b"] {
        let error = webhooks.webhooks().delete(id).await.unwrap_err();
        assert!(
            matches!(error, ClientError::Invalid(ValidationError::BadId(_))),
            "{id:?}: {error:?}"
        );
    }
    assert!(fake.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_returned_at_once() {
    let mut limited = answer(429, json!({"error": "come back tomorrow"}));
    limited.headers.push(("retry-after", "86400".into()));
    let (fake, addr) = fake_api(vec![limited]).await;
    let error = client(addr).webhooks().list().await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_503_is_retried_for_get_and_for_create_under_one_idempotency_key() {
    let unavailable = || answer(503, json!({"error": "maintenance"}));
    let (fake, addr) = fake_api(vec![unavailable(), unavailable(), answer(200, json!([]))]).await;
    assert!(client(addr).webhooks().list().await.unwrap().is_empty());
    assert_eq!(fake.requests.lock().unwrap().len(), 3);

    // A create carries an Idempotency-Key, the same on every attempt, so
    // the API can answer a repeat with the first one's result.
    let (fake, addr) = fake_api(vec![unavailable(), answer(201, endpoint_json("wh_once"))]).await;
    let endpoint = client(addr)
        .webhooks()
        .create(&new_webhook())
        .await
        .unwrap();
    assert_eq!(endpoint.id, "wh_once");
    let keys: Vec<_> = fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.headers.get("idempotency-key").cloned())
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].is_some() && keys[0] == keys[1], "{keys:?}");

    // The caller's own key, for a create repeated after a crash.
    let (fake, addr) = fake_api(vec![answer(201, endpoint_json("wh_mine"))]).await;
    client(addr)
        .webhooks()
        .create_with_key(&new_webhook(), "order-42")
        .await
        .unwrap();
    let key = fake.requests.lock().unwrap()[0].headers["idempotency-key"].clone();
    assert_eq!(key, "order-42");
}

#[tokio::test]
async fn api_errors_keep_the_request_id_and_calls_have_a_deadline() {
    let mut missing = answer(404, json!({"error": "not found"}));
    missing.headers.push(("x-request-id", "req_abc".into()));
    let (_, addr) = fake_api(vec![missing]).await;
    let error = client(addr).webhooks().get("wh_1").await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Api { request_id: Some(id), .. } if id == "req_abc"),
        "{error:?}"
    );
    assert!(error.to_string().contains("req_abc"));
    // Every attempt under the per-attempt timeout, but together past the deadline.
    let mut slow = answer(503, json!({"error": "busy"}));
    slow.delay = Duration::from_millis(300);
    let (_, addr) = fake_api(vec![slow.clone(), slow.clone(), slow.clone(), slow]).await;
    let client = Client::builder(TOKEN)
        .base_url(format!("http://{addr}/v1"))
        .retry(RetryConfig::default().backoff(Backoff::new(
            Duration::from_millis(10),
            2.0,
            Duration::from_secs(8),
        )))
        .deadline(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(matches!(
        client.webhooks().get("wh_1").await,
        Err(ClientError::Timeout)
    ));
}

#[tokio::test]
async fn the_callers_http_client_is_used() {
    let (fake, addr) = fake_api(vec![answer(200, json!([]))]).await;
    let mine = reqwest::Client::builder()
        .user_agent("my-app/1.0")
        .build()
        .unwrap();
    let client = Client::builder(TOKEN)
        .base_url(format!("http://{addr}/v1"))
        .http_client(mine)
        .build()
        .unwrap();
    client.webhooks().list().await.unwrap();
    assert_eq!(
        fake.requests.lock().unwrap()[0].headers["user-agent"],
        "my-app/1.0"
    );
}

#[tokio::test]
async fn listing_follows_next_urls_on_the_same_origin_only() {
    let (fake, addr) = fake_api(vec![
        answer(200, json!({"data": [endpoint_json("wh_1")], "next": "/v1/webhooks?page=2"})),
        answer(200, json!({"data": [endpoint_json("wh_2")], "next": "https://elsewhere.example/v1/webhooks"})),
    ])
    .await;
    let client = client(addr);
    let mut pages = client.webhooks().pages();
    assert_eq!(pages.next_page().await.unwrap().unwrap()[0].id, "wh_1");
    assert_eq!(pages.next_page().await.unwrap().unwrap()[0].id, "wh_2");
    // The token is not sent to another origin.
    assert!(matches!(
        pages.next_page().await,
        Some(Err(ClientError::ForeignPage(_)))
    ));
    assert!(pages.next_page().await.is_none());
    let paths: Vec<String> = fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/v1/webhooks", "/v1/webhooks"]);
}

#[tokio::test]
async fn retries_stop_after_the_configured_count_and_can_be_off() {
    let unavailable = || answer(502, Value::Null);
    let (fake, addr) = fake_api(vec![unavailable(); 10]).await;
    let retry = RetryConfig::default().max_retries(2).backoff(Backoff::new(
        Duration::from_millis(5),
        2.0,
        Duration::from_secs(8),
    ));
    assert!(client_with(addr, retry).webhooks().list().await.is_err());
    assert_eq!(fake.requests.lock().unwrap().len(), 3);

    let (fake, addr) = fake_api(vec![unavailable(); 10]).await;
    assert!(
        client_with(addr, RetryConfig::disabled())
            .webhooks()
            .list()
            .await
            .is_err()
    );
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_slow_api_times_out() {
    let slow = Canned {
        delay: Duration::from_secs(5),
        ..answer(200, json!([]))
    };
    let (_fake, addr) = fake_api(vec![slow]).await;
    let client = Client::builder(TOKEN)
        .base_url(format!("http://{addr}/v1"))
        .timeout(Duration::from_millis(200))
        .retry(RetryConfig::disabled())
        .build()
        .unwrap();
    let error = client.webhooks().list().await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout), "{error:?}");
    assert_no_token(&error);
}

#[tokio::test]
async fn a_malformed_answer_is_a_decode_error() {
    let (_fake, addr) = fake_api(vec![Canned {
        body: "{not json".into(),
        ..answer(200, Value::Null)
    }])
    .await;
    let error = client(addr).webhooks().get("wh_1").await.unwrap_err();
    assert!(
        matches!(error, ClientError::Decode { status, .. } if status == StatusCode::OK),
        "{error:?}"
    );
    assert_no_token(&error);
}

#[tokio::test]
async fn connection_failures_are_transport_errors_without_the_token() {
    // A port nobody listens on: the POST never reached a server, so it is retried.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let retry = RetryConfig::default().max_retries(1).backoff(Backoff::new(
        Duration::from_millis(5),
        2.0,
        Duration::from_secs(8),
    ));
    let error = client_with(addr, retry)
        .webhooks()
        .create(&new_webhook())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
    assert_no_token(&error);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_sending() {
    let (fake, addr) = fake_api(vec![]).await;
    let client = client(addr);
    let secret = Secret::new("registered-secret-0123456789").unwrap();
    assert!(matches!(
        NewWebhook::new(
            "http://app.example/hook",
            [EventType::ActionSent],
            secret.clone()
        ),
        Err(ValidationError::NotHttps(_))
    ));
    assert!(matches!(
        NewWebhook::new("https://app.example/hook", [], secret.clone()),
        Err(ValidationError::NoEvents)
    ));
    let error = client
        .webhooks()
        .update("wh_1", &WebhookUpdate::new().url("not a url"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::Invalid(ValidationError::NotAbsolute(_))),
        "{error:?}"
    );
    assert!(matches!(
        client.webhooks().get("").await,
        Err(ClientError::Invalid(ValidationError::EmptyId))
    ));
    assert!(fake.requests.lock().unwrap().is_empty());
    // A plain-http API base is refused too, except on loopback.
    assert!(
        Client::builder(TOKEN)
            .base_url("http://api.example/v1")
            .build()
            .is_err()
    );
}

#[test]
fn the_client_never_prints_its_token() {
    let client = Client::new(TOKEN).unwrap();
    assert!(!format!("{client:?}").contains(TOKEN));
    let builder = Client::builder(TOKEN);
    assert!(!format!("{builder:?}").contains(TOKEN));
}
