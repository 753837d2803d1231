//! The queue's own figures (`bench/queue/run.sh` drives it):
//!
//! ```sh
//! cargo run --release -p ltvboost-bench --features queue --bin queue_bench -- fill  redis://127.0.0.1:6390/ 200000
//! cargo run --release -p ltvboost-bench --features queue --bin queue_bench -- drain redis://127.0.0.1:6390/
//! ```
//!
//! * `fill URL N`: enqueues N distinct signed 1 KiB events, as receivers do.
//! * `drain URL`: one worker with a no-op handler, until no entry is left
//!   unread or pending; prints how many it handled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ltvboost_webhooks::event::{Envelope, ResponseCreated};
use ltvboost_webhooks::handler::{Delivery, HandlerResult, Handlers, ResponseHandler};
use ltvboost_webhooks::queue::{RedisQueue, Worker};
use ltvboost_webhooks::signature::{DEVELOPMENT_SECRET, Secret, Verifier, sign};

/// Counts calls, does nothing else.
struct Noop(Arc<AtomicU64>);

impl ResponseHandler for Noop {
    async fn created(&self, _: &Delivery, _: &ResponseCreated) -> HandlerResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A realistic 1 KiB `response.created` event with id `evt_<n>`.
fn event(n: u64) -> Vec<u8> {
    let answers: Vec<String> = (0..18)
        .map(|i| format!(r#"{{"question":"q{i}","answer":"answer number {i}"}}"#))
        .collect();
    format!(
        r#"{{"id":"evt_{n}","type":"response.created","created_at":"2026-11-28T00:00:00Z","data":{{"id":"rsp_8f3a9c2d","quiz_id":"quiz_onboarding","customer_id":"cus_1042","email":"ada@example.com","answers":[{}]}}}}"#,
        answers.join(",")
    )
    .into_bytes()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(url)) = (args.first(), args.get(1)) else {
        return Err("usage: queue_bench fill URL N | drain URL".into());
    };
    let queue = RedisQueue::connect(url).await.map_err(|e| e.to_string())?;
    match mode.as_str() {
        "fill" => {
            let total: u64 = args.get(2).map_or(Ok(100_000), |n| n.parse())?;
            let secret = Secret::new(DEVELOPMENT_SECRET)?;
            let verifier = Arc::new(Verifier::new([secret.clone()])?);
            let next = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let (queue, verifier, secret, next) = (
                    queue.clone(),
                    verifier.clone(),
                    secret.clone(),
                    next.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break;
                        }
                        let body = event(n);
                        let header = sign(&secret, &body);
                        let verified = verifier.verify(header.as_bytes(), body).expect("signed");
                        let envelope =
                            Envelope::from_bytes(verified.body().clone()).expect("parses");
                        let delivery = Delivery::new(envelope, &verified);
                        queue.enqueue(&delivery).await.expect("enqueued");
                    }
                }));
            }
            for task in tasks {
                task.await?;
            }
            println!("filled {total}");
        }
        "drain" => {
            let handled = Arc::new(AtomicU64::new(0));
            let worker = Worker::new(
                queue.clone(),
                Verifier::new([Secret::new(DEVELOPMENT_SECRET)?])?,
                Handlers::responses(Noop(handled.clone())),
            )
            .concurrency(64);
            let done = {
                let queue = queue.clone();
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if queue.stats().await.is_ok_and(|stats| stats.entries == 0) {
                            break;
                        }
                    }
                }
            };
            worker.run(done).await;
            println!("handled {}", handled.load(Ordering::Relaxed));
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    }
    Ok(())
}
