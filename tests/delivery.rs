//! Delivery guarantees: effectively-once handling across a fleet sharing a
//! store, failure and outage behaviour, leases, and the replay window. Every
//! store-dependent test runs against both stores (one trait, two stores).
//!
//! The Redis tests need a real server: set `LTVBOOST_TEST_REDIS_URL`
//! (`scripts/test.sh` starts one and sets it).
#![cfg(all(feature = "redis", feature = "testing"))]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use common::*;
use ltvboost_webhooks::dedupe::{Claim, ClaimStatus, DedupeStore, MemoryStore, RedisStore};
use ltvboost_webhooks::replay::{ManualClock, ReplayWindow};
use ltvboost_webhooks::testing::{EventBuilder, RetryPolicy, SenderSimulator, fixture};
use ltvboost_webhooks::{EventType, WebhookLayer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const REDIS_VAR: &str = "LTVBOOST_TEST_REDIS_URL";

/// The receivers' claim lease in these tests.
const LEASE: Duration = Duration::from_secs(2);

async fn redis_store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at {REDIS_VAR}: {e}"))
        .key_prefix(prefix)
}

/// Two stores that share state, as two instances of a fleet would.
async fn redis_pair() -> [RedisStore; 2] {
    let (url, prefix) = (test_redis_url(), unique_prefix());
    [
        redis_store(&url, &prefix).await,
        redis_store(&url, &prefix).await,
    ]
}

fn memory_pair() -> [Arc<MemoryStore>; 2] {
    let store = Arc::new(MemoryStore::new());
    [store.clone(), store]
}

macro_rules! for_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(super::memory_pair()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$name(super::redis_pair().await).await
            }
        }
    )*};
}

for_both_stores!(
    store_contract,
    a_handler_slower_than_its_lease_runs_once,
    fleet_runs_a_concurrently_delivered_event_exactly_once,
    simulator_retries_a_failing_handler_until_it_succeeds,
    a_killed_instances_claim_expires_after_its_lease,
);

/// A receiver instance on its own port, over a given store.
async fn instance<S: DedupeStore>(store: S, recorder: &Arc<Recorder>) -> SocketAddr {
    // Long enough that a loaded CI machine still answers 409 before it
    // lapses, short enough to wait out in a test.
    instance_with_lease(store, recorder, LEASE).await
}

async fn instance_with_lease<S: DedupeStore>(
    store: S,
    recorder: &Arc<Recorder>,
    lease: Duration,
) -> SocketAddr {
    let config = config().dedupe_store(store).claim_lease(lease);
    let layer = WebhookLayer::new(config, recording(recorder));
    serve(Router::new().layer(layer)).await
}

/// Posts as LTVboost redelivers after a success: retrying while answered
/// `409`, since the answer goes out before the done-record is written.
async fn post_after_success(addr: SocketAddr, body: &[u8]) -> Reply {
    let mut reply = post_signed(addr, body).await;
    for _ in 0..100 {
        if reply.status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply = post_signed(addr, body).await;
    }
    reply
}

/// The trait's promises, whatever the store.
async fn store_contract<S: DedupeStore>([store, other]: [S; 2]) {
    let lease = Duration::from_millis(300);
    let ttl = Duration::from_secs(60);
    let Claim::Acquired(token) = store.claim("a", lease).await.unwrap() else {
        panic!("first claim must acquire")
    };
    assert_eq!(other.claim("a", lease).await.unwrap(), Claim::InFlight);
    other
        .release("a", &ltvboost_webhooks::dedupe::ClaimToken::new(u128::MAX))
        .await
        .unwrap();
    assert_eq!(
        other.claim("a", lease).await.unwrap(),
        Claim::InFlight,
        "a stranger released the claim"
    );
    let renewed = store.renew("a", &token, lease).await.unwrap();
    assert_eq!(renewed, ClaimStatus::Held);
    assert_eq!(store.release("a", &token).await.unwrap(), ClaimStatus::Held);
    let Claim::Acquired(token) = other.claim("a", lease).await.unwrap() else {
        panic!("a released key must be claimable")
    };
    other.mark_done("a", &token, ttl).await.unwrap();
    assert_eq!(store.claim("a", lease).await.unwrap(), Claim::Done);

    // A lapsed lease frees the key; the stale holder can no longer end it.
    let Claim::Acquired(stale) = store.claim("b", lease).await.unwrap() else {
        panic!()
    };
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let Claim::Acquired(fresh) = other.claim("b", lease).await.unwrap() else {
        panic!("a lapsed claim must be claimable")
    };
    // Every end of a lapsed claim is reported, never silently ignored.
    let lost = ClaimStatus::Lost;
    assert_eq!(store.renew("b", &stale, lease).await.unwrap(), lost);
    assert_eq!(store.release("b", &stale).await.unwrap(), lost);
    assert_eq!(store.claim("b", lease).await.unwrap(), Claim::InFlight);
    other.mark_done("b", &fresh, ttl).await.unwrap();
    assert_eq!(store.claim("b", lease).await.unwrap(), Claim::Done);

    // A stale holder whose handler succeeded records done over a fresh
    // claim (its work happened), and says the claim was lost; the fresh
    // holder's run was a repeat, and its release undoes nothing.
    let Claim::Acquired(stale) = store.claim("d", lease).await.unwrap() else {
        panic!()
    };
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let Claim::Acquired(fresh) = other.claim("d", lease).await.unwrap() else {
        panic!("a lapsed claim must be claimable")
    };
    assert_eq!(store.mark_done("d", &stale, ttl).await.unwrap(), lost);
    assert_eq!(other.claim("d", lease).await.unwrap(), Claim::Done);
    assert_eq!(other.release("d", &fresh).await.unwrap(), lost);
    assert_eq!(store.claim("d", lease).await.unwrap(), Claim::Done);

    // An "unbounded" TTL (from ReplayWindow::UNBOUNDED) neither overflows nor errs.
    let Claim::Acquired(token) = store.claim("c", Duration::MAX).await.unwrap() else {
        panic!()
    };
    store.mark_done("c", &token, Duration::MAX).await.unwrap();
    assert_eq!(other.claim("c", lease).await.unwrap(), Claim::Done);
}

/// A handler that runs for several leases keeps its claim (renewed every
/// third of the lease): a redelivery meanwhile answers 409, and the handler
/// runs once.
async fn a_handler_slower_than_its_lease_runs_once<S: DedupeStore>([a, b]: [S; 2]) {
    let lease = Duration::from_millis(600);
    let gate = Arc::new(Semaphore::new(0));
    let slow = Recorder::gated(gate.clone());
    let addr_a = instance_with_lease(a, &slow, lease).await;
    let addr_b = instance_with_lease(b, &slow, lease).await;
    let body = fixture(EventType::ActionSent).to_bytes();
    let first = tokio::spawn({
        let body = body.clone();
        async move { post_signed(addr_a, &body).await.status }
    });
    while slow.total() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        tokio::time::sleep(lease).await; // past the first lease, and again
        assert_eq!(
            post_signed(addr_b, &body).await.status,
            409,
            "the claim lapsed"
        );
    }
    gate.add_permits(1);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(post_signed(addr_b, &body).await.status, 200, "duplicate");
    assert_eq!(slow.total(), 1, "the handler ran more than once");
}

async fn fleet_runs_a_concurrently_delivered_event_exactly_once<S: DedupeStore>([a, b]: [S; 2]) {
    let gate = Arc::new(Semaphore::new(0));
    let slow = Recorder::gated(gate.clone());
    let addrs = [instance(a, &slow).await, instance(b, &slow).await];
    for round in 0..5 {
        let body = fixture(EventType::ResponseCreated)
            .id(format!("evt_fleet_{round}"))
            .to_bytes();
        let sends: Vec<_> = (0..16)
            .map(|i| {
                let (addr, body) = (addrs[i % 2], body.clone());
                tokio::spawn(async move { post_signed(addr, &body).await.status })
            })
            .collect();
        // Let every delivery reach a receiver while the first holds the claim.
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.add_permits(1);
        let mut statuses = Vec::new();
        for send in sends {
            statuses.push(send.await.unwrap());
        }
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "round {round}: {statuses:?}"
        );
        assert!(statuses.contains(&200), "round {round}: {statuses:?}");
        assert_eq!(
            slow.total(),
            round + 1,
            "round {round}: the handler ran more than once"
        );
        // After the fact, every instance knows it is done.
        for addr in addrs {
            let again = post_after_success(addr, &body).await;
            assert_eq!(
                (again.status, again.body.trim()),
                (200, "duplicate: already handled")
            );
        }
    }
}

async fn simulator_retries_a_failing_handler_until_it_succeeds<S: DedupeStore>([a, _]: [S; 2]) {
    let recorder = Recorder::new();
    recorder.script(&[Behaviour::Fail, Behaviour::Fail, Behaviour::Succeed]);
    let addr = instance(a, &recorder).await;
    let body = fixture(EventType::ActionSent).to_bytes();
    let report = SenderSimulator::new(secret())
        .time_scale(1e-6) // the 24-hour schedule in well under a second
        .deliver(&format!("http://{addr}{PATH}"), &body)
        .await
        .unwrap();
    assert_eq!(report.statuses(), [Some(500), Some(500), Some(200)]);
    assert_eq!(
        report.attempts[1].at,
        Duration::from_secs(60),
        "first retry after 1 min, nominally"
    );
    assert_eq!(report.attempts[2].at, Duration::from_secs(5 * 60));
    assert_eq!(
        recorder.calls("action.sent"),
        3,
        "two failures and one success"
    );
    // Succeeded once: the sender's stray extra delivery is not handled again.
    assert_eq!(post_after_success(addr, &body).await.status, 200);
    assert_eq!(recorder.calls("action.sent"), 3);
}

async fn a_killed_instances_claim_expires_after_its_lease<S: DedupeStore + Clone>([a, b]: [S; 2]) {
    let body = fixture(EventType::SegmentReady).to_bytes();
    // Instance A runs in a runtime of its own, whose handler never finishes.
    let stuck = Recorder::gated(Arc::new(Semaphore::new(0)));
    let entered = stuck.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr_a = runtime.block_on_in_thread({
        let stuck = stuck.clone();
        async move { instance(a, &stuck).await }
    });
    let body_a = body.clone();
    runtime.spawn(async move { post_signed(addr_a, &body_a).await });
    while entered.total() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Kill A mid-handler: its tasks are dropped, its claim stays behind.
    runtime.shutdown_background();

    let recorder = Recorder::new();
    let addr_b = instance(b, &recorder).await;
    assert_eq!(
        post_signed(addr_b, &body).await.status,
        409,
        "the dead instance's claim still holds"
    );
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await; // past the lease
    assert_eq!(post_signed(addr_b, &body).await.status, 200);
    assert_eq!(recorder.total(), 1);
}

/// Runs a future to completion on a runtime from outside it.
trait BlockOnInThread {
    fn block_on_in_thread<F: std::future::Future + Send + 'static>(&self, f: F) -> F::Output
    where
        F::Output: Send + 'static;
}

impl BlockOnInThread for tokio::runtime::Runtime {
    fn block_on_in_thread<F: std::future::Future + Send + 'static>(&self, f: F) -> F::Output
    where
        F::Output: Send + 'static,
    {
        let handle = self.handle().clone();
        std::thread::spawn(move || handle.block_on(f))
            .join()
            .unwrap()
    }
}

/// A TCP proxy in front of Redis that can be cut (refuse and drop every
/// connection) or stalled (accept and never answer), then restored.
struct Proxy {
    addr: SocketAddr,
    mode: Arc<std::sync::Mutex<Mode>>,
    cut: Arc<tokio::sync::Notify>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Up,
    Down,
    Stalled,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(std::sync::Mutex::new(Mode::Up));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (m, c) = (mode.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let current = *m.lock().unwrap();
                match current {
                    Mode::Down => drop(inbound),
                    Mode::Stalled => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            drop(inbound);
                        });
                    }
                    Mode::Up => {
                        let c = c.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = c.notified() => {}
                            }
                        });
                    }
                }
            }
        });
        Self { addr, mode, cut }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        if mode != Mode::Up {
            self.cut.notify_waiters(); // drop the connections already open
        }
    }
}

/// The Redis server's address, from its URL.
async fn redis_target() -> SocketAddr {
    let url = test_redis_url();
    let host_port = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap();
    let host_port = host_port.rsplit('@').next().unwrap();
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_answers_503_without_the_handler_and_recovers() {
    let proxy = Proxy::start(redis_target().await).await;
    let store = RedisStore::connect(&format!("redis://{}/", proxy.addr))
        .await
        .unwrap()
        .key_prefix(unique_prefix())
        .operation_timeout(Duration::from_millis(500));
    let recorder = Recorder::new();
    let addr = instance(store, &recorder).await;
    let body = fixture(EventType::ResponseScored).to_bytes();

    proxy.set(Mode::Down);
    assert_eq!(post_signed(addr, &body).await.status, 503, "Redis down");
    proxy.set(Mode::Stalled);
    assert_eq!(
        post_signed(addr, &body).await.status,
        503,
        "Redis not answering"
    );
    assert_eq!(recorder.total(), 0);

    proxy.set(Mode::Up);
    // The sender retries; the reconnecting store answers again within a few tries.
    let report = SenderSimulator::new(secret())
        .policy({
            let mut policy = RetryPolicy::default();
            policy.backoff = ltvboost_webhooks::Backoff::new(
                Duration::from_millis(200),
                2.0,
                Duration::from_secs(60),
            );
            policy
        })
        .deliver(&format!("http://{addr}{PATH}"), &body)
        .await
        .unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(recorder.total(), 1);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(recorder.total(), 1);
}

#[tokio::test]
async fn a_lazy_redis_store_starts_while_redis_is_down() {
    let proxy = Proxy::start(redis_target().await).await;
    proxy.set(Mode::Down);
    let store = RedisStore::lazy(&format!("redis://{}/", proxy.addr))
        .unwrap()
        .key_prefix(unique_prefix())
        .operation_timeout(Duration::from_millis(500));
    let recorder = Recorder::new();
    let addr = instance(store, &recorder).await;
    let body = fixture(EventType::SegmentUpdated).to_bytes();
    assert_eq!(post_signed(addr, &body).await.status, 503);
    proxy.set(Mode::Up);
    let mut status = 0;
    for _ in 0..20 {
        status = post_signed(addr, &body).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(recorder.total(), 1);
}

#[tokio::test]
async fn redis_errors_never_show_the_password() {
    let err = RedisStore::connect("redis://:hunter2-password@127.0.0.1:1/")
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    let store = RedisStore::lazy("redis://:hunter2-password@127.0.0.1:1/").unwrap();
    assert!(!format!("{store:?}").contains("hunter2"));
}

#[tokio::test]
async fn replay_window_edges_with_an_injected_clock() {
    let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = ManualClock::new(created);
    let window = ReplayWindow::default();
    let recorder = Recorder::new();
    let layer = WebhookLayer::new(config().clock(clock.clone()), recording(&recorder));
    let addr = serve(Router::new().layer(layer)).await;
    let second = Duration::from_secs(1);
    let event = |id: &str| {
        EventBuilder::new(EventType::ResponseCreated)
            .id(id)
            .created_at(created)
            .data(serde_json::json!({"id": "r"}))
            .to_bytes()
    };

    let cases = [
        ("just inside, past", created + window.past, 200),
        ("just outside, past", created + window.past + second, 400),
        ("just inside, future", created - window.future, 200),
        (
            "just outside, future",
            created - window.future - second,
            400,
        ),
        ("now", created, 200),
    ];
    for (name, now, want) in cases {
        clock.set(now);
        let reply = post_signed(addr, &event(name)).await;
        assert_eq!(reply.status, want, "{name}: {reply:?}");
        if want == 400 {
            assert!(reply.body.contains("replay window"), "{name}: {reply:?}");
        }
    }
    assert_eq!(recorder.total(), 3);

    // Without created_at, the check is skipped.
    clock.set(created + Duration::from_secs(365 * 86400));
    let undated = EventBuilder::new(EventType::ResponseCreated)
        .without_created_at()
        .data(serde_json::json!({"id": "r"}))
        .to_bytes();
    assert_eq!(post_signed(addr, &undated).await.status, 200);
}

#[tokio::test]
async fn the_eviction_policy_is_read_at_connect() {
    let store = redis_store(&test_redis_url(), &unique_prefix()).await;
    // scripts/test.sh's Redis runs with the default policy, which evicts nothing.
    let policy = store.eviction_policy().await.unwrap();
    assert_eq!(policy.as_deref(), Some("noeviction"));
}

/// A Redis server speaking only TLS, with a self-signed certificate for
/// 127.0.0.1; stopped on drop.
#[cfg(feature = "redis-tls")]
struct TlsRedis {
    _server: RedisServer,
    /// The certificates' directory, removed on drop.
    _certificates: TempDir,
    port: u16,
    certificate: Vec<u8>,
}

#[cfg(feature = "redis-tls")]
impl TlsRedis {
    async fn start() -> Self {
        use std::process::{Command, Stdio};
        let certificates = TempDir::new("tls");
        let dir = certificates.0.clone();
        // A CA, and a certificate for 127.0.0.1 that it signs.
        let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
        let (cert, key, csr, ext) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("req.csr"),
            dir.join("ext.cnf"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
        let openssl = |args: &[&std::ffi::OsStr]| {
            let made = Command::new("openssl")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .expect("openssl is needed for the TLS test");
            assert!(made.success(), "openssl {args:?}");
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        openssl(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("1"),
            os("-subj"),
            os("/CN=ltvboost-test-ca"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ]);
        openssl(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=127.0.0.1"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        openssl(&[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("1"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ]);
        let server = RedisServer::options()
            .tls()
            .settings(&[
                "--tls-auth-clients",
                "no",
                "--tls-cert-file",
                &cert.to_string_lossy(),
                "--tls-key-file",
                &key.to_string_lossy(),
                "--tls-ca-cert-file",
                &ca.to_string_lossy(),
            ])
            .start()
            .await;
        let certificate = std::fs::read(&ca).unwrap();
        Self {
            port: server.port,
            _server: server,
            _certificates: certificates,
            certificate,
        }
    }
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn rediss_urls_connect_over_tls_and_verify_the_server() {
    let server = TlsRedis::start().await;
    let url = format!("rediss://127.0.0.1:{}/", server.port);
    // A self-signed certificate is no public root's: refused.
    assert!(RedisStore::connect(&url).await.is_err());
    // Over plain TCP the TLS port answers nothing Redis understands.
    let plain = format!("redis://127.0.0.1:{}/", server.port);
    assert!(
        RedisStore::connect(&plain)
            .await
            .map(|s| s.operation_timeout(Duration::from_millis(500)))
            .is_err()
    );
    let store = RedisStore::connect_with_root_certificate(&url, &server.certificate)
        .await
        .unwrap()
        .key_prefix(unique_prefix());
    let lease = Duration::from_secs(5);
    let Claim::Acquired(token) = store.claim("evt:tls", lease).await.unwrap() else {
        panic!("the first claim over TLS must acquire")
    };
    assert_eq!(
        store.mark_done("evt:tls", &token, lease).await.unwrap(),
        ClaimStatus::Held
    );
    assert_eq!(store.claim("evt:tls", lease).await.unwrap(), Claim::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operation_timeout_is_the_one_in_force() {
    let redis = RedisServer::options().start().await;
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    // Redis stalls for 3 s: longer than the default 2 s deadline, shorter
    // than the 6 s one set here, which must be the one that applies.
    let patient = RedisStore::connect(&url)
        .await
        .unwrap()
        .operation_timeout(Duration::from_secs(6));
    let hasty = RedisStore::connect(&url).await.unwrap();
    let stall = tokio::spawn({
        let url = url.clone();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            // Its own answer may time out on the client side: only the stall
            // it causes matters.
            let _: Result<(), _> = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(3)
                .query_async(&mut connection)
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lease = Duration::from_secs(10);
    let (patient, hasty) = tokio::join!(
        patient.claim("evt:slow", lease),
        hasty.claim("evt:fast", lease)
    );
    assert!(matches!(patient, Ok(Claim::Acquired(_))), "{patient:?}");
    assert!(
        hasty.is_err(),
        "the default 2 s deadline did not apply: {hasty:?}"
    );
    stall.await.unwrap();
}

/// Renew and release are Lua scripts sent by their hash: after Redis forgets
/// its scripts (a restart, `SCRIPT FLUSH`), they are loaded again rather
/// than failed.
#[tokio::test]
async fn scripts_redis_forgot_are_loaded_again() {
    let store = redis_store(&test_redis_url(), &unique_prefix()).await;
    let flush_scripts = || {
        let client = redis::Client::open(test_redis_url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec(&mut connection)
            .unwrap();
    };
    let lease = Duration::from_secs(5);
    let Claim::Acquired(token) = store.claim("a", lease).await.unwrap() else {
        panic!("first claim must acquire")
    };
    flush_scripts();
    let renewed = store.renew("a", &token, lease).await.unwrap();
    assert_eq!(renewed, ClaimStatus::Held);
    flush_scripts();
    assert_eq!(store.release("a", &token).await.unwrap(), ClaimStatus::Held);
    assert!(matches!(
        store.claim("a", lease).await.unwrap(),
        Claim::Acquired(_)
    ));
}

/// A claim that timed out while Redis stalled (`DEBUG SLEEP`) still runs once
/// Redis wakes; the store releases it behind the claim (by `EVAL`: this fresh
/// Redis has no script loaded, and the release's own deadline passes before
/// Redis wakes), so the sender's retry is handled rather than refused until
/// the lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_timed_out_while_redis_stalled_is_released() {
    let redis = RedisServer::options().start().await;
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let store = redis_store(&url, &unique_prefix())
        .await
        .operation_timeout(Duration::from_millis(300));
    let stall = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
            redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(2)
                .exec(&mut connection)
                .unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lease = Duration::from_secs(120);
    assert!(store.claim("k", lease).await.is_err(), "Redis is asleep");
    stall.await.unwrap();
    // The SET ran when Redis woke; the release queued behind it freed the key.
    let mut claimed = store.claim("k", lease).await.unwrap();
    for _ in 0..20 {
        if matches!(claimed, Claim::Acquired(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        claimed = store.claim("k", lease).await.unwrap();
    }
    assert!(matches!(claimed, Claim::Acquired(_)), "{claimed:?}");
}
