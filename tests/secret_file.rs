//! `LTVBOOST_WEBHOOK_SECRET_FILE` and `LTVBOOST_WEBHOOK_ACCOUNTS_FILE` with
//! the example receiver as a process: secrets change without a restart,
//! whether the file is rewritten in place or replaced by a rename, and at
//! once on SIGHUP; a keep-alive connection keeps working across a reload;
//! deduplication forgets nothing; a file that turns empty, disappears or
//! does not parse keeps the last good secrets; each account verifies with
//! its own secrets, deduplicates apart, and an unknown one is refused
//! without its body being read.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ltvboost_webhooks::signature::{Secret, sign};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const FIRST: &str = "the-first-secret-in-the-file-0123";
const SECOND: &str = "the-second-secret-in-the-file-4567";
const THIRD: &str = "the-third-secret-in-the-file-89ab";
const FOURTH: &str = "the-fourth-secret-in-the-file-cdef";

/// The example receiver (inline, in-memory dedupe) on a free port with
/// `env`, its stderr collected into `logs`.
fn receiver(env: &[(&str, &str)], logs: &Arc<Mutex<Vec<String>>>) -> (Child, SocketAddr) {
    receiver_printing(env, logs, &Arc::default())
}

/// The same, its stdout (the handled lines) collected into `lines`.
fn receiver_printing(
    env: &[(&str, &str)],
    logs: &Arc<Mutex<Vec<String>>>,
    lines: &Arc<Mutex<Vec<String>>>,
) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = example_receiver(addr);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    collect_output(&mut child, lines, logs);
    (child, addr)
}

/// One HTTP/1.1 connection kept open across requests.
struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            reader: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        }
    }

    /// Posts `id` signed with `secret` on this connection: the status and
    /// the body's text.
    async fn deliver(&mut self, id: &str, secret: &str) -> (u16, String) {
        self.deliver_to("/webhooks/ltvboost", id, secret).await
    }

    /// Posts `id` signed with `secret` to `path` on this connection.
    async fn deliver_to(&mut self, path: &str, id: &str, secret: &str) -> (u16, String) {
        let body = created_event(id);
        let signature = sign(&Secret::new(secret).unwrap(), &body);
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
             x-ltvboost-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        self.reader.get_mut().write_all(&request).await.unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).await.unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {status_line:?}"));
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
            assert!(
                !line.eq_ignore_ascii_case("connection: close"),
                "the receiver closes the connection"
            );
        }
        let mut text = vec![0; length];
        self.reader.read_exact(&mut text).await.unwrap();
        (status, String::from_utf8(text).unwrap())
    }

    /// Delivers `id` with `secret` until it is taken in (`200`), for at
    /// most `within`; how long that took.
    async fn accepted_within(&mut self, id: &str, secret: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let (status, text) = self.deliver(id, secret).await;
            if status == 200 {
                assert_eq!(text, "", "{id}: handled, not a duplicate");
                return started.elapsed();
            }
            assert_eq!(status, 401, "{id}: {text}");
            assert!(
                started.elapsed() < within,
                "{id}: the new secret was not in force within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_file_is_followed_without_a_restart() {
    let dir = TempDir::new("secret-file");
    let file = dir.join("secrets");
    write(&file, &format!("# the endpoint's secret\n{FIRST}\n"));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (mut child, addr) = receiver(
        &[("LTVBOOST_WEBHOOK_SECRET_FILE", file.to_str().unwrap())],
        &logs,
    );
    listening(addr, &mut child).await;
    let mut connection = KeepAlive::open(addr).await;
    assert_eq!(connection.deliver("evt_1", FIRST).await.0, 200);
    assert_eq!(connection.deliver("evt_2", SECOND).await.0, 401);

    // Rewritten in place (same inode), newest first: both verify, on the
    // connection opened before the change.
    write(&file, &format!("{SECOND}\n{FIRST}\n"));
    let took = connection
        .accepted_within("evt_2", SECOND, Duration::from_secs(10))
        .await;
    eprintln!("rewritten in place: in force after {took:?}");
    assert_eq!(connection.deliver("evt_3", FIRST).await.0, 200);

    // Replaced by a rename, as secret managers write: the old secrets go.
    let next = dir.join("secrets.next");
    write(&next, &format!("{THIRD}\n"));
    std::fs::rename(&next, &file).unwrap();
    let took = connection
        .accepted_within("evt_4", THIRD, Duration::from_secs(10))
        .await;
    eprintln!("replaced by a rename: in force after {took:?}");
    assert_eq!(connection.deliver("evt_5", SECOND).await.0, 401);

    // Emptied, then removed: the last good secret stays, the receiver
    // keeps answering, and an error names the file.
    write(&file, "");
    wait_until("an error naming the emptied file", || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains(file.to_str().unwrap()))
    })
    .await;
    assert_eq!(connection.deliver("evt_6", THIRD).await.0, 200);
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(connection.deliver("evt_7", THIRD).await.0, 200);
    assert!(
        !logs.lock().unwrap().iter().any(|l| l.contains(THIRD)),
        "a secret reached the logs"
    );

    // SIGHUP reads it at once.
    write(&file, &format!("{FOURTH}\n"));
    signal(&child, "HUP");
    connection
        .accepted_within("evt_8", FOURTH, Duration::from_secs(10))
        .await;
    wait_until("the SIGHUP log line", || {
        logs.lock().unwrap().iter().any(|l| l.contains("SIGHUP"))
    })
    .await;

    // Deduplication forgot nothing across the reloads: an event handled
    // under the first secret is a duplicate under the fourth.
    let (status, text) = connection.deliver("evt_1", FOURTH).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "duplicate: already handled\n")
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the receiver restarted"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn a_secret_and_a_secret_file_together_are_refused_at_start() {
    let dir = TempDir::new("secret-file");
    let file = dir.join("secrets");
    write(&file, &format!("{FIRST}\n"));
    let output = Command::new(example("receiver"))
        .env(
            "LTVBOOST_WEBHOOK_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("LTVBOOST_WEBHOOK_SECRET", SECOND)
        .env("LTVBOOST_WEBHOOK_SECRET_FILE", &file)
        .env_remove("LTVBOOST_REDIS_URL")
        .env_remove("LTVBOOST_QUEUE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LTVBOOST_WEBHOOK_SECRET and LTVBOOST_WEBHOOK_SECRET_FILE"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_secret_file_that_cannot_be_used_at_start_is_refused_naming_it() {
    let dir = TempDir::new("secret-file");
    let file = dir.join("secrets");
    for contents in [None, Some("# not yet\n")] {
        if let Some(contents) = contents {
            write(&file, contents);
        }
        let output = Command::new(example("receiver"))
            .env(
                "LTVBOOST_WEBHOOK_ADDR",
                format!("127.0.0.1:{}", free_port()),
            )
            .env_remove("LTVBOOST_WEBHOOK_SECRET")
            .env("LTVBOOST_WEBHOOK_SECRET_FILE", &file)
            .env_remove("LTVBOOST_REDIS_URL")
            .env_remove("LTVBOOST_QUEUE_URL")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{contents:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    }
}

const ACME_NEW: &str = "acme-the-newer-secret-0123";
const ACME_OLD: &str = "acme-the-older-secret-4567";
const GLOBEX: &str = "globex-the-only-secret-89ab";
const INITECH: &str = "initech-the-only-secret-cdef";

/// Delivers to `path` until the answer is `want`, for at most 10 s.
async fn answered_within(
    connection: &mut KeepAlive,
    path: &str,
    id: &str,
    secret: &str,
    want: u16,
) {
    let started = Instant::now();
    loop {
        let (status, text) = connection.deliver_to(path, id, secret).await;
        if status == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} {id}: {status} {text}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_file_serves_each_account_apart_and_follows_its_changes() {
    let dir = TempDir::new("secret-file");
    let file = dir.join("accounts.toml");
    write(
        &file,
        &format!(
            "[accounts.acme]\nsecrets = [\"{ACME_NEW}\", \"{ACME_OLD}\"]\n\
             [accounts.globex]\nsecrets = [\"{GLOBEX}\"]\n"
        ),
    );
    let (logs, lines) = (Arc::default(), Arc::new(Mutex::new(Vec::new())));
    let (mut child, addr) = receiver_printing(
        &[("LTVBOOST_WEBHOOK_ACCOUNTS_FILE", file.to_str().unwrap())],
        &logs,
        &lines,
    );
    listening(addr, &mut child).await;
    let mut connection = KeepAlive::open(addr).await;
    let (acme, globex, initech) = (
        "/webhooks/ltvboost/acme",
        "/webhooks/ltvboost/globex",
        "/webhooks/ltvboost/initech",
    );

    // Each account with its own secrets only; one event id under two
    // accounts is two events; a redelivery within one is a duplicate.
    assert_eq!(connection.deliver_to(acme, "evt_1", ACME_OLD).await.0, 200);
    assert_eq!(connection.deliver_to(globex, "evt_1", GLOBEX).await.0, 200);
    assert_eq!(connection.deliver_to(acme, "evt_2", GLOBEX).await.0, 401);
    assert_eq!(
        connection.deliver_to(globex, "evt_2", ACME_NEW).await.0,
        401
    );
    let (status, text) = connection.deliver_to(acme, "evt_1", ACME_NEW).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "duplicate: already handled\n")
    );
    assert_eq!(
        connection.deliver_to(initech, "evt_1", INITECH).await.0,
        404
    );
    wait_until("both handled lines", || lines.lock().unwrap().len() >= 2).await;
    {
        let lines = lines.lock().unwrap();
        assert!(
            lines[0].starts_with("response.created evt_1 account=acme secret#1: "),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("response.created evt_1 account=globex secret#0: "),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
    }

    // A flood to unknown accounts: each announces a 1 MB body and sends
    // none; each is answered 404 all the same, so no body was waited for.
    let flood: Vec<_> = (0..200)
        .map(|n| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let request = format!(
                    "POST /webhooks/ltvboost/nobody{n} HTTP/1.1\r\nhost: test\r\n\
                     x-ltvboost-signature: sha256={}\r\ncontent-length: 1000000\r\n\r\n",
                    "ab".repeat(32)
                );
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut head = [0; 12];
                stream.read_exact(&mut head).await.unwrap();
                String::from_utf8_lossy(&head).into_owned()
            })
        })
        .collect();
    for answer in flood {
        assert_eq!(answer.await.unwrap(), "HTTP/1.1 404");
    }

    // An account added is served, one removed answers 404, without a
    // restart and on the connection opened before.
    write(
        &file,
        &format!(
            "[accounts.acme]\nsecrets = [\"{ACME_NEW}\"]\n\
             [accounts.initech]\nsecrets = [\"{INITECH}\"]\n"
        ),
    );
    answered_within(&mut connection, initech, "evt_3", INITECH, 200).await;
    answered_within(&mut connection, globex, "evt_4", GLOBEX, 404).await;
    assert_eq!(connection.deliver_to(acme, "evt_5", ACME_OLD).await.0, 401);

    // A file that does not parse keeps the last good accounts, and an
    // error names the file, never a secret.
    write(
        &file,
        &format!("[accounts.acme\nsecrets = [\"{ACME_NEW}\"\n"),
    );
    wait_until("an error naming the accounts file", || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains(file.to_str().unwrap()))
    })
    .await;
    assert_eq!(connection.deliver_to(acme, "evt_6", ACME_NEW).await.0, 200);
    assert_eq!(
        connection.deliver_to(initech, "evt_7", INITECH).await.0,
        200
    );
    assert!(
        !logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(ACME_NEW) || l.contains(INITECH)),
        "a secret reached the logs"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
