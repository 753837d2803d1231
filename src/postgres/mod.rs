//! Postgres (feature `postgres`): handlers whose writes and the event's
//! done-record commit together, and an inbox of every delivery.
//!
//! With the other stores, a handler's own database write and the crate's
//! done-record are two commits in two systems. A crash between them runs the
//! handler again on LTVboost's retry; a done-record written while the
//! handler's transaction later rolls back drops the event. Here the
//! done-record is written in the same Postgres transaction as the handler's
//! writes (a transactional inbox):
//!
//! 1. `BEGIN`, then claim the event's key by inserting its done-record. A
//!    key already committed answers `200` duplicate without calling the
//!    handler; a key another transaction holds right now answers `409` once
//!    [`PostgresStore::in_flight_wait`] has passed (the sender retries).
//! 2. Your [`TransactionHandler`] writes through the [`Transaction`] it is
//!    given. It cannot commit or roll back: the crate does.
//! 3. `Ok`: the delivery's inbox row is written and everything commits in
//!    one `COMMIT`; only then is `200` answered. `Err` or a panic: the
//!    transaction rolls back (your writes and the done-record with it), the
//!    failure is written to the inbox, and `500` asks LTVboost to retry.
//!
//! | the process dies… | what the database holds | LTVboost's retry |
//! | --- | --- | --- |
//! | before the handler's writes, or during them | nothing | runs the handler |
//! | after the writes, before `COMMIT` | nothing (Postgres rolls back a dead session) | runs the handler |
//! | after `COMMIT`, before the answer | the writes, the done-record, the inbox row | `200` duplicate, handler not run |
//!
//! ```no_run
//! use ltvboost_webhooks::handler::{Delivery, HandlerResult};
//! use ltvboost_webhooks::postgres::{PostgresStore, Transaction, TransactionHandler};
//! use ltvboost_webhooks::signature::{Secret, Verifier};
//! use ltvboost_webhooks::{WebhookConfig, WebhookLayer};
//!
//! struct Effects;
//!
//! impl TransactionHandler for Effects {
//!     async fn handle(&self, delivery: &Delivery, transaction: &Transaction<'_>) -> HandlerResult {
//!         // Commits with the event's done-record, or not at all.
//!         transaction
//!             .execute(
//!                 "INSERT INTO effects (event_id, event_type) VALUES ($1, $2)",
//!                 &[&delivery.id(), &delivery.type_name()],
//!             )
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::new("postgres://app@127.0.0.1/app")?.schema("ltvboost")?;
//! let config = WebhookConfig::new(Verifier::new([Secret::new("a-development-secret-0123")?])?);
//! let layer = WebhookLayer::in_transaction(config, store, Effects);
//! # Ok(()) }
//! ```
//!
//! Handlers that need no transaction keep working unchanged:
//! [`PostgresStore`] is also a [`DedupeStore`](crate::dedupe::DedupeStore) (claims with a lease, as on
//! Redis) for [`WebhookConfig::dedupe_store`](crate::WebhookConfig::dedupe_store).
//!
//! The tables (`dedupe`, `inbox` and `schema_version`) live in a schema of
//! their own, `ltvboost` unless [`PostgresStore::schema`] names another: two
//! services on one database take one schema each. They are created, or
//! migrated, on first use, idempotently and under an advisory lock, so a
//! fleet starting at once migrates once. A receiver whose Postgres is down
//! starts anyway and answers `503` until it is back.
//!
//! The [inbox](PostgresStore::inbox) keeps every delivery whose handler ran:
//! its raw body byte for byte, type, id, account, when it was received, and
//! `handled` (written with the claim, so it commits with the handler's
//! writes) or `failed` (written after the rollback, with the handler's
//! error), for [`PostgresStore::inbox_retention`]. Duplicates and refusals
//! write nothing; nothing unverified enters it.

mod inbox;
mod store;
mod transaction;

use std::sync::Arc;
use std::time::Duration;

pub use deadpool_postgres;
pub use inbox::{InboxEntry, InboxFilter, InboxOutcome, parse_duration};
pub use tokio_postgres;
pub use transaction::{Transaction, TransactionHandler};

use crate::dedupe::StoreError;

/// The schema the tables live in unless [`PostgresStore::schema`] names
/// another.
pub const DEFAULT_SCHEMA: &str = "ltvboost";

/// How long the inbox keeps a delivery unless
/// [`PostgresStore::inbox_retention`] says otherwise: 7 days.
pub const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The environment variable the example receiver and `ltvboost inbox` read
/// the database's URL from.
pub const DATABASE_URL_ENV: &str = "LTVBOOST_DATABASE_URL";

/// The environment variable that sets the inbox's retention (`7d`, `90m`,
/// `2s`; see [`parse_duration`]).
pub const INBOX_RETENTION_ENV: &str = "LTVBOOST_INBOX_RETENTION";

/// A Postgres database holding done-records and the inbox, through a pool of
/// connections. Cheap to clone (the pool is shared).
///
/// Made without connecting: the first delivery connects, and creates or
/// migrates the tables. Until Postgres answers, deliveries are answered
/// `503` and the sender retries.
///
/// ```
/// use std::time::Duration;
/// use ltvboost_webhooks::postgres::PostgresStore;
///
/// let store = PostgresStore::new("postgres://app:pw@db.internal/app")?
///     .schema("billing_webhooks")?
///     .inbox_retention(Duration::from_secs(3 * 24 * 3600));
/// # Ok::<(), ltvboost_webhooks::postgres::PostgresError>(())
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: deadpool_postgres::Pool,
    schema: String,
    sql: store::Sql,
    /// Set once the tables exist; retried while it fails.
    migrated: tokio::sync::OnceCell<()>,
    /// Set once the retention task runs.
    janitor: std::sync::OnceLock<()>,
    retention: Duration,
    in_flight_wait: Duration,
    operation_timeout: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only the schema is shown.
        f.debug_struct("PostgresStore")
            .field("schema", &self.shared.schema)
            .field("retention", &self.shared.retention)
            .finish_non_exhaustive()
    }
}

/// The Postgres store's settings were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The database URL does not parse. The URL itself (it may carry a
    /// password) is not repeated.
    #[error("the database URL does not parse: {0}")]
    Url(String),
    /// A schema name that is not a plain lowercase identifier.
    #[error(
        "schema {0:?} is not a plain identifier (lowercase letters, digits and `_`, \
         not starting with a digit or `pg_`, at most 63 bytes)"
    )]
    Schema(String),
    /// The pool could not be built.
    #[error("the connection pool could not be built: {0}")]
    Pool(String),
}

impl PostgresStore {
    /// A store on the database `url` names (`postgres://user:password@host:port/database`,
    /// or a `key=value` string), with a pool of up to 16 connections. No
    /// connection is made yet. TLS is not supported: a URL that requires
    /// it (`sslmode=require`) is refused when connecting.
    ///
    /// ```
    /// # use ltvboost_webhooks::postgres::PostgresStore;
    /// assert!(PostgresStore::new("postgres://127.0.0.1/app").is_ok());
    /// assert!(PostgresStore::new("postgres://[::1").is_err());
    /// ```
    pub fn new(url: &str) -> Result<Self, PostgresError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PostgresError::Url(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("ltvboost-webhooks");
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| PostgresError::Pool(e.to_string()))?;
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                schema: DEFAULT_SCHEMA.to_owned(),
                sql: store::Sql::new(DEFAULT_SCHEMA),
                migrated: tokio::sync::OnceCell::new(),
                janitor: std::sync::OnceLock::new(),
                retention: DEFAULT_INBOX_RETENTION,
                in_flight_wait: Duration::from_millis(250),
                operation_timeout: Duration::from_secs(5),
            }),
        })
    }

    /// The store named by `LTVBOOST_DATABASE_URL`, with its inbox retention
    /// from `LTVBOOST_INBOX_RETENTION` when set; `Ok(None)` when the URL is
    /// unset.
    ///
    /// ```
    /// # use ltvboost_webhooks::postgres::PostgresStore;
    /// // In a process without LTVBOOST_DATABASE_URL:
    /// assert!(PostgresStore::from_env()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// ```
    pub fn from_env() -> Result<Option<Self>, Box<dyn std::error::Error + Send + Sync>> {
        let Some(url) = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|url| !url.trim().is_empty())
        else {
            return Ok(None);
        };
        let mut store = Self::new(url.trim()).map_err(|e| format!("{DATABASE_URL_ENV}: {e}"))?;
        if let Ok(retention) = std::env::var(INBOX_RETENTION_ENV) {
            let retention =
                parse_duration(&retention).map_err(|e| format!("{INBOX_RETENTION_ENV}: {e}"))?;
            store = store.inbox_retention(retention);
        }
        Ok(Some(store))
    }

    /// Puts the tables in schema `name` (default [`DEFAULT_SCHEMA`]): lowercase
    /// letters, digits and `_`, not starting with a digit or `pg_` (which
    /// Postgres reserves).
    ///
    /// ```
    /// # use ltvboost_webhooks::postgres::PostgresStore;
    /// let store = PostgresStore::new("postgres://127.0.0.1/app")?;
    /// assert!(store.clone().schema("orders_webhooks").is_ok());
    /// assert!(store.schema("x; DROP TABLE users").is_err());
    /// # Ok::<(), ltvboost_webhooks::postgres::PostgresError>(())
    /// ```
    pub fn schema(self, name: &str) -> Result<Self, PostgresError> {
        let plain = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with("pg_")
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            return Err(PostgresError::Schema(name.to_owned()));
        }
        Ok(self.with(|shared| {
            shared.schema = name.to_owned();
            shared.sql = store::Sql::new(name);
        }))
    }

    /// How long the inbox keeps a delivery (default 7 days). A task deletes
    /// older rows, and expired done-records, every `retention / 2` (at
    /// least every second, at most every minute). The done-record keeps its
    /// own lifetime, the configuration's
    /// [`done_ttl`](crate::WebhookConfig::done_ttl).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ltvboost_webhooks::postgres::PostgresStore;
    /// let store = PostgresStore::new("postgres://127.0.0.1/app")?
    ///     .inbox_retention(Duration::from_secs(90 * 60));
    /// # Ok::<(), ltvboost_webhooks::postgres::PostgresError>(())
    /// ```
    pub fn inbox_retention(self, retention: Duration) -> Self {
        self.with(|shared| shared.retention = retention)
    }

    /// How long a delivery waits for another transaction that holds the
    /// same event (default 250 ms) before it answers `409`: usually the
    /// other commits first and the wait ends in `200` duplicate. At most an
    /// hour.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ltvboost_webhooks::postgres::PostgresStore;
    /// let store = PostgresStore::new("postgres://127.0.0.1/app")?
    ///     .in_flight_wait(Duration::from_secs(1));
    /// # Ok::<(), ltvboost_webhooks::postgres::PostgresError>(())
    /// ```
    pub fn in_flight_wait(self, wait: Duration) -> Self {
        let wait = wait.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        self.with(|shared| shared.in_flight_wait = wait)
    }

    /// How long the store waits for a connection and for each of its own
    /// statements (default 5 s) before the delivery is answered `503`.
    /// Your handler's statements are not bounded by it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ltvboost_webhooks::postgres::PostgresStore;
    /// let store = PostgresStore::new("postgres://127.0.0.1/app")?
    ///     .operation_timeout(Duration::from_secs(2));
    /// # Ok::<(), ltvboost_webhooks::postgres::PostgresError>(())
    /// ```
    pub fn operation_timeout(self, timeout: Duration) -> Self {
        self.with(|shared| shared.operation_timeout = timeout)
    }

    /// The schema the tables live in.
    ///
    /// ```
    /// # use ltvboost_webhooks::postgres::PostgresStore;
    /// assert_eq!(PostgresStore::new("postgres://127.0.0.1/app")?.schema_name(), "ltvboost");
    /// # Ok::<(), ltvboost_webhooks::postgres::PostgresError>(())
    /// ```
    pub fn schema_name(&self) -> &str {
        &self.shared.schema
    }

    /// Creates or migrates the tables now (the first delivery does it
    /// otherwise), so that a deployment can fail early on a database it
    /// cannot use.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use ltvboost_webhooks::postgres::PostgresStore;
    /// PostgresStore::new("postgres://app@127.0.0.1/app")?.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.client().await.map(drop)
    }

    /// Deletes inbox rows older than the retention and expired
    /// done-records now, and says how many inbox rows went. The store does
    /// it by itself in the background once it has received a delivery.
    ///
    /// ```no_run
    /// # async fn run(store: ltvboost_webhooks::postgres::PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let deleted = store.tidy().await?;
    /// println!("{deleted} inbox rows past their retention deleted");
    /// # Ok(()) }
    /// ```
    pub async fn tidy(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let retention = self.shared.retention.as_secs_f64();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&retention];
        let (inbox, _) = self
            .bounded(async {
                let inbox = client.execute(&self.shared.sql.tidy_inbox, &params);
                let dedupe = client.execute(&self.shared.sql.tidy_dedupe, &[]);
                futures_util::future::try_join(inbox, dedupe).await
            })
            .await?;
        crate::metrics::inbox_deleted(inbox);
        Ok(inbox)
    }

    fn with(mut self, change: impl FnOnce(&mut Shared)) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => change(shared),
            None => {
                // A clone is shared: settings apply to a copy with its own pool
                // state (the pool itself is shared).
                let mut shared = Shared {
                    pool: self.shared.pool.clone(),
                    schema: self.shared.schema.clone(),
                    sql: self.shared.sql.clone(),
                    migrated: tokio::sync::OnceCell::new(),
                    janitor: std::sync::OnceLock::new(),
                    retention: self.shared.retention,
                    in_flight_wait: self.shared.in_flight_wait,
                    operation_timeout: self.shared.operation_timeout,
                };
                change(&mut shared);
                self.shared = Arc::new(shared);
            }
        }
        self
    }

    /// A pooled connection, with the tables created or migrated.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.pooled().await?;
        self.shared
            .migrated
            .get_or_try_init(|| async {
                let schema = store::quoted(&self.shared.schema);
                self.bounded(store::migrate(&client, &schema)).await
            })
            .await?;
        Ok(client)
    }

    /// A pooled connection, the tables as they are (a reader creates none).
    async fn pooled(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let timeout = self.shared.operation_timeout;
        match tokio::time::timeout(timeout, self.shared.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(StoreError::new(format!(
                "Postgres: no connection: {}",
                crate::error_text::with_causes(&e)
            ))),
            Err(_) => Err(StoreError::new(format!(
                "Postgres: no connection within {timeout:?}"
            ))),
        }
    }

    /// Runs one of the store's own steps within the operation timeout.
    async fn bounded<T>(
        &self,
        step: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.shared.operation_timeout, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(postgres_error(&error)),
            Err(_) => Err(StoreError::new(format!(
                "Postgres did not answer within {:?}",
                self.shared.operation_timeout
            ))),
        }
    }

    /// Starts the background task that applies the retention, once.
    fn start_janitor(&self) {
        if self.shared.janitor.set(()).is_err() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::downgrade(&self.shared);
        let every =
            (self.shared.retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(shared) = store.upgrade() else {
                    return;
                };
                if let Err(error) = (PostgresStore { shared }).tidy().await {
                    tracing::warn!(%error, "could not delete inbox rows past their retention");
                }
            }
        });
    }
}

/// A Postgres error as a [`StoreError`], with the server's message (never a
/// parameter: bodies and keys are sent as parameters, not in the text).
fn postgres_error(error: &tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => StoreError::new(format!("Postgres: {} ({})", db.message(), db.code().code())),
        None => StoreError::new(format!(
            "Postgres: {}",
            crate::error_text::with_causes(error)
        )),
    }
}

use std::future::Future;
