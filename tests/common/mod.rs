//! Test support: a real server on 127.0.0.1, a raw HTTP/1.1 client that can
//! send anything (stalls, lies, duplicates), and handlers that record calls.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ltvboost_webhooks::dedupe::{Claim, ClaimStatus, ClaimToken, DedupeStore, StoreError};
use ltvboost_webhooks::handler::*;
use ltvboost_webhooks::serve::Server;
use ltvboost_webhooks::signature::{Secret, Verifier, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const SECRET: &str = "integration-test-secret-0123456789";
pub(crate) const PATH: &str = "/webhooks/ltvboost";

pub(crate) fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

pub(crate) fn verifier() -> Verifier {
    Verifier::new([secret()]).unwrap()
}

/// Serves `service` on a fresh 127.0.0.1 port with our hardened server.
pub(crate) async fn serve<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(service, |s| s).await
}

pub(crate) async fn serve_with<S, B>(
    service: S,
    configure: impl FnOnce(Server) -> Server,
) -> SocketAddr
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = configure(Server::new(listener));
    tokio::spawn(server.serve(service));
    addr
}

/// A response read off the wire.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Writes `request` as is, then reads the response until the server closes.
pub(crate) async fn send_raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_reply(&mut stream).await
}

pub(crate) async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw));
    // A reset after the response (the server closed with body unread) is fine.
    let _ = read.await.expect("server did not answer within 30 s");
    parse_reply(&raw)
}

pub(crate) fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A POST with the given extra header lines and body, `Connection: close`.
pub(crate) fn post_request(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Posts `body` signed with the test secret.
pub(crate) async fn post_signed(addr: SocketAddr, body: &[u8]) -> Reply {
    let signature = sign(&secret(), body);
    post(addr, &[("x-ltvboost-signature", &signature)], body).await
}

pub(crate) async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    send_raw(addr, &post_request(PATH, headers, body)).await
}

/// An event created now, so that it is inside the replay window.
pub(crate) fn event_json(id: &str, event_type: &str, data: &str) -> Vec<u8> {
    let data: serde_json::Value = serde_json::from_str(data).expect("test data is JSON");
    ltvboost_webhooks::testing::EventBuilder::of_type(event_type)
        .id(id)
        .data(data)
        .to_bytes()
}

/// The crate's own recording handlers, as users' tests use them.
#[allow(unused_imports)] // each test binary uses its own part of this module
pub(crate) use ltvboost_webhooks::testing::{Behaviour, Recorder};

/// Builds an example as a user runs it (every feature) and returns its path.
pub(crate) fn example(name: &str) -> std::path::PathBuf {
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--all-features", "--example", name])
        .status()
        .unwrap();
    assert!(built.success(), "cargo build --example {name}");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        std::path::PathBuf::from,
    );
    target.join("debug/examples").join(name)
}

/// The example receiver as a command listening on `addr`: its secret,
/// store, queue and database variables cleared (a test sets what it needs),
/// `RUST_LOG=info`, stdout and stderr piped (see [`collect_output`]).
pub(crate) fn example_receiver(addr: SocketAddr) -> std::process::Command {
    let mut command = std::process::Command::new(example("receiver"));
    command.env("LTVBOOST_WEBHOOK_ADDR", addr.to_string());
    for name in [
        "LTVBOOST_WEBHOOK_SECRET",
        "LTVBOOST_WEBHOOK_SECRET_FILE",
        "LTVBOOST_WEBHOOK_ACCOUNTS_FILE",
        "LTVBOOST_REDIS_URL",
        "LTVBOOST_QUEUE_URL",
        "LTVBOOST_DATABASE_URL",
        "LTVBOOST_INBOX_RETENTION",
    ] {
        command.env_remove(name);
    }
    command
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Collects `child`'s piped stdout into `stdout` and its stderr into
/// `stderr`, line by line, on threads of their own.
pub(crate) fn collect_output(
    child: &mut std::process::Child,
    stdout: &Arc<Mutex<Vec<String>>>,
    stderr: &Arc<Mutex<Vec<String>>>,
) {
    let streams = [
        (
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            stdout.clone(),
        ),
        (Box::new(child.stderr.take().unwrap()), stderr.clone()),
    ];
    for (stream, into) in streams {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                into.lock().unwrap().push(line);
            }
        });
    }
}

/// Waits up to 60 s until a process started on `addr` accepts
/// connections; fails at once if it exits first.
pub(crate) async fn listening(addr: SocketAddr, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the receiver exited at start"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free port on 127.0.0.1 (free when asked).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of a test's own on 127.0.0.1, in a directory of its
/// own; killed, and its directory removed, on drop. The one way the tests
/// start a private Redis (the shared one is `scripts/test.sh`'s): plain,
/// durable, TLS or a cluster node, by [`RedisOptions`].
pub(crate) struct RedisServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// The port it listens on (TLS only, with [`RedisOptions::tls`]).
    pub(crate) port: u16,
    args: Vec<String>,
    tls: bool,
}

/// How to start a [`RedisServer`]: by default a free port, no
/// persistence, `DEBUG` allowed.
#[derive(Default)]
pub(crate) struct RedisOptions {
    port: Option<u16>,
    durable: bool,
    tls: bool,
    settings: Vec<String>,
}

impl RedisOptions {
    /// On this port rather than a free one.
    pub(crate) fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// With an append-only file fsynced on every write.
    pub(crate) fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// Its port speaks TLS only (the settings name the certificates).
    pub(crate) fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// `--name value` settings, after (and so over) the others.
    pub(crate) fn settings(mut self, settings: &[&str]) -> Self {
        self.settings
            .extend(settings.iter().map(ToString::to_string));
        self
    }

    /// Starts it and waits until it accepts connections and, unless it
    /// speaks TLS, has loaded its data.
    pub(crate) async fn start(self) -> RedisServer {
        // A free port can be taken by another test's server between the
        // check and the start; the server that answers must be ours.
        for _ in 0..5 {
            if let Some(server) = self.try_start().await {
                return server;
            }
            assert!(
                self.port.is_none(),
                "redis-server could not listen on {:?}",
                self.port
            );
        }
        panic!("redis-server never started on a port of its own");
    }

    /// Starts it; `None` when the server on its port is not this one (the
    /// port was taken) or it did not come up.
    pub(crate) async fn try_start(&self) -> Option<RedisServer> {
        let port = self.port.unwrap_or_else(free_port);
        let dir = std::env::temp_dir().join(format!(
            "ltvboost-redis-{}",
            ltvboost_webhooks::dedupe::ClaimToken::random()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port_text = port.to_string();
        let mut args: Vec<String> = vec!["--dir".into(), dir.to_string_lossy().into_owned()];
        let listen: [&str; 4] = if self.tls {
            ["--port", "0", "--tls-port", &port_text]
        } else {
            ["--port", &port_text, "--enable-debug-command", "yes"]
        };
        args.extend(listen.map(str::to_owned));
        if self.durable {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(str::to_owned));
        }
        args.extend(self.settings.iter().cloned());
        let mut server = RedisServer {
            child: spawn_redis(&args),
            dir,
            port,
            args,
            tls: self.tls,
        };
        wait_for_listener(SocketAddr::from(([127, 0, 0, 1], port))).await;
        (server.is_ours() && server.loaded().await).then_some(server)
    }
}

/// Starts `redis-server` on 127.0.0.1 with `args` (RDB snapshots off).
fn spawn_redis(args: &[String]) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", ""])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is needed (scripts/test.sh installs it)")
}

impl RedisServer {
    /// How to start one.
    pub(crate) fn options() -> RedisOptions {
        RedisOptions::default()
    }

    /// A durable one with `settings` beside the defaults.
    pub(crate) async fn durable(settings: &[&str]) -> Self {
        Self::options().durable().settings(settings).start().await
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis-cli` against it.
    pub(crate) async fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// `kill -9`, and waits until it is gone.
    pub(crate) fn kill(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Starts it again on its port, directory and settings, and waits until
    /// it accepts connections (not until it has loaded: a replica syncs).
    pub(crate) async fn start_again(&mut self) {
        self.child = spawn_redis(&self.args);
        wait_for_listener(SocketAddr::from(([127, 0, 0, 1], self.port))).await;
    }

    /// Whether the server on its port is this process (not another test's
    /// that took the port first: this one then exits).
    fn is_ours(&mut self) -> bool {
        let pid = self.child.id().to_string();
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if self.tls {
                // redis-cli cannot ask a TLS port; still running a moment
                // after its port answered is the check.
                std::thread::sleep(Duration::from_millis(200));
                return matches!(self.child.try_wait(), Ok(None));
            }
            let info = redis_cli(self.port, &["INFO", "server"]);
            if info
                .lines()
                .any(|line| line.trim() == format!("process_id:{pid}"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `kill -9`, then up again with its data loaded.
    pub(crate) async fn kill_and_restart(&mut self) {
        self.kill();
        self.start_again().await;
        self.wait_up().await;
    }

    /// Until it accepts connections and, unless it speaks TLS, is done
    /// loading its append-only file.
    pub(crate) async fn wait_up(&self) {
        wait_for_listener(SocketAddr::from(([127, 0, 0, 1], self.port))).await;
        assert!(self.loaded().await, "redis-server did not start");
    }

    /// Whether it is done loading its append-only file within 10 s (a TLS
    /// one: at once, redis-cli cannot ask it).
    async fn loaded(&self) -> bool {
        if self.tls {
            return true;
        }
        for _ in 0..200 {
            if redis_cli(self.port, &["INFO", "persistence"]).contains("loading:0") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits up to 10 s for something to accept connections at `addr`.
pub(crate) async fn wait_for_listener(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dedupe store that cannot be reached, as a Redis outage looks.
pub(crate) struct UnreachableStore;

impl DedupeStore for UnreachableStore {
    async fn claim(&self, _: &str, _: Duration) -> Result<Claim, StoreError> {
        Err(StoreError::new("connection refused"))
    }
    async fn renew(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<ClaimStatus, StoreError> {
        Err(StoreError::new("connection refused"))
    }
    async fn mark_done(
        &self,
        _: &str,
        _: &ClaimToken,
        _: Duration,
    ) -> Result<ClaimStatus, StoreError> {
        Err(StoreError::new("connection refused"))
    }
    async fn release(&self, _: &str, _: &ClaimToken) -> Result<ClaimStatus, StoreError> {
        Err(StoreError::new("connection refused"))
    }
}

/// Every family routed to `recorder`.
pub(crate) fn recording(recorder: &Arc<Recorder>) -> Handlers {
    recorder.handlers()
}

/// The test verifier's configuration at the test path.
pub(crate) fn config() -> ltvboost_webhooks::WebhookConfig {
    ltvboost_webhooks::WebhookConfig::new(verifier()).path(PATH)
}

/// Runs `promtool check metrics` on `text`.
pub(crate) fn promtool_accepts(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is needed: scripts/test.sh installs it");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, text.as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A verified delivery of `body`, signed with the test secret, as a
/// receiver hands it to the queue.
pub(crate) fn verified_delivery(body: Vec<u8>) -> Delivery {
    ltvboost_webhooks::testing::verified_delivery(&secret(), body).unwrap()
}

/// Runs a worker until the returned sender is dropped or fired.
#[cfg(feature = "queue")]
pub(crate) fn start_worker(
    worker: ltvboost_webhooks::queue::Worker,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}

/// The shared Redis of the Redis tests (`scripts/test.sh` starts one).
pub(crate) fn test_redis_url() -> String {
    std::env::var("LTVBOOST_TEST_REDIS_URL").expect(
        "LTVBOOST_TEST_REDIS_URL is not set: the Redis tests need a Redis server, e.g. \
         LTVBOOST_TEST_REDIS_URL=redis://127.0.0.1:6379/ (scripts/test.sh starts one and sets it)",
    )
}

/// A key prefix no other test uses, for tests that share one Redis.
pub(crate) fn unique_prefix() -> String {
    format!("test:{}:", ltvboost_webhooks::dedupe::ClaimToken::random())
}

/// A `response.created` event with id `id`.
pub(crate) fn created_event(id: &str) -> Vec<u8> {
    event_json(id, "response.created", r#"{"id":"rsp_1"}"#)
}

/// Waits up to 60 s for `done`.
pub(crate) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 60 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A checked queue in `namespace` on `url`.
#[cfg(feature = "queue")]
pub(crate) async fn namespaced_queue(
    url: &str,
    namespace: &str,
) -> ltvboost_webhooks::queue::RedisQueue {
    ltvboost_webhooks::queue::RedisQueue::lazy(url)
        .unwrap()
        .namespace(namespace)
        .unwrap()
        .checked()
        .await
        .unwrap()
}

/// Installs a Prometheus recorder (histograms with a few buckets) as the
/// process's global one, and describes the crate's metrics to it.
#[cfg(feature = "metrics")]
pub(crate) fn install_prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1, 1.0])
        .unwrap()
        .install_recorder()
        .unwrap();
    ltvboost_webhooks::metrics::describe();
    handle
}

/// `redis-cli -p <port> <args…>`: its output, trimmed.
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is needed (scripts/test.sh installs it)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A directory of its own under the system's temporary one, removed when
/// dropped.
pub(crate) struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ltvboost-{name}-{}",
            ltvboost_webhooks::dedupe::ClaimToken::random()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A path inside it.
    pub(crate) fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Postgres cluster of its own in a temporary directory (Debian's
/// `postgresql` binaries), trusting local connections, on a free port.
/// Run as root, its commands run as the `postgres` user (Postgres refuses
/// root). Stopped (immediately) and removed when dropped.
pub(crate) struct PrivatePostgres {
    dir: TempDir,
    pub(crate) port: u16,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub(crate) fn start() -> Self {
        let bin = postgres_bin();
        let dir = TempDir::new("postgres");
        let postgres = Self {
            dir,
            port: free_port(),
            bin,
        };
        postgres.as_owner();
        postgres.run(
            "initdb",
            &[
                "-D",
                &postgres.data(),
                "-U",
                "ltvboost",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        postgres.start_again();
        postgres
    }

    /// `postgres://ltvboost@127.0.0.1:<port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://ltvboost@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped cluster again (same port, same data) and waits
    /// until it answers.
    pub(crate) fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c max_connections=200",
            self.port,
            self.dir.0.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// `pg_ctl stop -m <mode>`: `immediate` is a crash, `fast` a clean stop.
    pub(crate) fn stop(&self, mode: &str) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"],
        );
    }

    /// A connection of the test's own.
    #[cfg(feature = "postgres")]
    pub(crate) async fn client(&self) -> ltvboost_webhooks::postgres::tokio_postgres::Client {
        use ltvboost_webhooks::postgres::tokio_postgres;
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn as_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
    }

    /// Gives the directory to `postgres` when run as root.
    fn as_owner(&self) {
        if Self::as_root() {
            let chowned = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.dir.0)
                .status()
                .unwrap();
            assert!(
                chowned.success(),
                "chown postgres (is Debian's postgresql installed?)"
            );
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if Self::as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            std::process::Command::new(&program)
        };
        let output = command
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}\n{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut command = if Self::as_root() {
            let mut command = std::process::Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            command
        } else {
            std::process::Command::new(self.bin.join("pg_ctl"))
        };
        let _ = command
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Where Postgres' server binaries are: `LTVBOOST_TEST_PG_BIN`, or the
/// newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn postgres_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("LTVBOOST_TEST_PG_BIN") {
        return bin.into();
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's postgresql is needed (scripts/test.sh installs it)")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/<version>/bin/initdb: install Debian's postgresql")
        .1
}
