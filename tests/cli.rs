//! The `ltvboost` binary as a process: every command and exit code, `--json`
//! parsed back, against an in-repo fake registration API and real receivers
//! on 127.0.0.1.
#![cfg(feature = "cli")]

mod common;

use std::collections::VecDeque;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use assert_cmd::cargo::CommandCargoExt;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use common::*;
use ltvboost_webhooks::signature::{Verifier, sign};
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use serde_json::{Value, json};

/// Runs `ltvboost args…` with `stdin`, off the async runtime.
async fn ltvboost(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let (args, env, stdin): (Vec<String>, Vec<(String, String)>, Vec<u8>) = (
        args.iter().map(|a| (*a).to_owned()).collect(),
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        stdin.to_vec(),
    );
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::cargo_bin("ltvboost").unwrap();
        command
            .args(&args)
            .env_remove("LTVBOOST_WEBHOOK_SECRET")
            .env_remove("LTVBOOST_API_TOKEN")
            .env_remove("LTVBOOST_API_BASE")
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &stdin).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn help_usage_and_exit_codes() {
    let help = ltvboost(&["--help"], &[], b"").await;
    assert_eq!(help.status.code(), Some(0));
    for command in ["send", "sign", "verify", "listen", "endpoints", "queue"] {
        assert!(stdout(&help).contains(command), "{}", stdout(&help));
    }
    for command in ["send", "sign", "verify", "listen"] {
        let help = ltvboost(&[command, "--help"], &[], b"").await;
        assert_eq!(help.status.code(), Some(0));
        assert!(
            stdout(&help).contains("Example: "),
            "{command}: {}",
            stdout(&help)
        );
    }
    let bad = ltvboost(&["sign", "--no-such-flag"], &[], b"").await;
    assert_eq!(bad.status.code(), Some(2));
    let no_token = ltvboost(&["endpoints", "list"], &[], b"").await;
    assert_eq!(no_token.status.code(), Some(2));
}

#[tokio::test]
async fn sign_and_verify_agree_with_the_library() {
    let body = event_json("evt_cli_sign", "response.created", r#"{"id":"r"}"#);
    let signed = ltvboost(&["sign", &format!("--secret={SECRET}")], &[], &body).await;
    assert_eq!(signed.status.code(), Some(0));
    let header = sign(&secret(), &body);
    assert_eq!(stdout(&signed), format!("{header}\n"));
    // From a file, and from the environment.
    let file = std::env::temp_dir().join(format!("ltvboost-secret-{}", std::process::id()));
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let from_file = ltvboost(
        &["sign", "--secret-file", file.to_str().unwrap()],
        &[],
        &body,
    )
    .await;
    assert_eq!(stdout(&from_file), format!("{header}\n"));
    let from_env = ltvboost(&["sign"], &[("LTVBOOST_WEBHOOK_SECRET", SECRET)], &body).await;
    assert_eq!(stdout(&from_env), format!("{header}\n"));
    let _ = std::fs::remove_file(file);

    let env = [("LTVBOOST_WEBHOOK_SECRET", SECRET)];
    let ok = ltvboost(&["verify", "--signature", &header], &env, &body).await;
    assert_eq!(ok.status.code(), Some(0));
    let forged = format!("sha256={}", "ab".repeat(32));
    let bad = ltvboost(&["--json", "verify", "--signature", &forged], &env, &body).await;
    assert_eq!(bad.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(answer["verified"], false);
    let json = ltvboost(&["verify", "--json", "--signature", &header], &env, &body).await;
    let answer: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(answer, json!({"verified": true, "secret_index": 0}));
}

/// A receiver that verifies with the test secret and keeps each body.
async fn recording_receiver() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = Router::new().route(
        PATH,
        axum::routing::post(
            move |ltvboost_webhooks::receiver::extract::VerifiedEvent { delivery, .. }| {
                let kept = kept.clone();
                async move {
                    let body: Value = serde_json::from_slice(delivery.envelope().body()).unwrap();
                    kept.lock().unwrap().push(body);
                    ""
                }
            },
        ),
    );
    let addr = serve(app.with_state(WebhookConfig::new(verifier()))).await;
    (addr, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_delivers_a_signed_event_with_data_from_a_file_and_set_fields() {
    let (addr, bodies) = recording_receiver().await;
    let data = std::env::temp_dir().join(format!("ltvboost-data-{}.json", std::process::id()));
    std::fs::write(&data, r#"{"id":"rsp_file","quiz_id":"quiz_9"}"#).unwrap();
    let url = format!("http://{addr}{PATH}");
    let sent = ltvboost(
        &[
            "send",
            &url,
            "response.scored",
            &format!("--data=@{}", data.display()),
            "--set",
            "data.score=87.5",
            "--set",
            "data.outcome=power-user",
            "--id",
            "evt_cli_send",
        ],
        &[("LTVBOOST_WEBHOOK_SECRET", SECRET)],
        b"",
    )
    .await;
    let _ = std::fs::remove_file(data);
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(
        stdout(&sent).contains("attempt 1: 200"),
        "{}",
        stdout(&sent)
    );
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies[0]["id"], "evt_cli_send");
    assert_eq!(bodies[0]["data"]["id"], "rsp_file");
    assert_eq!(bodies[0]["data"]["score"], 87.5);
    assert_eq!(bodies[0]["data"]["outcome"], "power-user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_retries_on_request_and_fails_with_1() {
    // The receiver's handler always fails: 500 on every attempt.
    let recorder = Recorder::new();
    recorder.script(&[Behaviour::Fail; 3]);
    let addr = serve(Router::new().layer(WebhookLayer::new(config(), recording(&recorder)))).await;
    let url = format!("http://{addr}{PATH}");
    let env = [("LTVBOOST_WEBHOOK_SECRET", SECRET)];
    let args = [
        "--json",
        "send",
        &url,
        "action.sent",
        "--retries",
        "2",
        "--time-scale",
        "0",
    ];
    let sent = ltvboost(&args, &env, b"").await;
    assert_eq!(sent.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(report["delivered"], false);
    let statuses: Vec<&Value> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(500), &json!(500)]);
    // An unreachable URL is a failure too, a malformed one a usage error.
    let refused = ltvboost(&["send", "http://127.0.0.1:9/", "action.sent"], &env, b"").await;
    assert_eq!(refused.status.code(), Some(1));
    let malformed = ltvboost(&["send", "not a url", "action.sent"], &env, b"").await;
    assert_eq!(malformed.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_verifies_prints_and_forwards_to_a_receiver() {
    let recorder = Recorder::new();
    let app = serve(Router::new().layer(WebhookLayer::new(config(), recording(&recorder)))).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut listen = std::process::Command::cargo_bin("ltvboost")
        .unwrap()
        .args(["listen", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--forward-to", &format!("http://{app}{PATH}")])
        .env("LTVBOOST_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listening: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_listener(listening).await;
    let body = event_json("evt_cli_listen", "response.created", r#"{"id":"r"}"#);
    assert_eq!(post_signed(listening, &body).await.status, 200);
    assert_eq!(post(listening, &[], &body).await.status, 401);
    assert_eq!(recorder.calls("response.created"), 1, "not forwarded");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &listen.id().to_string()])
        .status();
    let printed = tokio::task::spawn_blocking(move || {
        let lines: Vec<String> = std::io::BufReader::new(listen.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .collect();
        (lines, listen.wait().unwrap())
    })
    .await
    .unwrap();
    let (lines, status) = printed;
    assert_eq!(status.code(), Some(0));
    let text = lines.join("\n");
    assert!(
        text.contains("response.created evt_cli_listen (secret #0)"),
        "{text}"
    );
    assert!(text.contains("forwarded to"), "{text}");
    assert!(text.contains("refused"), "{text}");
}

/// A request the fake API saw: method, path and query, idempotency key, body.
type Seen = (String, String, Option<String>, Value);

/// The fake registration API: answers from a script, records requests.
#[derive(Default)]
struct FakeApi {
    script: Mutex<VecDeque<(u16, Value)>>,
    requests: Mutex<Vec<Seen>>,
}

async fn fake(State(api): State<Arc<FakeApi>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let key = parts
        .headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().to_owned());
    let target = parts.uri.path_and_query().unwrap().to_string();
    api.requests.lock().unwrap().push((
        parts.method.to_string(),
        target,
        key,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ));
    let (status, answer) = api
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((500, json!({"error": "script ran out"})));
    // 0 in the script: the request is applied, and the answer never comes.
    if status == 0 {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
    let mut response = (
        axum::http::StatusCode::from_u16(status).unwrap(),
        axum::Json(answer),
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-request-id", "req_fake_1".parse().unwrap());
    response
}

async fn fake_api(script: Vec<(u16, Value)>) -> (Arc<FakeApi>, String) {
    let api = Arc::new(FakeApi {
        script: Mutex::new(script.into()),
        ..FakeApi::default()
    });
    let app = Router::new().fallback(fake).with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (api, base)
}

fn endpoint(id: &str) -> Value {
    json!({"id": id, "url": "https://app.example/hook", "events": ["response.created"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_list_follows_pages_and_the_json_parses_back() {
    let (api, base) = fake_api(vec![
        (
            200,
            json!({"data": [endpoint("wh_1"), endpoint("wh_2")], "has_more": true}),
        ),
        (
            200,
            json!({"data": [endpoint("wh_3")], "next_cursor": "c2"}),
        ),
        (200, json!({"data": [endpoint("wh_4")]})),
    ])
    .await;
    let env = [
        ("LTVBOOST_API_TOKEN", "tok_cli"),
        ("LTVBOOST_API_BASE", base.as_str()),
    ];
    let listed = ltvboost(&["endpoints", "list", "--json"], &env, b"").await;
    assert_eq!(
        listed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let all: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["wh_1", "wh_2", "wh_3", "wh_4"]);
    let targets: Vec<String> = api
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "/v1/webhooks",
            "/v1/webhooks?starting_after=wh_2",
            "/v1/webhooks?cursor=c2"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_get_create_update_delete_and_api_errors() {
    let (api, base) = fake_api(vec![
        (200, endpoint("wh_1")),
        (201, endpoint("wh_new")),
        (200, endpoint("wh_1")),
        (204, Value::Null),
        (
            404,
            json!({"error": {"code": "not_found", "message": "no such endpoint"}}),
        ),
    ])
    .await;
    let env = [
        ("LTVBOOST_API_TOKEN", "tok_cli"),
        ("LTVBOOST_API_BASE", base.as_str()),
    ];
    let got = ltvboost(&["endpoints", "get", "wh_1"], &env, b"").await;
    assert_eq!(got.status.code(), Some(0));
    assert!(stdout(&got).starts_with("wh_1 https://app.example/hook response.created"));
    let created = ltvboost(
        &[
            "endpoints",
            "create",
            "https://app.example/hook",
            "response.created",
            "action.sent",
        ],
        &env,
        b"",
    )
    .await;
    assert_eq!(created.status.code(), Some(0));
    let secret_line = stdout(&created)
        .lines()
        .find_map(|l| {
            l.strip_prefix("LTVBOOST_WEBHOOK_SECRET=")
                .map(str::to_owned)
        })
        .expect("create prints the new secret");
    assert_eq!(secret_line.len(), 64);
    let updated = ltvboost(
        &[
            "endpoints",
            "update",
            "wh_1",
            "--events",
            "segment.ready,segment.updated",
        ],
        &env,
        b"",
    )
    .await;
    assert_eq!(updated.status.code(), Some(0));
    let deleted = ltvboost(&["endpoints", "delete", "wh_1"], &env, b"").await;
    assert_eq!(deleted.status.code(), Some(0));
    let missing = ltvboost(&["endpoints", "get", "wh_nope"], &env, b"").await;
    assert_eq!(missing.status.code(), Some(1));
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(
        error.contains("not_found") && error.contains("req_fake_1"),
        "{error}"
    );
    let bad_id = ltvboost(&["endpoints", "delete", ".."], &env, b"").await;
    assert_eq!(bad_id.status.code(), Some(1));

    let requests = api.requests.lock().unwrap();
    let (method, target, key, body) = &requests[1];
    assert_eq!((method.as_str(), target.as_str()), ("POST", "/v1/webhooks"));
    assert!(
        key.as_ref().is_some_and(|k| k.len() == 32),
        "no idempotency key: {key:?}"
    );
    assert_eq!(body["secret"], secret_line.as_str());
    assert_eq!(body["events"], json!(["response.created", "action.sent"]));
    assert_eq!(
        requests[2].3,
        json!({"events": ["segment.ready", "segment.updated"]})
    );
    assert_eq!(requests.len(), 5, "the bad id was sent");
}

/// A fresh path in the temporary directory, not created.
fn temp_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ltvboost-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_in_two_steps_keeps_the_new_secret_in_a_file_until_it_is_registered() {
    use std::os::unix::fs::PermissionsExt;
    // 204, then 500, then a PATCH applied whose answer never comes, then 200.
    let (api, base) = fake_api(vec![
        (204, Value::Null),
        (
            500,
            json!({"error": {"code": "internal", "message": "try again"}}),
        ),
        (0, Value::Null),
        (200, endpoint("wh_1")),
    ])
    .await;
    let old = "the-secret-registered-last-year";
    let file = temp_path("rotate");
    let path = file.to_str().unwrap();
    // Step 1 needs no API token and changes nothing at the API.
    let prepared = ltvboost(
        &["endpoints", "rotate", "wh_1", "--new-secret-file", path],
        &[("LTVBOOST_WEBHOOK_SECRET", old)],
        b"",
    )
    .await;
    assert_eq!(
        prepared.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&prepared.stderr)
    );
    let line = stdout(&prepared);
    let list = line
        .trim()
        .strip_prefix("LTVBOOST_WEBHOOK_SECRET=")
        .expect("the line to deploy");
    let (new, old_again) = list.split_once(',').unwrap();
    assert_eq!(old_again, old);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), new);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(
        api.requests.lock().unwrap().is_empty(),
        "step 1 called the API"
    );
    // Step 1 again never overwrites the file.
    let again = ltvboost(
        &["endpoints", "rotate", "wh_1", "--new-secret-file", path],
        &[("LTVBOOST_WEBHOOK_SECRET", old)],
        b"",
    )
    .await;
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), new);

    // A receiver configured with the line accepts deliveries signed with either.
    let recorder = Recorder::new();
    let config = WebhookConfig::new(Verifier::from_list(list).unwrap()).path(PATH);
    let addr = serve(Router::new().layer(WebhookLayer::new(config, recording(&recorder)))).await;
    for (i, secret) in [new, old].into_iter().enumerate() {
        let body = event_json(&format!("evt_rot_{i}"), "response.created", r#"{"id":"r"}"#);
        let secret = ltvboost_webhooks::signature::Secret::new(secret).unwrap();
        let reply = post(
            addr,
            &[("x-ltvboost-signature", &sign(&secret, &body))],
            &body,
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(recorder.calls("response.created"), 2);

    // Step 2, answered 204 with no body: success.
    let env = [
        ("LTVBOOST_API_TOKEN", "tok_cli"),
        ("LTVBOOST_API_BASE", base.as_str()),
    ];
    let commit = [
        "--api-timeout",
        "1",
        "endpoints",
        "rotate",
        "wh_1",
        "--commit",
        "--new-secret-file",
        path,
    ];
    let committed = ltvboost(&commit, &env, b"").await;
    assert_eq!(
        committed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&committed.stderr)
    );
    // Answered 500, then with no answer within the time-out: exit 1, the
    // file kept, and the advice to run it again.
    for answer in ["500", "time-out"] {
        let failed = ltvboost(&commit, &env, b"").await;
        assert_eq!(failed.status.code(), Some(1), "{answer}");
        let error = String::from_utf8_lossy(&failed.stderr);
        assert!(
            error.contains("may or may not") && error.contains("again is safe"),
            "{answer}: {error}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), new);
    }
    // Run again: registered.
    let rerun = ltvboost(&commit, &env, b"").await;
    assert_eq!(rerun.status.code(), Some(0));
    let requests = api.requests.lock().unwrap();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for (method, target, key, body) in requests.iter() {
        assert_eq!(
            (method.as_str(), target.as_str()),
            ("PATCH", "/v1/webhooks/wh_1")
        );
        assert_eq!(body, &json!({"secret": new}));
        assert!(key.is_some(), "no idempotency key");
    }
    drop(requests);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_shows_the_secret_before_the_request_so_an_error_never_loses_it() {
    let (api, base) = fake_api(vec![
        (
            500,
            json!({"error": {"code": "internal", "message": "oops"}}),
        ),
        (
            500,
            json!({"error": {"code": "internal", "message": "oops"}}),
        ),
        (201, endpoint("wh_new")),
    ])
    .await;
    let env = [
        ("LTVBOOST_API_TOKEN", "tok_cli"),
        ("LTVBOOST_API_BASE", base.as_str()),
    ];
    let args = [
        "endpoints",
        "create",
        "https://app.example/hook",
        "response.created",
    ];
    let failed = ltvboost(&args, &env, b"").await;
    assert_eq!(failed.status.code(), Some(1));
    let shown = stdout(&failed)
        .lines()
        .find_map(|l| {
            l.strip_prefix("LTVBOOST_WEBHOOK_SECRET=")
                .map(str::to_owned)
        })
        .expect("the secret is shown although the API failed");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("may or may not have been created"));
    // With --new-secret-file: written before the request, kept on failure.
    let file = temp_path("create");
    let path = file.to_str().unwrap();
    let mut with_file = args.to_vec();
    with_file.extend(["--new-secret-file", path]);
    let failed = ltvboost(&with_file, &env, b"").await;
    assert_eq!(failed.status.code(), Some(1));
    assert!(!stdout(&failed).contains("LTVBOOST_WEBHOOK_SECRET="));
    let kept = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let created = ltvboost(&with_file, &env, b"").await;
    assert_eq!(created.status.code(), Some(0));
    let written = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let requests = api.requests.lock().unwrap();
    assert_eq!(requests[0].3["secret"], shown.as_str());
    assert_eq!(requests[1].3["secret"], kept.trim());
    assert_eq!(requests[2].3["secret"], written.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_refuses_a_public_address_without_a_secret() {
    let refused = ltvboost(&["listen", "--addr", "0.0.0.0:0"], &[], b"").await;
    assert_eq!(refused.status.code(), Some(2));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("LTVBOOST_WEBHOOK_SECRET"), "{error}");
    // Its default port is not the example receiver's.
    let help = ltvboost(&["listen", "--help"], &[], b"").await;
    assert!(
        stdout(&help).contains("127.0.0.1:3030"),
        "{}",
        stdout(&help)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_takes_only_a_file_step_one_wrote() {
    let (api, base) = fake_api(vec![(200, endpoint("wh_1"))]).await;
    let file = temp_path("not-step-one");
    std::fs::write(&file, "half-a-secr").unwrap();
    let env = [
        ("LTVBOOST_API_TOKEN", "tok_cli"),
        ("LTVBOOST_API_BASE", base.as_str()),
    ];
    let path = file.to_str().unwrap();
    let args = [
        "endpoints",
        "rotate",
        "wh_1",
        "--commit",
        "--new-secret-file",
        path,
    ];
    let refused = ltvboost(&args, &env, b"").await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("64 hex digits"));
    assert!(api.requests.lock().unwrap().is_empty(), "it was sent");
    let _ = std::fs::remove_file(&file);
}

/// Fails every call: each event is dead-lettered after its one attempt.
struct AlwaysFails;

impl ltvboost_webhooks::handler::ResponseHandler for AlwaysFails {
    async fn created(
        &self,
        _: &ltvboost_webhooks::handler::Delivery,
        _: &ltvboost_webhooks::event::ResponseCreated,
    ) -> ltvboost_webhooks::handler::HandlerResult {
        Err("asked to fail".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_against_a_queue_with_known_contents() {
    use ltvboost_webhooks::handler::Handlers;
    use ltvboost_webhooks::queue::Worker;
    let url = test_redis_url();
    let namespace = format!("cli-{}", ltvboost_webhooks::dedupe::ClaimToken::random());
    let queue = namespaced_queue(&url, &namespace).await;
    let body = created_event;
    // Three dead letters, then two entries waiting.
    let dead: Vec<Vec<u8>> = (0..3).map(|n| body(&format!("evt_dead_{n}"))).collect();
    for body in &dead {
        queue
            .enqueue(&verified_delivery(body.clone()))
            .await
            .unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker =
        Worker::new(queue.clone(), verifier(), Handlers::responses(AlwaysFails)).max_attempts(1);
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    while queue.stats().await.unwrap().dead_letters < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(stop);
    task.await.unwrap();
    for n in 0..2 {
        queue
            .enqueue(&verified_delivery(body(&format!("evt_waiting_{n}"))))
            .await
            .unwrap();
    }
    let env = [
        ("LTVBOOST_QUEUE_URL", url.as_str()),
        ("LTVBOOST_NAMESPACE", namespace.as_str()),
    ];
    let json_of = |output: &Output| -> Value {
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    };

    let stats = json_of(&ltvboost(&["--json", "queue", "stats"], &env, b"").await);
    assert_eq!(stats["waiting"], 2, "{stats}");
    assert_eq!(stats["dead_letters"], 3, "{stats}");
    assert_eq!(stats["consumers"], 0, "the worker stayed: {stats}");
    assert!(stats["oldest_age_seconds"].as_f64().unwrap() >= 0.0);
    let text = stdout(&ltvboost(&["queue", "stats"], &env, b"").await);
    assert!(text.contains("waiting            2"), "{text}");

    // Paging through the dead letters.
    let first = stdout(&ltvboost(&["queue", "dead", "list", "--limit", "2"], &env, b"").await);
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 2, "{first}");
    // Dead-lettered concurrently: in whichever order the worker ended them.
    let mut seen = Vec::new();
    for line in &lines {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 5, "{first}");
        assert_eq!((fields[1], fields[3]), ("response.created", "1"), "{first}");
        assert!(fields[4].contains("asked to fail"), "{first}");
        seen.push(fields[2].to_owned());
    }
    let last = lines[1].split('\t').next().unwrap();
    let rest = json_of(
        &ltvboost(
            &["--json", "queue", "dead", "list", "--after", last],
            &env,
            b"",
        )
        .await,
    );
    assert_eq!(rest["dead_letters"].as_array().unwrap().len(), 1, "{rest}");
    seen.push(
        rest["dead_letters"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    seen.sort();
    assert_eq!(seen, ["evt_dead_0", "evt_dead_1", "evt_dead_2"]);

    // The event as signed.
    let id = lines[0].split('\t').next().unwrap();
    let event_id = lines[0].split('\t').nth(2).unwrap();
    let n: usize = event_id.trim_start_matches("evt_dead_").parse().unwrap();
    let shown = ltvboost(&["queue", "dead", "show", id], &env, b"").await;
    assert_eq!(shown.stdout, [dead[n].clone(), b"\n".to_vec()].concat());

    // Requeue one, and one that does not exist: exit 1, the other moved.
    let requeued = ltvboost(&["--json", "queue", "requeue", id, "1-0"], &env, b"").await;
    assert_eq!(requeued.status.code(), Some(1));
    let requeued: Value = serde_json::from_slice(&requeued.stdout).unwrap();
    assert_eq!(requeued, json!({"requeued": 1, "missing": ["1-0"]}));
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.entries, stats.dead_letters), (3, 2));

    // Purge what died before now; then there is nothing to requeue.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let purged = json_of(
        &ltvboost(
            &[
                "--json",
                "queue",
                "dead",
                "purge",
                "--before",
                &now.to_string(),
            ],
            &env,
            b"",
        )
        .await,
    );
    assert_eq!(purged, json!({"purged": 2}));
    let all = json_of(&ltvboost(&["--json", "queue", "requeue", "--all"], &env, b"").await);
    assert_eq!(all["requeued"], 0);
    let bad = ltvboost(
        &["queue", "dead", "purge", "--before", "yesterday"],
        &env,
        b"",
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
}

/// Starts `ltvboost args…` and waits until it listens on `port`.
async fn start_listen(args: &[&str], port: u16) -> std::process::Child {
    let child = std::process::Command::cargo_bin("ltvboost")
        .unwrap()
        .args(["listen", "--addr", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("LTVBOOST_WEBHOOK_SECRET", SECRET)
        .env_remove("LTVBOOST_API_TOKEN")
        .env_remove("LTVBOOST_API_BASE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_listener(format!("127.0.0.1:{port}").parse().unwrap()).await;
    child
}

/// Starts `ltvboost listen --register` against the fake API at `base`
/// (with `extra` arguments), and waits until the API saw the create request.
async fn start_registering(
    api: &FakeApi,
    base: &str,
    port: u16,
    extra: &[&str],
) -> std::process::Child {
    let args = [
        &["--api-key", "tok_flag", "--api-base", base][..],
        extra,
        &["--register", "https://tunnel.example/hook"],
    ]
    .concat();
    let listen = start_listen(&args, port).await;
    wait_until("the create request", || {
        !api.requests.lock().unwrap().is_empty()
    })
    .await;
    listen
}

/// SIGTERM, then stdout's lines and the exit code.
async fn stop(mut child: std::process::Child) -> (Vec<String>, String, Option<i32>) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    tokio::task::spawn_blocking(move || {
        let lines: Vec<String> = std::io::BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .collect();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (lines, stderr, child.wait().unwrap().code())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_json_filters_events_forwards_headers_and_times_out() {
    // The app forwarded to: keeps each request's headers; slow for one event.
    let seen = Arc::new(Mutex::new(Vec::<axum::http::HeaderMap>::new()));
    let kept = seen.clone();
    let app = Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let kept = kept.clone();
        async move {
            kept.lock().unwrap().push(headers);
            if body.contains("evt_slow") {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            (axum::http::StatusCode::ACCEPTED, "taken")
        }
    });
    let app = serve(app).await;
    let port = free_port();
    let listen = start_listen(
        &[
            "--json",
            "--print-body",
            "--events",
            "response.created,action.failed",
            "--forward-to",
            &format!("http://{app}{PATH}"),
            "--forward-timeout",
            "0.5",
        ],
        port,
    )
    .await;
    let listening: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let created = event_json("evt_wanted", "response.created", r#"{"id":"r"}"#);
    let signature = sign(&secret(), &created);
    let forwarded = post(
        listening,
        &[
            ("x-ltvboost-signature", &signature),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-ltvboost-delivery", "dlv_1"),
            ("x-forwarded-for", "203.0.113.9"),
            ("via", "1.1 tunnel"),
            ("true-client-ip", "203.0.113.9"),
            ("tailscale-user-login", "someone@example.com"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "this hop only"),
        ],
        &created,
    )
    .await;
    assert_eq!(forwarded.status, 202, "the app's answer is passed back");
    let other = event_json("evt_other", "action.sent", r#"{"id":"a"}"#);
    assert_eq!(post_signed(listening, &other).await.status, 200);
    assert_eq!(post(listening, &[], &other).await.status, 401);
    let slow = event_json("evt_slow", "action.failed", r#"{"id":"a"}"#);
    assert_eq!(post_signed(listening, &slow).await.status, 504);
    let (lines, _, code) = stop(listen).await;
    assert_eq!(code, Some(0));

    // Forwarded: the wanted and the slow event, with the original headers.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "a skipped event was forwarded");
    assert_eq!(seen[0]["x-ltvboost-signature"], signature.as_str());
    assert_eq!(seen[0]["x-ltvboost-delivery"], "dlv_1");
    assert!(seen[0].contains_key("traceparent"));
    assert!(
        !seen[0].contains_key("x-forwarded-for"),
        "a tunnel's header was passed on"
    );
    assert!(
        !seen[0].contains_key("x-hop"),
        "a header the connection named was passed on"
    );
    for name in ["via", "true-client-ip", "tailscale-user-login"] {
        assert!(!seen[0].contains_key(name), "{name} was passed on");
    }
    // One JSON object per line, one line per request.
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["event_type"], "response.created");
    assert_eq!(lines[0]["event_id"], "evt_wanted");
    assert_eq!(lines[0]["forwarded"]["status"], 202);
    assert_eq!(lines[0]["body"]["id"], "evt_wanted");
    assert_eq!(lines[1]["skipped"], true);
    assert!(lines[2].get("body").is_none());
    assert_eq!(lines[1]["event_type"], "action.sent");
    assert_eq!(lines[2]["status"], 401);
    assert!(lines[2]["refused"].is_string());
    assert_eq!(lines[3]["status"], 504);
    assert!(lines[3]["forwarded"]["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_register_creates_a_temporary_endpoint_and_deletes_it_on_sigterm() {
    let (api, base) = fake_api(vec![(201, endpoint("wh_tmp")), (204, Value::Null)]).await;
    let port = free_port();
    let listen = start_listen(
        &[
            "--json",
            "--api-key",
            "tok_flag",
            "--api-base",
            &base,
            "--register",
            "https://tunnel.example/hook",
            "--events",
            "response.created",
        ],
        port,
    )
    .await;
    let listening: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The address is bound before the endpoint is registered.
    wait_until("the create request", || {
        !api.requests.lock().unwrap().is_empty()
    })
    .await;
    let registered = api.requests.lock().unwrap()[0].clone();
    assert_eq!(registered.0, "POST");
    assert_eq!(registered.3["url"], "https://tunnel.example/hook");
    assert_eq!(registered.3["events"], json!(["response.created"]));
    // The session verifies with the endpoint's own new secret, not the environment's.
    let secret = registered.3["secret"].as_str().unwrap().to_owned();
    let body = event_json("evt_tunnelled", "response.created", r#"{"id":"r"}"#);
    let own = sign(
        &ltvboost_webhooks::signature::Secret::new(secret).unwrap(),
        &body,
    );
    assert_eq!(
        post(listening, &[("x-ltvboost-signature", &own)], &body)
            .await
            .status,
        200
    );
    assert_eq!(post_signed(listening, &body).await.status, 401);
    let (lines, stderr, code) = stop(listen).await;
    assert_eq!(code, Some(0), "{stderr}");
    let requests = api.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (requests[1].0.as_str(), requests[1].1.as_str()),
        ("DELETE", "/v1/webhooks/wh_tmp")
    );
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["registered"], "wh_tmp");
    assert_eq!(lines[1]["event_id"], "evt_tunnelled");
    assert_eq!(lines.last().unwrap()["deleted"], "wh_tmp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_keep_unknown_events_and_fields_and_delete_asks_on_a_terminal() {
    let newer = json!({
        "id": "wh_1",
        "url": "https://app.example/hook",
        "events": ["response.created", "quiz.archived"],
        "description": "CRM sync",
        "secret": "never printed by get",
        "signing_secret": "never printed either",
        "delivery": {"retries": 5, "auth_token": "nor this"},
    });
    let (api, base) = fake_api(vec![
        (200, newer.clone()),
        (200, newer.clone()),
        (201, newer.clone()),
        (204, Value::Null),
    ])
    .await;
    let api_flags = ["--api-key", "tok_flag", "--api-base", base.as_str()];
    let text = ltvboost(
        &[&["endpoints", "get", "wh_1"][..], &api_flags].concat(),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        stdout(&text).trim(),
        "wh_1 https://app.example/hook response.created,quiz.archived"
    );
    let json_out = ltvboost(
        &[&["endpoints", "get", "wh_1", "--json"][..], &api_flags].concat(),
        &[],
        b"",
    )
    .await;
    let parsed: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(
        parsed["events"],
        json!(["response.created", "quiz.archived"])
    );
    assert_eq!(parsed["description"], "CRM sync");
    assert!(parsed.get("secret").is_none(), "{parsed}");
    assert!(parsed.get("signing_secret").is_none(), "{parsed}");
    assert_eq!(parsed["delivery"], json!({"retries": 5}), "{parsed}");
    let created = ltvboost(
        &[
            &[
                "endpoints",
                "create",
                "https://app.example/hook",
                "response.created,quiz.archived",
            ][..],
            &api_flags,
        ]
        .concat(),
        &[],
        b"",
    )
    .await;
    assert_eq!(created.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&created.stderr).contains("warning: quiz.archived"));
    // Off a terminal, delete does not ask (scripts); on one, it does.
    let deleted = ltvboost(
        &[&["endpoints", "delete", "wh_1"][..], &api_flags].concat(),
        &[],
        b"",
    )
    .await;
    assert_eq!(deleted.status.code(), Some(0));
    let exe = assert_cmd::cargo::cargo_bin("ltvboost");
    let declined = tokio::task::spawn_blocking(move || {
        let mut script = std::process::Command::new("script")
            .args(["-qec"])
            .arg(format!(
                "{} endpoints delete wh_1 --api-key tok_flag --api-base {base}",
                exe.display()
            ))
            .arg("/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script(1), from util-linux");
        std::thread::sleep(std::time::Duration::from_millis(500));
        std::io::Write::write_all(&mut script.stdin.take().unwrap(), b"n\n").unwrap();
        script.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&declined.stdout);
    assert!(shown.contains("delete the endpoint wh_1? [y/N]"), "{shown}");
    assert!(shown.contains("wh_1 not deleted"), "{shown}");
    let requests = api.requests.lock().unwrap();
    assert_eq!(
        requests[2].3["events"],
        json!(["response.created", "quiz.archived"])
    );
    assert_eq!(requests.len(), 4, "the declined delete was sent");
}

#[tokio::test]
async fn completions_load_in_their_shells_and_help_shows_the_environment() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ltvboost(&["completions", shell], &[], b"").await;
        assert_eq!(script.status.code(), Some(0));
        assert!(stdout(&script).contains("ltvboost"));
        if shell == "bash" {
            let path = temp_path("ltvboost-completion.bash");
            std::fs::write(&path, &script.stdout).unwrap();
            let checked = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .status()
                .unwrap();
            assert!(checked.success());
            let loaded = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("source {} && complete -p ltvboost", path.display()))
                .output()
                .unwrap();
            assert!(loaded.status.success());
            assert!(String::from_utf8_lossy(&loaded.stdout).contains("ltvboost"));
            let _ = std::fs::remove_file(path);
        }
    }
    let help = ltvboost(
        &["listen", "--help"],
        &[("LTVBOOST_WEBHOOK_SECRET", "hidden-value")],
        b"",
    )
    .await;
    let help = stdout(&help);
    for variable in [
        "LTVBOOST_WEBHOOK_SECRET",
        "LTVBOOST_API_TOKEN",
        "LTVBOOST_API_BASE",
        "LTVBOOST_LOG_FORMAT",
    ] {
        assert!(help.contains(variable), "{variable}: {help}");
    }
    assert!(!help.contains("hidden-value"), "a secret in --help");
    let queue = ltvboost(&["queue", "--help"], &[], b"").await;
    assert!(
        stdout(&queue).contains("LTVBOOST_QUEUE_URL")
            && stdout(&queue).contains("LTVBOOST_NAMESPACE")
    );
    let signed = ltvboost(&["sign", "--json", "--secret", SECRET], &[], b"{}").await;
    let signed: Value = serde_json::from_slice(&signed.stdout).unwrap();
    assert_eq!(signed["signature"], sign(&secret(), b"{}"));
}

#[tokio::test]
async fn the_library_warnings_reach_stderr_at_the_level_asked_without_colour_off_a_terminal() {
    // A short secret: the library warns.
    let warned = ltvboost(&["sign", "--secret", "short"], &[], b"{}").await;
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(stderr.contains("shorter than recommended"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour off a terminal: {stderr:?}"
    );
    let quiet = ltvboost(
        &["sign", "--secret", "short", "--log-level", "error"],
        &[],
        b"{}",
    )
    .await;
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let json_logs = ltvboost(
        &["sign", "--secret", "short"],
        &[("LTVBOOST_LOG_FORMAT", "json")],
        b"{}",
    )
    .await;
    let line: Value = serde_json::from_slice(&json_logs.stderr).unwrap();
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["fields"]["len"], 5);
    let bad = ltvboost(
        &["sign", "--secret", SECRET, "--log-level", "=nonsense=="],
        &[],
        b"{}",
    )
    .await;
    assert_eq!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--log-level"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_interrupted_while_registering_says_the_endpoint_may_exist() {
    // 0: the API applies the request and never answers.
    let (api, base) = fake_api(vec![(0, endpoint("wh_late"))]).await;
    let port = free_port();
    let listen = start_registering(&api, &base, port, &[]).await;
    let (_, stderr, code) = stop(listen).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("interrupted while registering"), "{stderr}");
    assert!(stderr.contains("ltvboost endpoints list"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_that_cannot_delete_its_endpoint_says_how_to() {
    // The create succeeds; the delete meets an API that only fails.
    let (api, base) = fake_api(vec![(201, endpoint("wh_stuck"))]).await;
    let port = free_port();
    let listen = start_registering(&api, &base, port, &["--api-timeout", "1"]).await;
    // Served once the create is answered.
    let body = event_json("evt_unsigned", "response.created", r#"{"id":"r"}"#);
    assert_eq!(
        post(format!("127.0.0.1:{port}").parse().unwrap(), &[], &body)
            .await
            .status,
        401
    );
    let (_, stderr, code) = stop(listen).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("could not delete the temporary endpoint wh_stuck"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ltvboost endpoints delete wh_stuck"),
        "{stderr}"
    );
}

/// The listen process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Writes `request` (a failed write is fine: the server may answer and
/// close before the body is sent), then reads the answer, waiting at most
/// `within`.
async fn exchange_within(
    addr: SocketAddr,
    request: &[u8],
    within: std::time::Duration,
) -> Option<Reply> {
    use tokio::io::AsyncWriteExt;
    tokio::time::timeout(within, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let _ = stream.write_all(request).await;
        Some(read_reply(&mut stream).await)
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_answers_genuine_deliveries_through_a_slow_body_flood_and_silent_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{Duration, Instant, sleep};
    let port = free_port();
    let listen = start_listen(&[], port).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let mut attackers = tokio::task::JoinSet::new();
    // 1 100 connections declaring a 1 MiB body under a well-formed forged
    // signature, trickling a byte every 5 s; reopened when closed.
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         content-length: 1048576\r\nx-ltvboost-signature: sha256={}\r\n\r\n",
        "ab".repeat(32)
    );
    for _ in 0..1100 {
        let head = head.clone();
        attackers.spawn(async move {
            while Instant::now() < until {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    sleep(Duration::from_millis(200)).await;
                    continue;
                };
                if stream.write_all(head.as_bytes()).await.is_ok() {
                    while stream.write_all(b"{").await.is_ok() {
                        sleep(Duration::from_secs(5)).await;
                    }
                }
                sleep(Duration::from_millis(200)).await;
            }
        });
    }
    // 1 100 connections that send nothing; reopened when closed.
    for _ in 0..1100 {
        attackers.spawn(async move {
            while Instant::now() < until {
                if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
                    let _ = stream.read(&mut [0; 64]).await;
                }
                sleep(Duration::from_millis(200)).await;
            }
        });
    }
    sleep(Duration::from_secs(3)).await;
    let mut answered = Vec::new();
    for n in 0..10 {
        let body = event_json(&format!("evt_flood_{n}"), "response.created", "{}");
        let request = post_request(
            PATH,
            &[("x-ltvboost-signature", &sign(&secret(), &body))],
            &body,
        );
        let reply = exchange_within(addr, &request, Duration::from_secs(10)).await;
        answered.push(reply.map(|r| r.status));
        sleep(Duration::from_millis(500)).await;
    }
    let peak = peak_rss_kib(listen.id());
    attackers.abort_all();
    let (lines, stderr, code) = stop(listen).await;
    assert_eq!(answered, vec![Some(200); 10], "{stderr}");
    assert!(peak <= 256 * 1024, "peak RSS {peak} KiB");
    assert_eq!(code, Some(0), "{stderr}");
    for n in 0..10 {
        let line = format!("response.created evt_flood_{n} (secret #0)");
        assert!(lines.contains(&line), "{line} not printed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_refuses_before_the_body_and_by_size_then_serves_the_next() {
    let port = free_port();
    let listen = start_listen(&["--json"], port).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let within = std::time::Duration::from_secs(10);
    // No signature, 10 MiB declared and none of it sent: answered from the head.
    let unsigned = format!(
        "POST {PATH} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        10 << 20
    );
    let reply = exchange_within(addr, unsigned.as_bytes(), within)
        .await
        .expect("no answer without the body");
    assert_eq!(reply.status, 401, "{reply:?}");
    // The same with Expect: 100-continue: refused, never invited to send.
    let expecting = unsigned.replace("\r\n\r\n", "\r\nexpect: 100-continue\r\n\r\n");
    let reply = exchange_within(addr, expecting.as_bytes(), within)
        .await
        .expect("no answer to Expect: 100-continue");
    assert_eq!(reply.status, 401, "{reply:?}");
    // A signed 3 MiB body: 413, and the next delivery is served.
    let mut big = event_json("evt_big", "response.created", "{}");
    big.truncate(big.len() - 1);
    big.extend_from_slice(format!(",\"pad\":\"{}\"}}", "x".repeat(3 << 20)).as_bytes());
    let signature = sign(&secret(), &big);
    let request = post_request(PATH, &[("x-ltvboost-signature", &signature)], &big);
    let reply = exchange_within(addr, &request, within).await.unwrap();
    assert_eq!(reply.status, 413, "{reply:?}");
    let next = event_json("evt_after_big", "response.created", "{}");
    assert_eq!(post_signed(addr, &next).await.status, 200);
    let (lines, stderr, code) = stop(listen).await;
    assert_eq!(code, Some(0), "{stderr}");
    let statuses: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["status"].clone())
        .collect();
    assert_eq!(statuses, [401, 401, 413, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_control_characters_from_a_signed_event_escaped() {
    let body = ltvboost_webhooks::testing::EventBuilder::of_type("response.\u{1b}[2Jcreated\u{7}")
        .id("evt_\u{1b}]0;owned\u{7}\u{9b}31m\u{202e}")
        .data(json!({"note": "\u{1b}[31mred\u{7}"}))
        .to_bytes();
    for mode in [&["--print-body"][..], &["--json", "--print-body"][..]] {
        let port = free_port();
        let listen = start_listen(mode, port).await;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(post_signed(addr, &body).await.status, 200);
        let (lines, stderr, code) = stop(listen).await;
        assert_eq!(code, Some(0), "{stderr}");
        let printed = lines.join("\n");
        for c in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
            assert!(!printed.contains(c), "{mode:?} printed {c:?}: {printed:?}");
            assert!(!stderr.contains(c), "{mode:?} logged {c:?}: {stderr:?}");
        }
        if mode.contains(&"--json") {
            let line: Value = serde_json::from_str(&lines[0]).unwrap();
            assert_eq!(line["event_id"], "evt_\u{1b}]0;owned\u{7}\u{9b}31m\u{202e}");
        } else {
            assert!(
                printed.starts_with("response.\\u{1b}[2Jcreated\\u{7} evt_\\u{1b}]0;owned"),
                "{printed}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_output_shows_what_came_from_redis_escaped_and_raw_only_when_asked() {
    use ltvboost_webhooks::handler::Handlers;
    use ltvboost_webhooks::queue::Worker;
    let url = test_redis_url();
    let namespace = format!(
        "cli-esc-{}",
        ltvboost_webhooks::dedupe::ClaimToken::random()
    );
    let queue = namespaced_queue(&url, &namespace).await;
    // Valid JSON carries C0 controls only as escapes, but C1 and
    // bidirectional controls, DEL and a carriage return as they are.
    let body = "{\"id\":\"evt_\\u001b[2J\\u0007\",\"type\":\"response.created\",\r\"data\":{\"id\":\"r\u{9b}31m\u{202e}\u{7f}\"}}"
        .as_bytes()
        .to_vec();
    queue
        .enqueue(&verified_delivery(body.clone()))
        .await
        .unwrap();
    let worker =
        Worker::new(queue.clone(), verifier(), Handlers::responses(AlwaysFails)).max_attempts(1);
    let (stop_worker, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    while queue.stats().await.unwrap().dead_letters < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(stop_worker);
    task.await.unwrap();
    let env = [
        ("LTVBOOST_QUEUE_URL", url.as_str()),
        ("LTVBOOST_NAMESPACE", namespace.as_str()),
    ];
    let listed = ltvboost(&["queue", "dead", "list"], &env, b"").await;
    let text = stdout(&listed);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    assert_eq!(fields[2], "evt_\\u{1b}[2J\\u{7}", "{text:?}");
    let id = fields[0];
    let shown = ltvboost(&["queue", "dead", "show", id], &env, b"").await;
    let shown = stdout(&shown);
    for c in ['\u{9b}', '\u{202e}', '\u{7f}', '\r'] {
        assert!(!shown.contains(c), "{c:?} in {shown:?}");
    }
    assert!(shown.contains("\\u{9b}31m\\u{202e}\\u{7f}"), "{shown:?}");
    let raw = ltvboost(&["queue", "dead", "show", "--raw", id], &env, b"").await;
    assert_eq!(raw.stdout, [body.clone(), b"\n".to_vec()].concat());
    let json_out = ltvboost(&["--json", "queue", "dead", "show", id], &env, b"").await;
    let line = stdout(&json_out);
    assert!(
        !line.contains('\u{9b}') && !line.contains('\u{202e}'),
        "{line:?}"
    );
    let parsed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["event"]["data"]["id"], "r\u{9b}31m\u{202e}\u{7f}");
}

/// Starts `ltvboost listen --register` against `base` with stdout closed
/// from the start.
fn listen_with_stdout_closed(port: u16, base: &str, json_out: bool) -> std::process::Child {
    let mut command = std::process::Command::cargo_bin("ltvboost").unwrap();
    command
        .args(["listen", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--api-key", "tok_flag", "--api-base", base])
        .args(["--register", "https://tunnel.example/hook"])
        .env_remove("LTVBOOST_WEBHOOK_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if json_out {
        command.arg("--json");
    }
    let mut child = command.spawn().unwrap();
    drop(child.stdout.take());
    child
}

/// Waits for `child` to exit: its stderr and exit code.
async fn exited(mut child: std::process::Child) -> (String, Option<i32>) {
    tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (stderr, child.wait().unwrap().code())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_register_deletes_its_endpoint_when_stdout_is_closed() {
    // --json: the "registered" line itself cannot be written.
    let (api, base) = fake_api(vec![(201, endpoint("wh_mute")), (204, Value::Null)]).await;
    let child = listen_with_stdout_closed(free_port(), &base, true);
    let (stderr, code) = exited(child).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("writing to stdout"), "{stderr}");
    let requests = api.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        (requests[1].0.as_str(), requests[1].1.as_str()),
        ("DELETE", "/v1/webhooks/wh_mute")
    );

    // Text: the endpoint is announced on stderr; the first delivery's line
    // cannot be written, and the run ends with the endpoint deleted.
    let (api, base) = fake_api(vec![(201, endpoint("wh_mute2")), (204, Value::Null)]).await;
    let port = free_port();
    let child = listen_with_stdout_closed(port, &base, false);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_listener(addr).await;
    wait_until("the create request", || {
        !api.requests.lock().unwrap().is_empty()
    })
    .await;
    let secret = api.requests.lock().unwrap()[0].3["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = event_json("evt_unseen", "response.created", "{}");
    let own = sign(
        &ltvboost_webhooks::signature::Secret::new(secret).unwrap(),
        &body,
    );
    // Served once the create is answered; answered whatever stdout is.
    let reply = post(addr, &[("x-ltvboost-signature", &own)], &body).await;
    assert_eq!(reply.status, 200);
    let (stderr, code) = exited(child).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let requests = api.requests.lock().unwrap().clone();
    assert_eq!(requests.last().unwrap().0, "DELETE", "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_register_asked_twice_to_stop_deletes_its_endpoint_at_once() {
    // The first delete is applied and never answered; the second is.
    let (api, base) = fake_api(vec![
        (201, endpoint("wh_twice")),
        (0, Value::Null),
        (204, Value::Null),
    ])
    .await;
    let port = free_port();
    let listen = start_registering(&api, &base, port, &[]).await;
    let term = |pid: u32| {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    };
    // Served (so registered): answered once the create is.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let body = event_json("evt_unsigned", "response.created", "{}");
    assert_eq!(post(addr, &[], &body).await.status, 401);
    // Stopped once: the delete is sent, and hangs.
    term(listen.id());
    wait_until("the first delete", || {
        api.requests.lock().unwrap().len() >= 2
    })
    .await;
    // Stopped again: a new delete at once, within its short deadline.
    term(listen.id());
    let (_, stderr, code) = stop(listen).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("deleting the temporary endpoint wh_twice now"),
        "{stderr}"
    );
    assert!(
        stderr.contains("deleted the temporary endpoint wh_twice"),
        "{stderr}"
    );
    let requests = api.requests.lock().unwrap().clone();
    let deletes: Vec<&str> = requests
        .iter()
        .filter(|r| r.0 == "DELETE")
        .map(|r| r.1.as_str())
        .collect();
    assert_eq!(deletes, ["/v1/webhooks/wh_twice"; 2], "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_follows_the_secret_file_without_a_restart() {
    let dir = TempDir::new("listen-file");
    let file = dir.join("secrets");
    let (old, new) = (
        "listen-old-secret-0123456789",
        "listen-new-secret-0123456789",
    );
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let port = free_port();
    let listen = std::process::Command::cargo_bin("ltvboost")
        .unwrap()
        .args(["listen", "--addr", &format!("127.0.0.1:{port}")])
        .env_remove("LTVBOOST_WEBHOOK_SECRET")
        .env("LTVBOOST_WEBHOOK_SECRET_FILE", &file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_listener(addr).await;
    let deliver = |id: &str, secret: &str| {
        let body = event_json(id, "response.created", r#"{"id":"r"}"#);
        let signature = ltvboost_webhooks::signature::sign(
            &ltvboost_webhooks::signature::Secret::new(secret).unwrap(),
            &body,
        );
        async move {
            post(addr, &[("x-ltvboost-signature", &signature)], &body)
                .await
                .status
        }
    };
    assert_eq!(deliver("evt_file_1", old).await, 200);
    assert_eq!(deliver("evt_file_2", new).await, 401);
    std::fs::write(&file, format!("{new}\n{old}\n")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while deliver("evt_file_2", new).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new secret never took"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (lines, stderr, code) = stop(listen).await;
    assert_eq!(code, Some(0), "{stderr}");
    let text = lines.join("\n");
    assert!(
        text.contains("response.created evt_file_1 (secret #0)"),
        "{text}"
    );
    assert!(
        text.contains("response.created evt_file_2 (secret #0)"),
        "{text}"
    );
    assert!(!stderr.contains(old) && !stderr.contains(new), "{stderr}");

    // Beside LTVBOOST_WEBHOOK_SECRET it is refused, naming both.
    let refused = ltvboost(
        &["listen", "--addr", "127.0.0.1:0"],
        &[
            ("LTVBOOST_WEBHOOK_SECRET", old),
            ("LTVBOOST_WEBHOOK_SECRET_FILE", "/nonexistent"),
        ],
        b"",
    )
    .await;
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("LTVBOOST_WEBHOOK_SECRET and LTVBOOST_WEBHOOK_SECRET_FILE"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_writes_the_new_secret_into_the_file_a_running_receiver_follows() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rotate-file");
    let (file, new_file) = (dir.join("secrets"), dir.join("new-secret"));
    let old = "rotate-into-file-old-secret-0123";
    std::fs::write(&file, format!("# the receivers' secrets\n{old}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Followed through a link, as secret volumes hand files over: the link stays.
    let link = dir.join("secrets-link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let port = free_port();
    let mut receiver = std::process::Command::new(example("receiver"))
        .env("LTVBOOST_WEBHOOK_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("LTVBOOST_WEBHOOK_SECRET")
        .env("LTVBOOST_WEBHOOK_SECRET_FILE", &file)
        .env_remove("LTVBOOST_REDIS_URL")
        .env_remove("LTVBOOST_QUEUE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_listener(addr).await;

    // A file that holds no secret is refused, and nothing is written.
    let empty = dir.join("empty");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let rotate = |update: std::path::PathBuf| {
        let new_file = new_file.clone();
        async move {
            ltvboost(
                &[
                    "endpoints",
                    "rotate",
                    "wh_1",
                    "--new-secret-file",
                    new_file.to_str().unwrap(),
                    "--update-secret-file",
                    update.to_str().unwrap(),
                ],
                &[],
                b"",
            )
            .await
        }
    };
    let refused = rotate(empty.clone()).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(!new_file.exists());
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "# nothing\n");

    // Step 1 into the followed file: new first, old kept, 0600.
    let prepared = rotate(link.clone()).await;
    assert_eq!(
        prepared.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&prepared.stderr)
    );
    let new = std::fs::read_to_string(&new_file)
        .unwrap()
        .trim()
        .to_owned();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, format!("{new}\n# the receivers' secrets\n{old}\n"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!stdout(&prepared).contains(&new), "the secret was printed");

    // The running receiver verifies with both, without a restart.
    let body = event_json("evt_rotated", "response.created", r#"{"id":"r"}"#);
    let signature = sign(
        &ltvboost_webhooks::signature::Secret::new(new.as_str()).unwrap(),
        &body,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while post(addr, &[("x-ltvboost-signature", &signature)], &body)
        .await
        .status
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new secret never took"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let body = event_json("evt_still_old", "response.created", r#"{"id":"r"}"#);
    let signature = sign(
        &ltvboost_webhooks::signature::Secret::new(old).unwrap(),
        &body,
    );
    assert_eq!(
        post(addr, &[("x-ltvboost-signature", &signature)], &body)
            .await
            .status,
        200
    );
    assert!(
        receiver.try_wait().unwrap().is_none(),
        "the receiver restarted"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &receiver.id().to_string()])
        .status();
    assert_eq!(receiver.wait().unwrap().code(), Some(0));
}
