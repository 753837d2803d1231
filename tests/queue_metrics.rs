//! The queue, visible: its stats and metrics against a queue with known
//! contents on a real Redis, the worker's handler metrics in the same
//! vocabulary as inline mode, the text checked by `promtool check metrics`.
//! A process of its own: it installs the global recorder.
#![cfg(all(feature = "queue", feature = "metrics"))]

mod common;

use std::time::Duration;

use common::*;
use ltvboost_webhooks::event::ResponseCreated;
use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
use ltvboost_webhooks::queue::Worker;

/// Fails for events whose id says so.
struct FailsWhenAsked;

impl ResponseHandler for FailsWhenAsked {
    async fn created(&self, delivery: &Delivery, _: &ResponseCreated) -> HandlerResult {
        if delivery.id().unwrap_or_default().contains("fail") {
            return Err("asked to fail".into());
        }
        Ok(())
    }
}

/// The value of the sample named `series` (with its labels, as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_visible_in_its_stats_and_metrics() {
    let handle = install_prometheus();
    let url = test_redis_url();
    let namespace = format!(
        "metrics-{}",
        ltvboost_webhooks::dedupe::ClaimToken::random()
    );
    let queue = namespaced_queue(&url, &namespace).await;

    // Waiting: four events, no worker yet.
    let ok = created_event;
    for body in [
        ok("evt_ok_1"),
        ok("evt_ok_2"),
        ok("evt_fail_1"),
        // A known type whose data does not fit: dead-lettered at once.
        event_json("evt_unfit", "response.created", r#"{"note":"no id"}"#),
    ] {
        queue.enqueue(&verified_delivery(body)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.entries, stats.waiting(), stats.pending), (4, 4, 0));
    assert!(
        stats.oldest_age.unwrap() >= Duration::from_millis(300),
        "{stats:?}"
    );
    assert_eq!((stats.scheduled_retries, stats.dead_letters), (0, 0));

    // A worker: two handled, one failure scheduled an hour out, one dead.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::new(
        queue.clone(),
        verifier(),
        Handlers::responses(FailsWhenAsked),
    )
    .retry_backoff(ltvboost_webhooks::Backoff::new(
        Duration::from_secs(3600),
        2.0,
        Duration::from_secs(3600),
    ));
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = queue.stats().await.unwrap();
        if stats.entries == 0 && stats.scheduled_retries == 1 && stats.dead_letters == 1 {
            assert_eq!(stats.consumers, 1, "{stats:?}");
            assert_eq!(stats.oldest_age, None);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The worker reads the stats at least once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = handle.render();
    drop(stop);
    task.await.unwrap();
    assert_eq!(
        queue.stats().await.unwrap().consumers,
        0,
        "the worker stayed"
    );

    assert_eq!(sample(&text, "ltvboost_webhook_queue_entries"), 0.0);
    assert_eq!(sample(&text, "ltvboost_webhook_queue_lag"), 0.0);
    assert_eq!(
        sample(&text, "ltvboost_webhook_queue_oldest_entry_age_seconds"),
        0.0
    );
    assert_eq!(
        sample(&text, "ltvboost_webhook_queue_scheduled_retries"),
        1.0
    );
    assert_eq!(sample(&text, "ltvboost_webhook_queue_dead_letters"), 1.0);
    assert_eq!(sample(&text, "ltvboost_webhook_queue_retries_total"), 1.0);
    assert_eq!(
        sample(&text, "ltvboost_webhook_queue_dead_letters_total"),
        1.0
    );
    // The handler metrics, as inline mode records them.
    let count = |outcome: &str| {
        sample(
            &text,
            &format!(
                "ltvboost_webhook_handler_duration_seconds_count{{event_type=\"response.created\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(count("handled"), 2.0);
    assert_eq!(count("handler_failed"), 1.0);
    assert_eq!(count("mismatched"), 1.0);
    promtool_accepts(&text);
}
