//! Availability under cheap request patterns, on real HTTP on 127.0.0.1:
//! the body budget charged by bytes that arrived (declared-but-never-sent
//! bodies hold nothing, stalled and trickling bodies are cut with `408`),
//! per-peer shares, which connection is shed at the cap, and a shutdown that
//! waits for the deliveries it answered to be recorded.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use common::*;
use ltvboost_webhooks::dedupe::{
    Claim, ClaimStatus, ClaimToken, DedupeStore, MemoryStore, StoreError,
};
use ltvboost_webhooks::serve::Server;
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORGED: &str = "sha256=abababababababababababababababababababababababababababababababab";

/// A head that declares `declared` body bytes, with a well-formed forged
/// signature, so the body is read rather than refused at the head.
fn declaring_head(declared: usize) -> String {
    format!(
        "POST {PATH} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {declared}\r\nx-ltvboost-signature: {FORGED}\r\n\r\n"
    )
}

/// A signed event whose body is about `size` bytes.
fn sized_event(id: &str, size: usize) -> Vec<u8> {
    let pad = "x".repeat(size.saturating_sub(120));
    event_json(
        id,
        "response.created",
        &format!(r#"{{"id":"r","pad":"{pad}"}}"#),
    )
}

async fn serve_config(config: WebhookConfig, recorder: &Arc<Recorder>) -> SocketAddr {
    serve(WebhookLayer::new(config, recording(recorder)).wrap(Router::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_bodies_that_never_arrive_hold_no_budget_and_are_cut_with_408() {
    let recorder = Recorder::new();
    // A budget a single declared body would spend whole.
    let config = config()
        .body_budget(256 * 1024)
        .body_stall_timeout(Duration::from_millis(700));
    let addr = serve_config(config, &recorder).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(declaring_head(1024 * 1024).as_bytes())
            .await
            .unwrap();
        held.push(stream);
    }
    // Every genuine delivery gets through while they are open.
    for i in 0..5 {
        let reply = post_signed(addr, &sized_event(&format!("evt_budget_{i}"), 4096)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    assert_eq!(recorder.calls("response.created"), 5);
    // And each of them is cut for want of progress.
    for mut stream in held {
        let reply = read_reply(&mut stream).await;
        assert_eq!(reply.status, 408, "{reply:?}");
        assert!(reply.body.contains("too slowly"), "{reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_by_the_rate_floor() {
    let recorder = Recorder::new();
    let config = config()
        .body_stall_timeout(Duration::from_millis(500))
        .min_body_rate(10_000);
    let addr = serve_config(config, &recorder).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(declaring_head(4000).as_bytes())
        .await
        .unwrap();
    // A byte every 100 ms: never stalled, far below the floor.
    let trickle = async {
        for _ in 0..100 {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(reply.body.contains("too slowly"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_arrived_spend_the_budget_and_are_freed_when_cut() {
    let recorder = Recorder::new();
    let config = config()
        .body_budget(64 * 1024)
        .body_stall_timeout(Duration::from_millis(800));
    let addr = serve_config(config, &recorder).await;
    // 60 KiB of a 100 KiB forged body arrive, then nothing.
    let mut hog = TcpStream::connect(addr).await.unwrap();
    hog.write_all(declaring_head(100 * 1024).as_bytes())
        .await
        .unwrap();
    hog.write_all(&vec![b' '; 60 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = post_signed(addr, &sized_event("evt_spent", 10 * 1024)).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let cut = read_reply(&mut hog).await;
    assert_eq!(cut.status, 408, "{cut:?}");
    // Its share is free again.
    let reply = post_signed(addr, &sized_event("evt_spent", 10 * 1024)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holds_at_most_its_share_when_one_is_set() {
    let recorder = Recorder::new();
    let big = sized_event("evt_share_big", 32 * 1024);
    let small = sized_event("evt_share_small", 8 * 1024);
    // Off by default: the whole budget is anyone's.
    let addr = serve_config(config(), &recorder).await;
    assert_eq!(post_signed(addr, &big).await.status, 200);
    let addr = serve_config(config().body_budget_per_peer(16 * 1024), &recorder).await;
    assert_eq!(post_signed(addr, &big).await.status, 503);
    assert_eq!(post_signed(addr, &small).await.status, 200);
    // Refused shares were given back: the peer can still send its share.
    assert_eq!(post_signed(addr, &small).await.status, 200);
}

/// Opens a keep-alive connection and gets one answer on it.
async fn answered_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream
}

/// Whether the server has closed `stream` (within 5 s).
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn health_app(recorder: &Arc<Recorder>, config: WebhookConfig) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(WebhookLayer::new(config, recording(recorder)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_connection_idle_longest_goes_answered_or_not_never_one_in_flight() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let recorder = Recorder::gated(gate.clone());
    let addr = serve_with(health_app(&recorder, config()), |s| {
        s.max_connections(3)
            .header_read_timeout(Duration::from_secs(600))
            .idle_timeout(Duration::from_secs(600))
    })
    .await;
    // A delivery in flight (its handler waits for the gate), on the oldest
    // connection.
    let body = event_json("evt_in_flight", "response.created", r#"{"id":"r"}"#);
    let in_flight = tokio::spawn(async move { post_signed(addr, &body).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Two keep-alive connections answered once each: the first idle longest.
    let mut first = answered_connection(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = answered_connection(addr).await;
    // A new connection at the cap sheds the one idle longest, although it
    // was answered, and is itself served.
    let mut third = answered_connection(addr).await;
    assert!(
        is_closed(&mut first).await,
        "the idle-longest connection is open"
    );
    // Next: the second; the in-flight delivery is never shed.
    let _fourth = answered_connection(addr).await;
    assert!(is_closed(&mut second).await);
    let _fifth = answered_connection(addr).await;
    assert!(is_closed(&mut third).await);
    gate.add_permits(1);
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(recorder.calls("response.created"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_connection_cap_gives_up_its_own_idle_longest() {
    let recorder = Recorder::new();
    let addr = serve_with(health_app(&recorder, config()), |s| {
        s.max_connections_per_peer(2)
            .idle_timeout(Duration::from_secs(600))
    })
    .await;
    let mut first = answered_connection(addr).await;
    let mut second = answered_connection(addr).await;
    // Both just answered, so about to be used again: a third is refused.
    let mut refused = TcpStream::connect(addr).await.unwrap();
    assert!(is_closed(&mut refused).await);
    // Once they have been idle a while, the idle-longest makes room.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _third = answered_connection(addr).await;
    assert!(is_closed(&mut first).await);
    let reply = post_signed(
        addr,
        &event_json("evt_peer", "action.sent", r#"{"id":"a"}"#),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(is_closed(&mut second).await);
}

/// A memory store whose done-records take `delay` to write, and that keeps
/// the keys it recorded done.
struct SlowDone {
    inner: MemoryStore,
    delay: Duration,
    done: Arc<Mutex<Vec<String>>>,
}

impl DedupeStore for SlowDone {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(key, lease).await
    }
    async fn renew(
        &self,
        key: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> Result<ClaimStatus, StoreError> {
        self.inner.renew(key, token, lease).await
    }
    async fn mark_done(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> Result<ClaimStatus, StoreError> {
        tokio::time::sleep(self.delay).await;
        let status = self.inner.mark_done(key, token, ttl).await;
        self.done.lock().unwrap().push(key.to_owned());
        status
    }
    async fn release(&self, key: &str, token: &ClaimToken) -> Result<ClaimStatus, StoreError> {
        self.inner.release(key, token).await
    }
}

/// Serves a receiver whose done-records take `delay`, until `stop`, with
/// `grace`; returns the address, the done keys and the server's task.
async fn slow_done_server(
    delay: Duration,
    grace: Duration,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (
    SocketAddr,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let done = Arc::new(Mutex::new(Vec::new()));
    let store = SlowDone {
        inner: MemoryStore::new(),
        delay,
        done: done.clone(),
    };
    let app = health_app(&Recorder::new(), config().dedupe_store(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(listener).shutdown_grace(grace);
    let task = tokio::spawn(async move {
        server
            .serve_with_shutdown(app, async move {
                let _ = stop.await;
            })
            .await
            .unwrap();
    });
    (addr, done, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_done_record_of_an_answered_delivery() {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (addr, done, server) =
        slow_done_server(Duration::from_millis(800), Duration::from_secs(10), stopped).await;
    let reply = post_signed(
        addr,
        &event_json("evt_settle", "action.sent", r#"{"id":"a"}"#),
    )
    .await;
    assert_eq!(reply.status, 200);
    // Answered; its done-record is still being written when the stop comes.
    assert!(done.lock().unwrap().is_empty());
    stop.send(()).unwrap();
    server.await.unwrap();
    assert_eq!(*done.lock().unwrap(), ["evt:evt_settle"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_its_grace_closes_connections_and_names_what_was_not_recorded() {
    let logs = capture_logs();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (addr, done, server) =
        slow_done_server(Duration::from_secs(30), Duration::from_millis(500), stopped).await;
    let reply = post_signed(
        addr,
        &event_json("evt_unsettled", "action.sent", r#"{"id":"a"}"#),
    )
    .await;
    assert_eq!(reply.status, 200);
    // An idle keep-alive connection that would otherwise stay open.
    let mut parked = answered_connection(addr).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server returned after its grace")
        .unwrap();
    assert!(is_closed(&mut parked).await);
    assert!(done.lock().unwrap().is_empty());
    let logs = logs.lock().unwrap().clone();
    let logs = String::from_utf8_lossy(&logs);
    assert!(
        logs.lines()
            .any(|l| l.contains("evt_unsettled") && l.contains("not recorded")),
        "{logs}"
    );
}

/// Installs a global subscriber that writes every log line into a buffer.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || Sink(writer.clone()))
            .init();
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
