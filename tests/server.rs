//! `serve::Server` under hostile networks and signals: silent and half-open
//! connections at the cap, HTTP/2 connections that open no stream, idle
//! keep-alive, the peer address, the body budget, and SIGTERM draining a
//! delivery in flight, in a real process.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use common::*;
use ltvboost_webhooks::WebhookLayer;
use ltvboost_webhooks::serve::{Server, shutdown_signal};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn app(recorder: &Arc<Recorder>) -> Router {
    let router = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    router.layer(WebhookLayer::new(config(), recording(recorder)))
}

/// Whether the server closes `stream` within 10 s.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_preface_floods_at_the_cap_do_not_lock_out_a_sender() {
    let recorder = Recorder::new();
    // A header-read timeout far longer than the test: only shedding at the
    // cap can make room.
    let addr = serve_with(app(&recorder), |s| {
        s.max_connections(32)
            .header_read_timeout(Duration::from_secs(600))
    })
    .await;
    let mut held = Vec::new();
    for i in 0..300 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 3 == 0 {
            stream.write_all(&PREFACE[..10]).await.unwrap(); // half a preface
        } else if i % 3 == 1 {
            stream
                .write_all(b"POST /webhooks/ltvboost HTTP/1.1\r\nhost: t\r\nx-a")
                .await
                .unwrap(); // half a head
        }
        held.push(stream);
    }
    let body = event_json("evt_flood", "response.created", r#"{"id":"rsp_1"}"#);
    let reply = post_signed(addr, &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(recorder.calls("response.created"), 1);
    // The oldest of the flood were shed to make room.
    assert!(
        closed_by_server(&mut held[0]).await,
        "the oldest silent connection is still open"
    );
}

#[tokio::test]
async fn connections_without_a_first_request_are_closed_whatever_the_protocol() {
    let recorder = Recorder::new();
    let addr = serve_with(app(&recorder), |s| {
        s.header_read_timeout(Duration::from_millis(300))
    })
    .await;
    // Silent; half a preface; a whole preface and SETTINGS but no stream.
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    let openings: [&[u8]; 3] = [b"", &PREFACE[..10], &[PREFACE, &settings].concat()];
    for opening in openings {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        assert!(
            closed_by_server(&mut stream).await,
            "held open after {opening:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let recorder = Recorder::new();
    let addr = serve_with(app(&recorder), |s| {
        s.idle_timeout(Duration::from_millis(300))
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(&mut stream);
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // The response is read; the connection stays keep-alive until idle.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was held for 10 s");
}

#[tokio::test]
async fn the_peer_address_reaches_the_router() {
    let recorder = Recorder::new();
    let addr = serve(app(&recorder)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, local.to_string());
}

#[test]
fn configuration_extremes_do_not_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let recorder = Recorder::new();
        let addr = serve_with(app(&recorder), |s| {
            s.header_read_timeout(Duration::MAX)
                .idle_timeout(Duration::MAX)
                .shutdown_grace(Duration::MAX)
                .max_connections(0)
                .max_concurrent_streams(0)
        })
        .await;
        let body = event_json("evt_extremes", "segment.ready", r#"{"id":"s"}"#);
        assert_eq!(post_signed(addr, &body).await.status, 200);
    });
}

// ---- A real receiver process -------------------------------------------

const PROCESS_VAR: &str = "LTVBOOST_TEST_SERVER_PROCESS";

/// Not a test of its own: the receiver process the tests below start, by
/// running this test binary again with `PROCESS_VAR` set. It prints its
/// address, serves until SIGTERM or SIGINT, then exits 0.
#[test]
fn receiver_process() {
    let Ok(mode) = std::env::var(PROCESS_VAR) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let recorder = Recorder::delayed(Duration::from_millis(
            std::env::var("HANDLER_DELAY_MS").map_or(0, |v| v.parse().unwrap()),
        ));
        let mut config = config();
        if let Ok(budget) = std::env::var("BODY_BUDGET") {
            config = config.body_budget(budget.parse().unwrap());
        }
        let app = WebhookLayer::new(config, recording(&recorder)).wrap(Router::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        Server::new(listener)
            .serve_with_shutdown(app, shutdown_signal())
            .await
            .unwrap();
        println!("drained ({mode})");
    });
}

/// Starts [`receiver_process`] with `env`, and reads the address it serves.
fn start_receiver(env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "receiver_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROCESS_VAR, "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let addr = lines
        .find_map(|line| line.ok()?.split("listening ").nth(1)?.trim().parse().ok())
        .expect("the receiver process printed no address");
    // Keep draining its output, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_delivery_in_flight_and_exits_0() {
    for name in ["TERM", "INT"] {
        let (mut child, addr) = start_receiver(&[("HANDLER_DELAY_MS", "1500")]);
        let body = event_json(&format!("evt_drain_{name}"), "action.sent", r#"{"id":"a"}"#);
        let delivery = tokio::spawn(async move { post_signed(addr, &body).await });
        // The handler is running when the signal arrives.
        tokio::time::sleep(Duration::from_millis(500)).await;
        signal(&child, name);
        let reply = delivery.await.unwrap();
        assert_eq!(reply.status, 200, "SIG{name}: {reply:?}");
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert_eq!(status.code(), Some(0), "SIG{name}: {status:?}");
    }
}

/// VmHWM: the most resident memory the process ever had, in KiB.
fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_megabyte_bodies_stay_within_the_body_budget() {
    const BUDGET: usize = 4 * 1024 * 1024;
    const BODIES: usize = 64;
    let (mut child, addr) = start_receiver(&[("BODY_BUDGET", &BUDGET.to_string())]);
    let before = peak_rss_kib(&child);
    // 64 well-formed but wrongly signed 1 MiB bodies, all sent but their
    // last byte at once: without a budget, all 64 would be buffered. The
    // budget is charged as bytes arrive, so those past it are refused
    // part-way.
    let body = Arc::new(vec![b' '; 1024 * 1024]);
    let forged = format!("sha256={}", "ab".repeat(32));
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\nx-ltvboost-signature: {forged}\r\n\r\n",
        body.len()
    );
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let (go, _) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..BODIES {
        let (head, body, ready, mut go) =
            (head.clone(), body.clone(), ready.clone(), go.subscribe());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            // Read while writing: a refused body is answered before it is all
            // sent, and the reset that follows must not lose the answer.
            let answer = tokio::spawn(async move {
                let mut raw = Vec::new();
                let _ = reader.read_to_end(&mut raw).await;
                String::from_utf8_lossy(&raw).to_string()
            });
            let (most, last) = body.split_at(body.len() - 1);
            let _ = writer.write_all(head.as_bytes()).await;
            let _ = writer.write_all(most).await;
            ready.add_permits(1);
            let _ = go.wait_for(|go| *go).await;
            let _ = writer.write_all(last).await;
            answer.await.unwrap()
        }));
    }
    let _ = ready.acquire_many(BODIES as u32).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    go.send_replace(true);
    let mut statuses = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        statuses.push(
            reply
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0),
        );
    }
    let grown = peak_rss_kib(&child).saturating_sub(before);
    signal(&child, "TERM");
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    eprintln!("peak RSS grew {grown} KiB");
    // Twice the budget (a growing buffer may hold twice its bytes while it
    // is copied), each connection's read buffer (at most 64 KiB) and the
    // allocator's slack: well under the 64 MiB and more held unguarded.
    let allowed_kib = 2 * (BUDGET / 1024) as u64 + (BODIES as u64) * 64 + 24 * 1024;
    assert!(
        grown < allowed_kib,
        "peak RSS grew {grown} KiB, allowed {allowed_kib} KiB"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&401), "nothing was read: {statuses:?}");
    assert!(
        statuses.contains(&503),
        "the budget refused nothing: {statuses:?}"
    );
}

#[test]
fn the_example_receiver_refuses_a_public_address_without_a_secret() {
    // The example as a user runs it: built by cargo, started as a process.
    let exe = example("receiver");
    for (secret, bind, starts) in [
        (None, "0.0.0.0:0", false),
        (Some(" , "), "0.0.0.0:0", false),
        (None, "127.0.0.1:0", true),
        (Some("a-real-secret-0123456789"), "0.0.0.0:0", true),
    ] {
        let mut command = Command::new(&exe);
        command
            .env("LTVBOOST_WEBHOOK_ADDR", bind)
            .env_remove("LTVBOOST_WEBHOOK_SECRET")
            .env_remove("LTVBOOST_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(secret) = secret {
            command.env("LTVBOOST_WEBHOOK_SECRET", secret);
        }
        let mut child = command.spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if starts {
            assert!(exited.is_none(), "{secret:?} on {bind}: exited {exited:?}");
            signal(&child, "TERM");
            assert_eq!(child.wait().unwrap().code(), Some(0));
        } else {
            let status = exited.unwrap_or_else(|| panic!("{secret:?} on {bind}: started"));
            assert!(!status.success());
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            assert!(stderr.contains("LTVBOOST_WEBHOOK_SECRET"), "{stderr}");
        }
    }
}

/// Runs the example receiver on `port` with `env`, posts one signed
/// `response.created` event, stops it with SIGTERM: (stdout, stderr).
async fn example_receiver_run(port: u16, env: &[(&str, &str)]) -> (String, String) {
    let mut child = Command::new(example("receiver"))
        .env("LTVBOOST_WEBHOOK_ADDR", format!("127.0.0.1:{port}"))
        .env("LTVBOOST_WEBHOOK_SECRET", SECRET)
        .env_remove("LTVBOOST_REDIS_URL")
        .env_remove("LTVBOOST_QUEUE_URL")
        .env_remove("LTVBOOST_METRICS_ADDR")
        .env_remove("NO_COLOR")
        .env_remove("LTVBOOST_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_listener(addr).await;
    let body = event_json(
        "evt_shown",
        "response.created",
        r#"{"id":"rsp_1","quiz_id":"quiz_7"}"#,
    );
    assert_eq!(post_signed(addr, &body).await.status, 200);
    // Data that does not fit its type: refused, with a `warn` line.
    let misfit = event_json("evt_misfit", "segment.ready", r#"{"name":"no id"}"#);
    assert_eq!(post_signed(addr, &misfit).await.status, 400);
    signal(&child, "TERM");
    tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (String::new(), String::new());
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        (out, err)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receiver_prints_values_and_logs_plainly_off_a_terminal_or_as_json() {
    let (out, err) = example_receiver_run(free_port(), &[]).await;
    assert!(
        out.contains("response.created evt_shown secret#0: response rsp_1 on quiz quiz_7"),
        "{out}"
    );
    assert!(!out.contains("Some("), "Debug formatting: {out}");
    // By default a handled delivery is the printed line only: the
    // receiver's own line per delivery is for RUST_LOG=info.
    assert!(err.contains("listening on"), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.contains("webhook answered") && l.contains("evt_shown")),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "colour in a log file: {err:?}");
    // A line logged inside a delivery carries the delivery's span under the
    // default filter, which quiets only the line per delivery.
    let misfit = err
        .lines()
        .find(|l| l.contains("event data does not fit its type"))
        .unwrap_or_else(|| panic!("no warning for the misfit: {err}"));
    assert!(
        misfit.contains(r#"event_id="evt_misfit""#)
            && misfit.contains(r#"event_type="segment.ready""#),
        "{misfit}"
    );

    let (_, err) = example_receiver_run(
        free_port(),
        &[("LTVBOOST_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    )
    .await;
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "webhook answered"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receiver_colours_its_logs_on_a_terminal_unless_no_color() {
    let exe = example("receiver");
    // script(1) gives the receiver a terminal; timeout(1) stops it.
    let on_terminal = move |no_color: bool| {
        let mut command = Command::new("script");
        command
            .args([
                "-qec",
                &format!("timeout -s TERM 2 {}", exe.display()),
                "/dev/null",
            ])
            .env(
                "LTVBOOST_WEBHOOK_ADDR",
                format!("127.0.0.1:{}", free_port()),
            )
            .env_remove("LTVBOOST_WEBHOOK_SECRET")
            .env_remove("LTVBOOST_LOG_FORMAT")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if no_color {
            command.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&command.output().expect("script(1), from util-linux").stdout)
            .into_owned()
    };
    let coloured = tokio::task::spawn_blocking(move || (on_terminal(false), on_terminal(true)))
        .await
        .unwrap();
    // The development-secret warning, at start.
    assert!(
        coloured.0.contains("development secret"),
        "{:?}",
        coloured.0
    );
    assert!(
        coloured.0.contains('\x1b'),
        "no colour on a terminal: {:?}",
        coloured.0
    );
    assert!(
        coloured.1.contains("development secret"),
        "{:?}",
        coloured.1
    );
    assert!(
        !coloured.1.contains('\x1b'),
        "colour with NO_COLOR: {:?}",
        coloured.1
    );
}
