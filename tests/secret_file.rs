//! `LTVBOOST_WEBHOOK_SECRET_FILE` with the example receiver as a process:
//! secrets change without a restart, whether the file is rewritten in place
//! or replaced by a rename, and at once on SIGHUP; a keep-alive connection
//! keeps working across a reload; deduplication forgets nothing; a file that
//! turns empty or disappears keeps the last good secrets.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A directory of its own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ltvboost-secret-file-{}",
            ltvboost_webhooks::dedupe::ClaimToken::random()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example receiver (inline, in-memory dedupe) on a free port with
/// `env`, its stderr collected into `logs`.
fn receiver(env: &[(&str, &str)], logs: &Arc<Mutex<Vec<String>>>) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(example("receiver"));
    command
        .env("LTVBOOST_WEBHOOK_ADDR", addr.to_string())
        .env_remove("LTVBOOST_WEBHOOK_SECRET")
        .env_remove("LTVBOOST_WEBHOOK_SECRET_FILE")
        .env_remove("LTVBOOST_REDIS_URL")
        .env_remove("LTVBOOST_QUEUE_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = logs.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            logs.lock().unwrap().push(line);
        }
    });
    (child, addr)
}

async fn listening(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the receiver exited at start"
        );
        assert!(Instant::now() < deadline, "the receiver did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        let body = created_event(id);
        let signature = sign(&Secret::new(secret).unwrap(), &body);
        let mut request = format!(
            "POST /webhooks/ltvboost HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
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
    let dir = TempDir::new();
    let file = dir.0.join("secrets");
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
    let next = dir.0.join("secrets.next");
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
    let dir = TempDir::new();
    let file = dir.0.join("secrets");
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
    let dir = TempDir::new();
    let file = dir.0.join("secrets");
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
