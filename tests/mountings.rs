//! Every mounting the README shows, served both by `axum::serve` and by
//! `serve::Server`: a signed delivery is handled, another path reaches the
//! router.

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::routing::{get, post};
use common::*;
use ltvboost_webhooks::receiver::extract::VerifiedEvent;
use ltvboost_webhooks::{WebhookConfig, WebhookLayer, WebhookService};
use tokio::net::TcpListener;

/// How a mounting is served.
#[derive(Debug, Clone, Copy)]
enum By {
    AxumServe,
    Server,
}

async fn serve_router(router: Router, by: By) -> SocketAddr {
    match by {
        By::AxumServe => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(axum::serve(listener, router).into_future());
            addr
        }
        By::Server => serve(router).await,
    }
}

async fn serve_wrapped(app: WebhookService<Router>, by: By) -> SocketAddr {
    match by {
        By::AxumServe => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let make = axum::ServiceExt::<Request>::into_make_service(app);
            tokio::spawn(axum::serve(listener, make).into_future());
            addr
        }
        By::Server => serve(app).await,
    }
}

fn health() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

/// Posts a signed event to `path` and checks the router still answers.
async fn check(addr: SocketAddr, path: &str, recorder: &Arc<Recorder>, mounting: &str, by: By) {
    let body = event_json(
        &format!("evt_{mounting}_{by:?}"),
        "response.created",
        r#"{"id":"r"}"#,
    );
    let request = post_request(
        path,
        &[(
            "x-ltvboost-signature",
            &ltvboost_webhooks::signature::sign(&secret(), &body),
        )],
        &body,
    );
    let reply = send_raw(addr, &request).await;
    assert_eq!(reply.status, 200, "{mounting} by {by:?}: {reply:?}");
    if mounting != "extractor" {
        assert_eq!(
            recorder.calls("response.created"),
            1,
            "{mounting} by {by:?}"
        );
    }
    let health = send_raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        health.status, 200,
        "{mounting} by {by:?}: the router was not reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mounting_works_with_axum_serve_and_with_the_server() {
    for by in [By::AxumServe, By::Server] {
        // WebhookLayer::wrap(router)
        let recorder = Recorder::new();
        let app = WebhookLayer::new(config(), recording(&recorder)).wrap(health());
        check(serve_wrapped(app, by).await, PATH, &recorder, "wrap", by).await;

        // router.layer(WebhookLayer)
        let recorder = Recorder::new();
        let router = health().layer(WebhookLayer::new(config(), recording(&recorder)));
        check(serve_router(router, by).await, PATH, &recorder, "layer", by).await;

        // route_service with WebhookEndpoint
        let recorder = Recorder::new();
        let endpoint = WebhookLayer::new(config(), recording(&recorder)).endpoint();
        let router = health().route_service(PATH, endpoint);
        check(
            serve_router(router, by).await,
            PATH,
            &recorder,
            "route_service",
            by,
        )
        .await;

        // nest("/hooks", route_service("/ltvboost", endpoint))
        let recorder = Recorder::new();
        let endpoint = WebhookLayer::new(config(), recording(&recorder)).endpoint();
        let router = health().nest("/hooks", Router::new().route_service("/ltvboost", endpoint));
        check(
            serve_router(router, by).await,
            "/hooks/ltvboost",
            &recorder,
            "nest",
            by,
        )
        .await;

        // The extractor on a plain route.
        let recorder = Recorder::new();
        let router: Router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(PATH, post(|_: VerifiedEvent| async { "" }))
            .with_state(WebhookConfig::new(verifier()));
        check(
            serve_router(router, by).await,
            PATH,
            &recorder,
            "extractor",
            by,
        )
        .await;
    }
}

#[tokio::test]
async fn the_layer_matches_its_path_exactly() {
    let recorder = Recorder::new();
    let app = WebhookLayer::new(config(), recording(&recorder)).wrap(health());
    let addr = serve_wrapped(app, By::Server).await;
    let body = event_json("evt_slash", "response.created", r#"{"id":"r"}"#);
    let signature = ltvboost_webhooks::signature::sign(&secret(), &body);
    let request = post_request(
        &format!("{PATH}/"),
        &[("x-ltvboost-signature", &signature)],
        &body,
    );
    // A trailing slash is another path: the router answers it (404).
    assert_eq!(send_raw(addr, &request).await.status, 404);
    assert_eq!(recorder.total(), 0);
}
