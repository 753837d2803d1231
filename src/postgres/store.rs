//! The tables, their migration, and [`DedupeStore`] on them.
//!
//! `dedupe` holds one row per event key: a claim (`done = false`, a token
//! and a lease in `expires_at`) or a done-record (`done = true`, kept until
//! `expires_at`). A row past `expires_at` counts as absent; the janitor
//! deletes it.

use std::time::Duration;

use super::{PostgresStore, postgres_error};
use crate::dedupe::{Claim, ClaimStatus, ClaimToken, DedupeStore, StoreError};

/// The schema's statements, in order. Each is idempotent, and the whole list
/// runs in one implicit transaction under an advisory lock, so receivers
/// starting together migrate once. A later version appends statements.
const MIGRATION: &str = "
SELECT pg_advisory_xact_lock(hashtextextended('ltvboost-webhooks migrate {schema}', 0));
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer PRIMARY KEY);
CREATE TABLE IF NOT EXISTS {schema}.dedupe (
    key text PRIMARY KEY,
    token text,
    done boolean NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS dedupe_expires_at ON {schema}.dedupe (expires_at);
CREATE TABLE IF NOT EXISTS {schema}.inbox (
    seq bigserial PRIMARY KEY,
    event_id text,
    event_type text NOT NULL,
    account text,
    received_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL,
    error text,
    body bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_received_at ON {schema}.inbox (received_at);
CREATE INDEX IF NOT EXISTS inbox_event_id ON {schema}.inbox (event_id);
INSERT INTO {schema}.schema_version (version) VALUES (1) ON CONFLICT DO NOTHING;
";

/// The schema version [`MIGRATION`] brings the tables to.
const VERSION: i32 = 1;

/// Creates or migrates the tables in `schema` (a checked identifier,
/// quoted), unless they are at [`VERSION`] already: a process start then
/// takes no lock (`CREATE INDEX IF NOT EXISTS` would), and a role without
/// the right to create tables works on tables made by another.
pub(super) async fn migrate(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    let current = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_version"),
            &[],
        )
        .await;
    match current {
        Ok(row) if row.get::<_, i32>(0) >= VERSION => Ok(()),
        // Absent (undefined table or schema), or older: migrate.
        _ => {
            client
                .batch_execute(&MIGRATION.replace("{schema}", schema))
                .await
        }
    }
}

/// The statements, with the schema's name in them.
#[derive(Clone)]
pub(super) struct Sql {
    /// `$1` key, `$2` token, `$3` lease in seconds → `acquired`, `done`.
    claim: String,
    /// `$1` key, `$2` token, `$3` lease in seconds → a row when held.
    renew: String,
    /// `$1` key, `$2` token, `$3` time to live in seconds → `held`.
    mark_done: String,
    /// `$1` key, `$2` token → a row when held.
    release: String,
    /// Inside a delivery's transaction: `$1` key, `$2` time to live in
    /// seconds, `$3`–`$6` the inbox row's event id, type, account and body
    /// → whether this transaction now holds the done-record (and wrote the
    /// `handled` inbox row), and the transaction's id.
    pub(super) claim_done: String,
    /// `$1` key → `done` of the row that stands.
    pub(super) standing: String,
    /// `$1` event id, `$2` type, `$3` account, `$4` outcome, `$5` error,
    /// `$6` body.
    pub(super) inbox_insert: String,
    /// `$1` retention in seconds.
    pub(super) tidy_inbox: String,
    pub(super) tidy_dedupe: String,
    /// The inbox's columns, `received_at` as RFC 3339 in UTC, from which
    /// the listing and the lookup select.
    pub(super) inbox_select: String,
}

impl Sql {
    /// `schema` is a checked identifier, quoted here (a reserved word such
    /// as `order` is a valid schema name).
    pub(super) fn new(schema: &str) -> Self {
        let table = format!("{}.dedupe", quoted(schema));
        let inbox = format!("{}.inbox", quoted(schema));
        Self {
            // The CTE's snapshot predates its insert: `done` is the row that
            // stood before, when the insert found one.
            claim: format!(
                "WITH taken AS (
                   INSERT INTO {table} AS d (key, token, done, expires_at)
                   VALUES ($1, $2, false, now() + make_interval(secs => $3))
                   ON CONFLICT (key) DO UPDATE
                     SET token = EXCLUDED.token, done = false, expires_at = EXCLUDED.expires_at
                     WHERE d.expires_at <= now()
                   RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM taken) AS acquired,
                        (SELECT done FROM {table} WHERE key = $1) AS done"
            ),
            renew: format!(
                "UPDATE {table} SET expires_at = now() + make_interval(secs => $3)
                 WHERE key = $1 AND token = $2 AND NOT done AND expires_at > now()
                 RETURNING 1"
            ),
            mark_done: format!(
                "WITH before AS (SELECT token, done, expires_at FROM {table} WHERE key = $1 FOR UPDATE),
                 done AS (
                   INSERT INTO {table} AS d (key, token, done, expires_at)
                   VALUES ($1, $2, true, now() + make_interval(secs => $3))
                   ON CONFLICT (key) DO UPDATE
                     SET token = EXCLUDED.token, done = true, expires_at = EXCLUDED.expires_at
                   RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM before
                                WHERE token = $2 AND NOT done AND expires_at > now()) AS held,
                        (SELECT count(*) FROM done) AS written"
            ),
            release: format!(
                "DELETE FROM {table} WHERE key = $1 AND token = $2 AND NOT done AND expires_at > now()
                 RETURNING 1"
            ),
            // The inbox row goes in with the claim (one statement): it
            // commits with the handler's writes, or goes with a rollback.
            claim_done: format!(
                "WITH claimed AS (
                   INSERT INTO {table} AS d (key, token, done, expires_at)
                   VALUES ($1, NULL, true, now() + make_interval(secs => $2))
                   ON CONFLICT (key) DO UPDATE
                     SET token = NULL, done = true, expires_at = EXCLUDED.expires_at
                     WHERE d.expires_at <= now()
                   RETURNING 1),
                 kept AS (
                   INSERT INTO {inbox} (event_id, event_type, account, outcome, error, body)
                   SELECT $3, $4, $5, 'handled', NULL, $6 WHERE EXISTS (SELECT 1 FROM claimed)
                   RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM claimed), txid_current()"
            ),
            standing: format!("SELECT done FROM {table} WHERE key = $1 AND expires_at > now()"),
            inbox_insert: format!(
                "INSERT INTO {inbox} (event_id, event_type, account, outcome, error, body)
                 VALUES ($1, $2, $3, $4, $5, $6)"
            ),
            tidy_inbox: format!(
                "DELETE FROM {inbox} WHERE received_at < now() - make_interval(secs => $1)"
            ),
            tidy_dedupe: format!("DELETE FROM {table} WHERE expires_at < now()"),
            inbox_select: format!(
                "SELECT seq, event_id, event_type, account,
                        to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        outcome, error, body
                 FROM {inbox}"
            ),
        }
    }
}

/// A checked schema name as a quoted identifier.
pub(super) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl PostgresStore {
    /// Runs one of the plain store's statements (prepared once per
    /// connection) and returns its row, if any.
    async fn row(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        self.bounded(async {
            let statement = client.prepare_cached(sql).await?;
            client.query_opt(&statement, params).await
        })
        .await
    }
}

impl DedupeStore for PostgresStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        self.start_janitor();
        let token = ClaimToken::random();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&key, &token.to_string(), &seconds(lease)];
        let row = self.row(&self.shared.sql.claim, &params).await?;
        let (acquired, done) = match row {
            Some(row) => (
                row.try_get::<_, bool>(0).map_err(|e| postgres_error(&e))?,
                row.try_get::<_, Option<bool>>(1)
                    .map_err(|e| postgres_error(&e))?,
            ),
            None => (false, None),
        };
        Ok(match (acquired, done) {
            (true, _) => Claim::Acquired(token),
            (false, Some(true)) => Claim::Done,
            // A claim stands, or the row went between the two reads.
            (false, _) => Claim::InFlight,
        })
    }

    async fn renew(
        &self,
        key: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> Result<ClaimStatus, StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&key, &token.to_string(), &seconds(lease)];
        let row = self.row(&self.shared.sql.renew, &params).await?;
        Ok(held(row.is_some()))
    }

    async fn mark_done(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> Result<ClaimStatus, StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&key, &token.to_string(), &seconds(ttl)];
        let row = self.row(&self.shared.sql.mark_done, &params).await?;
        let held_before = match row {
            Some(row) => row.try_get(0).map_err(|e| postgres_error(&e))?,
            None => false,
        };
        Ok(held(held_before))
    }

    async fn release(&self, key: &str, token: &ClaimToken) -> Result<ClaimStatus, StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&key, &token.to_string()];
        let row = self.row(&self.shared.sql.release, &params).await?;
        Ok(held(row.is_some()))
    }
}

fn held(held: bool) -> ClaimStatus {
    if held {
        ClaimStatus::Held
    } else {
        ClaimStatus::Lost
    }
}
