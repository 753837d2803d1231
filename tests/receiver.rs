//! The receiver's status table, row by row, over real HTTP on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::*;
use ltvboost_webhooks::signature::{Secret, Verifier, sign};
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

async fn app(recorder: &Arc<Recorder>) -> std::net::SocketAddr {
    app_with(recorder, |layer| layer).await
}

async fn app_with(
    recorder: &Arc<Recorder>,
    configure: impl FnOnce(WebhookConfig) -> WebhookConfig,
) -> std::net::SocketAddr {
    let layer = WebhookLayer::new(configure(config()), recording(recorder));
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .layer(layer);
    serve(router).await
}

fn created(id: &str) -> Vec<u8> {
    event_json(id, "response.created", r#"{"id":"rsp_1","quiz_id":"q_1"}"#)
}

#[tokio::test]
async fn valid_event_is_handled_once_with_200() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    let reply = post_signed(addr, &created("evt_ok")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // A success is its status alone: no body, so no content type either.
    assert_eq!(reply.body, "", "{reply:?}");
    assert!(reply.head.contains("content-length: 0"), "{reply:?}");
    assert!(!reply.head.contains("content-type"), "{reply:?}");
    assert_eq!(recorder.calls("response.created"), 1);
}

#[tokio::test]
async fn every_documented_type_reaches_its_method() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    for (i, t) in ltvboost_webhooks::EventType::ALL.iter().enumerate() {
        let reply = post_signed(
            addr,
            &event_json(&format!("evt_{i}"), t.as_str(), r#"{"id":"x"}"#),
        )
        .await;
        assert_eq!(reply.status, 200, "{t}: {reply:?}");
        assert_eq!(recorder.calls(t.as_str()), 1, "{t}");
    }
    assert_eq!(recorder.total(), 7);
}

#[tokio::test]
async fn a_redelivery_after_success_answers_200_without_the_handler() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    let body = created("evt_dup");
    assert_eq!(post_signed(addr, &body).await.status, 200);
    let again = post_signed(addr, &body).await;
    assert_eq!(again.status, 200);
    assert!(again.body.contains("duplicate"), "{again:?}");
    assert_eq!(recorder.calls("response.created"), 1);
}

#[tokio::test]
async fn events_without_an_id_are_deduplicated_by_signature() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    let body = br#"{"type":"segment.ready","data":{"id":"seg_1"}}"#;
    assert_eq!(post_signed(addr, body).await.status, 200);
    assert_eq!(post_signed(addr, body).await.status, 200);
    let other = br#"{"type":"segment.ready","data":{"id":"seg_2"}}"#;
    assert_eq!(post_signed(addr, other).await.status, 200);
    assert_eq!(recorder.calls("segment.ready"), 2);
}

#[tokio::test]
async fn a_duplicate_arriving_while_the_first_is_in_flight_answers_409() {
    let gate = Arc::new(Semaphore::new(0));
    let recorder = Recorder::gated(gate.clone());
    let addr = app(&recorder).await;
    let body = created("evt_inflight");
    let first = tokio::spawn({
        let body = body.clone();
        async move { post_signed(addr, &body).await }
    });
    while recorder.total() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = post_signed(addr, &body).await;
    assert_eq!(second.status, 409, "{second:?}");
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(recorder.total(), 1);
}

/// A handler that hangs is dropped at its deadline: `500`, its claim
/// released, and the sender's retry runs it again (not `409` for ever).
#[tokio::test]
async fn a_hung_handler_answers_500_at_its_deadline_and_the_retry_runs_it() {
    let gate = Arc::new(Semaphore::new(0));
    let recorder = Recorder::gated(gate.clone());
    let addr = app_with(&recorder, |config| {
        config.handler_timeout(Duration::from_millis(300))
    })
    .await;
    let body = created("evt_hung");
    let reply = post_signed(addr, &body).await;
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(!reply.body.contains("did not finish"), "{reply:?}");
    gate.add_permits(1);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(recorder.calls("response.created"), 2);
}

#[tokio::test]
async fn a_failing_handler_answers_500_and_the_retry_runs_it_again() {
    let recorder = Recorder::new();
    recorder.script(&[Behaviour::Fail]);
    let addr = app(&recorder).await;
    let body = created("evt_fail");
    let reply = post_signed(addr, &body).await;
    assert_eq!(reply.status, 500);
    assert!(
        !reply.body.contains("scripted"),
        "handler errors are not echoed: {reply:?}"
    );
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(recorder.calls("response.created"), 2);
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let recorder = Recorder::new();
    recorder.script(&[Behaviour::Panic]);
    let addr = app(&recorder).await;
    let body = created("evt_panic");
    assert_eq!(post_signed(addr, &body).await.status, 500);
    // The claim was released, so the retry runs the handler again.
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(
        post_signed(addr, &created("evt_after_panic")).await.status,
        200
    );
    assert_eq!(recorder.calls("response.created"), 3);
}

#[tokio::test]
async fn an_unknown_type_reaches_the_fallback_and_answers_200() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    let reply = post_signed(
        addr,
        &event_json("evt_new", "quiz.archived", r#"{"quiz_id":"q"}"#),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(recorder.calls("unknown:quiz.archived"), 1);
}

#[tokio::test]
async fn data_that_does_not_fit_answers_400_after_the_fallback_saw_it() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    // No usable identifier: the one way a known type's data does not fit.
    let body = event_json("evt_bad", "response.scored", r#"{"id":{"n":1},"score":3}"#);
    let reply = post_signed(addr, &body).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("does not fit"), "{reply:?}");
    assert_eq!(recorder.calls("mismatched:response.scored"), 1);
    assert_eq!(recorder.calls("response.scored"), 0);
    let reasons = recorder.mismatches();
    assert!(reasons[0].contains("identifier"), "{reasons:?}");
    assert!(reasons[0].contains("line 1 column"), "{reasons:?}");
    // serde_json's message names the place, never the value sent.
    assert!(!reasons[0].contains("\"n\""), "{reasons:?}");
}

#[tokio::test]
async fn a_field_of_an_unexpected_shape_still_reaches_its_handler() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    for (id, t, data) in [
        (
            "evt_shape_1",
            "response.scored",
            r#"{"id":"r","score":"high"}"#,
        ),
        (
            "evt_shape_2",
            "action.failed",
            r#"{"id":"a","error":{"code":"bounced","message":"mailbox full"}}"#,
        ),
        (
            "evt_shape_3",
            "segment.ready",
            r#"{"id":"s","member_count":"many"}"#,
        ),
    ] {
        let reply = post_signed(addr, &event_json(id, t, data)).await;
        assert_eq!(reply.status, 200, "{t}: {reply:?}");
        assert_eq!(recorder.calls(t), 1, "{t}");
    }
}

#[tokio::test]
async fn data_that_does_not_fit_can_be_acknowledged_instead() {
    let recorder = Recorder::new();
    let addr = app_with(&recorder, |l| l.acknowledge_mismatched(true)).await;
    let body = event_json("evt_bad", "action.sent", r#"{"action_id":{"nested":true}}"#);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(recorder.calls("mismatched:action.sent"), 1);
}

#[tokio::test]
async fn bad_signatures_answer_401_and_call_nothing() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    let body = created("evt_sig");
    let good = sign(&secret(), &body);
    let hex = &good["sha256=".len()..];
    let wrong_secret = sign(&Secret::new("some-other-secret-0000").unwrap(), &body);
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("missing", vec![], body.clone()),
        (
            "empty",
            vec![("x-ltvboost-signature", String::new())],
            body.clone(),
        ),
        (
            "bare hex",
            vec![("x-ltvboost-signature", hex.to_owned())],
            body.clone(),
        ),
        (
            "sha1 scheme",
            vec![("x-ltvboost-signature", format!("sha1={hex}"))],
            body.clone(),
        ),
        (
            "short",
            vec![("x-ltvboost-signature", format!("sha256={}", &hex[..62]))],
            body.clone(),
        ),
        (
            "long",
            vec![("x-ltvboost-signature", format!("sha256={hex}00"))],
            body.clone(),
        ),
        (
            "not hex",
            vec![("x-ltvboost-signature", format!("sha256=zz{}", &hex[2..]))],
            body.clone(),
        ),
        (
            "wrong secret",
            vec![("x-ltvboost-signature", wrong_secret)],
            body.clone(),
        ),
        (
            "duplicated",
            vec![
                ("x-ltvboost-signature", good.clone()),
                ("x-ltvboost-signature", good.clone()),
            ],
            body.clone(),
        ),
        (
            "body altered",
            vec![("x-ltvboost-signature", good.clone())],
            created("evt_sig2"),
        ),
    ];
    for (name, headers, body) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = post(addr, &headers, &body).await;
        assert_eq!(reply.status, 401, "{name}: {reply:?}");
        assert!(
            !reply.body.contains(hex),
            "{name}: the expected digest leaked"
        );
        assert!(!reply.body.contains(SECRET), "{name}: the secret leaked");
    }
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn a_signature_over_re_serialised_json_does_not_verify() {
    // What LTVboost's Node example does: HMAC the parsed-then-serialised body.
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    let sent =
        br#"{ "id": "evt_ser", "type": "response.created", "data": { "id": "r", "score": 1.0 } }"#;
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(sent).unwrap()).unwrap();
    assert_ne!(&sent[..], &reserialised[..]);
    let signature = sign(&secret(), &reserialised);
    let reply = post(addr, &[("x-ltvboost-signature", &signature)], sent).await;
    assert_eq!(reply.status, 401);
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_answers_413_by_content_length() {
    let recorder = Recorder::new();
    let addr = app_with(&recorder, |l| l.body_limit(1024)).await;
    let body = vec![b' '; 2048];
    let reply = post_signed(addr, &body).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_answers_413_while_streaming() {
    let recorder = Recorder::new();
    let addr = app_with(&recorder, |l| l.body_limit(1024)).await;
    let signature = sign(&secret(), b"irrelevant");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ntransfer-encoding: chunked\r\nx-ltvboost-signature: {signature}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Keep sending 512-byte chunks; the server must answer long before the end.
    let chunk = format!("200\r\n{}\r\n", " ".repeat(512));
    for _ in 0..8 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn a_body_that_stalls_answers_408() {
    let recorder = Recorder::new();
    let addr = app_with(&recorder, |l| l.read_timeout(Duration::from_millis(300))).await;
    let body = created("evt_slow");
    let signature = sign(&secret(), &body);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = post_request(PATH, &[("x-ltvboost-signature", &signature)], &body);
    // Everything but the last 10 bytes of the body, then nothing.
    stream
        .write_all(&request[..request.len() - 10])
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn a_trickled_body_meets_a_total_deadline_not_a_per_byte_one() {
    let recorder = Recorder::new();
    let addr = app_with(&recorder, |l| l.read_timeout(Duration::from_millis(400))).await;
    let body = created("evt_trickle");
    let signature = sign(&secret(), &body);
    let request = post_request(PATH, &[("x-ltvboost-signature", &signature)], &body);
    let split = request.len() - body.len();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request[..split]).await.unwrap();
    let started = std::time::Instant::now();
    // One byte every 50 ms: each gap is far inside the deadline, the total is not.
    for byte in &request[split..] {
        if stream.write_all(&[*byte]).await.is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn a_signed_body_that_is_not_an_envelope_answers_400() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    for body in [
        &b"not json"[..],
        b"[1,2,3]",
        br#"{"data":{}}"#,
        br#"{"type":42}"#,
        b"",
    ] {
        let reply = post_signed(addr, body).await;
        assert_eq!(
            reply.status,
            400,
            "{:?}: {reply:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn other_methods_on_the_webhook_path_answer_405() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let request = format!(
            "{method} {PATH} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        let reply = send_raw(addr, request.as_bytes()).await;
        assert_eq!(reply.status, 405, "{method}");
        assert!(
            reply.head.to_ascii_lowercase().contains("allow: post"),
            "{reply:?}"
        );
    }
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn other_paths_pass_through_untouched() {
    let recorder = Recorder::new();
    let addr = app(&recorder).await;
    let health = send_raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let missing = send_raw(
        addr,
        b"GET /nope HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(missing.status, 404);
    // A signed event on another path is not the layer's business either.
    let body = created("evt_elsewhere");
    let signature = sign(&secret(), &body);
    let reply = send_raw(
        addr,
        &post_request(
            "/webhooks/other",
            &[("x-ltvboost-signature", &signature)],
            &body,
        ),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn rotation_accepts_both_secrets_and_refuses_a_retired_one() {
    let old = Secret::new("the-old-secret-from-2025").unwrap();
    let new = Secret::new("the-new-secret-from-2026").unwrap();
    let retired = Secret::new("a-secret-retired-long-ago").unwrap();
    let recorder = Recorder::new();
    let verifier = Verifier::new([new.clone(), old.clone()]).unwrap();
    let layer = WebhookLayer::new(
        WebhookConfig::new(verifier).path(PATH),
        recording(&recorder),
    );
    let addr = serve(Router::new().layer(layer)).await;
    for (i, secret) in [&new, &old].into_iter().enumerate() {
        let body = created(&format!("evt_rot_{i}"));
        let reply = post(
            addr,
            &[("x-ltvboost-signature", &sign(secret, &body))],
            &body,
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    let body = created("evt_rot_retired");
    let reply = post(
        addr,
        &[("x-ltvboost-signature", &sign(&retired, &body))],
        &body,
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(recorder.total(), 2);
}

#[tokio::test]
async fn require_created_at_refuses_events_without_a_readable_one() {
    let recorder = Recorder::new();
    let addr = app_with(&recorder, |c| c.require_created_at(true)).await;
    for (id, created_at) in [
        ("evt_no_time", None),
        ("evt_bad_time", Some(r#""yesterday""#)),
    ] {
        let body = match created_at {
            None => format!(r#"{{"id":"{id}","type":"action.sent","data":{{"id":"a"}}}}"#),
            Some(at) => format!(
                r#"{{"id":"{id}","type":"action.sent","created_at":{at},"data":{{"id":"a"}}}}"#
            ),
        };
        let reply = post_signed(addr, body.as_bytes()).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert!(reply.body.contains("created_at"), "{reply:?}");
    }
    // Unix seconds and milliseconds, as numbers or strings, are readable.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    for (i, at) in [
        now.as_secs().to_string(),
        format!("\"{}\"", now.as_secs()),
        now.as_millis().to_string(),
        format!("\"{}\"", now.as_millis()),
    ]
    .iter()
    .enumerate()
    {
        let body = format!(
            r#"{{"id":"evt_time_{i}","type":"action.sent","created_at":{at},"data":{{"id":"a"}}}}"#
        );
        assert_eq!(post_signed(addr, body.as_bytes()).await.status, 200, "{at}");
    }
    assert_eq!(recorder.calls("action.sent"), 4);
}

#[tokio::test]
async fn an_unreachable_store_answers_503_and_calls_nothing() {
    let recorder = Recorder::new();
    let addr = app_with(&recorder, |l| l.dedupe_store(UnreachableStore)).await;
    let reply = post_signed(addr, &created("evt_store")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn a_connection_that_stalls_mid_header_is_closed() {
    let recorder = Recorder::new();
    let router = Router::new().layer(WebhookLayer::new(config(), recording(&recorder)));
    let addr = serve_with(router, |s| {
        s.header_read_timeout(Duration::from_millis(300))
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /webhooks/ltvboost HTTP/1.1\r\nhost: t\r\nx-ltvb")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the server held a stalled connection for 10 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the deadline"
    );
    assert_eq!(recorder.total(), 0);
}

#[tokio::test]
async fn an_unbounded_replay_window_still_deduplicates() {
    let recorder = Recorder::new();
    let addr = app_with(&recorder, |l| {
        l.replay_window(ltvboost_webhooks::replay::ReplayWindow::UNBOUNDED)
    })
    .await;
    let old = br#"{"id":"evt_old","type":"segment.ready","created_at":"1999-01-01T00:00:00Z","data":{"id":"s"}}"#;
    assert_eq!(post_signed(addr, old).await.status, 200);
    assert_eq!(post_signed(addr, old).await.status, 200);
    assert_eq!(recorder.calls("segment.ready"), 1);
}

#[tokio::test]
async fn a_sender_that_hangs_up_does_not_cancel_a_running_handler() {
    let gate = Arc::new(Semaphore::new(0));
    let recorder = Recorder::gated(gate.clone());
    let addr = app(&recorder).await;
    let body = created("evt_hangup");
    let signature = sign(&secret(), &body);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&post_request(
            PATH,
            &[("x-ltvboost-signature", &signature)],
            &body,
        ))
        .await
        .unwrap();
    while recorder.total() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(stream); // the sender gives up mid-handler
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1); // the handler finishes anyway…
    let mut reply = post_signed(addr, &body).await;
    for _ in 0..100 {
        if reply.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        reply = post_signed(addr, &body).await;
    }
    // …and its success was recorded: the retry is a duplicate.
    assert_eq!(
        (reply.status, reply.body.trim()),
        (200, "duplicate: already handled")
    );
    assert_eq!(recorder.total(), 1);
}

#[tokio::test]
async fn one_function_takes_every_event_known_unknown_or_mismatched() {
    use ltvboost_webhooks::Event;
    use ltvboost_webhooks::handler::{Delivery, Handlers};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handlers = Handlers::any({
        let seen = seen.clone();
        move |delivery: Delivery| {
            let seen = seen.clone();
            async move {
                let what = match delivery.event() {
                    Ok(Event::ResponseCreated(r)) => format!("created {}", r.id),
                    Ok(Event::Unknown { type_name, .. }) => format!("unknown {type_name}"),
                    Ok(other) => format!("{other:?}"),
                    Err(mismatch) => format!("mismatched {}", mismatch.event_type),
                };
                seen.lock().unwrap().push(what);
                if delivery.id() == Some("evt_any_fails") {
                    return Err("down".into());
                }
                Ok(())
            }
        }
    });
    let addr = serve(Router::new().layer(WebhookLayer::new(config(), handlers))).await;
    assert_eq!(post_signed(addr, &created("evt_any_1")).await.status, 200);
    let unknown = event_json("evt_any_2", "quiz.archived", r#"{"id":"q"}"#);
    assert_eq!(post_signed(addr, &unknown).await.status, 200);
    let unfit = event_json("evt_any_3", "action.sent", r#"{"note":"no id"}"#);
    assert_eq!(post_signed(addr, &unfit).await.status, 400);
    assert_eq!(
        post_signed(addr, &created("evt_any_fails")).await.status,
        500
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "created rsp_1",
            "unknown quiz.archived",
            "mismatched action.sent",
            "created rsp_1"
        ]
    );
}

/// A secret source over a "database" that can fail or hang, with accounts
/// named by a header, as a user would write one.
struct Tenants {
    mode: &'static str,
}

impl ltvboost_webhooks::secrets::SecretSource for Tenants {
    async fn keys(
        &self,
        account: Option<&str>,
    ) -> Result<Option<ltvboost_webhooks::secrets::Keys>, ltvboost_webhooks::secrets::LookupError>
    {
        match (self.mode, account) {
            ("down", _) => Err(ltvboost_webhooks::secrets::LookupError::new(
                "the tenants table is unreachable",
            )),
            ("hung", _) => std::future::pending().await,
            (_, Some("acme")) => Ok(Some(ltvboost_webhooks::secrets::Keys::for_account(
                "acme",
                verifier(),
            ))),
            _ => Ok(None),
        }
    }

    async fn lookup(
        &self,
        head: &ltvboost_webhooks::secrets::RequestHead<'_>,
    ) -> Result<Option<ltvboost_webhooks::secrets::Keys>, ltvboost_webhooks::secrets::LookupError>
    {
        let tenant = head.headers().get("x-tenant").and_then(|v| v.to_str().ok());
        self.keys(tenant).await
    }
}

#[tokio::test]
async fn a_user_written_source_answers_404_for_no_account_and_503_when_it_fails_or_hangs() {
    let body = created("evt_tenant");
    let signature = sign(&secret(), &body);
    for (mode, tenant, want) in [
        ("up", "acme", 200),
        ("up", "initech", 404),
        ("down", "acme", 503),
        ("hung", "acme", 503),
    ] {
        let recorder = Recorder::new();
        let config = WebhookConfig::new(Tenants { mode })
            .path(PATH)
            .read_timeout(Duration::from_millis(300));
        let addr =
            serve(Router::new().layer(WebhookLayer::new(config, recording(&recorder)))).await;
        let reply = post(
            addr,
            &[("x-ltvboost-signature", &signature), ("x-tenant", tenant)],
            &body,
        )
        .await;
        assert_eq!(reply.status, want, "{mode} {tenant}: {reply:?}");
        assert_eq!(
            recorder.total(),
            usize::from(want == 200),
            "{mode} {tenant}"
        );
        if want == 503 {
            assert!(
                !reply.body.contains("tenants table"),
                "the cause is not answered"
            );
        }
    }
}
