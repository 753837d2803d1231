//! Postgres (feature `postgres`), against a real Postgres cluster of the
//! test's own: handlers inside the delivery's transaction, the inbox, the
//! store without transactions, schemas, and the example receiver killed at
//! each step, started with Postgres down, and run across a Postgres restart.
#![cfg(feature = "postgres")]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ltvboost_webhooks::WebhookLayer;
use ltvboost_webhooks::handler::{Delivery, HandlerResult};
use ltvboost_webhooks::postgres::{
    InboxFilter, InboxOutcome, PostgresStore, Transaction, TransactionHandler, tokio_postgres,
};

/// Inserts `(event_id, event_type)` into `effects` through the transaction;
/// fails (after the insert) while `failures` is above zero; waits `delay`.
struct Effects {
    calls: AtomicUsize,
    failures: AtomicUsize,
    delay: Duration,
    /// Misbehaviour for the next call: swallow a failed statement, or send
    /// `COMMIT` itself.
    misbehave: Mutex<Option<Misbehaviour>>,
}

#[derive(Clone, Copy)]
enum Misbehaviour {
    SwallowFailedStatement,
    CommitItself,
}

impl Effects {
    fn new() -> Arc<Self> {
        Self::slow(Duration::ZERO)
    }

    fn slow(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            delay,
            misbehave: Mutex::new(None),
        })
    }
}

struct Shared(Arc<Effects>);

impl TransactionHandler for Shared {
    async fn handle(&self, delivery: &Delivery, transaction: &Transaction<'_>) -> HandlerResult {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        transaction
            .execute(
                "INSERT INTO effects (event_id, event_type) VALUES ($1, $2)",
                &[&delivery.id(), &delivery.type_name()],
            )
            .await?;
        tokio::time::sleep(self.0.delay).await;
        let misbehaviour = self.0.misbehave.lock().unwrap().take();
        match misbehaviour {
            Some(Misbehaviour::SwallowFailedStatement) => {
                // The pattern "ignore a duplicate-key error" written wrongly:
                // the error aborts the transaction.
                let _ = transaction.execute("SELECT 1 / 0", &[]).await;
            }
            Some(Misbehaviour::CommitItself) => transaction.batch_execute("COMMIT").await?,
            None => {}
        }
        let failing = self
            .0
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err("the handler failed after its insert".into());
        }
        Ok(())
    }
}

/// The same handler, with a `committed` hook that takes `after_commit`.
struct SlowAfterCommit(Shared, Duration);

impl TransactionHandler for SlowAfterCommit {
    async fn handle(&self, delivery: &Delivery, transaction: &Transaction<'_>) -> HandlerResult {
        self.0.handle(delivery, transaction).await
    }

    async fn committed(&self, _: &Delivery) {
        tokio::time::sleep(self.1).await;
    }
}

async fn effects_table(postgres: &PrivatePostgres) -> tokio_postgres::Client {
    let client = postgres.client().await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS effects (event_id text, event_type text)")
        .await
        .unwrap();
    client
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn receiver(store: PostgresStore, effects: &Arc<Effects>) -> SocketAddr {
    serve(WebhookLayer::in_transaction(config(), store, Shared(effects.clone())).endpoint()).await
}

#[tokio::test]
async fn a_handler_writes_through_the_transaction_and_its_retry_is_a_duplicate() {
    let postgres = PrivatePostgres::start();
    let client = effects_table(&postgres).await;
    let effects = Effects::new();
    let store = PostgresStore::new(&postgres.url()).unwrap();
    let addr = receiver(store.clone(), &effects).await;

    let body = event_json("evt_pg_1", "segment.ready", r#"{"id":"seg_1"}"#);
    let first = post_signed(addr, &body).await;
    assert_eq!(first.status, 200, "{first:?}");
    let retry = post_signed(addr, &body).await;
    assert_eq!(retry.status, 200, "{retry:?}");
    assert!(retry.body.contains("duplicate"), "{retry:?}");
    assert_eq!(effects.calls.load(Ordering::SeqCst), 1);
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 1);

    // The inbox holds the delivery once (the duplicate ran no handler),
    // with the body byte for byte.
    let inbox = store
        .inbox(&InboxFilter::default().event_id("evt_pg_1"))
        .await
        .unwrap();
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0].outcome, InboxOutcome::Handled);
    assert_eq!(inbox[0].event_type, "segment.ready");
    assert_eq!(inbox[0].body, body);
    assert!(
        inbox[0].received_at.ends_with('Z'),
        "{}",
        inbox[0].received_at
    );
}

/// A handler that hangs inside its transaction is dropped at the deadline:
/// the transaction rolls back (its insert with it) and frees its lock, the
/// answer is `500`, and the retry runs the handler and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_in_a_transaction_is_rolled_back_at_its_deadline() {
    let postgres = PrivatePostgres::start();
    let client = effects_table(&postgres).await;
    let effects = Effects::slow(Duration::from_secs(3600));
    let store = PostgresStore::new(&postgres.url()).unwrap();
    let config = config().handler_timeout(Duration::from_millis(500));
    let hung = serve(
        WebhookLayer::in_transaction(config, store.clone(), Shared(effects.clone())).endpoint(),
    )
    .await;
    let body = event_json("evt_pg_hung", "segment.ready", r#"{"id":"seg_1"}"#);
    assert_eq!(post_signed(hung, &body).await.status, 500);
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 0);
    // The retry, at a receiver whose handler does not hang.
    let prompt = Effects::new();
    let addr = receiver(store.clone(), &prompt).await;
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 1);
    let inbox = store
        .inbox(&InboxFilter::default().event_id("evt_pg_hung"))
        .await
        .unwrap();
    let outcomes: Vec<_> = inbox.iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [InboxOutcome::Failed, InboxOutcome::Handled]);
    assert!(
        inbox[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("did not finish")),
        "{inbox:?}"
    );
}

/// The `committed` hook runs once the connection is back in the pool:
/// more deliveries with a slow hook at once than the pool has connections
/// are all handled, none answered `503` for want of a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_committed_hooks_hold_no_pooled_connection() {
    let postgres = PrivatePostgres::start();
    let client = effects_table(&postgres).await;
    let effects = Effects::new();
    let store = PostgresStore::new(&postgres.url()).unwrap();
    let handler = SlowAfterCommit(Shared(effects.clone()), Duration::from_secs(7));
    let addr = serve(WebhookLayer::in_transaction(config(), store, handler).endpoint()).await;
    let posts: Vec<_> = (0..24)
        .map(|n| {
            let body = event_json(
                &format!("evt_hook_{n}"),
                "segment.ready",
                r#"{"id":"seg_1"}"#,
            );
            tokio::spawn(async move { post_signed(addr, &body).await.status })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.unwrap(), 200);
    }
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 24);
    assert_eq!(effects.calls.load(Ordering::SeqCst), 24);
}

#[tokio::test]
async fn a_failing_handler_rolls_back_its_writes_and_the_retry_runs_it() {
    let postgres = PrivatePostgres::start();
    let client = effects_table(&postgres).await;
    let effects = Effects::new();
    effects.failures.store(1, Ordering::SeqCst);
    let store = PostgresStore::new(&postgres.url()).unwrap();
    let addr = receiver(store.clone(), &effects).await;

    let body = event_json("evt_pg_fail", "action.failed", r#"{"id":"act_1"}"#);
    assert_eq!(post_signed(addr, &body).await.status, 500);
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 0);
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 1);
    assert_eq!(effects.calls.load(Ordering::SeqCst), 2);

    let inbox = store
        .inbox(&InboxFilter::default().event_type("action.failed"))
        .await
        .unwrap();
    let outcomes: Vec<_> = inbox.iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [InboxOutcome::Failed, InboxOutcome::Handled]);
    assert_eq!(
        inbox[0].error.as_deref(),
        Some("the handler failed after its insert")
    );
    assert_eq!(inbox[1].error, None);
}

#[tokio::test]
async fn a_handler_that_swallows_a_failed_statement_or_commits_itself_is_answered_500() {
    let postgres = PrivatePostgres::start();
    let client = effects_table(&postgres).await;
    let effects = Effects::new();
    let store = PostgresStore::new(&postgres.url()).unwrap();
    let addr = receiver(store.clone(), &effects).await;

    // A failed statement aborts the transaction; Postgres would turn the
    // COMMIT into a rollback without an error, and a 200 would lose the
    // event.
    *effects.misbehave.lock().unwrap() = Some(Misbehaviour::SwallowFailedStatement);
    let body = event_json("evt_swallowed", "segment.ready", r#"{"id":"seg_1"}"#);
    assert_eq!(post_signed(addr, &body).await.status, 500);
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 0);
    let retry = post_signed(addr, &body).await;
    assert_eq!(retry.status, 200, "{retry:?}");
    assert!(!retry.body.contains("duplicate"), "{retry:?}");
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 1);

    // A handler that commits itself is caught too (its writes stand, as
    // the done-record does: the 500 says something went wrong).
    *effects.misbehave.lock().unwrap() = Some(Misbehaviour::CommitItself);
    let body = event_json("evt_self_commit", "segment.ready", r#"{"id":"seg_2"}"#);
    assert_eq!(post_signed(addr, &body).await.status, 500);
    let failed = store
        .inbox(&InboxFilter::default().event_id("evt_self_commit"))
        .await
        .unwrap();
    let failure = failed
        .last()
        .and_then(|e| e.error.clone())
        .unwrap_or_default();
    assert!(
        failure.contains("ended the delivery's transaction itself"),
        "{failed:?}"
    );
    let swallowed = store
        .inbox(&InboxFilter::default().event_id("evt_swallowed"))
        .await
        .unwrap();
    assert_eq!(swallowed[0].outcome, InboxOutcome::Failed);
    assert!(
        swallowed[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("a statement of the handler failed"),
        "{swallowed:?}"
    );
    // The connections went back to the pool clean: a plain delivery works.
    let plain = event_json("evt_after", "segment.ready", r#"{"id":"seg_3"}"#);
    assert_eq!(post_signed(addr, &plain).await.status, 200);
}

#[tokio::test]
async fn an_event_another_transaction_holds_is_answered_409_after_the_wait() {
    let postgres = PrivatePostgres::start();
    effects_table(&postgres).await;
    let effects = Effects::new();
    let store = PostgresStore::new(&postgres.url()).unwrap();
    store.migrate().await.unwrap();
    let addr = receiver(store, &effects).await;

    // Another session holds the event's done-record, uncommitted.
    let mut holder = postgres.client().await;
    let holding = holder.transaction().await.unwrap();
    holding
        .execute(
            "INSERT INTO ltvboost.dedupe (key, token, done, expires_at) \
             VALUES ('evt:evt_held', NULL, true, now() + interval '1 hour')",
            &[],
        )
        .await
        .unwrap();
    let body = event_json("evt_held", "segment.ready", r#"{"id":"seg_1"}"#);
    let held = post_signed(addr, &body).await;
    assert_eq!(held.status, 409, "{held:?}");
    assert_eq!(effects.calls.load(Ordering::SeqCst), 0);
    // The holder gives up: the retry runs the handler.
    holding.rollback().await.unwrap();
    assert_eq!(post_signed(addr, &body).await.status, 200);
    assert_eq!(effects.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_receivers_given_the_same_event_at_once_commit_it_once() {
    let postgres = PrivatePostgres::start();
    let client = effects_table(&postgres).await;
    // Two receivers, each with a pool of its own, on one database; the
    // handler holds its transaction open for a second.
    let effects = Effects::slow(Duration::from_secs(1));
    let one = receiver(PostgresStore::new(&postgres.url()).unwrap(), &effects).await;
    let two = receiver(PostgresStore::new(&postgres.url()).unwrap(), &effects).await;
    // The tables exist before the race (both would create them otherwise).
    PostgresStore::new(&postgres.url())
        .unwrap()
        .migrate()
        .await
        .unwrap();

    for round in 0..5 {
        let body = event_json(
            &format!("evt_race_{round}"),
            "response.created",
            r#"{"id":"rsp_1"}"#,
        );
        let (a, b) = tokio::join!(post_signed(one, &body), post_signed(two, &body));
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert!(
            statuses == [200, 409]
                || (statuses == [200, 200]
                    && (a.body.contains("duplicate") || b.body.contains("duplicate"))),
            "round {round}: {a:?} {b:?}"
        );
        // The sender's retry of the loser is a duplicate.
        let retry = post_signed(two, &body).await;
        assert!(retry.body.contains("duplicate"), "{retry:?}");
    }
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 5);
    assert_eq!(
        count(&client, "SELECT count(DISTINCT event_id) FROM effects").await,
        5
    );
    assert_eq!(effects.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn the_store_without_transactions_serves_handlers_unchanged() {
    let postgres = PrivatePostgres::start();
    let recorder = Recorder::delayed(Duration::from_millis(600));
    let store = PostgresStore::new(&postgres.url()).unwrap();
    // The tables first: the 200 ms head start below is the first
    // delivery's, not the migration's.
    store.migrate().await.unwrap();
    let addr =
        serve(WebhookLayer::new(config().dedupe_store(store), recording(&recorder)).endpoint())
            .await;
    let body = created_event("evt_plain_1");
    let (first, second) = tokio::join!(post_signed(addr, &body), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        post_signed(addr, &body).await
    });
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(second.status, 409, "{second:?}");
    // The done-record is written just after the answer: a retry sooner is
    // answered 409, as LTVboost's would be.
    let retry = retried_past_409(addr, &body).await;
    assert_eq!(retry.status, 200);
    assert!(retry.body.contains("duplicate"), "{retry:?}");
    assert_eq!(recorder.calls("response.created"), 1);

    // A failure releases the claim: the retry runs the handler.
    recorder.script(&[Behaviour::Fail]);
    let body = created_event("evt_plain_2");
    assert_eq!(post_signed(addr, &body).await.status, 500);
    // The claim is released just after the answer.
    let retry = retried_past_409(addr, &body).await;
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(recorder.calls("response.created"), 3);
}

/// Posts `body` until the answer is not `409` (for 30 s at most).
async fn retried_past_409(addr: SocketAddr, body: &[u8]) -> Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = post_signed(addr, body).await;
        if reply.status != 409 || std::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn schemas_keep_two_services_apart_and_migrating_twice_at_once_is_harmless() {
    let postgres = PrivatePostgres::start();
    let client = effects_table(&postgres).await;
    let orders = PostgresStore::new(&postgres.url())
        .unwrap()
        .schema("orders_webhooks")
        .unwrap();
    let billing = PostgresStore::new(&postgres.url())
        .unwrap()
        .schema("billing_webhooks")
        .unwrap();
    // Eight receivers starting at once migrate one schema once.
    let starting: Vec<_> = (0..8)
        .map(|_| {
            let store = PostgresStore::new(&postgres.url())
                .unwrap()
                .schema("orders_webhooks")
                .unwrap();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for start in starting {
        start.await.unwrap().unwrap();
    }
    let effects = Effects::new();
    let orders_addr = receiver(orders.clone(), &effects).await;
    let billing_addr = receiver(billing.clone(), &effects).await;
    let body = created_event("evt_shared_id");
    assert_eq!(post_signed(orders_addr, &body).await.status, 200);
    // The same event id is new to the other service.
    let other = post_signed(billing_addr, &body).await;
    assert_eq!(other.status, 200);
    assert!(!other.body.contains("duplicate"), "{other:?}");
    assert_eq!(count(&client, "SELECT count(*) FROM effects").await, 2);
    for schema in ["orders_webhooks", "billing_webhooks"] {
        let rows = count(
            &client,
            &format!("SELECT count(*) FROM {schema}.inbox WHERE event_id = 'evt_shared_id'"),
        )
        .await;
        assert_eq!(rows, 1, "{schema}");
        let version = count(
            &client,
            &format!("SELECT count(*) FROM {schema}.schema_version"),
        )
        .await;
        assert_eq!(version, 1, "{schema}");
    }
}

// ---- The example receiver, as an operator runs it ----

/// The example receiver on `postgres`, with `env`; its stdout and stderr
/// collected.
struct Example {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Example {
    async fn start(url: &str, env: &[(&str, &str)]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_with(url, env, &mut example_receiver(addr)).await
    }

    /// The same with a command of the test's own (from `example_receiver`).
    async fn start_with(url: &str, env: &[(&str, &str)], command: &mut Command) -> Self {
        let addr: SocketAddr = command
            .get_envs()
            .find(|(name, _)| *name == "LTVBOOST_WEBHOOK_ADDR")
            .and_then(|(_, value)| value?.to_str()?.parse().ok())
            .expect("example_receiver sets the address");
        command.env("LTVBOOST_DATABASE_URL", url);
        // The test secret, unless the test names its own secrets.
        if !env
            .iter()
            .any(|(name, _)| name.starts_with("LTVBOOST_WEBHOOK_"))
        {
            command.env("LTVBOOST_WEBHOOK_SECRET", SECRET);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect_output(&mut child, &lines, &lines);
        listening(addr, &mut child).await;
        Self { child, addr, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for the process to end, and says whether it was aborted.
    async fn aborted(&mut self) -> bool {
        wait_until("the receiver to exit", || {
            self.child.try_wait().unwrap().is_some()
        })
        .await;
        use std::os::unix::process::ExitStatusExt;
        self.child.try_wait().unwrap().unwrap().signal() == Some(6)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Posts `body` signed, and returns the answer's first line, or `None`
/// when the connection closed with no answer (the process died).
async fn answer_if_any(addr: SocketAddr, body: &[u8]) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let signature = ltvboost_webhooks::signature::sign(&secret(), body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&post_request(
            PATH,
            &[("x-ltvboost-signature", &signature)],
            body,
        ))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().map(str::to_owned)
}

async fn example_effects(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT event_id) FROM ltvboost_example_effects",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn the_example_killed_before_the_commit_leaves_nothing_and_the_retry_runs_the_handler() {
    let postgres = PrivatePostgres::start();
    let client = postgres.client().await;
    let body = event_json("evt_abort_before", "segment.ready", r#"{"id":"seg_1"}"#);
    {
        let mut crashing = Example::start(
            &postgres.url(),
            &[("LTVBOOST_EXAMPLE_ABORT_BEFORE_COMMIT", "segment.ready")],
        )
        .await;
        // A warm-up of another type creates the effects table.
        let other = event_json("evt_other_1", "response.created", r#"{"id":"rsp_1"}"#);
        assert_eq!(post_signed(crashing.addr, &other).await.status, 200);
        let answer = answer_if_any(crashing.addr, &body).await;
        assert_eq!(answer, None, "answered before the commit");
        assert!(crashing.aborted().await, "{:?}", crashing.lines());
    }
    // The insert was never committed, and nothing marks the event done.
    assert_eq!(example_effects(&client).await, (1, 1));
    let restarted = Example::start(&postgres.url(), &[]).await;
    let retry = post_signed(restarted.addr, &body).await;
    assert_eq!(retry.status, 200, "{retry:?}");
    assert!(!retry.body.contains("duplicate"), "{retry:?}");
    assert_eq!(example_effects(&client).await, (2, 2));
    // The handled line, printed after the commit (read off a pipe).
    wait_until("the handled line", || {
        restarted
            .lines()
            .iter()
            .any(|l| l.starts_with("segment.ready evt_abort_before secret#0:"))
    })
    .await;
}

#[tokio::test]
async fn the_example_killed_with_sigkill_inside_the_transaction_leaves_nothing() {
    let postgres = PrivatePostgres::start();
    let client = postgres.client().await;
    let body = event_json("evt_sigkill", "action.queued", r#"{"id":"act_7"}"#);
    {
        let mut slow = Example::start(
            &postgres.url(),
            &[("LTVBOOST_EXAMPLE_HANDLER_DELAY_MS", "3000")],
        )
        .await;
        let addr = slow.addr;
        // A first event creates the effects table (on a connection of the
        // example's own).
        let first = event_json("evt_first", "segment.ready", r#"{"id":"seg_0"}"#);
        assert_eq!(post_signed(addr, &first).await.status, 200);
        let pending = tokio::spawn({
            let body = body.clone();
            async move { answer_if_any(addr, &body).await }
        });
        // The handler has inserted and waits, inside the transaction.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let inserting = count(
                &client,
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'ltvboost-webhooks' AND state = 'idle in transaction'",
            )
            .await;
            if inserting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no transaction opened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let killed = Command::new("kill")
            .args(["-9", &slow.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        assert_eq!(
            pending.await.unwrap(),
            None,
            "answered from inside the transaction"
        );
        slow.aborted().await;
    }
    // Postgres saw the session end and rolled it back: no session left in
    // the transaction, and no row, done-record or inbox row.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(
        &client,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ltvboost-webhooks'",
    )
    .await
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed session stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for query in [
        "SELECT count(*) FROM ltvboost.dedupe WHERE key = 'evt:evt_sigkill'",
        "SELECT count(*) FROM ltvboost.inbox WHERE event_id = 'evt_sigkill'",
        "SELECT count(*) FROM ltvboost_example_effects WHERE event_id = 'evt_sigkill'",
    ] {
        assert_eq!(count(&client, query).await, 0, "{query}");
    }
    let restarted = Example::start(&postgres.url(), &[]).await;
    let retry = post_signed(restarted.addr, &body).await;
    assert_eq!(retry.status, 200, "{retry:?}");
    assert!(!retry.body.contains("duplicate"), "{retry:?}");
    // The first event's row and the retried one's.
    assert_eq!(example_effects(&client).await, (2, 2));
}

#[tokio::test]
async fn the_example_killed_after_the_commit_answers_the_retry_as_a_duplicate() {
    let postgres = PrivatePostgres::start();
    let client = postgres.client().await;
    let body = event_json("evt_abort_after", "action.sent", r#"{"id":"act_1"}"#);
    {
        let mut crashing = Example::start(
            &postgres.url(),
            &[("LTVBOOST_EXAMPLE_ABORT_AFTER_COMMIT", "action.sent")],
        )
        .await;
        let answer = answer_if_any(crashing.addr, &body).await;
        assert_eq!(answer, None, "answered after the commit");
        assert!(crashing.aborted().await, "{:?}", crashing.lines());
    }
    assert_eq!(example_effects(&client).await, (1, 1));
    let restarted = Example::start(&postgres.url(), &[]).await;
    let retry = post_signed(restarted.addr, &body).await;
    assert_eq!(retry.status, 200, "{retry:?}");
    assert!(retry.body.contains("duplicate"), "{retry:?}");
    assert_eq!(example_effects(&client).await, (1, 1));
}

#[tokio::test]
async fn the_example_with_failing_types_rolls_back_and_the_inbox_shows_the_failure() {
    let postgres = PrivatePostgres::start();
    let client = postgres.client().await;
    let failing = Example::start(
        &postgres.url(),
        &[(
            "LTVBOOST_EXAMPLE_FAIL_TYPES",
            "action.failed, segment.updated",
        )],
    )
    .await;
    let body = event_json("evt_fails", "action.failed", r#"{"id":"act_9"}"#);
    assert_eq!(post_signed(failing.addr, &body).await.status, 500);
    let ok = event_json("evt_fine", "response.scored", r#"{"id":"rsp_2","score":7}"#);
    assert_eq!(post_signed(failing.addr, &ok).await.status, 200);
    assert_eq!(example_effects(&client).await, (1, 1));

    let inbox = PostgresStore::new(&postgres.url())
        .unwrap()
        .inbox(&InboxFilter::default())
        .await
        .unwrap();
    let seen: Vec<_> = inbox
        .iter()
        .map(|e| (e.event_id.as_deref(), e.outcome, e.error.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Some("evt_fails"),
                InboxOutcome::Failed,
                Some("LTVBOOST_EXAMPLE_FAIL_TYPES names action.failed")
            ),
            (Some("evt_fine"), InboxOutcome::Handled, None),
        ]
    );

    // The same, as an operator reads it.
    #[cfg(feature = "cli")]
    {
        let url = postgres.url();
        let list = inbox_command(&["list", "--json", "--database-url", &url]);
        assert!(list.status.success(), "{list:?}");
        let lines: Vec<serde_json::Value> = String::from_utf8(list.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["id"], "evt_fails");
        assert_eq!(lines[0]["type"], "action.failed");
        assert_eq!(lines[0]["outcome"], "failed");
        assert_eq!(
            lines[0]["error"],
            "LTVBOOST_EXAMPLE_FAIL_TYPES names action.failed"
        );
        assert_eq!(lines[1]["outcome"], "handled");
        let received = lines[1]["received_at"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(received, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{received}"
        );

        let failed = inbox_command(&[
            "list",
            "--json",
            "--type",
            "action.failed",
            "--since",
            "1h",
            "--database-url",
            &url,
        ]);
        assert_eq!(String::from_utf8(failed.stdout).unwrap().lines().count(), 1);
        let none = inbox_command(&[
            "list",
            "--json",
            "--type",
            "segment.ready",
            "--database-url",
            &url,
        ]);
        assert!(none.status.success() && none.stdout.is_empty(), "{none:?}");

        let show = inbox_command(&["show", "evt_fine", "--database-url", &url]);
        assert!(show.status.success(), "{show:?}");
        assert_eq!(show.stdout, ok, "the body, byte for byte, nothing added");
        let missing = inbox_command(&["show", "evt_never", "--database-url", &url]);
        assert_eq!(missing.status.code(), Some(1), "{missing:?}");
        assert!(missing.stdout.is_empty());
        let bad = inbox_command(&["list", "--since", "soon", "--database-url", &url]);
        assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    }
}

/// `ltvboost inbox <args>`.
#[cfg(feature = "cli")]
fn inbox_command(args: &[&str]) -> std::process::Output {
    use assert_cmd::cargo::CommandCargoExt;
    Command::cargo_bin("ltvboost")
        .unwrap()
        .arg("inbox")
        .args(args)
        .env_remove("LTVBOOST_DATABASE_URL")
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_example_started_with_postgres_down_answers_503_until_it_is_back() {
    let postgres = PrivatePostgres::start();
    postgres.stop("fast");
    let receiver = Example::start(&postgres.url(), &[]).await;
    let body = event_json("evt_down", "segment.updated", r#"{"id":"seg_2"}"#);
    for _ in 0..3 {
        assert_eq!(post_signed(receiver.addr, &body).await.status, 503);
    }
    postgres.start_again();
    // No restart of the receiver: the next delivery connects.
    assert_eq!(post_signed(receiver.addr, &body).await.status, 200);
    assert_eq!(example_effects(&postgres.client().await).await, (1, 1));
}

#[tokio::test]
async fn the_inbox_forgets_after_its_retention_the_done_record_stays_and_metrics_count_both() {
    let postgres = PrivatePostgres::start();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let receiver = Example::start(
        &postgres.url(),
        &[
            ("LTVBOOST_INBOX_RETENTION", "2s"),
            ("LTVBOOST_METRICS_ADDR", &metrics.to_string()),
            ("LTVBOOST_EXAMPLE_FAIL_TYPES", "action.failed"),
        ],
    )
    .await;
    let body = event_json("evt_retained", "segment.ready", r#"{"id":"seg_3"}"#);
    assert_eq!(post_signed(receiver.addr, &body).await.status, 200);
    let failing = event_json("evt_failing", "action.failed", r#"{"id":"act_3"}"#);
    assert_eq!(post_signed(receiver.addr, &failing).await.status, 500);
    let client = postgres.client().await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM ltvboost.inbox").await,
        2
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(&client, "SELECT count(*) FROM ltvboost.inbox").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the inbox rows stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let retry = post_signed(receiver.addr, &body).await;
    assert!(retry.body.contains("duplicate"), "{retry:?}");
    assert_eq!(example_effects(&client).await, (1, 1));

    let scrape = b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
    let text = send_raw(metrics, scrape).await.body;
    promtool_accepts(&text);
    for line in [
        "ltvboost_webhook_inbox_rows_written_total{outcome=\"handled\"} 1",
        "ltvboost_webhook_inbox_rows_written_total{outcome=\"failed\"} 1",
        "ltvboost_webhook_inbox_rows_deleted_total 2",
        "ltvboost_webhook_store_duration_seconds_count{operation=\"begin\"} 3",
        "ltvboost_webhook_store_duration_seconds_count{operation=\"commit\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

// Multi-threaded: pg_ctl blocks its thread while the senders go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing_answered_2xx_and_writes_nothing_twice() {
    let postgres = PrivatePostgres::start();
    let receiver = Example::start(&postgres.url(), &[]).await;
    let addr = receiver.addr;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Eight senders deliver distinct events, each retried until it is
    // answered 2xx, as LTVboost does, until Postgres has restarted twice:
    // once cleanly, once as after a crash.
    let senders: Vec<_> = (0..8)
        .map(|sender| {
            let (acknowledged, refused, restarted) =
                (acknowledged.clone(), refused.clone(), restarted.clone());
            tokio::spawn(async move {
                let mut n = sender;
                while !restarted.load(Ordering::SeqCst) {
                    let body = event_json(
                        &format!("evt_load_{n}"),
                        "response.created",
                        r#"{"id":"rsp_1"}"#,
                    );
                    loop {
                        let reply = post_signed(addr, &body).await;
                        if (200..300).contains(&reply.status) {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    n += 8;
                }
            })
        })
        .collect();
    for mode in ["fast", "immediate"] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        postgres.stop(mode);
        tokio::time::sleep(Duration::from_millis(500)).await;
        postgres.start_again();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    restarted.store(true, Ordering::SeqCst);
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(120), sender)
            .await
            .expect("a sender's event was never answered 2xx")
            .unwrap();
    }
    let acknowledged = acknowledged.load(Ordering::SeqCst) as i64;
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "no delivery met the restarts"
    );
    let (rows, distinct) = example_effects(&postgres.client().await).await;
    assert_eq!((rows, distinct), (acknowledged, acknowledged));
}

/// The seam with accounts: one receiver, two LTVboost accounts, one
/// database. The same event id under each account is two events, each
/// committed once, and the inbox names the account.
#[tokio::test]
async fn accounts_in_a_transaction_are_deduplicated_apart_and_named_in_the_inbox() {
    let postgres = PrivatePostgres::start();
    let dir = TempDir::new("pg-accounts");
    let file = dir.join("accounts.toml");
    let (acme, globex) = (
        "acme-secret-for-postgres-0123",
        "globex-secret-for-postgres-4567",
    );
    std::fs::write(
        &file,
        format!(
            "[accounts.acme]\nsecrets = [\"{acme}\"]\n[accounts.globex]\nsecrets = [\"{globex}\"]\n"
        ),
    )
    .unwrap();
    let mut command = example_receiver(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let receiver = Example::start_with(
        &postgres.url(),
        &[("LTVBOOST_WEBHOOK_ACCOUNTS_FILE", file.to_str().unwrap())],
        &mut command,
    )
    .await;
    let body = event_json("evt_shared", "response.created", r#"{"id":"rsp_1"}"#);
    let send = |account: &'static str, secret: &'static str| {
        let body = body.clone();
        let addr = receiver.addr;
        async move {
            let signature = ltvboost_webhooks::signature::sign(
                &ltvboost_webhooks::signature::Secret::new(secret).unwrap(),
                &body,
            );
            send_raw(
                addr,
                &post_request(
                    &format!("/webhooks/ltvboost/{account}"),
                    &[("x-ltvboost-signature", &signature)],
                    &body,
                ),
            )
            .await
        }
    };
    assert_eq!(send("acme", acme).await.status, 200);
    let other = send("globex", globex).await;
    assert_eq!(other.status, 200);
    assert!(!other.body.contains("duplicate"), "{other:?}");
    let again = send("acme", acme).await;
    assert!(again.body.contains("duplicate"), "{again:?}");
    // Signed for one account, posted to the other: refused, nothing written.
    assert_eq!(send("globex", acme).await.status, 401);

    let client = postgres.client().await;
    assert_eq!(example_effects(&client).await, (2, 1));
    let inbox = PostgresStore::new(&postgres.url())
        .unwrap()
        .inbox(&InboxFilter::default().event_id("evt_shared"))
        .await
        .unwrap();
    let accounts: Vec<_> = inbox.iter().map(|e| e.account.as_deref()).collect();
    assert_eq!(accounts, [Some("acme"), Some("globex")]);
}
