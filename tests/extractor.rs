//! The axum extractor follows the same status table as the layer.

mod common;

use axum::Router;
use axum::routing;
use common::*;
use ltvboost_webhooks::WebhookConfig;
use ltvboost_webhooks::event::Event;
use ltvboost_webhooks::receiver::extract::VerifiedEvent;

async fn webhook(VerifiedEvent { delivery, event }: VerifiedEvent) -> String {
    let what = match event {
        Event::ResponseCreated(r) => format!("created {}", r.id),
        Event::Unknown { type_name, .. } => format!("unknown {type_name}"),
        other => format!("{:?}", other.event_type()),
    };
    format!(
        "{} {what} via secret {}",
        delivery.id().unwrap_or("-"),
        delivery.secret_index()
    )
}

async fn app() -> std::net::SocketAddr {
    let config = WebhookConfig::new(verifier()).body_limit(4096);
    serve(
        Router::new()
            .route(PATH, routing::post(webhook))
            .with_state(config),
    )
    .await
}

#[tokio::test]
async fn a_valid_event_is_extracted() {
    let addr = app().await;
    let reply = post_signed(
        addr,
        &event_json("evt_x", "response.created", r#"{"response_id":"r9"}"#),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "evt_x created r9 via secret 0")
    );
}

#[tokio::test]
async fn an_unknown_type_is_extracted_not_refused() {
    let addr = app().await;
    let reply = post_signed(addr, &event_json("evt_u", "quiz.archived", "{}")).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "evt_u unknown quiz.archived via secret 0")
    );
}

#[tokio::test]
async fn rejections_follow_the_status_table() {
    let addr = app().await;
    let body = event_json("evt_r", "response.created", r#"{"id":"r"}"#);
    assert_eq!(post(addr, &[], &body).await.status, 401);
    assert_eq!(
        post(addr, &[("x-ltvboost-signature", "sha256=00")], &body)
            .await
            .status,
        401
    );
    assert_eq!(post_signed(addr, &vec![b' '; 5000]).await.status, 413);
    assert_eq!(post_signed(addr, b"{}").await.status, 400);
    let misfit = post_signed(
        addr,
        &event_json("evt_m", "segment.ready", r#"{"name":"no id"}"#),
    )
    .await;
    assert_eq!(misfit.status, 400);
    assert!(misfit.body.contains("segment.ready"), "{misfit:?}");
}

#[tokio::test]
async fn a_delivery_is_extracted_whatever_the_shape_of_its_data() {
    async fn raw(delivery: ltvboost_webhooks::handler::Delivery) -> String {
        let body = String::from_utf8_lossy(delivery.envelope().body()).into_owned();
        format!("{} {}", delivery.type_name(), body.len())
    }
    let config = WebhookConfig::new(verifier()).body_limit(4096);
    let addr = serve(
        Router::new()
            .route(PATH, routing::post(raw))
            .with_state(config),
    )
    .await;
    // A known type whose data VerifiedEvent refuses (400) is a Delivery.
    let misfit = event_json("evt_m", "segment.ready", r#"{"name":"no id"}"#);
    let reply = post_signed(addr, &misfit).await;
    assert_eq!(
        (reply.status, reply.body),
        (200, format!("segment.ready {}", misfit.len()))
    );
    // Everything before the payload is refused as VerifiedEvent refuses it.
    assert_eq!(post(addr, &[], &misfit).await.status, 401);
    assert_eq!(
        post(addr, &[("x-ltvboost-signature", "sha256=00")], &misfit)
            .await
            .status,
        401
    );
    assert_eq!(post_signed(addr, &vec![b' '; 5000]).await.status, 413);
    assert_eq!(post_signed(addr, b"{}").await.status, 400);
}
