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
use tokio::sync::{Semaphore, oneshot};

fn redis_url() -> String {
    std::env::var("LTVBOOST_TEST_REDIS_URL")
        .expect("LTVBOOST_TEST_REDIS_URL is not set: scripts/test.sh starts a Redis and sets it")
}

fn unique_prefix() -> String {
    format!("test:{}:", ltvboost_webhooks::dedupe::ClaimToken::random())
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
        if counter.failing.load(Ordering::SeqCst) {
            return Err("the CRM is down".into());
        }
        Ok(())
    }
}

/// A receiver in enqueue mode on `queue`.
async fn receiver(queue: RedisQueue) -> SocketAddr {
    serve(Router::new().layer(WebhookLayer::enqueue(config(), queue))).await
}

/// Runs a worker until the returned sender is dropped or fired.
fn start_worker(worker: Worker) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

fn created(id: &str) -> Vec<u8> {
    event_json(id, "response.created", r#"{"id":"rsp_1"}"#)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited 60 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_through_two_receivers_and_three_workers_are_handled_once() {
    let (url, prefix) = (redis_url(), unique_prefix());
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
        let body = created(&format!("evt_q{n}"));
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
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert_eq!(queue.lag().await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_entries_are_claimed_and_repeats_stay_within_its_concurrency() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let addr = receiver(queue(&url, &prefix).await).await;
    for n in 0..20 {
        assert_eq!(
            post_signed(addr, &created(&format!("evt_k{n}")))
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
    let (url, prefix) = (redis_url(), unique_prefix());
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
    assert_eq!(post_signed(addr, &created("evt_fails")).await.status, 202);
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

/// A Redis server of the test's own, with an append-only file fsynced on
/// every write.
struct DurableRedis {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl DurableRedis {
    async fn start(dir: &std::path::Path, port: u16) -> Child {
        let port_text = port.to_string();
        let os = std::ffi::OsStr::new;
        let args = [
            os("--port"),
            os(&port_text),
            os("--appendonly"),
            os("yes"),
            os("--appendfsync"),
            os("always"),
            os("--dir"),
            dir.as_os_str(),
        ];
        spawn_redis(port, &args).await
    }

    async fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("ltvboost-aof-{}", unique_prefix().replace(':', "")));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let child = Self::start(&dir, port).await;
        let redis = Self { child, dir, port };
        redis.wait_up().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn wait_up(&self) {
        for _ in 0..200 {
            if RedisQueue::connect(&self.url()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    async fn kill_and_restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.child = Self::start(&self.dir, self.port).await;
        self.wait_up().await;
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_event_is_dead_lettered_at_once_unless_acknowledged_as_inline() {
    let (url, prefix) = (redis_url(), unique_prefix());
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
        let (pending, lag) = (queue.pending().await.unwrap(), queue.lag().await.unwrap());
        if pending == 0 && lag == Some(0) {
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
    let mut redis = DurableRedis::new().await;
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    for n in 0..200 {
        assert_eq!(
            post_signed(addr, &created(&format!("evt_d{n}")))
                .await
                .status,
            202
        );
    }
    // SIGKILL right after the last 202, then a restart on the same files.
    redis.kill_and_restart().await;
    let queue = RedisQueue::connect(&redis.url()).await.unwrap();
    assert_eq!(
        queue.len().await.unwrap(),
        200,
        "acknowledged entries were lost"
    );
    // The dedupe keys survived too: a redelivery is still a duplicate.
    let addr = receiver(RedisQueue::connect(&redis.url()).await.unwrap()).await;
    assert_eq!(post_signed(addr, &created("evt_d7")).await.status, 200);
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
    let reply = post_signed(addr, &created("evt_down")).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.contains("queue unavailable"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_never_holds_up_the_receiver() {
    let (url, prefix) = (redis_url(), unique_prefix());
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
    assert_eq!(post_signed(addr, &created("evt_slow_0")).await.status, 202);
    wait_until("the first handler call", || counter.total() == 1).await;
    // The handler is stuck; the receiver goes on answering at once.
    for n in 1..20 {
        assert_eq!(
            post_signed(addr, &created(&format!("evt_slow_{n}")))
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
    let url = redis_url();
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
        assert_eq!(post_signed(web, &created(&ok_id)).await.status, 202);
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
    let failed_calls = seen.iter().filter(|l| **l == wanted[1]).count();
    assert_eq!(
        failed_calls, 2,
        "two attempts, then the dead letter: {seen:?}"
    );
    for child in [&mut worker, &mut receiver] {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}
