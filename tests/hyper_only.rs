//! The layer on plain hyper and tower, with no axum anywhere.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use ltvboost_webhooks::WebhookLayer;
use tower::{Layer, service_fn};

async fn routes(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(format!(
        "inner saw {}",
        request.uri().path()
    )))))
}

#[tokio::test]
async fn the_layer_wraps_a_plain_hyper_service() {
    let recorder = Recorder::new();
    let service = WebhookLayer::new(config(), recording(&recorder)).layer(service_fn(routes));
    let addr = serve(service).await;

    let body = event_json("evt_hyper", "action.queued", r#"{"action_id":"a_1"}"#);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(recorder.calls("action.queued"), 1);

    assert_eq!(post(addr, &[], &body).await.status, 401);

    let other = send_raw(
        addr,
        b"GET /anything HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (200, "inner saw /anything")
    );
}

#[tokio::test]
async fn the_service_answers_in_process_without_a_server() {
    use tower::ServiceExt;
    let recorder = Recorder::new();
    let service = WebhookLayer::new(config(), recording(&recorder)).layer(service_fn(
        |_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        },
    ));
    let body = event_json(
        "evt_oneshot",
        "segment.updated",
        r#"{"segment_id":"s","member_count":3}"#,
    );
    let request = ltvboost_webhooks::testing::signed_request_to(PATH, &secret(), body);
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(recorder.calls("segment.updated"), 1);
}
