//! Metrics, counted exactly: a known mix of deliveries against real servers
//! on 127.0.0.1, the Prometheus text scraped, every count checked, and the
//! text checked by `promtool check metrics`.
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing;
use common::*;
use ltvboost_webhooks::receiver::extract::VerifiedEvent;
use ltvboost_webhooks::signature::{Secret, sign};
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use tokio::sync::Semaphore;

/// `ltvboost_webhook_deliveries_total` samples: (outcome, reason, event_type) → count.
fn deliveries(text: &str) -> HashMap<(String, String, String), u64> {
    let mut counts = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("ltvboost_webhook_deliveries_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        counts.insert(
            (label("outcome"), label("reason"), label("event_type")),
            value.trim().parse().unwrap(),
        );
    }
    counts
}

// One thread: every delivery starts and ends on it; the in-flight gauge
// still shows, at 0.
#[tokio::test]
async fn a_known_mix_is_counted_exactly() {
    let handle = install_prometheus();

    // The layer, with a handler that can be held to make a delivery in flight.
    let gate = Arc::new(Semaphore::new(1000));
    let recorder = Recorder::gated(gate.clone());
    let small = config().body_limit(4096);
    let addr = serve(Router::new().layer(WebhookLayer::new(small, recording(&recorder)))).await;
    // A receiver whose store is down.
    let down = config().dedupe_store(UnreachableStore);
    let down = serve(Router::new().layer(WebhookLayer::new(down, recording(&recorder)))).await;
    // The extractor.
    let extracted = serve(
        Router::new()
            .route(PATH, routing::post(|_: VerifiedEvent| async { "ok" }))
            .with_state(WebhookConfig::new(verifier())),
    )
    .await;

    let created = |id: &str| event_json(id, "response.created", r#"{"id":"rsp_1"}"#);
    // handled ×3 (two typed, one unknown), duplicate ×1
    assert_eq!(post_signed(addr, &created("evt_m1")).await.status, 200);
    assert_eq!(post_signed(addr, &created("evt_m1")).await.status, 200);
    let sent = event_json("evt_m2", "action.sent", r#"{"id":"act_1"}"#);
    assert_eq!(post_signed(addr, &sent).await.status, 200);
    let unknown = event_json("evt_m3", "quiz.archived", r#"{}"#);
    assert_eq!(post_signed(addr, &unknown).await.status, 200);
    // handler_failed ×1
    recorder.script(&[Behaviour::Fail]);
    let failing = event_json("evt_m4", "segment.ready", r#"{"id":"seg_1"}"#);
    assert_eq!(post_signed(addr, &failing).await.status, 500);
    // in_flight ×1: the first delivery holds the gate.
    let gate_permits = gate.available_permits();
    let held = gate.acquire_many(gate_permits as u32).await.unwrap();
    let slow = event_json("evt_m5", "response.scored", r#"{"id":"rsp_2"}"#);
    let first = tokio::spawn({
        let slow = slow.clone();
        async move { post_signed(addr, &slow).await.status }
    });
    while recorder.calls("response.scored") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(post_signed(addr, &slow).await.status, 409);
    drop(held);
    assert_eq!(first.await.unwrap(), 200); // handled ×4
    // Signature failures, one of each reason.
    let body = created("evt_m6");
    assert_eq!(post(addr, &[], &body).await.status, 401);
    let good = sign(&secret(), &body);
    let twice = [
        ("x-ltvboost-signature", good.as_str()),
        ("x-ltvboost-signature", good.as_str()),
    ];
    assert_eq!(post(addr, &twice, &body).await.status, 401);
    assert_eq!(
        post(addr, &[("x-ltvboost-signature", "sha256=abc")], &body)
            .await
            .status,
        401
    );
    let other = sign(&Secret::new("another-secret-0123456789").unwrap(), &body);
    assert_eq!(
        post(addr, &[("x-ltvboost-signature", &other)], &body)
            .await
            .status,
        401
    );
    // Oversize, not an event, replayed, wrong method, store down.
    let big = vec![b' '; 8192];
    assert_eq!(
        post(
            addr,
            &[("x-ltvboost-signature", &sign(&secret(), &big))],
            &big
        )
        .await
        .status,
        413
    );
    assert_eq!(post_signed(addr, b"[1,2,3]").await.status, 400);
    let old = br#"{"id":"evt_old","type":"action.sent","created_at":"2001-01-01T00:00:00Z","data":{"id":"a"}}"#;
    assert_eq!(post_signed(addr, old).await.status, 400);
    let get = format!("GET {PATH} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    assert_eq!(send_raw(addr, get.as_bytes()).await.status, 405);
    assert_eq!(post_signed(down, &created("evt_m7")).await.status, 503);
    // The extractor: one accepted, one whose data does not fit.
    assert_eq!(post_signed(extracted, &created("evt_m8")).await.status, 200);
    let unfit = event_json("evt_m9", "action.sent", r#"{"note":"no id"}"#);
    assert_eq!(post_signed(extracted, &unfit).await.status, 400);

    // Recorded before each answer went out: no wait.
    let text = handle.render();
    let counts = deliveries(&text);
    let key = |o: &str, r: &str, t: &str| (o.to_owned(), r.to_owned(), t.to_owned());
    let expected = HashMap::from([
        (key("handled", "", "response.created"), 2), // one from the extractor
        (key("handled", "", "action.sent"), 1),
        (key("handled", "", "unknown"), 1),
        (key("handled", "", "response.scored"), 1),
        (key("duplicate", "", "response.created"), 1),
        (key("in_flight", "", "response.scored"), 1),
        (key("handler_failed", "", "segment.ready"), 1),
        (key("store_unavailable", "", "response.created"), 1),
        (key("rejected", "signature_missing", "none"), 1),
        (key("rejected", "signature_duplicated", "none"), 1),
        (key("rejected", "signature_malformed", "none"), 1),
        (key("rejected", "signature_mismatch", "none"), 1),
        (key("rejected", "body_too_large", "none"), 1),
        (key("rejected", "not_an_event", "none"), 1),
        (key("rejected", "replay_too_old", "none"), 1),
        (key("rejected", "method_not_allowed", "none"), 1),
        (key("rejected", "payload_mismatch", "none"), 1),
    ]);
    assert_eq!(counts, expected, "\n{text}");

    // The rest of the set, present and well formed.
    for name in [
        "ltvboost_webhook_handler_duration_seconds_bucket",
        "ltvboost_webhook_body_bytes_bucket",
        "ltvboost_webhook_in_flight",
        "ltvboost_webhook_secret_matches_total{secret_index=\"0\"}",
        "ltvboost_webhook_secret_last_match_timestamp_seconds{secret_index=\"0\"}",
        "ltvboost_webhook_store_duration_seconds_bucket{operation=\"claim\"",
        "ltvboost_webhook_store_errors_total{operation=\"claim\"} 1",
    ] {
        assert!(text.contains(name), "no {name} in\n{text}");
    }
    assert!(text.contains("ltvboost_webhook_in_flight 0"), "{text}");
    // Every store's operations are timed: the unreachable one's claim and
    // the in-memory store's claims and done-records alike.
    let count = |operation: &str| -> u64 {
        let prefix =
            format!("ltvboost_webhook_store_duration_seconds_count{{operation=\"{operation}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str())?.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("claim") > 1, "{text}");
    assert!(count("mark_done") >= 1, "{text}");
    promtool_accepts(&text);
}

/// A free address on 127.0.0.1 (free when asked).
fn free_addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[test]
fn the_example_receiver_serves_metrics_on_its_own_listener() {
    let exe = example("receiver");
    let (web, admin) = (free_addr(), free_addr());
    let mut child = Command::new(exe)
        .env("LTVBOOST_WEBHOOK_ADDR", web.to_string())
        .env("LTVBOOST_METRICS_ADDR", admin.to_string())
        .env("LTVBOOST_WEBHOOK_SECRET", SECRET)
        .env_remove("LTVBOOST_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let text = runtime.block_on(async {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(web).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = event_json("evt_scraped", "response.created", r#"{"id":"r"}"#);
        assert_eq!(post_signed(web, &body).await.status, 200);
        assert_eq!(post(web, &[], &body).await.status, 401);
        // Not on the webhook listener…
        let scrape = b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
        assert_eq!(send_raw(web, scrape).await.status, 404);
        // …but on the admin one, and at once: a delivery is recorded
        // before it is answered.
        let reply = send_raw(admin, scrape).await;
        assert_eq!(reply.status, 200);
        reply.body
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let counts = deliveries(&text);
    let handled = ("handled".into(), String::new(), "response.created".into());
    assert_eq!(counts.get(&handled), Some(&1), "{text}");
    let refused = ("rejected".into(), "signature_missing".into(), "none".into());
    assert_eq!(counts.get(&refused), Some(&1), "{text}");
    // Shown at 0 once deliveries have ended, not left out.
    assert!(text.contains("\nltvboost_webhook_in_flight 0\n"), "{text}");
    promtool_accepts(&text);
}

#[test]
fn the_example_receiver_counts_unknown_accounts_and_failed_reloads() {
    let dir = TempDir::new("metrics-accounts");
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        format!("[accounts.acme]\nsecrets = [\"{SECRET}\"]\n"),
    )
    .unwrap();
    let (web, admin) = (free_addr(), free_addr());
    let mut child = Command::new(example("receiver"))
        .env("LTVBOOST_WEBHOOK_ADDR", web.to_string())
        .env("LTVBOOST_METRICS_ADDR", admin.to_string())
        .env("LTVBOOST_WEBHOOK_ACCOUNTS_FILE", &file)
        .env_remove("LTVBOOST_WEBHOOK_SECRET")
        .env_remove("LTVBOOST_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let text = runtime.block_on(async {
        wait_for_listener(web).await;
        let body = event_json("evt_acct", "response.created", r#"{"id":"r"}"#);
        let signature = sign(&secret(), &body);
        let to = |account: &str| {
            post_request(
                &format!("/webhooks/ltvboost/{account}"),
                &[("x-ltvboost-signature", &signature)],
                &body,
            )
        };
        assert_eq!(send_raw(web, &to("acme")).await.status, 200);
        assert_eq!(send_raw(web, &to("nobody")).await.status, 404);
        // A file that does not parse: read again within a second, refused.
        std::fs::write(&file, "[accounts.acme\n").unwrap();
        let scrape = b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = send_raw(admin, scrape).await.body;
            if text.contains("ltvboost_webhook_secret_file_reloads_total{result=\"failed\"}") {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let counts = deliveries(&text);
    let handled = ("handled".into(), String::new(), "response.created".into());
    assert_eq!(counts.get(&handled), Some(&1), "{text}");
    let unknown = ("rejected".into(), "unknown_account".into(), "none".into());
    assert_eq!(counts.get(&unknown), Some(&1), "{text}");
    promtool_accepts(&text);
}
