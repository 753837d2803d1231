//! Enqueue mode and workers against a real Redis: exactly-once across a
//! fleet, a worker killed mid-handler, retries and dead letters, Redis
//! killed with `SIGKILL` right after the last `202`, Redis down at enqueue,
//! and a slow handler that never slows the receiver.
//!
//! The shared Redis comes from `LTVBOOST_TEST_REDIS_URL` (`scripts/test.sh`
//! starts one); the durability test starts its own with an append-only file.
#![cfg(feature = "queue")]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use common::*;
use ltvboost_webhooks::WebhookLayer;
use ltvboost_webhooks::event::ResponseCreated;
use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
use ltvboost_webhooks::queue::{RedisQueue, Worker};
use tokio::sync::Semaphore;

/// The port of a `redis://127.0.0.1:<port>/` URL, for `redis-cli`.
fn port_of(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the test Redis URL names a port")
}

async fn queue(url: &str, prefix: &str) -> RedisQueue {
    RedisQueue::connect(url).await.unwrap().key_prefix(prefix)
}

/// Counts calls per event id; fails while `failing`; waits at `gate`.
#[derive(Default)]
struct Counter {
    calls: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    times: Mutex<Vec<Instant>>,
    failing: AtomicBool,
    gate: Option<Arc<Semaphore>>,
    delay: Duration,
}

impl Counter {
    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

struct Counting(Arc<Counter>);

impl ResponseHandler for Counting {
    async fn created(&self, delivery: &Delivery, _: &ResponseCreated) -> HandlerResult {
        let counter = &self.0;
        *counter
            .calls
            .lock()
            .unwrap()
            .entry(delivery.id().unwrap_or_default().to_owned())
            .or_default() += 1;
        counter.times.lock().unwrap().push(Instant::now());
        counter.total.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &counter.gate {
            gate.acquire().await?.forget();
        }
        tokio::time::sleep(counter.delay).await;
        if counter.failing.load(Ordering::SeqCst) {
            return Err("the CRM is down".into());
        }
        Ok(())
    }
}

/// Waits up to 30 s for `queue`'s stream to hold no entry (every entry
/// ended: done, dropped, retried or dead-lettered); `never` says what
/// failed otherwise.
async fn until_empty(queue: &RedisQueue, never: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue.stats().await.unwrap().entries > 0 {
        assert!(Instant::now() < deadline, "{never}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A receiver in enqueue mode on `queue`.
/// Appends `body`, signed, to the stream by hand (`redis-cli XADD`), as a
/// restore, a script or an earlier version would: with `extra` fields
/// after the body and signature (`key`, `token`). Returns the entry's id.
fn append_by_hand(port: u16, prefix: &str, body: &[u8], extra: &[&str]) -> String {
    let signature = ltvboost_webhooks::signature::sign(&secret(), body);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let stream = format!("{prefix}events");
    let head = ["XADD", &stream, "*", "body", &text, "signature", &signature];
    let added = redis_cli(port, &[&head[..], extra].concat());
    assert!(added.contains('-'), "XADD: {added}");
    added
}

/// Waits until the stream is empty, stops `worker`, and checks that each of
/// `ids` ran once and nothing was dead-lettered.
async fn drained_once_each(
    queue: &RedisQueue,
    worker: (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    counter: &Counter,
    ids: &[&str],
) {
    until_empty(queue, "an entry never ended").await;
    let (stop, task) = worker;
    drop(stop);
    task.await.unwrap();
    let calls = counter.calls.lock().unwrap().clone();
    for id in ids {
        assert_eq!(calls.get(*id), Some(&1), "{id}: {calls:?}");
    }
    let letters = queue.dead_letters_after(None, 10).await.unwrap();
    assert!(letters.is_empty(), "{letters:?}");
}

/// Enqueues a new `response.created` event `id`; returns its entry's id.
async fn enqueue_new(queue: &RedisQueue, id: &str) -> String {
    match queue
        .enqueue(&verified_delivery(created_event(id)))
        .await
        .unwrap()
    {
        ltvboost_webhooks::receiver::enqueue::Enqueued::Added(entry) => entry,
        other => panic!("{id}: {other:?}"),
    }
}

async fn receiver(queue: RedisQueue) -> SocketAddr {
    serve(Router::new().layer(WebhookLayer::enqueue(config(), queue))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_through_two_receivers_and_three_workers_are_handled_once() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let receivers = [
        receiver(queue(&url, &prefix).await).await,
        receiver(queue(&url, &prefix).await).await,
    ];
    let counter = Arc::new(Counter::default());
    let mut workers = Vec::new();
    for _ in 0..3 {
        let worker = Worker::new(
            queue(&url, &prefix).await,
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .concurrency(8);
        workers.push(start_worker(worker));
    }
    let mut sends = Vec::new();
    for n in 0..1000 {
        let body = created_event(&format!("evt_q{n}"));
        let (first, second) = (receivers[n % 2], receivers[(n + 1) % 2]);
        sends.push(tokio::spawn(async move {
            let enqueued = post_signed(first, &body).await.status;
            // The same event at the other receiver of the fleet: a duplicate.
            let again = post_signed(second, &body).await.status;
            (enqueued, again)
        }));
        if sends.len() >= 32 {
            for send in sends.drain(..) {
                assert_eq!(send.await.unwrap(), (202, 200));
            }
        }
    }
    for send in sends {
        assert_eq!(send.await.unwrap(), (202, 200));
    }
    wait_until("1000 handler calls", || counter.total() >= 1000).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // any extra call shows now
    let calls = counter.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1000);
    assert!(calls.values().all(|&n| n == 1), "an event ran twice");
    for (stop, task) in workers {
        drop(stop);
        task.await.unwrap();
    }
    let queue = queue(&url, &prefix).await;
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.waiting()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_entries_are_claimed_and_repeats_stay_within_its_concurrency() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let addr = receiver(queue(&url, &prefix).await).await;
    for n in 0..20 {
        assert_eq!(
            post_signed(addr, &created_event(&format!("evt_k{n}")))
                .await
                .status,
            202
        );
    }
    // Worker A, in a runtime of its own, takes four entries and never
    // finishes them: then its runtime is dropped (an abort, not a shutdown).
    let stuck = Arc::new(Counter {
        gate: Some(Arc::new(Semaphore::new(0))),
        ..Counter::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let worker_a = Worker::new(
        queue(&url, &prefix).await,
        verifier(),
        Handlers::responses(Counting(stuck.clone())),
    )
    .concurrency(4);
    runtime.spawn(async move { worker_a.run(std::future::pending()).await });
    wait_until("worker A's four calls", || stuck.total() == 4).await;
    runtime.shutdown_background();

    let counter = Arc::new(Counter::default());
    let worker_b = Worker::new(
        queue(&url, &prefix).await,
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    )
    .concurrency(4)
    .claim_idle(Duration::from_millis(300));
    let (stop, task) = start_worker(worker_b);
    wait_until("all 20 events handled", || {
        counter.calls.lock().unwrap().len() == 20
    })
    .await;
    drop(stop);
    task.await.unwrap();
    // Every event ran at least once to completion; the only repeats are
    // what A had in flight.
    let repeats = stuck.total() + counter.total() - 20;
    assert!(repeats <= 4, "{repeats} repeats with a concurrency of 4");
    assert!(counter.calls.lock().unwrap().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_handler_is_retried_with_growing_delays_then_dead_lettered() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let addr = receiver(queue(&url, &prefix).await).await;
    let counter = Arc::new(Counter {
        failing: AtomicBool::new(true),
        ..Counter::default()
    });
    let dead = Arc::new(Mutex::new(Vec::new()));
    let first = Duration::from_millis(100);
    let worker = Worker::new(
        queue(&url, &prefix).await,
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    )
    .max_attempts(3)
    .retry_backoff(ltvboost_webhooks::Backoff::new(
        first,
        3.0,
        Duration::from_secs(10),
    ))
    .on_dead_letter({
        let dead = dead.clone();
        move |letter| dead.lock().unwrap().push(letter.clone())
    });
    let (stop, task) = start_worker(worker);
    assert_eq!(
        post_signed(addr, &created_event("evt_fails")).await.status,
        202
    );
    wait_until("the dead letter", || !dead.lock().unwrap().is_empty()).await;
    assert_eq!(counter.total(), 3, "three attempts, no more");
    let times = counter.times.lock().unwrap().clone();
    assert!(times[1] - times[0] >= first, "the first retry came early");
    assert!(
        times[2] - times[1] >= first * 3,
        "the second retry did not wait longer"
    );

    let queue = queue(&url, &prefix).await;
    let letters = queue.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id.as_deref(), Some("evt_fails"));
    assert_eq!(letters[0].type_name, "response.created");
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].error.contains("the CRM is down"),
        "{:?}",
        letters[0]
    );
    assert_eq!(dead.lock().unwrap()[0].attempts, 3);

    // Fixed, and re-queued from the dead letters: handled.
    counter.failing.store(false, Ordering::SeqCst);
    assert!(queue.requeue(&letters[0].id).await.unwrap());
    assert!(
        !queue.requeue(&letters[0].id).await.unwrap(),
        "requeued twice"
    );
    wait_until("the requeued event", || counter.total() == 4).await;
    assert!(queue.dead_letters(10).await.unwrap().is_empty());
    drop(stop);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_event_is_dead_lettered_at_once_unless_acknowledged_as_inline() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let addr = receiver(queue(&url, &prefix).await).await;
    // A known type whose data has no identifier: it will never fit.
    let unfit = |id: &str| event_json(id, "response.created", r#"{"note":"no id"}"#);
    let dead = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::new(Counter::default());
    let worker = Worker::new(
        queue(&url, &prefix).await,
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    )
    .max_attempts(5)
    .on_dead_letter({
        let dead = dead.clone();
        move |letter| dead.lock().unwrap().push(letter.clone())
    });
    let (stop, task) = start_worker(worker);
    assert_eq!(post_signed(addr, &unfit("evt_unfit_1")).await.status, 202);
    wait_until("the dead letter", || !dead.lock().unwrap().is_empty()).await;
    let letter = dead.lock().unwrap()[0].clone();
    assert_eq!(letter.attempts, 1, "a retry cannot make it fit");
    assert!(letter.error.contains("does not fit"), "{letter:?}");
    drop(stop);
    task.await.unwrap();
    // Acknowledged, as `acknowledge_mismatched(true)` does inline: done.
    let worker = Worker::new(
        queue(&url, &prefix).await,
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    )
    .acknowledge_mismatched(true);
    let (stop, task) = start_worker(worker);
    assert_eq!(post_signed(addr, &unfit("evt_unfit_2")).await.status, 202);
    let queue = queue(&url, &prefix).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = queue.stats().await.unwrap();
        if stats.pending == 0 && stats.waiting() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the entry was never done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        dead.lock().unwrap().len(),
        1,
        "the second was not dead-lettered"
    );
    assert_eq!(queue.dead_letters(10).await.unwrap().len(), 1);
    drop(stop);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_redis_is_killed() {
    let mut redis = RedisServer::durable(&[]).await;
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    for n in 0..200 {
        assert_eq!(
            post_signed(addr, &created_event(&format!("evt_d{n}")))
                .await
                .status,
            202
        );
    }
    // SIGKILL right after the last 202, then a restart on the same files.
    redis.kill_and_restart().await;
    let queue = RedisQueue::connect(&redis.url()).await.unwrap();
    assert_eq!(
        queue.stats().await.unwrap().entries,
        200,
        "acknowledged entries were lost"
    );
    // The dedupe keys survived too: a redelivery is still a duplicate.
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    assert_eq!(
        post_signed(addr, &created_event("evt_d7")).await.status,
        200
    );
    // And a worker handles all of them.
    let counter = Arc::new(Counter::default());
    let (stop, task) = start_worker(Worker::new(
        queue,
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    ));
    wait_until("200 handler calls", || counter.total() == 200).await;
    drop(stop);
    task.await.unwrap();
}

#[tokio::test]
async fn redis_down_at_enqueue_answers_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let queue = RedisQueue::lazy(&format!("redis://{closed}/"))
        .unwrap()
        .operation_timeout(Duration::from_millis(500));
    let addr = receiver(queue).await;
    let reply = post_signed(addr, &created_event("evt_down")).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.contains("queue unavailable"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_never_holds_up_the_receiver() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let addr = receiver(queue(&url, &prefix).await).await;
    let gate = Arc::new(Semaphore::new(0));
    let counter = Arc::new(Counter {
        gate: Some(gate.clone()),
        ..Counter::default()
    });
    let (stop, task) = start_worker(
        Worker::new(
            queue(&url, &prefix).await,
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .concurrency(2),
    );
    assert_eq!(
        post_signed(addr, &created_event("evt_slow_0")).await.status,
        202
    );
    wait_until("the first handler call", || counter.total() == 1).await;
    // The handler is stuck; the receiver goes on answering at once.
    for n in 1..20 {
        assert_eq!(
            post_signed(addr, &created_event(&format!("evt_slow_{n}")))
                .await
                .status,
            202
        );
    }
    assert!(counter.total() <= 2, "the receiver waited for handlers");
    gate.add_permits(100);
    wait_until("all 20 handled", || counter.total() == 20).await;
    drop(stop);
    task.await.unwrap();
}

/// The examples as a user runs them: the receiver in enqueue mode, and the
/// worker printing a line per call and per dead letter, exiting 0 on SIGTERM.
#[test]
fn the_worker_example_prints_each_call_and_each_dead_letter() {
    use std::io::BufRead;
    let (receiver_exe, worker_exe) = (example("receiver"), example("worker"));
    let url = test_redis_url();
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut receiver = Command::new(receiver_exe)
        .env("LTVBOOST_WEBHOOK_ADDR", web.to_string())
        .env("LTVBOOST_QUEUE_URL", &url)
        .env("LTVBOOST_WEBHOOK_SECRET", SECRET)
        .env_remove("LTVBOOST_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut worker = Command::new(worker_exe)
        .env("LTVBOOST_QUEUE_URL", &url)
        .env("LTVBOOST_WEBHOOK_SECRET", SECRET)
        .env("LTVBOOST_WORKER_FAIL_TYPES", "action.failed")
        .env("LTVBOOST_WORKER_MAX_ATTEMPTS", "2")
        .env("LTVBOOST_WORKER_RETRY_BASE_MS", "50")
        .env("LTVBOOST_WORKER_CLAIM_IDLE_MS", "1000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = ltvboost_webhooks::dedupe::ClaimToken::random();
    let (ok_id, failing_id) = (format!("evt_ok_{run}"), format!("evt_fail_{run}"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(web).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(post_signed(web, &created_event(&ok_id)).await.status, 202);
        let failing = event_json(&failing_id, "action.failed", r#"{"id":"act_1"}"#);
        assert_eq!(post_signed(web, &failing).await.status, 202);
    });
    let wanted = [
        format!("response.created {ok_id}"),
        format!("action.failed {failing_id}"),
        format!("dead-letter action.failed {failing_id}"),
    ];
    let mut lines = std::io::BufReader::new(worker.stdout.take().unwrap()).lines();
    let mut seen: Vec<String> = Vec::new();
    while !wanted.iter().all(|w| seen.contains(w)) {
        let line = lines.next().expect("the worker stopped printing").unwrap();
        seen.push(line);
    }
    assert_eq!(
        occurrences(&seen, &wanted[1]),
        2,
        "two attempts, then the dead letter: {seen:?}"
    );
    for child in [&mut worker, &mut receiver] {
        assert_eq!(terminate(child), Some(0));
    }
}

/// A field of `INFO`, as a number.
async fn info_number(redis: &RedisServer, section: &str, field: &str) -> i64 {
    let info = redis.cli(&["INFO", section]).await;
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {info}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_handled_events_leave_the_stream_empty_and_memory_near_its_start() {
    let redis = RedisServer::durable(&[]).await;
    let queue = RedisQueue::connect(&redis.url()).await.unwrap();
    let before = info_number(&redis, "memory", "used_memory").await;
    let total = 20_000;
    // About the size of a real event.
    let data = format!(r#"{{"id":"rsp_1","note":"{}"}}"#, "x".repeat(1024));
    let data = Arc::new(data);
    let next = Arc::new(AtomicUsize::new(0));
    let mut fillers = Vec::new();
    for _ in 0..16 {
        let (queue, next, data) = (queue.clone(), next.clone(), data.clone());
        fillers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    break;
                }
                let body = event_json(&format!("evt_mem_{n}"), "response.created", &data);
                let added = queue.enqueue(&verified_delivery(body)).await.unwrap();
                assert!(matches!(
                    added,
                    ltvboost_webhooks::receiver::enqueue::Enqueued::Added(_)
                ));
            }
        }));
    }
    for filler in fillers {
        filler.await.unwrap();
    }
    let full = info_number(&redis, "memory", "used_memory").await;
    let counter = Arc::new(Counter::default());
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .concurrency(64),
    );
    wait_until("20 000 handler calls", || counter.total() == total).await;
    drop(stop);
    task.await.unwrap();
    assert_eq!(
        queue.stats().await.unwrap().entries,
        0,
        "handled entries stayed"
    );
    assert_eq!(queue.stats().await.unwrap().pending, 0);
    assert_eq!(queue.stats().await.unwrap().scheduled_retries, 0);
    assert_eq!(
        redis
            .cli(&[
                "XINFO",
                "CONSUMERS",
                "ltvboost:{default}:queue:events",
                "workers"
            ])
            .await,
        "",
        "the worker that left kept its consumer"
    );
    let after = info_number(&redis, "memory", "used_memory").await;
    // What stays is one done-record per event (a dedupe key of a few
    // hundred bytes, kept for `done_ttl`), a small part of what the entries
    // held.
    eprintln!("used_memory: {before} before, {full} with the entries, {after} handled");
    assert!(
        after - before < (full - before) / 4 && after - before < total as i64 * 300,
        "{before} before, {full} full, {after} after"
    );
    let calls = counter.calls.lock().unwrap();
    assert!(calls.values().all(|&n| n == 1), "an event ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_claim_idle_runs_once_with_two_workers() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let counter = Arc::new(Counter {
        delay: Duration::from_secs(3),
        ..Counter::default()
    });
    let worker = || async {
        Worker::new(
            queue(&url, &prefix).await,
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .claim_idle(Duration::from_secs(1))
    };
    let (stop_a, task_a) = start_worker(worker().await);
    let (stop_b, task_b) = start_worker(worker().await);
    let addr = receiver(queue(&url, &prefix).await).await;
    for n in 0..4 {
        let id = format!("evt_slow_once_{n}");
        assert_eq!(post_signed(addr, &created_event(&id)).await.status, 202);
    }
    let queue = queue(&url, &prefix).await;
    until_empty(&queue, "the entries were never done").await;
    drop((stop_a, stop_b));
    task_a.await.unwrap();
    task_b.await.unwrap();
    let calls = counter.calls.lock().unwrap();
    assert_eq!(calls.len(), 4);
    assert!(calls.values().all(|&n| n == 1), "ran twice: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_flushall_the_running_worker_recreates_its_group_and_handles_new_events() {
    let redis = RedisServer::durable(&[]).await;
    let counter = Arc::new(Counter::default());
    let (stop, task) = start_worker(Worker::new(
        RedisQueue::connect(&redis.url()).await.unwrap(),
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    ));
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    assert_eq!(
        post_signed(addr, &created_event("evt_pre")).await.status,
        202
    );
    wait_until("the first event", || counter.total() == 1).await;
    assert_eq!(redis.cli(&["FLUSHALL"]).await, "OK");
    for n in 0..5 {
        let id = format!("evt_post_flush_{n}");
        assert_eq!(post_signed(addr, &created_event(&id)).await.status, 202);
    }
    wait_until("5 events after FLUSHALL", || counter.total() == 6).await;
    drop(stop);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_answers_503_then_a_worker_started_on_it_drains_it() {
    let redis =
        RedisServer::durable(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]).await;
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    // 4 KiB events until Redis is full: every one is 202 or 503, never lost.
    let padding = "x".repeat(4096);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for n in 0..4000 {
        let id = format!("evt_full_{n}");
        let body = event_json(
            &id,
            "response.created",
            &format!(r#"{{"id":"rsp_1","note":"{padding}"}}"#),
        );
        match post_signed(addr, &body).await.status {
            202 => accepted.push(id),
            503 => {
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            other => panic!("answered {other}"),
        }
    }
    assert_eq!(refused, 20, "Redis never filled up");
    assert!(!accepted.is_empty());
    // A worker started against the full Redis waits and drains it.
    let counter = Arc::new(Counter::default());
    let (stop, task) = start_worker(Worker::new(
        RedisQueue::lazy(&redis.url()).unwrap(),
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    ));
    wait_until("every accepted event", || counter.total() >= accepted.len()).await;
    // Room again: new events are accepted and handled.
    assert_eq!(
        post_signed(addr, &created_event("evt_after_full"))
            .await
            .status,
        202
    );
    wait_until("the event after", || counter.total() == accepted.len() + 1).await;
    drop(stop);
    task.await.unwrap();
    let calls = counter.calls.lock().unwrap();
    assert!(accepted.iter().all(|id| calls.get(id) == Some(&1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_altered_or_injected_in_redis_is_dead_lettered_never_handled() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let queue = queue(&url, &prefix).await;
    let genuine = created_event("evt_genuine");
    let signature = ltvboost_webhooks::signature::sign(&secret(), &genuine);
    queue.enqueue(&verified_delivery(genuine)).await.unwrap();
    // Someone with access to Redis appends a forged event under the genuine
    // signature, and one with no signature at all.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("{prefix}events");
    for (id, signature) in [("evt_forged", signature.as_str()), ("evt_unsigned", "")] {
        let forged = String::from_utf8(created_event(id)).unwrap();
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("body")
            .arg(&forged)
            .arg("signature")
            .arg(signature)
            .arg("attempts")
            .arg("0")
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let counter = Arc::new(Counter::default());
    let dead = Arc::new(Mutex::new(Vec::new()));
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .on_dead_letter({
            let dead = dead.clone();
            move |letter| dead.lock().unwrap().push(letter.clone())
        }),
    );
    wait_until("two dead letters", || dead.lock().unwrap().len() == 2).await;
    wait_until("the genuine event", || counter.total() == 1).await;
    // Requeued while the worker runs, they are dead-lettered again at once:
    // requeueing "all" moves the two there were, and ends.
    assert_eq!(queue.requeue_all().await.unwrap(), 2);
    wait_until("two more dead letters", || dead.lock().unwrap().len() == 4).await;
    drop(stop);
    task.await.unwrap();
    assert_eq!(counter.calls.lock().unwrap().get("evt_genuine"), Some(&1));
    for letter in dead.lock().unwrap().iter() {
        assert!(letter.error.contains("does not verify"), "{letter:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letters_stay_within_their_cap() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let queue = queue(&url, &prefix).await.dead_letter_cap(2);
    for n in 0..5 {
        queue
            .enqueue(&verified_delivery(created_event(&format!(
                "evt_capped_{n}"
            ))))
            .await
            .unwrap();
    }
    let counter = Arc::new(Counter {
        failing: AtomicBool::new(true),
        ..Counter::default()
    });
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .max_attempts(1),
    );
    wait_until("five calls", || counter.total() == 5).await;
    until_empty(&queue, "the entries were never dead-lettered").await;
    drop(stop);
    task.await.unwrap();
    let letters = queue.dead_letters(10).await.unwrap();
    let ids: Vec<_> = letters.iter().filter_map(|l| l.event_id.clone()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
}

/// Dead letters are capped by bytes too: 1 MiB bodies cannot fill Redis
/// ten thousand at a time. The count of bytes follows requeues and purges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letters_stay_within_their_byte_cap() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let port = port_of(&url);
    let queue = queue(&url, &prefix).await.dead_letter_bytes(50 * 1024);
    let padding = "x".repeat(20 * 1024);
    for n in 0..5 {
        let body = event_json(
            &format!("evt_heavy_{n}"),
            "response.created",
            &format!(r#"{{"id":"rsp_1","padding":"{padding}"}}"#),
        );
        queue.enqueue(&verified_delivery(body)).await.unwrap();
    }
    let counter = Arc::new(Counter {
        failing: AtomicBool::new(true),
        ..Counter::default()
    });
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .max_attempts(1),
    );
    wait_until("five calls", || counter.total() == 5).await;
    until_empty(&queue, "never dead-lettered").await;
    drop(stop);
    task.await.unwrap();
    let letters = queue.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 2, "two of about 21 KiB fit in 50 KiB");
    // The newest are kept (handled concurrently: in any order of ids).
    let ids: std::collections::HashSet<_> =
        letters.iter().filter_map(|l| l.event_id.clone()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let bytes_key = format!("{prefix}dead-bytes");
    let counted: u64 = redis_cli(port, &["GET", &bytes_key]).parse().unwrap();
    assert!(
        (40 * 1024..=50 * 1024).contains(&counted),
        "{counted} bytes counted"
    );
    assert!(queue.requeue(&letters[0].id).await.unwrap());
    let after_requeue: u64 = redis_cli(port, &["GET", &bytes_key]).parse().unwrap();
    assert!(after_requeue < counted / 2 + 1024, "{after_requeue}");
    let purged = queue
        .purge_dead_letters_before(std::time::SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(redis_cli(port, &["GET", &bytes_key]), "0");
    // A count that drifted (dead letters deleted by hand) heals when a dead
    // letter is alone: it is not dropped, and the count is its size again.
    redis_cli(port, &["SET", &bytes_key, "1000000000"]);
    redis_cli(port, &["DEL", &format!("{prefix}events")]);
    let body = event_json(
        "evt_heavy_again",
        "response.created",
        &format!(r#"{{"id":"rsp_1","padding":"{padding}"}}"#),
    );
    queue.enqueue(&verified_delivery(body)).await.unwrap();
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .max_attempts(1),
    );
    wait_until("the sixth call", || counter.total() == 6).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue.stats().await.unwrap().dead_letters == 0 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stop);
    task.await.unwrap();
    let healed: u64 = redis_cli(port, &["GET", &bytes_key]).parse().unwrap();
    assert!((20 * 1024..=25 * 1024).contains(&healed), "{healed}");
}

/// Upgrading: an event an earlier receiver queued (its key a plain
/// `queued`, its entry without a token) runs once, and a newer receiver
/// answers its redelivery as a duplicate, leaving no copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_versions_queued_event_runs_once_beside_a_newer_copy() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let port = port_of(&url);
    let queue = queue(&url, &prefix).await;
    let body = created_event("evt_upgraded");
    let key = secret().key_id().to_string();
    // What the earlier version's script wrote.
    redis_cli(
        port,
        &[
            "SET",
            &format!("{prefix}evt:evt_upgraded"),
            "queued",
            "PX",
            "600000",
        ],
    );
    append_by_hand(port, &prefix, &body, &["key", &key]);
    // A newer receiver's duplicate: answered as one, its copy removed.
    assert_eq!(
        queue.enqueue(&verified_delivery(body)).await.unwrap(),
        ltvboost_webhooks::receiver::enqueue::Enqueued::Duplicate
    );
    assert_eq!(queue.stats().await.unwrap().entries, 1);
    let counter = Arc::new(Counter::default());
    let (stop, task) = start_worker(Worker::new(
        queue.clone(),
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    ));
    until_empty(&queue, "never ended").await;
    drop(stop);
    task.await.unwrap();
    assert_eq!(
        counter.calls.lock().unwrap()["evt_upgraded"],
        1,
        "the copy ran"
    );
}

/// One worker at a time promotes retries and tidies (a lease); when it
/// stops, another takes over and the retries it scheduled still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_at_a_time_maintains_the_queue_and_another_takes_over() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let port = port_of(&url);
    let lease = format!("{prefix}maintainer");
    let counter = Arc::new(Counter {
        failing: AtomicBool::new(true),
        ..Counter::default()
    });
    let worker = |name: &str| {
        let counter = counter.clone();
        let name = name.to_owned();
        let url = url.clone();
        let prefix = prefix.clone();
        async move {
            Worker::new(
                queue(&url, &prefix).await,
                verifier(),
                Handlers::responses(Counting(counter)),
            )
            .consumer_name(name)
            .max_attempts(5)
            .retry_backoff(ltvboost_webhooks::Backoff::new(
                Duration::from_secs(3),
                1.0,
                Duration::from_secs(3),
            ))
        }
    };
    let (stop_first, first) = start_worker(worker("first").await);
    wait_until("the first worker's lease", || {
        redis_cli(port, &["GET", &lease]) == "first"
    })
    .await;
    let (stop_second, second) = start_worker(worker("second").await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        redis_cli(port, &["GET", &lease]),
        "first",
        "the lease moved while held"
    );
    let queue = queue(&url, &prefix).await;
    queue
        .enqueue(&verified_delivery(created_event("evt_retried_across")))
        .await
        .unwrap();
    // The first call failed and its retry is scheduled (the handler reads
    // `failing` after it counts the call: flipped only once the retry is
    // there); the maintainer stops before it is due.
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue.stats().await.unwrap().scheduled_retries == 0 {
        assert!(Instant::now() < deadline, "no retry was scheduled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counter.total(), 1);
    counter.failing.store(false, Ordering::SeqCst);
    drop(stop_first);
    first.await.unwrap();
    wait_until("the second worker's lease", || {
        redis_cli(port, &["GET", &lease]) == "second"
    })
    .await;
    wait_until("the retry, promoted by the second", || counter.total() == 2).await;
    drop(stop_second);
    second.await.unwrap();
    assert_eq!(counter.calls.lock().unwrap()["evt_retried_across"], 2);
    assert_eq!(
        redis_cli(port, &["EXISTS", &lease]),
        "0",
        "the lease was not given up"
    );
}

#[tokio::test]
async fn durability_is_read_and_its_risks_named() {
    let durable = RedisServer::durable(&[]).await;
    let queue = RedisQueue::connect(&durable.url()).await.unwrap();
    let read = queue.durability().await.unwrap();
    assert_eq!(read.appendonly, Some(true));
    assert_eq!(read.maxmemory_policy.as_deref(), Some("noeviction"));
    assert!(read.risks().is_empty(), "{:?}", read.risks());
    assert!(
        RedisQueue::lazy(&durable.url())
            .unwrap()
            .require_durable(true)
            .checked()
            .await
            .is_ok()
    );

    let forgetful =
        RedisServer::durable(&["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"]).await;
    let queue = RedisQueue::connect(&forgetful.url()).await.unwrap();
    let settings: Vec<_> = queue
        .durability()
        .await
        .unwrap()
        .risks()
        .into_iter()
        .map(|risk| risk.setting)
        .collect();
    assert_eq!(settings, ["appendonly", "maxmemory-policy"]);
    let refused = RedisQueue::lazy(&forgetful.url())
        .unwrap()
        .require_durable(true)
        .checked()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("appendonly") && refused.contains("maxmemory-policy"),
        "{refused}"
    );
}

/// The example receiver on a Redis with `appendonly no`: a warning naming
/// the setting, and with `LTVBOOST_QUEUE_REQUIRE_DURABLE=1` a refusal.
#[tokio::test]
async fn the_example_receiver_warns_of_appendonly_no_and_can_refuse_it() {
    use std::io::BufRead;
    let forgetful = RedisServer::durable(&["--appendonly", "no"]).await;
    let start = |require: &str| {
        Command::new(example("receiver"))
            .env("LTVBOOST_WEBHOOK_ADDR", "127.0.0.1:0")
            .env("LTVBOOST_QUEUE_URL", forgetful.url())
            .env("LTVBOOST_QUEUE_REQUIRE_DURABLE", require)
            .env("NO_COLOR", "1")
            .env_remove("LTVBOOST_REDIS_URL")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut receiver = start("0");
    let mut lines = std::io::BufReader::new(receiver.stderr.take().unwrap()).lines();
    let mut warning = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("appendonly") {
            warning = Some(line.clone());
        }
        if line.contains("listening on") {
            break;
        }
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    let warning = warning.expect("no line named appendonly");
    assert!(warning.contains("WARN"), "{warning}");

    let refused = start("1").wait_with_output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("appendonly"), "{stderr}");
}

/// Asks `child` to stop with SIGTERM; its exit code.
fn terminate(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap().code()
}

/// How many of `lines` are `line`.
fn occurrences(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// Starts the example worker on `url`, its stdout piped.
fn example_worker(url: &str, settings: &[(&str, &str)]) -> Child {
    Command::new(example("worker"))
        .env("LTVBOOST_QUEUE_URL", url)
        .env("LTVBOOST_WEBHOOK_SECRET", SECRET)
        .envs(settings.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Collects a worker's stdout lines on a thread of their own.
fn collect_lines(child: &mut Child, into: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            into.lock().unwrap().push(line);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_that_aborts_the_worker_is_dead_lettered_after_max_attempts() {
    let redis = RedisServer::durable(&[]).await;
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    let poison = event_json("evt_poison", "action.failed", r#"{"id":"act_1"}"#);
    assert_eq!(post_signed(addr, &poison).await.status, 202);
    for n in 0..5 {
        let id = format!("evt_beside_poison_{n}");
        assert_eq!(post_signed(addr, &created_event(&id)).await.status, 202);
    }
    // A restart loop, as a supervisor runs it.
    let lines = Arc::new(Mutex::new(Vec::new()));
    let settings = [
        ("LTVBOOST_WORKER_CRASH_TYPES", "action.failed"),
        ("LTVBOOST_WORKER_MAX_ATTEMPTS", "3"),
        ("LTVBOOST_WORKER_CLAIM_IDLE_MS", "300"),
        ("LTVBOOST_WORKER_CONCURRENCY", "1"),
    ];
    let done = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l == "dead-letter action.failed evt_poison")
            && (0..5).all(|n| lines.contains(&format!("response.created evt_beside_poison_{n}")))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut starts = 0;
    loop {
        let mut worker = example_worker(&redis.url(), &settings);
        starts += 1;
        let reader = collect_lines(&mut worker, lines.clone());
        loop {
            if done(&lines.lock().unwrap()) || worker.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{:?}", lines.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if done(&lines.lock().unwrap()) {
            assert_eq!(terminate(&mut worker), Some(0));
            reader.join().unwrap();
            break;
        }
        reader.join().unwrap();
    }
    let lines = lines.lock().unwrap();
    assert_eq!(
        occurrences(&lines, "action.failed evt_poison"),
        3,
        "{lines:?}"
    );
    assert_eq!(starts, 4, "three crashes, then a worker that gave it up");
    for n in 0..5 {
        let line = format!("response.created evt_beside_poison_{n}");
        assert_eq!(occurrences(&lines, &line), 1, "{lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_retries_neither_loses_nor_repeats_the_schedule() {
    let redis = RedisServer::durable(&[]).await;
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    let failing = event_json("evt_retried", "action.failed", r#"{"id":"act_1"}"#);
    assert_eq!(post_signed(addr, &failing).await.status, 202);
    let settings = [
        ("LTVBOOST_WORKER_FAIL_TYPES", "action.failed"),
        ("LTVBOOST_WORKER_MAX_ATTEMPTS", "3"),
        ("LTVBOOST_WORKER_RETRY_BASE_MS", "1000"),
        ("LTVBOOST_WORKER_CLAIM_IDLE_MS", "1000"),
    ];
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut first = example_worker(&redis.url(), &settings);
    let reader = collect_lines(&mut first, lines.clone());
    wait_until("the first call", || !lines.lock().unwrap().is_empty()).await;
    // The retry is scheduled; kill -9 before it is due.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status();
    let _ = first.wait();
    reader.join().unwrap();
    let mut second = example_worker(&redis.url(), &settings);
    let reader = collect_lines(&mut second, lines.clone());
    let dead = "dead-letter action.failed evt_retried".to_owned();
    wait_until("the dead letter", || lines.lock().unwrap().contains(&dead)).await;
    // Long enough for a repeated retry to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(terminate(&mut second), Some(0));
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(
        occurrences(&lines, "action.failed evt_retried"),
        3,
        "{lines:?}"
    );
    assert_eq!(occurrences(&lines, &dead), 1, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_for_replicas_a_202_means_the_replica_has_it() {
    let primary = RedisServer::durable(&[]).await;
    let replica_of = format!("127.0.0.1 {}", primary.port);
    let mut replica = RedisServer::durable(&["--replicaof", &replica_of]).await;
    let queue = RedisQueue::lazy(&primary.url())
        .unwrap()
        .wait_for_replicas(1, Duration::from_millis(500))
        .checked()
        .await
        .unwrap();
    let addr = receiver(queue).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the replica has synced, 503; then 202.
    loop {
        match post_signed(addr, &created_event("evt_replicated"))
            .await
            .status
        {
            202 | 200 => break,
            503 => assert!(Instant::now() < deadline, "the replica never confirmed"),
            other => panic!("answered {other}"),
        }
    }
    // Each 503 before it appended a copy of the entry (dropped unrun by a
    // worker): the replica has all of them, and the event's key.
    let on_replica = replica
        .cli(&["XLEN", "ltvboost:{default}:queue:events"])
        .await;
    assert_ne!(on_replica, "0", "a 202 before the replica had the entry");
    assert_eq!(
        on_replica,
        primary
            .cli(&["XLEN", "ltvboost:{default}:queue:events"])
            .await,
        "a 202 before the replica had every entry"
    );
    // The replica gone: 503, and the entry is kept for when it is back.
    replica.kill();
    let reply = post_signed(addr, &created_event("evt_unconfirmed")).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    replica.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The sender's retry: a duplicate, confirmed once the replica has it.
        match post_signed(addr, &created_event("evt_unconfirmed"))
            .await
            .status
        {
            200 => break,
            503 => assert!(Instant::now() < deadline, "the replica never came back"),
            other => panic!("answered {other}"),
        }
    }
    assert_eq!(
        replica
            .cli(&["XLEN", "ltvboost:{default}:queue:events"])
            .await,
        primary
            .cli(&["XLEN", "ltvboost:{default}:queue:events"])
            .await,
    );
    // Every copy the 503s left behind is dropped: each event runs once.
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut worker = example_worker(&primary.url(), &[]);
    let reader = collect_lines(&mut worker, lines.clone());
    wait_until("both events", || {
        let lines = lines.lock().unwrap();
        occurrences(&lines, "response.created evt_replicated")
            + occurrences(&lines, "response.created evt_unconfirmed")
            >= 2
    })
    .await;
    wait_until("the stream drained", || {
        redis_cli(primary.port, &["XLEN", "ltvboost:{default}:queue:events"]) == "0"
    })
    .await;
    assert_eq!(terminate(&mut worker), Some(0));
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(
        occurrences(&lines, "response.created evt_replicated"),
        1,
        "{lines:?}"
    );
    assert_eq!(
        occurrences(&lines, "response.created evt_unconfirmed"),
        1,
        "{lines:?}"
    );
}

/// What `wait_for_replicas` covers, and what a failover still costs: the
/// `WAIT` covers the enqueue, so an event answered `202` is on the replica
/// and is never lost; a worker's end record is not waited for, so an event
/// handled on the old master after the replica last heard from it runs
/// again on the promoted replica: twice, never lost. (The replica is cut
/// off by `REPLICAOF NO ONE` before the worker runs: the asynchronous
/// replication lag of a real failover, made certain.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_with_wait_for_replicas_nothing_is_lost_and_a_finished_event_may_run_again()
 {
    let primary = RedisServer::durable(&[]).await;
    let replica_of = format!("127.0.0.1 {}", primary.port);
    let replica = RedisServer::durable(&["--replicaof", &replica_of]).await;
    let queue = RedisQueue::lazy(&primary.url())
        .unwrap()
        .wait_for_replicas(1, Duration::from_millis(500))
        .checked()
        .await
        .unwrap();
    let addr = receiver(queue.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Answered 202 once the replica has it (503 until it has synced).
    while post_signed(addr, &created_event("evt_failed_over"))
        .await
        .status
        == 503
    {
        assert!(Instant::now() < deadline, "the replica never confirmed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The replica falls behind: it hears nothing more from the primary.
    assert_eq!(replica.cli(&["REPLICAOF", "NO", "ONE"]).await, "OK");
    let counter = Arc::new(Counter::default());
    let handled_on_primary = start_worker(Worker::new(
        queue,
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    ));
    wait_until("the event, on the primary", || counter.total() == 1).await;
    drop(handled_on_primary.0);
    handled_on_primary.1.await.unwrap();
    // Failover: the workers move to the promoted replica.
    let promoted = RedisQueue::connect(&replica.url()).await.unwrap();
    let on_replica = start_worker(Worker::new(
        promoted.clone(),
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    ));
    wait_until("the event, again on the replica", || counter.total() == 2).await;
    until_empty(&promoted, "never ended on the replica").await;
    drop(on_replica.0);
    on_replica.1.await.unwrap();
    assert_eq!(counter.calls.lock().unwrap()["evt_failed_over"], 2);
}

/// The blocking read outlasts no deadline: an idle worker says nothing
/// (before, it logged a timed-out read about once a second).
#[tokio::test]
async fn an_idle_worker_is_quiet() {
    let redis = RedisServer::durable(&[]).await;
    let worker = Command::new(example("worker"))
        .env("LTVBOOST_QUEUE_URL", redis.url())
        .env("LTVBOOST_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let output = worker.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("could not"), "{stderr}");
}

/// Two services subscribed to the same event on one Redis, each in its own
/// namespace: each runs its handler once, inline and in enqueue mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_on_one_redis_each_handle_the_same_event_once() {
    let redis = RedisServer::durable(&[]).await;
    let event = created_event("evt_shared_by_two_services");
    // Inline, with the Redis dedupe store.
    let mut inline = Vec::new();
    for namespace in ["billing", "crm"] {
        let store = ltvboost_webhooks::dedupe::RedisStore::connect(&redis.url())
            .await
            .unwrap()
            .namespace(namespace)
            .unwrap();
        let counter = Arc::new(Counter::default());
        let layer = WebhookLayer::new(
            config().dedupe_store(store),
            Handlers::responses(Counting(counter.clone())),
        );
        inline.push((serve(Router::new().layer(layer)).await, counter));
    }
    for (addr, _) in &inline {
        assert_eq!(post_signed(*addr, &event).await.status, 200);
        // The sender's retry: a duplicate within the namespace.
        assert_eq!(post_signed(*addr, &event).await.status, 200);
    }
    for (_, counter) in &inline {
        assert_eq!(counter.total(), 1);
    }
    // Enqueue mode: each namespace's worker handles its own copy only.
    let mut services = Vec::new();
    for namespace in ["billing", "crm"] {
        let addr = receiver(namespaced_queue(&redis.url(), namespace).await).await;
        let counter = Arc::new(Counter::default());
        let worker = start_worker(Worker::new(
            namespaced_queue(&redis.url(), namespace).await,
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        ));
        services.push((addr, counter, worker));
    }
    for (addr, _, _) in &services {
        assert_eq!(post_signed(*addr, &event).await.status, 202);
        assert_eq!(post_signed(*addr, &event).await.status, 200);
    }
    for (_, counter, _) in &services {
        wait_until("each service's handler", || counter.total() == 1).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, counter, (stop, task)) in services {
        assert_eq!(counter.total(), 1, "a service ran the event twice");
        drop(stop);
        task.await.unwrap();
    }
    let keys = redis.cli(&["KEYS", "*"]).await;
    assert!(
        keys.lines().all(|key| {
            key.starts_with("ltvboost:{billing}:") || key.starts_with("ltvboost:{crm}:")
        }),
        "{keys}"
    );
}

#[test]
fn a_namespace_that_could_break_its_hash_tag_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let queue = || RedisQueue::lazy("redis://127.0.0.1:1/").unwrap();
        for bad in ["", "a}b", "{a}", "a b", &"x".repeat(65)] {
            assert!(queue().namespace(bad).is_err(), "{bad:?} accepted");
        }
        assert!(queue().namespace("billing-prod_2.eu").is_ok());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handled_events_entry_appended_again_is_not_run() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let port = port_of(&url);
    let counter = Arc::new(Counter::default());
    let (stop, task) = start_worker(Worker::new(
        queue(&url, &prefix).await,
        verifier(),
        Handlers::responses(Counting(counter.clone())),
    ));
    let queue = queue(&url, &prefix).await;
    let body = created_event("evt_copied");
    queue
        .enqueue(&verified_delivery(body.clone()))
        .await
        .unwrap();
    wait_until("the event", || counter.total() == 1).await;
    // A restore, a script run twice, a hand-made requeue: the same entry
    // appended again after its event was handled.
    let key = secret().key_id().to_string();
    append_by_hand(port, &prefix, &body, &["key", &key]);
    // As an earlier version wrote it: no key id.
    append_by_hand(port, &prefix, &body, &[]);
    until_empty(&queue, "the copies were never ended").await;
    drop(stop);
    task.await.unwrap();
    assert_eq!(counter.calls.lock().unwrap()["evt_copied"], 1, "a copy ran");
    assert_eq!(queue.stats().await.unwrap().dead_letters, 0);
}

/// The enqueue is a transaction that cannot skip its `XADD`: a duplicate
/// delivery, or the loser of two receivers' race, appends a copy, and
/// deletes it once it knows it lost. A copy that stays (its deletion
/// failed) carries a token its event's key does not hold, and is dropped
/// unrun, whichever order workers read them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_appended_by_duplicates_and_races_are_dropped_unrun() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let port = port_of(&url);
    let queue = queue(&url, &prefix).await;
    let body = created_event("evt_raced");
    // Ten receivers' enqueues of one event at once, before any worker runs.
    let racers = (0..10).map(|_| {
        let (queue, body) = (queue.clone(), body.clone());
        tokio::spawn(async move { queue.enqueue(&verified_delivery(body)).await.unwrap() })
    });
    let mut added = 0;
    for racer in racers {
        if matches!(
            racer.await.unwrap(),
            ltvboost_webhooks::receiver::enqueue::Enqueued::Added(_)
        ) {
            added += 1;
        }
    }
    assert_eq!(added, 1, "one enqueue wins");
    assert_eq!(
        queue.stats().await.unwrap().entries,
        1,
        "each losing enqueue removes its copy"
    );
    // Copies whose deletion failed, as a losing enqueue leaves them: the
    // entry with a token of its own.
    let key = secret().key_id().to_string();
    for token in ["lost-race-1", "lost-race-2"] {
        append_by_hand(port, &prefix, &body, &["key", &key, "token", token]);
    }
    assert_eq!(queue.stats().await.unwrap().entries, 3);
    let counter = Arc::new(Counter::default());
    let workers: Vec<_> = (0..2)
        .map(|_| {
            start_worker(Worker::new(
                queue.clone(),
                verifier(),
                Handlers::responses(Counting(counter.clone())),
            ))
        })
        .collect();
    until_empty(&queue, "the copies were never ended").await;
    for (stop, task) in workers {
        drop(stop);
        task.await.unwrap();
    }
    assert_eq!(counter.calls.lock().unwrap()["evt_raced"], 1, "a copy ran");
    assert_eq!(queue.stats().await.unwrap().dead_letters, 0);
    // The event's key still says done: a later delivery is a duplicate.
    assert_eq!(
        queue.enqueue(&verified_delivery(body)).await.unwrap(),
        ltvboost_webhooks::receiver::enqueue::Enqueued::Duplicate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_counts_as_a_failed_attempt_at_its_deadline() {
    struct Hangs;
    impl ResponseHandler for Hangs {
        async fn created(&self, _: &Delivery, _: &ResponseCreated) -> HandlerResult {
            std::future::pending::<()>().await;
            Ok(())
        }
    }
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let worker = Worker::new(
        queue(&url, &prefix).await,
        verifier(),
        Handlers::responses(Hangs),
    );
    // On by default: a hung handler ends.
    assert!(
        format!("{worker:?}").contains("handler_timeout: Some(600s)"),
        "{worker:?}"
    );
    let worker = worker
        .handler_timeout(Duration::from_millis(200))
        .max_attempts(2)
        .retry_backoff(ltvboost_webhooks::Backoff::new(
            Duration::from_millis(10),
            1.0,
            Duration::from_millis(10),
        ));
    let (stop, task) = start_worker(worker);
    let queue = queue(&url, &prefix).await;
    queue
        .enqueue(&verified_delivery(created_event("evt_hangs")))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue.stats().await.unwrap().dead_letters == 0 {
        assert!(Instant::now() < deadline, "the hung handler never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stop);
    task.await.unwrap();
    let letters = queue.dead_letters_after(None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 2, "{letters:?}");
    assert!(
        letters[0].error.contains("did not finish within"),
        "{letters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_innocent_event_in_flight_beside_a_poison_event_is_never_dead_lettered() {
    let redis = RedisServer::durable(&[]).await;
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    // Read together and run at once: the innocent ones are in flight (each
    // takes 300 ms) when the poison one aborts the process.
    for n in 0..5 {
        let id = format!("evt_innocent_{n}");
        assert_eq!(post_signed(addr, &created_event(&id)).await.status, 202);
    }
    let poison = event_json("evt_poison", "action.failed", r#"{"id":"act_1"}"#);
    assert_eq!(post_signed(addr, &poison).await.status, 202);
    // Two starts allowed: the crash charges every entry in flight once.
    let settings = [
        ("LTVBOOST_WORKER_CRASH_TYPES", "action.failed"),
        ("LTVBOOST_WORKER_MAX_ATTEMPTS", "2"),
        ("LTVBOOST_WORKER_CLAIM_IDLE_MS", "300"),
        ("LTVBOOST_WORKER_CONCURRENCY", "8"),
        ("LTVBOOST_WORKER_DELAY_MS", "300"),
    ];
    let lines = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let queue = RedisQueue::connect(&redis.url()).await.unwrap();
    loop {
        let mut worker = example_worker(&redis.url(), &settings);
        let reader = collect_lines(&mut worker, lines.clone());
        loop {
            let stats = queue.stats().await.unwrap();
            if stats.entries == 0 && stats.scheduled_retries == 0 {
                assert_eq!(terminate(&mut worker), Some(0));
                break;
            }
            if worker.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{:?}", lines.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reader.join().unwrap();
        let stats = queue.stats().await.unwrap();
        if stats.entries == 0 && stats.scheduled_retries == 0 {
            break;
        }
    }
    let lines = lines.lock().unwrap();
    let dead: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("dead-letter"))
        .collect();
    assert_eq!(dead, ["dead-letter action.failed evt_poison"], "{lines:?}");
    for n in 0..5 {
        let line = format!("response.created evt_innocent_{n}");
        assert!(occurrences(&lines, &line) >= 1, "{lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_a_worker_claims_back_while_running_it_runs_once_and_ends() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let port = port_of(&url);
    let counter = Arc::new(Counter {
        delay: Duration::from_secs(4),
        ..Counter::default()
    });
    let consumer = format!("w-{}", ltvboost_webhooks::dedupe::ClaimToken::random());
    let (stop, task) = start_worker(
        Worker::new(
            queue(&url, &prefix).await,
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .consumer_name(consumer.clone())
        .claim_idle(Duration::from_millis(300)),
    );
    let queue = queue(&url, &prefix).await;
    let id = enqueue_new(&queue, "evt_claimed_back").await;
    wait_until("the first call", || {
        counter.calls.lock().unwrap().len() == 1
    })
    .await;
    // The hold looks lapsed (as when the worker was too busy to renew it):
    // its own next claim pass (between reads, each up to a second) takes
    // the entry it is running.
    let stream = format!("{prefix}events");
    for _ in 0..150 {
        redis_cli(
            port,
            &[
                "XCLAIM", &stream, "workers", &consumer, "0", &id, "IDLE", "5000", "JUSTID",
            ],
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "XPENDING: {}",
        redis_cli(port, &["XPENDING", &stream, "workers", "-", "+", "10"]).replace('\n', " ")
    );
    until_empty(&queue, "the entry never ended").await;
    drop(stop);
    task.await.unwrap();
    assert_eq!(
        counter.calls.lock().unwrap()["evt_claimed_back"],
        1,
        "ran twice at once"
    );
    // Ended by the run itself, once its handler returned.
    assert_eq!(counter.total(), 1);
    let letters = queue.dead_letters_after(None, 10).await.unwrap();
    assert!(letters.is_empty(), "{letters:?}");
}

/// An entry taken back from a worker that went silent (a suspect) waits
/// for the worker's other runs to end, then runs alone; it is held while it
/// waits, so no claim (this worker's own or another's) counts a start it
/// never had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspect_entry_is_held_while_it_waits_to_run_alone() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let port = port_of(&url);
    let queue = queue(&url, &prefix).await;
    let stream = format!("{prefix}events");
    let suspect = enqueue_new(&queue, "evt_suspect").await;
    // Read by a worker that then went silent: pending, one delivery.
    redis_cli(
        port,
        &["XGROUP", "CREATE", &stream, "workers", "0", "MKSTREAM"],
    );
    let read = redis_cli(
        port,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "silent",
            "COUNT",
            "1",
            "STREAMS",
            &stream,
            ">",
        ],
    );
    assert!(read.contains(&suspect), "{read}");
    queue
        .enqueue(&verified_delivery(created_event("evt_slow")))
        .await
        .unwrap();
    let counter = Arc::new(Counter {
        delay: Duration::from_secs(3),
        ..Counter::default()
    });
    let consumer = format!("w-{}", ltvboost_webhooks::dedupe::ClaimToken::random());
    let claim_idle = Duration::from_millis(300);
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .consumer_name(consumer.clone())
        .claim_idle(claim_idle),
    );
    // While the slow event runs, the suspect is this worker's, waiting:
    // its idle time stays under claim_idle and its delivery count at 2.
    let (mut held_samples, mut longest_idle, mut counts) = (0, 0u64, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !counter.calls.lock().unwrap().contains_key("evt_suspect") {
        assert!(Instant::now() < deadline, "the suspect never ran");
        let pending = redis_cli(port, &["XPENDING", &stream, "workers", "-", "+", "10"]);
        let lines: Vec<&str> = pending.lines().collect();
        if let Some(at) = lines.iter().position(|l| *l == suspect)
            && lines.get(at + 1) == Some(&consumer.as_str())
            && counter.calls.lock().unwrap().contains_key("evt_slow")
            && !counter.calls.lock().unwrap().contains_key("evt_suspect")
        {
            held_samples += 1;
            longest_idle = longest_idle.max(lines[at + 2].parse().unwrap());
            counts.push(lines[at + 3].to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        held_samples >= 5,
        "the suspect was not seen waiting ({held_samples} samples)"
    );
    assert!(
        longest_idle < claim_idle.as_millis() as u64,
        "unheld while it waited: idle {longest_idle} ms"
    );
    assert!(
        counts.iter().all(|c| c == "2"),
        "counted starts: {counts:?}"
    );
    drained_once_each(&queue, (stop, task), &counter, &["evt_suspect", "evt_slow"]).await;
}

/// Secrets that hang on the first lookup (a database that stopped
/// answering), then answer.
struct HangsOnce {
    hung: AtomicBool,
}

impl ltvboost_webhooks::secrets::SecretSource for HangsOnce {
    async fn keys(
        &self,
        account: Option<&str>,
    ) -> Result<Option<ltvboost_webhooks::secrets::Keys>, ltvboost_webhooks::secrets::LookupError>
    {
        if !self.hung.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        ltvboost_webhooks::secrets::SecretSource::keys(&verifier(), account).await
    }
}

/// A worker's secret lookup is bounded: one that hangs hands the entry
/// back, uncounted, and the next claim runs it once; the worker is not
/// stuck behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_source_that_hangs_delays_an_entry_but_neither_loses_nor_stalls_it() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let queue = queue(&url, &prefix).await;
    let counter = Arc::new(Counter::default());
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            HangsOnce {
                hung: AtomicBool::new(false),
            },
            Handlers::responses(Counting(counter.clone())),
        )
        .claim_idle(Duration::from_millis(400)),
    );
    let ids = ["evt_hung_lookup", "evt_after_it"];
    for id in ids {
        queue
            .enqueue(&verified_delivery(created_event(id)))
            .await
            .unwrap();
    }
    drained_once_each(&queue, (stop, task), &counter, &ids).await;
}

/// A worker asked to stop lets its handlers finish within its shutdown
/// grace; one still running then is stopped, and its entry handed back for
/// another worker to take at once, not after claim_idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_hands_back_what_outlasts_its_grace() {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    let queue = queue(&url, &prefix).await;
    let claim_idle = Duration::from_secs(60);
    let hung = Arc::new(Counter {
        gate: Some(Arc::new(Semaphore::new(0))),
        ..Counter::default()
    });
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            verifier(),
            Handlers::responses(Counting(hung.clone())),
        )
        .claim_idle(claim_idle)
        .handler_timeout(None)
        .shutdown_grace(Duration::from_millis(500)),
    );
    queue
        .enqueue(&verified_delivery(created_event("evt_outlasts")))
        .await
        .unwrap();
    wait_until("the hung call", || hung.total() == 1).await;
    drop(stop);
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the worker waited for a hung handler past its grace")
        .unwrap();
    // Another worker takes it at once, although claim_idle is a minute.
    let counter = Arc::new(Counter::default());
    let (stop, task) = start_worker(
        Worker::new(
            queue.clone(),
            verifier(),
            Handlers::responses(Counting(counter.clone())),
        )
        .claim_idle(claim_idle),
    );
    drained_once_each(&queue, (stop, task), &counter, &["evt_outlasts"]).await;
}

/// Queue errors are the queue's own: matched by variant, never by text, and
/// each names the queue (its stream's key), not "dedupe store".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_errors_name_the_queue_and_are_matched_by_variant() {
    use ltvboost_webhooks::queue::QueueError;
    // Nothing listens there.
    let unreachable = RedisQueue::lazy(&format!("redis://127.0.0.1:{}/", free_port()))
        .unwrap()
        .namespace("billing")
        .unwrap()
        .operation_timeout(Duration::from_millis(500));
    let error = unreachable.stats().await.unwrap_err();
    assert!(
        matches!(
            error,
            QueueError::Redis { .. } | QueueError::TimedOut { .. }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("ltvboost:{billing}:queue:events"), "{text}");
    assert!(!text.contains("dedupe"), "{text}");
    // A Redis that forgets on restart, refused by variant.
    let forgetful = RedisServer::durable(&["--appendonly", "no"]).await;
    let refused = RedisQueue::lazy(&forgetful.url())
        .unwrap()
        .require_durable(true)
        .checked()
        .await
        .unwrap_err();
    match refused {
        QueueError::NotDurable { stream, risks } => {
            assert_eq!(stream, "ltvboost:{default}:queue:events");
            assert!(risks.contains("appendonly"), "{risks}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        RedisQueue::lazy("redis://127.0.0.1:6379/")
            .unwrap()
            .namespace("bad}name"),
        Err(QueueError::Invalid(_))
    ));
}
