//! Enqueue mode through a secret rotation, with the example receiver and
//! worker as processes on a real Redis: each entry names the secret that
//! verified it (its key id), and a worker that does not hold that secret
//! passes the entry on, never runs or dead-letters it, and does not count
//! the delivery as an attempt.
#![cfg(feature = "queue")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ltvboost_webhooks::signature::{Secret, sign};

const OLD: &str = "the-secret-registered-last-year-0123";
const NEW: &str = "the-secret-registered-this-week-4567";

/// How a process is given its secrets: a list, a secret file it follows,
/// or an accounts file (`….toml`).
fn secrets_env(secrets: &str) -> (&'static str, &str) {
    if Path::new(secrets).extension().is_some_and(|e| e == "toml") {
        ("LTVBOOST_WEBHOOK_ACCOUNTS_FILE", secrets)
    } else if Path::new(secrets).is_absolute() {
        ("LTVBOOST_WEBHOOK_SECRET_FILE", secrets)
    } else {
        ("LTVBOOST_WEBHOOK_SECRET", secrets)
    }
}

/// The example receiver in enqueue mode with `secrets` (a list, or the
/// absolute path of a secret file), in `namespace`.
fn receiver(url: &str, namespace: &str, secrets: &str) -> (Child, SocketAddr) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new(example("receiver"))
        .env("LTVBOOST_WEBHOOK_ADDR", addr.to_string())
        .env("LTVBOOST_QUEUE_URL", url)
        .env("LTVBOOST_NAMESPACE", namespace)
        .env_remove("LTVBOOST_WEBHOOK_SECRET")
        .env_remove("LTVBOOST_WEBHOOK_SECRET_FILE")
        .env_remove("LTVBOOST_WEBHOOK_ACCOUNTS_FILE")
        .env(secrets_env(secrets).0, secrets_env(secrets).1)
        .env_remove("LTVBOOST_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, addr)
}

/// The example worker with `secrets`, in `namespace`, its stdout lines
/// collected into `lines` and its stderr into `logs`. One attempt only: a
/// delivery counted against an entry it did not run would dead-letter it.
fn worker(
    url: &str,
    namespace: &str,
    secrets: &str,
    lines: &Arc<Mutex<Vec<String>>>,
    logs: &Arc<Mutex<Vec<String>>>,
) -> Child {
    let mut child = Command::new(example("worker"))
        .env("LTVBOOST_QUEUE_URL", url)
        .env("LTVBOOST_NAMESPACE", namespace)
        .env_remove("LTVBOOST_WEBHOOK_SECRET")
        .env_remove("LTVBOOST_WEBHOOK_SECRET_FILE")
        .env_remove("LTVBOOST_WEBHOOK_ACCOUNTS_FILE")
        .env(secrets_env(secrets).0, secrets_env(secrets).1)
        .env("LTVBOOST_WORKER_MAX_ATTEMPTS", "1")
        .env("LTVBOOST_WORKER_CLAIM_IDLE_MS", "500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for (stream, into) in [
        (
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            lines.clone(),
        ),
        (Box::new(child.stderr.take().unwrap()), logs.clone()),
    ] {
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
    child
}

fn terminate(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap().code()
}

/// Posts a new event signed with `secret`: answered `202`.
async fn deliver(addr: SocketAddr, id: &str, secret: &str) {
    let body = created_event(id);
    let signature = sign(&Secret::new(secret).unwrap(), &body);
    let reply = post(addr, &[("x-ltvboost-signature", &signature)], &body).await;
    assert_eq!(reply.status, 202, "{id}: {reply:?}");
}

/// Waits until `lines` holds a handled line for each of `ids`.
async fn handled(lines: &Arc<Mutex<Vec<String>>>, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let lines = lines.lock().unwrap();
            if ids
                .iter()
                .all(|id| lines.iter().any(|l| *l == format!("response.created {id}")))
            {
                return;
            }
            assert!(Instant::now() < deadline, "not all handled: {lines:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each of `ids` handled exactly once across `lines`, and no dead letter.
fn once_each(lines: &[String], ids: &[String]) {
    for id in ids {
        let calls = lines
            .iter()
            .filter(|l| **l == format!("response.created {id}"))
            .count();
        assert_eq!(calls, 1, "{id}: {lines:?}");
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("dead-letter")),
        "{lines:?}"
    );
}

fn namespace() -> String {
    format!("keys-{}", ltvboost_webhooks::dedupe::ClaimToken::random())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_the_wrong_secret_loses_nothing_and_the_right_one_runs_each_once() {
    let url = test_redis_url();
    let namespace = namespace();
    let (mut receiver, addr) = receiver(&url, &namespace, NEW);
    wait_for_listener(addr).await;
    let (wrong_lines, wrong_logs) = (Arc::default(), Arc::default());
    let mut wrong = worker(&url, &namespace, OLD, &wrong_lines, &wrong_logs);
    let ids: Vec<String> = (0..20).map(|n| format!("evt_key_{n}")).collect();
    for id in &ids {
        deliver(addr, id, NEW).await;
    }
    // The wrong worker passes every entry on, again and again, and says
    // once which key it lacks.
    let key_id = Secret::new(NEW).unwrap().key_id().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wrong_logs
        .lock()
        .unwrap()
        .iter()
        .any(|l: &String| l.contains(&key_id) && l.contains("LTVBOOST_WEBHOOK_SECRET"))
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            wrong_logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        wrong_lines.lock().unwrap().is_empty(),
        "ran or dead-lettered"
    );
    let queue = namespaced_queue(&url, &namespace).await;
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.entries, stats.dead_letters), (20, 0), "{stats:?}");
    let said = wrong_logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&key_id) && l.contains("ERROR"))
        .count();
    assert_eq!(said, 1, "said once per key id");

    // A worker holding the key, beside the wrong one: each runs once, and
    // the wrong worker's deliveries were not counted (one attempt allowed).
    let (right_lines, right_logs) = (Arc::default(), Arc::default());
    let mut right = worker(&url, &namespace, NEW, &right_lines, &right_logs);
    handled(&right_lines, &ids).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut all = right_lines.lock().unwrap().clone();
    all.extend(wrong_lines.lock().unwrap().iter().cloned());
    once_each(&all, &ids);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.entries, stats.dead_letters), (0, 0), "{stats:?}");
    for child in [&mut wrong, &mut right, &mut receiver] {
        assert_eq!(terminate(child), Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_rotation_with_old_only_and_new_old_workers_handles_each_once() {
    let url = test_redis_url();
    let namespace = namespace();
    // Step 2 of the rotation: receivers hold both secrets; one worker is
    // redeployed with both, the other still holds the old one only.
    let (mut receiver, addr) = receiver(&url, &namespace, &format!("{NEW},{OLD}"));
    wait_for_listener(addr).await;
    let (old_lines, old_logs) = (Arc::default(), Arc::default());
    let mut old_only = worker(&url, &namespace, OLD, &old_lines, &old_logs);
    let (both_lines, both_logs) = (Arc::default(), Arc::default());
    let mut both = worker(
        &url,
        &namespace,
        &format!("{NEW},{OLD}"),
        &both_lines,
        &both_logs,
    );
    // LTVboost signs with the old secret until the new one is committed,
    // then with the new one; retries of earlier events still carry the old.
    let ids: Vec<String> = (0..30).map(|n| format!("evt_rotation_{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        deliver(addr, id, if n < 15 || n % 4 == 0 { OLD } else { NEW }).await;
    }
    let collected = || {
        let mut all = old_lines.lock().unwrap().clone();
        all.extend(both_lines.lock().unwrap().iter().cloned());
        all
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ids.iter().all(|id| {
        collected()
            .iter()
            .any(|l| *l == format!("response.created {id}"))
    }) {
        assert!(Instant::now() < deadline, "{:?}", collected());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    once_each(&collected(), &ids);
    let stats = namespaced_queue(&url, &namespace)
        .await
        .stats()
        .await
        .unwrap();
    assert_eq!((stats.entries, stats.dead_letters), (0, 0), "{stats:?}");
    for child in [&mut old_only, &mut both, &mut receiver] {
        assert_eq!(terminate(child), Some(0));
    }
}

/// Deliveries to `addr` of `id` signed with `secret`, until one is answered
/// `202` (the receiver read its changed file).
async fn deliver_once_in_force(addr: SocketAddr, id: &str, secret: &str) {
    let body = created_event(id);
    let signature = sign(&Secret::new(secret).unwrap(), &body);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = post(addr, &[("x-ltvboost-signature", &signature)], &body).await;
        if reply.status == 202 {
            return;
        }
        assert_eq!(reply.status, 401, "{id}: {reply:?}");
        assert!(Instant::now() < deadline, "{id}: the new secret never took");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_through_the_secret_file_needs_no_restart_of_receiver_or_worker() {
    let url = test_redis_url();
    let namespace = namespace();
    let dir = TempDir::new("rotation");
    let file = dir.join("secrets");
    std::fs::write(&file, format!("{OLD}\n")).unwrap();
    let path = file.to_str().unwrap();
    let (mut receiver, addr) = receiver(&url, &namespace, path);
    let (lines, logs) = (Arc::default(), Arc::default());
    let mut worker = worker(&url, &namespace, path, &lines, &logs);
    wait_for_listener(addr).await;

    // Before: the old secret.
    let mut ids: Vec<String> = (0..5).map(|i| format!("evt_file_old_{i}")).collect();
    for id in &ids {
        deliver(addr, id, OLD).await;
    }
    // Step 2 of the rotation: the new secret written first, the old kept.
    // Both processes read the file again; entries the new secret verified
    // run on the same worker, which was not restarted.
    std::fs::write(&file, format!("{NEW}\n{OLD}\n")).unwrap();
    deliver_once_in_force(addr, "evt_file_new_0", NEW).await;
    ids.push("evt_file_new_0".to_owned());
    for i in 1..5 {
        let id = format!("evt_file_new_{i}");
        deliver(addr, &id, NEW).await;
        deliver(addr, &format!("evt_file_still_old_{i}"), OLD).await;
        ids.extend([id, format!("evt_file_still_old_{i}")]);
    }
    // Step 4: the old secret removed, by a rename as secret managers write.
    let next = dir.join("secrets.next");
    std::fs::write(&next, format!("{NEW}\n")).unwrap();
    std::fs::rename(&next, &file).unwrap();
    let body = created_event("evt_file_retired");
    let signature = sign(&Secret::new(OLD).unwrap(), &body);
    let deadline = Instant::now() + Duration::from_secs(20);
    while post(addr, &[("x-ltvboost-signature", &signature)], &body)
        .await
        .status
        != 401
    {
        assert!(
            Instant::now() < deadline,
            "the old secret was never retired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deliver(addr, "evt_file_after", NEW).await;
    ids.push("evt_file_after".to_owned());

    handled(&lines, &ids).await;
    // A moment for any second run to show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    once_each(&lines.lock().unwrap(), &ids);
    assert!(
        !logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("does not hold")),
        "the worker lacked a key it should have read from the file: {:?}",
        logs.lock().unwrap()
    );
    assert!(receiver.try_wait().unwrap().is_none() && worker.try_wait().unwrap().is_none());
    assert_eq!(terminate(&mut worker), Some(0));
    assert_eq!(terminate(&mut receiver), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_ride_the_queue_and_each_is_verified_and_deduplicated_apart() {
    let url = test_redis_url();
    let namespace = namespace();
    let dir = TempDir::new("accounts");
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        format!(
            "[accounts.acme]\nsecrets = [\"{NEW}\"]\n[accounts.globex]\nsecrets = [\"{OLD}\"]\n"
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (mut receiver, addr) = receiver(&url, &namespace, path);
    let (lines, logs) = (Arc::default(), Arc::default());
    let mut worker = worker(&url, &namespace, path, &lines, &logs);
    wait_for_listener(addr).await;

    let post_to = |account: &'static str, id: &'static str, secret: &'static str| async move {
        let body = created_event(id);
        let signature = sign(&Secret::new(secret).unwrap(), &body);
        let request = post_request(
            &format!("/webhooks/ltvboost/{account}"),
            &[("x-ltvboost-signature", &signature)],
            &body,
        );
        send_raw(addr, &request).await.status
    };
    // One event id under each account: two events, each queued once.
    assert_eq!(post_to("acme", "evt_shared", NEW).await, 202);
    assert_eq!(post_to("globex", "evt_shared", OLD).await, 202);
    assert_eq!(
        post_to("acme", "evt_shared", NEW).await,
        200,
        "a duplicate within acme"
    );
    assert_eq!(
        post_to("acme", "evt_wrong", OLD).await,
        401,
        "globex's secret at acme"
    );
    assert_eq!(post_to("initech", "evt_shared", NEW).await, 404);

    let want = [
        "response.created evt_shared account=acme",
        "response.created evt_shared account=globex",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want
        .iter()
        .all(|w| lines.lock().unwrap().iter().any(|l: &String| l == w))
    {
        assert!(Instant::now() < deadline, "{:?}", lines.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lines = lines.lock().unwrap().clone();
    assert_eq!(
        lines.len(),
        2,
        "each ran once, nothing dead-lettered: {lines:?}"
    );
    assert_eq!(terminate(&mut worker), Some(0));
    assert_eq!(terminate(&mut receiver), Some(0));
}

/// A rotation inside one account: a receiver already on the account's new
/// secret, the worker's accounts file not yet. The worker leaves the entry,
/// names the account, its key id and the accounts file once, and runs it
/// once its file (which it follows) has the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lacking_an_accounts_new_secret_names_the_account_and_runs_it_once_given() {
    const ROTATED: &str = "acme-secret-generated-this-morning-89";
    let url = test_redis_url();
    let namespace = namespace();
    let dir = TempDir::new("account-rotation");
    let (ahead, behind) = (dir.join("ahead.toml"), dir.join("behind.toml"));
    std::fs::write(
        &ahead,
        format!("[accounts.acme]\nsecrets = [\"{ROTATED}\", \"{NEW}\"]\n"),
    )
    .unwrap();
    std::fs::write(&behind, format!("[accounts.acme]\nsecrets = [\"{NEW}\"]\n")).unwrap();
    let (mut receiver, addr) = receiver(&url, &namespace, ahead.to_str().unwrap());
    let (lines, logs) = (Arc::default(), Arc::default());
    let mut worker = worker(&url, &namespace, behind.to_str().unwrap(), &lines, &logs);
    wait_for_listener(addr).await;

    let body = created_event("evt_rotated");
    let signature = sign(&Secret::new(ROTATED).unwrap(), &body);
    let request = post_request(
        "/webhooks/ltvboost/acme",
        &[("x-ltvboost-signature", &signature)],
        &body,
    );
    assert_eq!(send_raw(addr, &request).await.status, 202);
    let key_id = Secret::new(ROTATED).unwrap().key_id().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let said = loop {
        let found = logs
            .lock()
            .unwrap()
            .iter()
            .find(|l: &&String| l.contains("ERROR") && l.contains(&key_id))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "{:?}", logs.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        said.contains("acme") && said.contains("LTVBOOST_WEBHOOK_ACCOUNTS_FILE"),
        "{said}"
    );
    assert!(lines.lock().unwrap().is_empty(), "ran or dead-lettered");

    // The worker's file catches up: the entry runs, once.
    std::fs::write(
        &behind,
        format!("[accounts.acme]\nsecrets = [\"{ROTATED}\", \"{NEW}\"]\n"),
    )
    .unwrap();
    let want = "response.created evt_rotated account=acme".to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines.lock().unwrap().contains(&want) {
        assert!(Instant::now() < deadline, "{:?}", lines.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(*lines.lock().unwrap(), [want]);
    assert_eq!(terminate(&mut worker), Some(0));
    assert_eq!(terminate(&mut receiver), Some(0));
}
