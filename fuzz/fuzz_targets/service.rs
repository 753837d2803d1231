//! The whole tower service on arbitrary requests: always a response, never a
//! panic, and never a 2xx for a body whose signature does not verify.
#![no_main]

use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::Bytes;
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use ltvboost_webhooks::dedupe::NoDedupe;
use ltvboost_webhooks::handler::{ActionHandler, FallbackHandler, Handlers, ResponseHandler, SegmentHandler};
use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
use ltvboost_webhooks::signature::{SIGNATURE_HEADER, Secret, Verifier, sign};
use tower_layer::Layer;
use tower_service::Service;

/// Every family acknowledged by the traits' default methods.
struct Acknowledge;
impl ResponseHandler for Acknowledge {}
impl ActionHandler for Acknowledge {}
impl SegmentHandler for Acknowledge {}
impl FallbackHandler for Acknowledge {}

#[derive(Debug, Arbitrary)]
struct Input {
    method: u8,
    path: u8,
    /// Sign the body correctly (so the fuzzer reaches parsing and dispatch).
    sign_it: bool,
    /// Corrupt one byte of the correct digest.
    corrupt: Option<u8>,
    headers: Vec<(u8, Vec<u8>)>,
    body: Vec<u8>,
}

const METHODS: [&str; 5] = ["POST", "GET", "PUT", "DELETE", "PATCH"];
const PATHS: [&str; 4] = ["/webhooks/ltvboost", "/healthz", "/webhooks/ltvboost/", "/"];
const HEADER_NAMES: [&str; 4] = [SIGNATURE_HEADER, "content-length", "content-type", "x-other"];

fn secret() -> &'static Secret {
    static SECRET: OnceLock<Secret> = OnceLock::new();
    SECRET.get_or_init(|| Secret::new("fuzz-service-secret-000000").unwrap())
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fuzz_target!(|input: Input| {
    let mut builder = http::Request::builder()
        .method(METHODS[usize::from(input.method) % METHODS.len()])
        .uri(PATHS[usize::from(input.path) % PATHS.len()]);
    if input.sign_it {
        let mut header = sign(secret(), &input.body).into_bytes();
        if let Some(at) = input.corrupt {
            let i = 7 + usize::from(at) % 64;
            header[i] = if header[i] == b'0' { b'1' } else { b'0' };
        }
        builder = builder.header(SIGNATURE_HEADER, header);
    }
    for (name, value) in &input.headers {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            builder = builder.header(HEADER_NAMES[usize::from(*name) % HEADER_NAMES.len()], value);
        }
    }
    let Ok(request) = builder.body(Full::new(Bytes::from(input.body.clone()))) else { return };

    // Would the signature, taken on its own, verify? (One header, matching digest.)
    let headers = request.headers().get_all(SIGNATURE_HEADER).iter().collect::<Vec<_>>();
    let verifier = Verifier::new([secret().clone()]).unwrap();
    let verifies = headers.len() == 1 && verifier.verify(headers[0].as_bytes(), input.body.clone()).is_ok();
    let on_path = request.uri().path() == PATHS[0];

    // Claims always succeed: the fuzzer explores parsing and dispatch, not
    // memory growth from millions of distinct ids.
    let config = WebhookConfig::new(verifier).dedupe_store(NoDedupe).body_limit(4096);
    let mut service = WebhookLayer::new(config, Handlers::all(Acknowledge)).layer(tower_service_fn());
    let response = runtime().block_on(async {
        poll_fn(|cx| service.poll_ready(cx)).await.unwrap();
        service.call(request).await.unwrap()
    });
    if on_path && response.status().is_success() {
        assert!(verifies, "2xx for a body whose signature does not verify");
    }
});

/// The wrapped service: answers 204 to anything that passes through.
fn tower_service_fn() -> impl Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<Full<Bytes>>,
    Error = Infallible,
    Future = std::future::Ready<Result<http::Response<Full<Bytes>>, Infallible>>,
> + Clone {
    #[derive(Clone)]
    struct Passed;
    impl Service<http::Request<Full<Bytes>>> for Passed {
        type Response = http::Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<Full<Bytes>>) -> Self::Future {
            let mut response = http::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            std::future::ready(Ok(response))
        }
    }
    Passed
}
