//! Each delivery gets a span with the event id, type, outcome and matched
//! secret index; no secret or expected digest reaches the logs.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use ltvboost_webhooks::WebhookLayer;
use ltvboost_webhooks::signature::sign;
use tower::Layer;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn spans_name_the_delivery_and_never_the_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let recorder = Recorder::new();
    recorder.script(&[Behaviour::Fail]);
    let service = WebhookLayer::new(config(), recording(&recorder)).layer(tower::service_fn(
        |_: http::Request<hyper::body::Incoming>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::new(),
            )))
        },
    ));
    let addr = serve(service).await;

    let failing = event_json("evt_fails_first", "action.failed", r#"{"id":"a"}"#);
    assert_eq!(post_signed(addr, &failing).await.status, 500);
    let ok = event_json("evt_logged", "response.scored", r#"{"id":"r","score":3}"#);
    assert_eq!(post_signed(addr, &ok).await.status, 200);
    // A forged request: the digest the server would have expected must not leak.
    let forged = event_json("evt_forged", "response.scored", r#"{"id":"r"}"#);
    let expected = sign(&secret(), &forged);
    let reply = post(
        addr,
        &[(
            "x-ltvboost-signature",
            &format!("sha256={}", "ab".repeat(32)),
        )],
        &forged,
    )
    .await;
    assert_eq!(reply.status, 401);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for wanted in [
        r#"event_id="evt_logged""#,
        r#"event_type="response.scored""#,
        "secret_index=0",
        r#"outcome="handled""#,
        r#"outcome="handler_failed""#,
        "scripted failure",
        r#"outcome="rejected""#,
    ] {
        assert!(logs.contains(wanted), "missing {wanted} in logs:\n{logs}");
    }
    assert!(!logs.contains(SECRET), "the secret reached the logs");
    assert!(
        !logs.contains(&expected["sha256=".len()..]),
        "the expected digest reached the logs"
    );
}
