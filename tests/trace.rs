//! One trace from receipt to the worker's handler: the request's W3C
//! `traceparent` parents the delivery span, whose context travels through
//! the Redis stream to every attempt of the worker (OpenTelemetry's SDK,
//! with its in-memory exporter, against a real Redis).
#![cfg(all(feature = "opentelemetry", feature = "queue"))]

mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use common::*;
use ltvboost_webhooks::WebhookLayer;
use ltvboost_webhooks::event::ResponseCreated;
use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
use ltvboost_webhooks::queue::Worker;
use opentelemetry::trace::{SpanKind, Status, TraceId, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// The process's subscriber: an OpenTelemetry layer over an in-memory exporter.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tests")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        exporter
    })
}

/// The finished spans of one trace.
fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| &kv.value)
}

/// Fails its first `failures` calls, and notes the trace each call ran in.
struct Flaky {
    failures: usize,
    calls: AtomicUsize,
    traces: Mutex<Vec<TraceId>>,
}

impl ResponseHandler for Flaky {
    async fn created(&self, _: &Delivery, _: &ResponseCreated) -> HandlerResult {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = tracing::Span::current().context();
        self.traces
            .lock()
            .unwrap()
            .push(context.span().span_context().trace_id());
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err("the CRM is down".into());
        }
        Ok(())
    }
}

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_receipt_through_the_queue_to_every_attempt() {
    exporter();
    let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let url = test_redis_url();
    let namespace = format!("trace-{}", std::process::id());
    let addr = serve(Router::new().layer(WebhookLayer::enqueue(
        config(),
        namespaced_queue(&url, &namespace).await,
    )))
    .await;
    let handler = Arc::new(Flaky {
        failures: 1,
        calls: AtomicUsize::new(0),
        traces: Mutex::new(Vec::new()),
    });
    struct Shared(Arc<Flaky>);
    impl ResponseHandler for Shared {
        async fn created(&self, d: &Delivery, p: &ResponseCreated) -> HandlerResult {
            self.0.created(d, p).await
        }
    }
    let (stop, task) = start_worker(
        Worker::new(
            namespaced_queue(&url, &namespace).await,
            verifier(),
            Handlers::responses(Shared(handler.clone())),
        )
        .retry_backoff(ltvboost_webhooks::Backoff::new(
            std::time::Duration::from_millis(50),
            2.0,
            std::time::Duration::from_secs(1),
        )),
    );

    let body = created_event("evt_traced");
    let signature = ltvboost_webhooks::signature::sign(&secret(), &body);
    let reply = post(
        addr,
        &[
            ("x-ltvboost-signature", &signature),
            ("traceparent", INCOMING),
        ],
        &body,
    )
    .await;
    assert_eq!(reply.status, 202);
    wait_until("the retry to succeed", || {
        handler.calls.load(Ordering::SeqCst) == 2
    })
    .await;
    // The second attempt's span ends once its end is recorded.
    wait_until("both worker spans", || {
        spans_of(trace)
            .iter()
            .filter(|s| s.name == "process")
            .count()
            == 2
    })
    .await;
    let _ = stop.send(());
    task.await.unwrap();

    assert_eq!(*handler.traces.lock().unwrap(), vec![trace, trace]);
    let spans = spans_of(trace);
    let receive: Vec<_> = spans.iter().filter(|s| s.name == "POST").collect();
    assert_eq!(receive.len(), 1, "{spans:#?}");
    let receive = receive[0];
    // The request's traceparent is the delivery span's remote parent.
    assert_eq!(
        receive.parent_span_id.to_string(),
        "00f067aa0ba902b7",
        "{receive:#?}"
    );
    assert!(receive.parent_span_is_remote);
    assert_eq!(receive.span_kind, SpanKind::Server);
    assert_eq!(
        attribute(receive, "http.request.method"),
        Some(&Value::from("POST"))
    );
    assert_eq!(
        attribute(receive, "url.path"),
        Some(&Value::from("/webhooks/ltvboost"))
    );
    assert_eq!(
        attribute(receive, "http.response.status_code"),
        Some(&Value::I64(202))
    );
    // Each attempt continues the delivery span's trace, as its child.
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "process").collect();
    for attempt in &attempts {
        assert_eq!(attempt.parent_span_id, receive.span_context.span_id());
        assert_eq!(attempt.span_kind, SpanKind::Consumer);
        assert_eq!(
            attribute(attempt, "messaging.system"),
            Some(&Value::from("redis"))
        );
        assert_eq!(
            attribute(attempt, "event_id"),
            Some(&Value::from("evt_traced"))
        );
    }
    let failed = attempts
        .iter()
        .filter(|s| matches!(s.status, Status::Error { .. }))
        .count();
    assert_eq!(failed, 1, "the failed attempt is marked: {attempts:#?}");
}

#[tokio::test]
async fn a_delivery_without_traceparent_starts_a_trace_and_a_malformed_one_is_ignored() {
    let exporter = exporter();
    let recorder = Recorder::new();
    let addr = serve(Router::new().layer(WebhookLayer::new(config(), recording(&recorder)))).await;
    for (id, traceparent) in [
        ("evt_untraced", None),
        ("evt_badly_traced", Some("00-zz-00f067aa0ba902b7-01")),
    ] {
        let body = created_event(id);
        let signature = ltvboost_webhooks::signature::sign(&secret(), &body);
        let mut headers = vec![("x-ltvboost-signature", signature.as_str())];
        if let Some(traceparent) = traceparent {
            headers.push(("traceparent", traceparent));
        }
        assert_eq!(post(addr, &headers, &body).await.status, 200);
        let delivery_span = || {
            exporter
                .get_finished_spans()
                .unwrap()
                .into_iter()
                .find(|s| {
                    s.name == "POST"
                        && attribute(s, "event_id") == Some(&Value::from(id.to_owned()))
                })
        };
        wait_until("the delivery's span", || delivery_span().is_some()).await;
        let span = delivery_span().unwrap();
        assert!(span.span_context.is_valid());
        assert_eq!(span.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    }
}

/// The request's `traceparent` becomes the delivery span's parent only once
/// the signature has verified: a request with a forged signature, or none,
/// cannot join (or flood) the sender's trace; its span is a new root.
#[tokio::test]
async fn a_traceparent_on_a_request_that_does_not_verify_starts_a_new_trace() {
    let exporter = exporter();
    let recorder = Recorder::new();
    let addr = serve(Router::new().layer(WebhookLayer::new(config(), recording(&recorder)))).await;
    let incoming = TraceId::from_hex(INCOMING.split('-').nth(1).unwrap()).unwrap();
    let body = created_event("evt_forged_trace");
    let forged = ltvboost_webhooks::signature::sign(
        &ltvboost_webhooks::signature::Secret::new("not-the-receivers-secret-at-all").unwrap(),
        &body,
    );
    for (headers, status) in [
        (vec![("x-ltvboost-signature", forged.as_str())], 401),
        (vec![], 401),
    ] {
        let mut headers = headers;
        headers.push(("traceparent", INCOMING));
        assert_eq!(post(addr, &headers, &body).await.status, status);
    }
    let refused = || {
        exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| {
                s.name == "POST"
                    && attribute(s, "http.response.status_code") == Some(&Value::I64(401))
            })
            .collect::<Vec<_>>()
    };
    wait_until("both refused requests' spans", || refused().len() >= 2).await;
    for span in refused() {
        assert_ne!(span.span_context.trace_id(), incoming, "{span:#?}");
        assert_eq!(span.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    }
    assert_eq!(recorder.total(), 0);
}
