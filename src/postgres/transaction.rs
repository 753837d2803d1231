//! One delivery in one transaction: the done-record, the handler's writes
//! and the inbox row commit together.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::Transaction;
use futures_util::FutureExt;
use tokio_postgres::error::SqlState;

use super::inbox::InboxOutcome;
use super::{PostgresStore, postgres_error};
use crate::Outcome;
use crate::handler::{Delivery, HandlerResult, panic_message};
use crate::metrics;

/// A handler that writes through the delivery's transaction.
///
/// Whatever it writes through `transaction` commits together with the
/// event's done-record, after it returns `Ok`, or not at all: an `Err` (or
/// a panic) rolls it back and answers `500`, and LTVboost's retry runs the
/// handler again. It cannot commit or roll back itself (it holds the
/// transaction by reference); the crate does.
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
    /// The default does nothing.
    fn committed(&self, delivery: &Delivery) -> impl Future<Output = ()> + Send {
        let _ = delivery;
        async {}
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`TransactionHandler`] behind a pointer.
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
pub(crate) struct InTransaction {
    store: PostgresStore,
    handler: Box<dyn ErasedTransactionHandler>,
}

impl std::fmt::Debug for InTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InTransaction")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// How the claim inside the transaction ended.
enum Claimed<'a> {
    Ours(Transaction<'a>),
    Answered(Outcome),
}

impl InTransaction {
    pub(crate) fn new(store: PostgresStore, handler: impl TransactionHandler) -> Self {
        Self {
            store,
            handler: Box::new(handler),
        }
    }

    /// Claims, handles and commits one delivery, and says what to answer.
    /// `done_ttl` is how long the done-record lives; a payload that does not
    /// fit is acknowledged (and recorded) only if `acknowledge_mismatched`.
    pub(crate) async fn deliver(
        &self,
        delivery: &Delivery,
        done_ttl: Duration,
        acknowledge_mismatched: bool,
    ) -> Outcome {
        self.store.start_janitor();
        let started = metrics::Timer::start();
        let mut client = match self.store.client().await {
            Ok(client) => client,
            Err(error) => {
                metrics::store("begin", started.elapsed(), true);
                tracing::error!(%error, "dedupe store unavailable; asking the sender to retry");
                return Outcome::StoreUnavailable;
            }
        };
        let transaction = match self.claim(&mut client, delivery, done_ttl).await {
            Ok(Claimed::Ours(transaction)) => {
                metrics::store("begin", started.elapsed(), false);
                transaction
            }
            Ok(Claimed::Answered(outcome)) => {
                metrics::store("begin", started.elapsed(), false);
                return outcome;
            }
            Err(error) => {
                metrics::store("begin", started.elapsed(), true);
                tracing::error!(%error, "dedupe store unavailable; asking the sender to retry");
                return Outcome::StoreUnavailable;
            }
        };

        let started = metrics::Timer::start();
        let called = std::panic::AssertUnwindSafe(self.handler.handle(delivery, &transaction))
            .catch_unwind()
            .await;
        let fits = delivery.event().map_err(|e| e.to_string());
        let failure = match (called, fits) {
            (Ok(Ok(())), Ok(_)) => None,
            (Ok(Ok(())), Err(_)) if acknowledge_mismatched => None,
            (Ok(Ok(())), Err(reason)) => Some((
                Outcome::Mismatched {
                    acknowledged: false,
                },
                format!("data does not fit: {reason}"),
            )),
            (Ok(Err(error)), _) => {
                tracing::error!(%error, "webhook handler failed; the sender will retry");
                Some((Outcome::HandlerFailed, error.to_string()))
            }
            (Err(panic), _) => {
                let panic = panic_message(&*panic).to_owned();
                tracing::error!(panic, "webhook handler panicked; the sender will retry");
                Some((Outcome::HandlerPanicked, format!("panicked: {panic}")))
            }
        };
        let event_type = metrics::type_label(Some(delivery.event_type()));
        let handled = match delivery.event() {
            Ok(_) => Outcome::Handled,
            Err(_) => Outcome::Mismatched { acknowledged: true },
        };
        let kind = failure
            .as_ref()
            .map_or(&handled, |(outcome, _)| outcome)
            .kind();
        metrics::handler(event_type, kind, started.elapsed());

        match failure {
            None => {
                let started = metrics::Timer::start();
                let committed = self.commit(transaction).await;
                metrics::store("commit", started.elapsed(), committed.is_err());
                if let Err(error) = committed {
                    // Whether the commit happened is unknown: the retry finds
                    // out (a duplicate, or a run of the handler).
                    tracing::error!(%error, "could not commit the delivery; asking the sender to retry");
                    return Outcome::StoreUnavailable;
                }
                metrics::inbox_written(InboxOutcome::Handled.as_str());
                self.handler.committed(delivery).await;
                handled
            }
            Some((outcome, error)) => {
                // The handler's writes and the done-record go; what failed is
                // kept in the inbox.
                drop(transaction.rollback().await);
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
        }
    }

    /// `BEGIN`, then the done-record inserted, waiting at most the store's
    /// in-flight wait for another transaction holding it.
    async fn claim<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
        delivery: &Delivery,
        done_ttl: Duration,
    ) -> Result<Claimed<'c>, crate::dedupe::StoreError> {
        let sql = &self.store.shared.sql;
        let key = delivery.dedupe_key();
        let wait = format!(
            "SET LOCAL lock_timeout = {}",
            self.store.shared.in_flight_wait.as_millis()
        );
        let step = async {
            let transaction = client.transaction().await?;
            let claim = transaction.prepare_cached(&sql.claim_done).await?;
            // Sent together: one round trip.
            let inserted = futures_util::future::try_join3(
                transaction.batch_execute(&wait),
                transaction.query_one(
                    &claim,
                    &[
                        &key,
                        &done_ttl.as_secs_f64(),
                        &delivery.id(),
                        &delivery.type_name(),
                        &delivery.account(),
                        &delivery.envelope().body().as_ref(),
                    ],
                ),
                transaction.batch_execute("SET LOCAL lock_timeout TO DEFAULT"),
            )
            .await;
            Ok::<_, tokio_postgres::Error>((transaction, inserted.map(|(_, row, _)| row)))
        };
        let timeout = self.store.shared.operation_timeout + self.store.shared.in_flight_wait;
        let (transaction, inserted) = match tokio::time::timeout(timeout, step).await {
            Ok(Ok(claimed)) => claimed,
            Ok(Err(error)) => return Err(postgres_error(&error)),
            Err(_) => {
                return Err(crate::dedupe::StoreError::new(format!(
                    "Postgres did not answer within {timeout:?}"
                )));
            }
        };
        match inserted.map(|row| row.get::<_, bool>(0)) {
            Ok(true) => Ok(Claimed::Ours(transaction)),
            Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                Ok(Claimed::Answered(Outcome::InFlight))
            }
            Err(error) => Err(postgres_error(&error)),
            Ok(false) => {
                // A done-record stands (or a claim of a receiver using the
                // store without transactions).
                let standing = self
                    .store
                    .bounded(async {
                        let standing = transaction.prepare_cached(&sql.standing).await?;
                        transaction.query_opt(&standing, &[&key]).await
                    })
                    .await?;
                let done = standing.is_some_and(|row| row.get::<_, bool>(0));
                Ok(Claimed::Answered(if done {
                    Outcome::Duplicate
                } else {
                    Outcome::InFlight
                }))
            }
        }
    }

    /// `COMMIT`: the handler's writes, the done-record and the inbox row.
    async fn commit(&self, transaction: Transaction<'_>) -> Result<(), crate::dedupe::StoreError> {
        self.store.bounded(transaction.commit()).await
    }
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
