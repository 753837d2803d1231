//! What the receiver costs, each figure against a baseline measured in the
//! same run (see BENCHMARKS.md for the results and the machine).
//!
//! ```sh
//! cargo bench --all-features --bench throughput
//! ```
//!
//! * `verify/*`: header parse + HMAC over the body with the pre-keyed state +
//!   constant-time compare, against raw SHA-256 of the same bytes and a raw
//!   (re-keyed per call) `hmac` + `sha2` HMAC.
//! * `parse/*`: the one-pass envelope and payload parse of a 1 KiB event
//!   (and the same event with `data` before `type`, which takes two passes),
//!   against serde's straightforward internally tagged enum.
//! * `service/*`: the whole tower service called in process (verify, parse,
//!   dedupe claim in a `MemoryStore`, dispatch, mark done), against a bare
//!   service that only collects the body; with a fresh store, with a store
//!   in its steady state, and with `NoDedupe`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use ltvboost_webhooks::EventType;
use ltvboost_webhooks::dedupe::{Claim, DedupeStore, MemoryStore, NoDedupe};
use ltvboost_webhooks::event::Envelope;
use ltvboost_webhooks::event::ResponseCreated;
use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
use ltvboost_webhooks::replay::{ManualClock, ReplayWindow};
use ltvboost_webhooks::signature::{Secret, Verifier, sign};
use ltvboost_webhooks::testing::{EventBuilder, signed_request};
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower::{Layer, ServiceExt, service_fn};

const KEY: &str = "benchmark-secret-0123456789abcdef";

fn verify(c: &mut Criterion) {
    let secret = Secret::new(KEY).unwrap();
    let verifier = Verifier::new([secret.clone()]).unwrap();
    let mut group = c.benchmark_group("verify");
    for size in [256usize, 1024, 16 * 1024, 1024 * 1024] {
        let body = Bytes::from(vec![b'x'; size]);
        let header = sign(&secret, &body);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw_sha256", size), &body, |b, body| {
            b.iter(|| black_box(Sha256::digest(black_box(&body[..]))));
        });
        group.bench_with_input(BenchmarkId::new("raw_hmac", size), &body, |b, body| {
            b.iter(|| {
                let mut mac = hmac::Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
                mac.update(black_box(&body[..]));
                black_box(mac.finalize().into_bytes())
            });
        });
        group.bench_with_input(
            BenchmarkId::new("ltvboost_verify", size),
            &body,
            |b, body| {
                b.iter(|| {
                    black_box(
                        verifier
                            .verify(black_box(header.as_bytes()), body.clone())
                            .is_ok(),
                    )
                });
            },
        );
    }
    group.finish();
}

/// The straightforward parse: one internally tagged enum over the whole body.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
#[allow(dead_code)]
enum NaiveEvent {
    #[serde(rename = "response.created")]
    ResponseCreated(serde_json::Value),
    #[serde(rename = "response.scored")]
    ResponseScored(serde_json::Value),
    #[serde(rename = "segment.ready")]
    SegmentReady(serde_json::Value),
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct NaiveEnvelope {
    id: String,
    created_at: String,
    #[serde(flatten)]
    event: NaiveEvent,
}

fn one_kib_event() -> Vec<u8> {
    let answers: Vec<serde_json::Value> = (0..17)
        .map(|i| serde_json::json!({"question": format!("q{i}"), "answer": format!("answer number {i}")}))
        .collect();
    let body = EventBuilder::new(EventType::ResponseCreated)
        .data(serde_json::json!({
            "id": "rsp_8f3a9c2d", "quiz_id": "quiz_onboarding", "customer_id": "cus_1042",
            "email": "ada@example.com", "answers": answers,
        }))
        .to_bytes();
    assert!((900..1200).contains(&body.len()), "{} bytes", body.len());
    body
}

fn parse(c: &mut Criterion) {
    let body = one_kib_event();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("naive_tagged_enum", |b| {
        b.iter(|| black_box(serde_json::from_slice::<NaiveEnvelope>(black_box(&body)).is_ok()));
    });
    group.bench_function("ltvboost_type_before_data", |b| {
        b.iter(|| {
            let envelope = Envelope::from_slice(black_box(&body)).unwrap();
            black_box(envelope.event().is_ok())
        });
    });
    // The same event with `data` before `type`: the envelope is read with
    // `data` kept raw, then `data` is decoded (two passes over it).
    let data_first = {
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = format!(
            r#"{{"data":{},"id":{},"type":{},"created_at":{}}}"#,
            value["data"], value["id"], value["type"], value["created_at"]
        );
        assert_eq!(text.len(), body.len());
        text.into_bytes()
    };
    group.bench_function("ltvboost_data_before_type", |b| {
        b.iter(|| {
            let envelope = Envelope::from_slice(black_box(&data_first)).unwrap();
            black_box(envelope.event().is_ok())
        });
    });
    group.finish();
}

/// Requests are signed outside the timed part in batches of 64 (about
/// 100 KiB), so that, as on a server that has just read a body from its
/// socket, the bytes are in cache. (Criterion's `SmallInput` builds batches
/// of megabytes: every body would come cold from memory, a cost only the
/// service that reads the body pays.)
const WARM_BATCH: BatchSize = BatchSize::NumIterations(64);

/// The cheapest real handler: looks at the payload.
struct Touch;

impl ResponseHandler for Touch {
    async fn created(&self, _: &Delivery, response: &ResponseCreated) -> HandlerResult {
        black_box(&response.id);
        Ok(())
    }
}

fn service(c: &mut Criterion) {
    // Current-thread: the delivery runs on the thread that polls it, as on a
    // server's worker thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = Secret::new(KEY).unwrap();
    let template = String::from_utf8(one_kib_event()).unwrap();
    let counter = AtomicU64::new(0);
    // A fresh event id per iteration, signed outside the timed part.
    let request = || {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let body = template.replacen("\"id\":\"evt_", &format!("\"id\":\"evt_{n}_"), 1);
        signed_request(&secret, body)
    };
    let bare = service_fn(|request: http::Request<Full<Bytes>>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        black_box(body);
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    // The default layer: a fresh in-memory store that grows with every event
    // (no event expires within a run), rehashes and first-touch page faults
    // included.
    let config = WebhookConfig::new(Verifier::new([secret.clone()]).unwrap());
    let handlers = Handlers::responses(Touch);
    let layered = WebhookLayer::new(config.clone(), handlers.clone()).layer(bare);
    // A store in its steady state, as in a receiver that has run for a day:
    // as many records expire as arrive, so it neither grows nor touches
    // fresh memory. A 5-second lifetime stands for the 25-hour one (the
    // replay window's clock is frozen at the events' `created_at`), and the
    // store starts with a million records, which then expire as new ones
    // arrive: about as many as 11 events a second leave over 25 hours.
    let lifetime = std::time::Duration::from_secs(5);
    let steady_config = config
        .clone()
        .dedupe_store(steady_store(&runtime, lifetime))
        .claim_lease(lifetime)
        .done_ttl(lifetime)
        .replay_window(ReplayWindow::new(lifetime, std::time::Duration::ZERO))
        .clock(ManualClock::new(std::time::SystemTime::now()));
    let steady = WebhookLayer::new(steady_config, handlers.clone()).layer(bare);
    let no_store = WebhookLayer::new(config.dedupe_store(NoDedupe), handlers).layer(bare);

    let mut group = c.benchmark_group("service");
    group.bench_function("bare_collect_body", |b| {
        b.to_async(&runtime).iter_batched(
            request,
            |request| async { bare.oneshot(request).await.unwrap() },
            WARM_BATCH,
        );
    });
    // Each layered service is called the same way; only the store differs.
    macro_rules! bench_layered {
        ($name:literal, $service:expr) => {
            group.bench_function($name, |b| {
                b.to_async(&runtime).iter_batched(
                    request,
                    |request| async {
                        let response = $service.clone().oneshot(request).await.unwrap();
                        assert_eq!(response.status(), 200);
                        response
                    },
                    WARM_BATCH,
                )
            });
        };
    }
    bench_layered!("ltvboost_layer", layered);
    bench_layered!("ltvboost_layer_steady_store", steady);
    bench_layered!("ltvboost_layer_no_dedupe", no_store);
    // The same two services called from a spawned task, as a server calls
    // them from a connection's task; the spawn and join cost both alike.
    group.bench_function("bare_collect_body_in_task", |b| {
        b.to_async(&runtime).iter_batched(
            request,
            |request| async { tokio::spawn(bare.oneshot(request)).await.unwrap().unwrap() },
            WARM_BATCH,
        );
    });
    // A runtime with another task alive, as a server under load has.
    let busy = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_keep_idle, idle) = tokio::sync::oneshot::channel::<()>();
    busy.spawn(idle);
    for (name, runtime) in [
        ("ltvboost_layer_in_task", &runtime),
        ("ltvboost_layer_in_task_other_tasks_alive", &busy),
    ] {
        group.bench_function(name, |b| {
            b.to_async(runtime).iter_batched(
                request,
                |request| async {
                    let response = tokio::spawn(layered.clone().oneshot(request))
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response
                },
                WARM_BATCH,
            );
        });
    }
    group.finish();
}

/// A store sized for four million records, holding a million whose claims
/// and done-records all expire `lifetime` from now.
fn steady_store(runtime: &tokio::runtime::Runtime, lifetime: std::time::Duration) -> MemoryStore {
    let store = MemoryStore::with_capacity(4 << 20);
    runtime.block_on(async {
        for n in 0..1_000_000u32 {
            let key = format!("evt:evt_prefill_{n}");
            if let Claim::Acquired(token) = store.claim(&key, lifetime).await.unwrap() {
                store.mark_done(&key, &token, lifetime).await.unwrap();
            }
        }
    });
    store
}

/// The in-memory store's own cost per delivery (a claim and a done-record)
/// in its steady state: records live one second here, so that as many expire
/// as arrive and the store stays at about a million.
fn dedupe(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lifetime = std::time::Duration::from_secs(1);
    let store = steady_store(&runtime, lifetime);
    let store = &store;
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("dedupe");
    group.bench_function("memory_claim_then_done", |b| {
        b.to_async(&runtime).iter_batched(
            || format!("evt:evt_{}", counter.fetch_add(1, Ordering::Relaxed)),
            |key| async move {
                let Claim::Acquired(token) = store.claim(&key, lifetime).await.unwrap() else {
                    panic!("a fresh key is claimed");
                };
                store.mark_done(&key, &token, lifetime).await.unwrap();
            },
            WARM_BATCH,
        );
    });
    group.finish();
}

criterion_group!(benches, verify, parse, service, dedupe);
criterion_main!(benches);
