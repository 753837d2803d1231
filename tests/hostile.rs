//! Hostile input over real HTTP: every malformed header form, body, method
//! and path we could think of. Each case names the status it must get, and no
//! case may reach a handler (fallbacks included). Deep or huge JSON must
//! neither blow the stack nor the heap.

mod common;

use std::time::Duration;

use axum::Router;
use common::*;
use ltvboost_webhooks::WebhookLayer;
use ltvboost_webhooks::signature::{Secret, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: usize = 64 * 1024;

/// One hostile request: raw bytes written to a fresh connection.
struct Case {
    name: String,
    request: Vec<u8>,
    expect: u16,
}

fn case(name: impl Into<String>, request: Vec<u8>, expect: u16) -> Case {
    Case {
        name: name.into(),
        request,
        expect,
    }
}

fn head(method: &str, path: &str, extra: &[String]) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head
}

/// A request with `content-length` matching `body`, and the given header lines.
fn with_body(method: &str, path: &str, lines: &[String], body: &[u8]) -> Vec<u8> {
    let mut bytes = head(method, path, lines).into_bytes();
    bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn sig_line(value: &str) -> String {
    format!("x-ltvboost-signature: {value}")
}

/// POST to the webhook path with exactly these header lines (framing
/// included: no content-length is added) and these body bytes.
fn raw_post(lines: &[String], body: &[u8]) -> Vec<u8> {
    let mut bytes = head("POST", PATH, lines).into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

/// POST to the webhook path, correctly signed.
fn signed(body: &[u8]) -> Vec<u8> {
    with_body("POST", PATH, &[sig_line(&sign(&secret(), body))], body)
}

/// POST to the webhook path with a raw signature header value (bytes, so that
/// non-ASCII and control characters can be sent as is).
fn with_sig_bytes(value: &[u8], body: &[u8]) -> Vec<u8> {
    let mut bytes = head("POST", PATH, &[]).into_bytes();
    bytes.extend_from_slice(b"x-ltvboost-signature: ");
    bytes.extend_from_slice(value);
    bytes.extend_from_slice(format!("\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn valid_body() -> Vec<u8> {
    event_json("evt_hostile", "response.created", r#"{"id":"rsp_1"}"#)
}

fn hex_of(body: &[u8]) -> String {
    sign(&secret(), body)["sha256=".len()..].to_owned()
}

fn header_cases() -> Vec<Case> {
    let body = valid_body();
    let hex = hex_of(&body);
    let good = format!("sha256={hex}");
    let sig = |v: &str| with_sig_bytes(v.as_bytes(), &body);
    let other = Secret::new("not-the-receivers-secret-000").unwrap();
    vec![
        case("header missing", with_body("POST", PATH, &[], &body), 401),
        case(
            "header duplicated, both valid",
            with_body("POST", PATH, &[sig_line(&good), sig_line(&good)], &body),
            401,
        ),
        case(
            "header duplicated, valid then bogus",
            with_body(
                "POST",
                PATH,
                &[sig_line(&good), sig_line("sha256=00")],
                &body,
            ),
            401,
        ),
        case(
            "header duplicated, bogus then valid",
            with_body(
                "POST",
                PATH,
                &[sig_line("sha256=00"), sig_line(&good)],
                &body,
            ),
            401,
        ),
        case("header empty", sig(""), 401),
        case("header only spaces", sig("    "), 401),
        case("scheme missing (bare hex)", sig(&hex), 401),
        case("scheme sha1", sig(&format!("sha1={hex}")), 401),
        case("scheme sha512", sig(&format!("sha512={hex}")), 401),
        case("scheme upper case", sig(&format!("SHA256={hex}")), 401),
        case("scheme mixed case", sig(&format!("Sha256={hex}")), 401),
        case("scheme with colon", sig(&format!("sha256:{hex}")), 401),
        case(
            "scheme without separator",
            sig(&format!("sha256{hex}")),
            401,
        ),
        case("space before equals", sig(&format!("sha256 ={hex}")), 401),
        case("space after equals", sig(&format!("sha256= {hex}")), 401),
        case(
            "tab inside digest",
            sig(&format!("sha256={}\t{}", &hex[..32], &hex[32..]))[..].to_vec(),
            401,
        ),
        case(
            "space inside digest",
            sig(&format!("sha256={} {}", &hex[..32], &hex[32..])),
            401,
        ),
        case("62 hex digits", sig(&format!("sha256={}", &hex[..62])), 401),
        case(
            "63 hex digits (odd)",
            sig(&format!("sha256={}", &hex[..63])),
            401,
        ),
        case("65 hex digits (odd)", sig(&format!("sha256={hex}0")), 401),
        case("66 hex digits", sig(&format!("sha256={hex}00")), 401),
        case("128 hex digits", sig(&format!("sha256={hex}{hex}")), 401),
        case(
            "non-hex letters",
            sig(&format!("sha256=zz{}", &hex[2..])),
            401,
        ),
        case(
            "hex with 0x prefix",
            sig(&format!("sha256=0x{}", &hex[2..])),
            401,
        ),
        case("trailing garbage", sig(&format!("{good}x")), 401),
        case("two values, comma", sig(&format!("{good},{good}")), 401),
        case(
            "two values, comma space",
            sig(&format!("{good}, {good}")),
            401,
        ),
        case(
            "two values, semicolon",
            sig(&format!("{good};sha256=00")),
            401,
        ),
        case(
            "non-ASCII in digest (UTF-8)",
            with_sig_bytes(format!("sha256={}é", &hex[..62]).as_bytes(), &body),
            401,
        ),
        case(
            "non-ASCII obs-text byte",
            with_sig_bytes(&[b"sha256=".as_slice(), &[0xff; 64]].concat(), &body),
            401,
        ),
        case(
            "NUL byte in header",
            with_sig_bytes(
                &[b"sha256=".as_slice(), &[0u8], &hex.as_bytes()[1..]].concat(),
                &body,
            ),
            400,
        ),
        case(
            "8 KiB header value",
            sig(&format!("sha256={}", "a".repeat(8192))),
            401,
        ),
        case(
            "all-zero digest",
            sig(&format!("sha256={}", "0".repeat(64))),
            401,
        ),
        case(
            "digest of the empty body",
            sig(&format!("sha256={}", hex_of(b""))),
            401,
        ),
        case(
            "digest of the body plus newline",
            sig(&format!("sha256={}", hex_of(&[&body[..], b"\n"].concat()))),
            401,
        ),
        case(
            "digest under another secret",
            sig(&sign(&other, &body)),
            401,
        ),
        case(
            "signature in another header",
            with_body(
                "POST",
                PATH,
                &[format!("x-ltvboost-signature-256: {good}")],
                &body,
            ),
            401,
        ),
        case(
            "signature in authorization",
            with_body("POST", PATH, &[format!("authorization: {good}")], &body),
            401,
        ),
    ]
}

fn body_cases() -> Vec<Case> {
    let deep_array = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let deep_object = format!(
        r#"{{"id":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    let deep_type = format!(r#"{{"type":{}{}}}"#, "[".repeat(20_000), "]".repeat(20_000));
    let valid = valid_body();
    let hex = hex_of(&valid);
    let signature = sig_line(&format!("sha256={hex}"));
    let chunked = "transfer-encoding: chunked".to_owned();
    // Declares 10 bytes, sends the whole body: the server reads 10 bytes,
    // which the signature (over the whole body) does not cover.
    let lie_short = raw_post(&[signature.clone(), "content-length: 10".into()], &valid);
    // Declares more than it sends, then waits: the read deadline answers.
    let declared = format!("content-length: {}", valid.len() + 100);
    let lie_long = raw_post(&[signature.clone(), declared], &valid);
    let huge = "content-length: 10737418240".to_owned();
    let huge_declared = raw_post(&[signature.clone(), huge.clone()], b"");
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
    let huge_chunked = raw_post(
        &[signature.clone(), chunked.clone()],
        chunk.repeat(8).as_bytes(),
    );
    let smuggle = raw_post(
        &[
            signature.clone(),
            chunked.clone(),
            "content-length: 5".into(),
        ],
        b"0\r\n\r\n",
    );
    let bad_chunk = raw_post(&[signature, chunked], b"zz\r\nhello\r\n0\r\n\r\n");
    let huge_unsigned = raw_post(&[huge], b"");
    let within_limit_whitespace = vec![b' '; LIMIT - 10];
    vec![
        case("empty body", signed(b""), 400),
        case("body huge by content-length", huge_declared, 413),
        case("body huge, chunked", huge_chunked, 413),
        case(
            "unsigned and huge: refused before reading",
            huge_unsigned,
            401,
        ),
        case("content-length shorter than the body", lie_short, 401),
        case("content-length longer than the body", lie_long, 408),
        // RFC 9112: transfer-encoding wins and content-length is ignored; the
        // (empty) chunked body then fails the signature over another body.
        case("both transfer-encoding and content-length", smuggle, 401),
        case("malformed chunk size", bad_chunk, 400),
        case(
            "invalid UTF-8",
            signed(b"{\"type\":\"response.created\",\"data\":\"\xff\xfe\"}"),
            400,
        ),
        case(
            "UTF-8 byte-order mark",
            signed(&[b"\xef\xbb\xbf".as_slice(), &valid].concat()),
            400,
        ),
        case("not JSON", signed(b"hello"), 400),
        case("truncated JSON", signed(&valid[..valid.len() - 1]), 400),
        case(
            "trailing garbage after JSON",
            signed(&[&valid[..], b"x"].concat()),
            400,
        ),
        case(
            "two JSON documents",
            signed(&[&valid[..], &valid[..]].concat()),
            400,
        ),
        case("JSON null", signed(b"null"), 400),
        case("JSON string", signed(b"\"response.created\""), 400),
        case(
            "JSON array",
            signed(b"[{\"type\":\"response.created\"}]"),
            400,
        ),
        case(
            "object without type",
            signed(br#"{"id":"evt_1","data":{}}"#),
            400,
        ),
        case("type is a number", signed(br#"{"type":7,"data":{}}"#), 400),
        case("type is null", signed(br#"{"type":null,"data":{}}"#), 400),
        case(
            "type is an array",
            signed(br#"{"type":["response.created"],"data":{}}"#),
            400,
        ),
        case(
            "type is an object",
            signed(br#"{"type":{"name":"response.created"},"data":{}}"#),
            400,
        ),
        case(
            "type is a boolean",
            signed(br#"{"type":true,"data":{}}"#),
            400,
        ),
        case(
            "duplicate type key",
            signed(br#"{"type":"response.created","type":"quiz.archived","data":{"id":"r"}}"#),
            400,
        ),
        case(
            "duplicate data key",
            signed(br#"{"type":"quiz.archived","data":{},"data":{}}"#),
            400,
        ),
        case(
            "duplicate id key",
            signed(br#"{"id":"a","id":"b","type":"quiz.archived","data":{}}"#),
            400,
        ),
        case(
            "NUL byte inside JSON",
            signed(b"{\"type\":\"quiz.archived\"\0,\"data\":{}}"),
            400,
        ),
        case(
            "unescaped control character in string",
            signed(b"{\"type\":\"quiz\x01archived\",\"data\":{}}"),
            400,
        ),
        case(
            "lone surrogate escape",
            signed(br#"{"type":"\ud800","data":{}}"#),
            400,
        ),
        case(
            "array nested 200 000 deep",
            signed(deep_array.as_bytes()),
            413,
        ),
        case(
            "array nested 30 000 deep",
            signed(format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).as_bytes()),
            400,
        ),
        case(
            "object nested 10 000 deep in id",
            signed(deep_object.as_bytes()),
            400,
        ),
        case("type nested 20 000 deep", signed(deep_type.as_bytes()), 400),
        case(
            "whitespace up to the limit",
            signed(&within_limit_whitespace),
            400,
        ),
        case(
            "event from 1970 (replay window)",
            signed(br#"{"type":"quiz.archived","created_at":"1970-01-01T00:00:00Z","data":{}}"#),
            400,
        ),
        case(
            "event from the year 3000",
            signed(br#"{"type":"quiz.archived","created_at":"3000-01-01T00:00:00Z","data":{}}"#),
            400,
        ),
        case(
            "event 48 hours old (unix seconds)",
            signed(
                format!(
                    r#"{{"type":"quiz.archived","created_at":{},"data":{{}}}}"#,
                    unix_now() - 48 * 3600
                )
                .as_bytes(),
            ),
            400,
        ),
    ]
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn method_and_path_cases() -> Vec<Case> {
    let body = valid_body();
    let good = sig_line(&sign(&secret(), &body));
    let bogus = sig_line("sha256=00");
    let mut cases: Vec<Case> = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"]
        .into_iter()
        .map(|m| {
            case(
                format!("method {m}"),
                with_body(m, PATH, std::slice::from_ref(&good), &body),
                405,
            )
        })
        .collect();
    cases.push(case(
        "method HEAD",
        head("HEAD", PATH, std::slice::from_ref(&good))
            .into_bytes()
            .into_iter()
            .chain(*b"\r\n")
            .collect(),
        405,
    ));
    cases.push(case(
        "method in lower case (post)",
        with_body("post", PATH, std::slice::from_ref(&good), &body),
        405,
    ));
    for path in [
        "/webhooks/ltvboost/",
        "/WEBHOOKS/LTVBOOST",
        "/webhooks//ltvboost",
        "//webhooks/ltvboost",
        "/webhooks/ltvboost%2F",
        "/webhooks/%6Ctvboost",
        "/webhooks/ltvboost/../ltvboost",
        "/webhooks",
    ] {
        cases.push(case(
            format!("path {path}"),
            with_body("POST", path, std::slice::from_ref(&good), &body),
            404,
        ));
    }
    cases.push(case(
        "query string, bogus signature",
        with_body("POST", &format!("{PATH}?x=1"), &[bogus], &body),
        401,
    ));
    cases.push(case(
        "absolute-form target on another path",
        with_body("POST", "http://t/other", std::slice::from_ref(&good), &body),
        404,
    ));
    cases
}

/// Writes the request (tolerating a server that stops reading), then reads the
/// status line of the answer.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.write_all(request).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&raw);
    text.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_status_and_reach_no_handler() {
    let recorder = Recorder::new();
    let config = config()
        .body_limit(LIMIT)
        .read_timeout(Duration::from_millis(500));
    let layer = WebhookLayer::new(config, recording(&recorder));
    let addr = serve(Router::new().layer(layer)).await;

    let cases: Vec<Case> = [header_cases(), body_cases(), method_and_path_cases()]
        .into_iter()
        .flatten()
        .collect();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let status = exchange(addr, &case.request).await;
        if status != Some(case.expect) {
            failures.push(format!(
                "{}: expected {}, got {status:?}",
                case.name, case.expect
            ));
        }
        if recorder.total() != 0 {
            failures.push(format!("{}: a handler ran", case.name));
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The receiver still serves, and the positive controls pass.
    assert_eq!(exchange(addr, &signed(&valid_body())).await, Some(200));
    let other = event_json("evt_hostile_upper", "response.created", r#"{"id":"rsp_1"}"#);
    let upper = format!("sha256={}", hex_of(&other).to_uppercase());
    assert_eq!(
        exchange(addr, &with_sig_bytes(upper.as_bytes(), &other)).await,
        Some(200),
        "upper-case hex digits verify"
    );
    assert_eq!(recorder.total(), 2);
}
