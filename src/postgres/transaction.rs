//! One delivery in one transaction: the done-record, the handler's writes
//! and the inbox row commit together.

use std::future::Future;
use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::inbox::InboxOutcome;
use super::{PostgresStore, postgres_error};
use std::sync::Arc;

use crate::dedupe::StoreError;
use crate::erase::BoxFuture;
use crate::handler::{Delivery, Dispatched, HandlerResult, guarded};
use crate::metrics;
use crate::receiver::pipeline::{Deliver, Pipeline};
use crate::{Outcome, WebhookConfig, WebhookLayer};

/// The delivery's open transaction, as a handler writes through it.
///
/// It dereferences to the pooled connection, so every query method of
/// tokio-postgres' [`Client`](tokio_postgres::Client) is at hand, and
/// [`prepare_cached`](deadpool_postgres::ClientWrapper::prepare_cached)
/// prepares a statement once per pooled connection rather than once per
/// delivery. It cannot begin, commit or roll back a transaction (those take
/// the client by `&mut`): the crate began it and ends it. A handler that
/// sends `COMMIT` or `ROLLBACK` as text anyway, or that returns `Ok` after a
/// statement of its own failed, is caught at the end: the delivery answers
/// `500`. Set session parameters with `SET LOCAL`, which ends with the
/// transaction; a plain `SET` stays on the pooled connection.
pub struct Transaction<'a> {
    client: &'a deadpool_postgres::ClientWrapper,
}

impl std::ops::Deref for Transaction<'_> {
    type Target = deadpool_postgres::ClientWrapper;

    fn deref(&self) -> &Self::Target {
        self.client
    }
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

/// A handler that writes through the delivery's transaction.
///
/// Whatever it writes through `transaction` commits together with the
/// event's done-record, after it returns `Ok`, or not at all: an `Err` (or
/// a panic) rolls it back and answers `500`, and LTVboost's retry runs the
/// handler again. The crate begins and ends the transaction, not the
/// handler.
///
/// Writes made elsewhere (through a pool of your own, an HTTP call) are not
/// part of the transaction: they may happen twice, as with any other store.
/// [`committed`](Self::committed) runs after the commit, for what must
/// follow it.
///
/// [`Delivery::event`] is the typed event:
///
/// ```
/// use ltvboost_webhooks::event::Event;
/// use ltvboost_webhooks::handler::{Delivery, HandlerResult};
/// use ltvboost_webhooks::postgres::{Transaction, TransactionHandler};
///
/// struct Scores;
///
/// impl TransactionHandler for Scores {
///     async fn handle(&self, delivery: &Delivery, transaction: &Transaction<'_>) -> HandlerResult {
///         if let Ok(Event::ResponseScored(scored)) = delivery.event() {
///             transaction
///                 .execute(
///                     "INSERT INTO scores (response_id, score) VALUES ($1, $2)",
///                     &[&scored.id, &scored.score],
///                 )
///                 .await?;
///         }
///         // Other events are recorded as done, and acknowledged.
///         Ok(())
///     }
/// }
/// ```
pub trait TransactionHandler: Send + Sync + 'static {
    /// Handles one delivery, writing through `transaction`.
    fn handle(
        &self,
        delivery: &Delivery,
        transaction: &Transaction<'_>,
    ) -> impl Future<Output = HandlerResult> + Send;

    /// Runs after the transaction committed and before the answer goes out
    /// (a notification that must follow the commit, say). Nothing it does
    /// can undo the commit, and a crash during it leaves the event done.
    /// The delivery's connection is back in the pool by then: a slow hook
    /// holds none. The default does nothing.
    fn committed(&self, delivery: &Delivery) -> impl Future<Output = ()> + Send {
        let _ = delivery;
        async {}
    }
}

/// [`TransactionHandler`] behind a pointer (the crate's one pattern, see
/// `erase.rs`).
trait ErasedTransactionHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        delivery: &'a Delivery,
        transaction: &'a Transaction<'a>,
    ) -> BoxFuture<'a, HandlerResult>;
    fn committed<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, ()>;
}

impl<T: TransactionHandler> ErasedTransactionHandler for T {
    fn handle<'a>(
        &'a self,
        delivery: &'a Delivery,
        transaction: &'a Transaction<'a>,
    ) -> BoxFuture<'a, HandlerResult> {
        Box::pin(TransactionHandler::handle(self, delivery, transaction))
    }
    fn committed<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, ()> {
        Box::pin(TransactionHandler::committed(self, delivery))
    }
}

/// Where an in-transaction receiver sends its deliveries: the store and the
/// handler.
struct InTransaction {
    store: PostgresStore,
    handler: Box<dyn ErasedTransactionHandler>,
    /// How long the done-record lives.
    done_ttl: Duration,
    /// Whether a payload that does not fit is acknowledged (and recorded).
    acknowledge_mismatched: bool,
    /// The handler's deadline, as inline.
    handler_timeout: Option<Duration>,
}

/// The constructor of this mode sits here, beside what it builds, so that
/// the receiver needs nothing of Postgres.
impl WebhookLayer {
    /// Handlers inside a Postgres transaction (feature `postgres`): each
    /// delivery's done-record, inbox row and `handler`'s writes commit
    /// together, and the answer goes out after the commit. See
    /// [`postgres`](crate::postgres). The configuration's dedupe store is
    /// not used; its `done_ttl` is the done-record's lifetime.
    ///
    /// ```
    /// use ltvboost_webhooks::handler::{Delivery, HandlerResult};
    /// use ltvboost_webhooks::postgres::{PostgresStore, Transaction, TransactionHandler};
    /// use ltvboost_webhooks::signature::{Secret, Verifier};
    /// use ltvboost_webhooks::WebhookLayer;
    ///
    /// struct Audit;
    /// impl TransactionHandler for Audit {
    ///     async fn handle(&self, delivery: &Delivery, tx: &Transaction<'_>) -> HandlerResult {
    ///         tx.execute("INSERT INTO audit (event_id) VALUES ($1)", &[&delivery.id()]).await?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let verifier = Verifier::new([Secret::new("a-development-secret-0123")?])?;
    /// let store = PostgresStore::new("postgres://app@127.0.0.1/app")?;
    /// let layer = WebhookLayer::in_transaction(verifier, store, Audit);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn in_transaction(
        config: impl Into<WebhookConfig>,
        store: PostgresStore,
        handler: impl TransactionHandler,
    ) -> Self {
        let config = config.into();
        let target = InTransaction {
            store,
            handler: Box::new(handler),
            done_ttl: config.done_record_ttl(),
            acknowledge_mismatched: config.acknowledge_mismatched,
            handler_timeout: config.handler_timeout,
        };
        Self::from_pipeline(Pipeline::in_transaction(config, Arc::new(target)))
    }
}

impl Deliver for InTransaction {
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Outcome> {
        Box::pin(InTransaction::deliver(self, delivery))
    }
}

impl std::fmt::Debug for InTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InTransaction")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// How the claim inside the transaction ended.
enum Claimed {
    /// The done-record is this transaction's, whose id this is.
    Ours(i64),
    /// Answered without the handler; the transaction is still open.
    Answered(Outcome),
}

/// Why a step could not finish.
enum Failure {
    /// Postgres answered with an error: the transaction is over or can be
    /// rolled back, and the connection is sound.
    Refused(String),
    /// No answer (a timeout, a lost connection): the connection's state is
    /// unknown, so it is discarded rather than pooled.
    Unknown(StoreError),
}

impl InTransaction {
    /// Claims, handles and commits one delivery, and says what to answer.
    async fn deliver(&self, delivery: &Delivery) -> Outcome {
        self.store.start_janitor();
        let started = metrics::Timer::start();
        let client = match self.store.client().await {
            Ok(client) => client,
            Err(error) => {
                metrics::store("begin", started.elapsed(), true);
                tracing::error!(%error, "dedupe store unavailable; asking the sender to retry");
                return Outcome::StoreUnavailable;
            }
        };
        let claimed = self.claim(&client, delivery, self.done_ttl).await;
        metrics::store("begin", started.elapsed(), claimed.is_err());
        let transaction_id = match claimed {
            Ok(Claimed::Ours(id)) => id,
            Ok(Claimed::Answered(outcome)) => {
                self.roll_back(client).await;
                return outcome;
            }
            Err(failure) => {
                let error = match failure {
                    Failure::Refused(error) => {
                        self.roll_back(client).await;
                        error
                    }
                    Failure::Unknown(error) => {
                        discard(client);
                        error.to_string()
                    }
                };
                tracing::error!(%error, "dedupe store unavailable; asking the sender to retry");
                return Outcome::StoreUnavailable;
            }
        };

        let handling = metrics::Timer::start();
        let transaction = Transaction { client: &client };
        let event = delivery.event();
        let call = async {
            let result = self.handler.handle(delivery, &transaction).await;
            Dispatched::of(result, event.is_ok())
        };
        let dispatched = guarded(self.handler_timeout, call).await;
        dispatched.log_failure();
        let outcome = Outcome::of(&dispatched, self.acknowledge_mismatched);

        let (outcome, error) = if outcome.is_success() {
            let committing = metrics::Timer::start();
            let committed = self.commit(&client, transaction_id).await;
            metrics::store("commit", committing.elapsed(), committed.is_err());
            match committed {
                Ok(()) => {
                    outcome.time_handler(delivery.event_type(), handling.elapsed());
                    metrics::inbox_written(InboxOutcome::Handled.as_str());
                    // Back to the pool first: the hook may be slow.
                    drop(client);
                    self.handler.committed(delivery).await;
                    return outcome;
                }
                // Postgres refused the commit: nothing of it stands.
                Err(Failure::Refused(error)) => {
                    tracing::error!(%error, "the delivery's transaction did not commit; the sender will retry");
                    (Outcome::HandlerFailed, error)
                }
                Err(Failure::Unknown(error)) => {
                    // Whether the commit happened is unknown: the retry finds
                    // out (a duplicate, or a run of the handler).
                    discard(client);
                    tracing::error!(%error, "could not commit the delivery; asking the sender to retry");
                    return Outcome::StoreUnavailable;
                }
            }
        } else {
            // A failure or a panic has its text; a payload that does not fit
            // (and is not acknowledged), the reason.
            let error = dispatched.failure().unwrap_or_else(|| match event {
                Err(reason) => format!("data does not fit: {reason}"),
                Ok(_) => String::new(),
            });
            (outcome, error)
        };
        outcome.time_handler(delivery.event_type(), handling.elapsed());
        // Whatever is left of the transaction goes (after a refused commit,
        // Postgres only warns that none is open), so that the connection
        // returns to the pool outside any.
        if !self.roll_back_in_place(&client).await {
            discard(client);
            tracing::warn!("the failed delivery is not in the inbox: the connection was lost");
            return outcome;
        }
        // The handler's writes and the done-record are gone; what failed is
        // kept in the inbox.
        let written = self
            .store
            .bounded(async {
                let insert = client
                    .prepare_cached(&self.store.shared.sql.inbox_insert)
                    .await?;
                failed_row(&client, &insert, delivery, &error).await
            })
            .await;
        match written {
            Ok(_) => metrics::inbox_written(InboxOutcome::Failed.as_str()),
            Err(error) => {
                tracing::warn!(%error, "could not write the failed delivery to the inbox");
            }
        }
        outcome
    }

    /// `BEGIN`, the lock wait, the done-record and the inbox row, sent
    /// together (one round trip): the transaction's id when the
    /// done-record is ours.
    async fn claim(
        &self,
        client: &deadpool_postgres::Object,
        delivery: &Delivery,
        done_ttl: Duration,
    ) -> Result<Claimed, Failure> {
        let sql = &self.store.shared.sql;
        let begin = format!(
            "BEGIN; SET LOCAL lock_timeout = {}",
            self.store.shared.in_flight_wait.as_millis()
        );
        let step = async {
            let claim = client.prepare_cached(&sql.claim_done).await?;
            // Prepared now: in an aborted transaction it could not be.
            client.prepare_cached(COMMIT_CHECK).await?;
            let (begun, claimed, _) = futures_util::future::join3(
                client.batch_execute(&begin),
                client.query_one(
                    &claim,
                    &[
                        &delivery.dedupe_key(),
                        &done_ttl.as_secs_f64(),
                        &delivery.id(),
                        &delivery.type_name(),
                        &delivery.account(),
                        &delivery.envelope().body().as_ref(),
                    ],
                ),
                client.batch_execute("SET LOCAL lock_timeout TO DEFAULT"),
            )
            .await;
            begun?;
            Ok::<_, tokio_postgres::Error>(claimed)
        };
        let timeout = self.store.shared.operation_timeout + self.store.shared.in_flight_wait;
        let claimed = within(timeout, step).await?;
        let row = match claimed {
            Ok(row) => row,
            Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Ok(Claimed::Answered(Outcome::InFlight));
            }
            Err(error) => return Err(failure(&error)),
        };
        if row.get::<_, bool>(0) {
            return Ok(Claimed::Ours(row.get(1)));
        }
        // A done-record stands (or a claim of a receiver using the store
        // without transactions).
        let standing = self
            .store
            .bounded(async {
                let standing = client.prepare_cached(&sql.standing).await?;
                client.query_opt(&standing, &[&delivery.dedupe_key()]).await
            })
            .await
            .map_err(Failure::Unknown)?;
        let done = standing.is_some_and(|row| row.get::<_, bool>(0));
        Ok(Claimed::Answered(if done {
            Outcome::Duplicate
        } else {
            Outcome::InFlight
        }))
    }

    /// `COMMIT`, sent with a check that the transaction is still the one
    /// the claim began and that no statement of it failed: a handler that
    /// swallowed a failed statement (Postgres then turns `COMMIT` into a
    /// rollback, without an error) or ended the transaction itself is
    /// refused, never answered `200`.
    async fn commit(&self, client: &deadpool_postgres::Object, id: i64) -> Result<(), Failure> {
        let step = async {
            let check = client.prepare_cached(COMMIT_CHECK).await?;
            let (same, committed) = futures_util::future::join(
                client.query_one(&check, &[&id]),
                client.batch_execute("COMMIT"),
            )
            .await;
            Ok::<_, tokio_postgres::Error>((same, committed))
        };
        let (same, committed) = within(self.store.shared.operation_timeout, step).await?;
        if let Err(error) = committed {
            return Err(failure(&error));
        }
        match same {
            Ok(row) if row.get::<_, bool>(0) => Ok(()),
            Ok(_) => Err(Failure::Refused(
                "the handler ended the delivery's transaction itself (COMMIT or ROLLBACK): \
                 its writes may stand without the event's done-record, or the reverse"
                    .to_owned(),
            )),
            Err(error) if error.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => {
                Err(Failure::Refused(
                    "a statement of the handler failed and the handler returned Ok: \
                     Postgres rolled the transaction back"
                        .to_owned(),
                ))
            }
            Err(error) => Err(failure(&error)),
        }
    }

    /// `ROLLBACK`; a connection that does not answer it is discarded.
    async fn roll_back(&self, client: deadpool_postgres::Object) {
        if !self.roll_back_in_place(&client).await {
            discard(client);
        }
    }

    /// `ROLLBACK`, and whether Postgres answered it.
    async fn roll_back_in_place(&self, client: &deadpool_postgres::Object) -> bool {
        match self.store.bounded(client.batch_execute("ROLLBACK")).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "could not roll back; the connection is closed");
                false
            }
        }
    }
}

/// True when the transaction the claim began is still open and sound (in
/// an aborted one it fails; after a `COMMIT` or `ROLLBACK` of the handler's
/// it is false).
const COMMIT_CHECK: &str = "SELECT coalesce(txid_current_if_assigned() = $1, false)";

/// Runs a step of the delivery's transaction within `timeout`.
async fn within<T>(
    timeout: Duration,
    step: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(failure(&error)),
        Err(_) => Err(Failure::Unknown(StoreError::new(format!(
            "Postgres did not answer within {timeout:?}"
        )))),
    }
}

/// A Postgres error as a step's failure: refused when the server answered,
/// unknown when it did not.
fn failure(error: &tokio_postgres::Error) -> Failure {
    match error.as_db_error() {
        Some(db) => Failure::Refused(format!("Postgres: {} ({})", db.message(), db.code().code())),
        None => Failure::Unknown(postgres_error(error)),
    }
}

/// Closes a connection whose state is unknown (a statement may still run,
/// a transaction may be open) instead of handing it to the next delivery.
fn discard(client: deadpool_postgres::Object) {
    drop(deadpool_postgres::Object::take(client));
}

/// Writes the delivery's `failed` inbox row through `client`.
async fn failed_row(
    client: &deadpool_postgres::Object,
    insert: &tokio_postgres::Statement,
    delivery: &Delivery,
    error: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            insert,
            &[
                &delivery.id(),
                &delivery.type_name(),
                &delivery.account(),
                &InboxOutcome::Failed.as_str(),
                &error,
                &delivery.envelope().body().as_ref(),
            ],
        )
        .await
}
