use std::time::Duration;

use redis::Script;

use super::{Claim, ClaimStatus, ClaimToken, DedupeStore, StoreError};
use crate::redis::{Batched, Target, bounded, millis, namespaced};
pub use crate::redis::{DEFAULT_NAMESPACE, DEFAULT_OPERATION_TIMEOUT};

/// The default prefix of every key the store writes: the
/// [`DEFAULT_NAMESPACE`]'s (see [`RedisStore::namespace`]).
pub const DEFAULT_KEY_PREFIX: &str = "ltvboost:{default}:webhook:";

// Claim and mark-done are one `SET … GET` each; renew and release compare
// the token before they write, so each is a Lua script, which Redis runs
// without interleaving other commands.

/// KEYS[1] = key, ARGV[1] = token, ARGV[2] = lease in ms. Only the holder
/// renews. 1: held, 0: lost.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == 'claimed:' .. ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// KEYS[1] = key, ARGV[1] = token. Only the holder releases.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == 'claimed:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A [`DedupeStore`] in Redis, shared by a fleet of receivers (feature
/// `redis`).
///
/// * Claim: `SET key claimed:<token> NX GET PX <lease>`: set when the key is
///   absent, and the key's value (a claim or `done`) answered when not. A
///   receiver that dies mid-handler leaves a claim that lapses after the lease.
/// * Mark done: `SET key done GET PX <ttl>`, whatever holds the key now (the
///   work happened); the value it replaced tells whether the claim was still
///   ours.
/// * Release: `DEL key`, only by the claim's holder.
///
/// Each step is one atomic command or Lua script. Commands share one
/// multiplexed connection that reconnects by itself, and commands of
/// concurrent deliveries go to Redis together, as one pipeline. Every
/// operation has a deadline (default 2 s); an unreachable or slow Redis is a
/// [`StoreError`], which the receiver answers with `503` without calling a
/// handler. A claim that missed its deadline is released right behind it, so
/// a Redis that stalls and then runs it does not hold the event until the
/// lease lapses.
///
/// The connection URL may carry a password; it is never printed.
///
/// ```no_run
/// use ltvboost_webhooks::WebhookConfig;
/// use ltvboost_webhooks::dedupe::RedisStore;
/// # async fn run(verifier: ltvboost_webhooks::signature::Verifier) -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// let config = WebhookConfig::new(verifier).dedupe_store(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    redis: Batched,
    prefix: String,
    timeout: Duration,
    renew: Script,
    release: Script,
}

impl RedisStore {
    /// Connects to Redis at `url` and checks the connection once, so that a
    /// wrong URL fails at start-up rather than on the first delivery.
    ///
    /// `rediss://` URLs connect over TLS (feature `redis-tls`), verified
    /// against the bundled web PKI roots; for a private CA, see
    /// `connect_with_root_certificate`. Warns when the server would evict
    /// done-records (see [`RedisStore::eviction_policy`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::checked(Self::lazy(url)?).await
    }

    /// [`connect`](Self::connect) over TLS, trusting the root certificate
    /// `pem` (a private CA) rather than the public roots. Feature `redis-tls`.
    #[cfg(feature = "redis-tls")]
    pub async fn connect_with_root_certificate(url: &str, pem: &[u8]) -> Result<Self, StoreError> {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        };
        let client = redis::Client::build_with_tls(url, certificates).map_err(StoreError::new)?;
        Self::checked(Self::from_target(Target::Server(client))?).await
    }

    async fn checked(store: Self) -> Result<Self, StoreError> {
        // The keys it implies, until `namespace` says otherwise.
        tracing::info!(keys = %format!("{}*", store.prefix), "dedupe store keys");
        let mut connection = store.redis.connection();
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<String>(&mut connection);
        match tokio::time::timeout(store.timeout, ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(StoreError::new(e)),
            Err(_) => return Err(StoreError::new("Redis did not answer PING in time")),
        }
        match store.eviction_policy().await {
            Ok(Some(policy)) if policy != "noeviction" => tracing::warn!(
                policy,
                "Redis may evict keys (maxmemory-policy is not noeviction): an evicted \
                 done-record lets a retried event be handled twice"
            ),
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "could not read Redis' maxmemory-policy"),
        }
        Ok(store)
    }

    /// Redis' `maxmemory-policy`, or `None` where `CONFIG GET` answers
    /// nothing. Anything but `noeviction` may evict done-records and claims
    /// under memory pressure, and with them the effectively-once guarantee:
    /// run the dedupe Redis with `maxmemory-policy noeviction`.
    pub async fn eviction_policy(&self) -> Result<Option<String>, StoreError> {
        let mut connection = self.redis.connection();
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg("maxmemory-policy");
        let answer = tokio::time::timeout(
            self.timeout,
            get.query_async::<Vec<String>>(&mut connection),
        )
        .await
        .map_err(|_| StoreError::new("Redis did not answer CONFIG GET in time"))?
        .map_err(StoreError::new)?;
        Ok(answer.into_iter().nth(1))
    }

    /// A store that connects on first use. A receiver built with it starts
    /// even while Redis is down, and answers `503` until Redis is back.
    ///
    /// Must be called inside a tokio runtime.
    pub fn lazy(url: &str) -> Result<Self, StoreError> {
        Self::from_target(Target::open(url)?)
    }

    fn from_target(target: Target) -> Result<Self, StoreError> {
        Ok(Self {
            redis: Batched::new(target.lazy_connection()?),
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_OPERATION_TIMEOUT,
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        })
    }

    /// The namespace of every key written: `ltvboost:{<namespace>}:webhook:`.
    /// Default: [`DEFAULT_NAMESPACE`]. Services that share one Redis and
    /// may receive the same event each take their own, or the second to see
    /// an event answers it as a duplicate and never runs its handler. The
    /// braces are a Redis Cluster hash tag. A namespace is 1 to 64 ASCII
    /// letters, digits, `-`, `_` or `.`.
    ///
    /// ```no_run
    /// use ltvboost_webhooks::dedupe::RedisStore;
    /// # async fn run() -> Result<(), ltvboost_webhooks::dedupe::StoreError> {
    /// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?.namespace("billing")?;
    /// # Ok(()) }
    /// ```
    pub fn namespace(mut self, namespace: &str) -> Result<Self, StoreError> {
        self.prefix = namespaced(namespace, "webhook").map_err(StoreError::new)?;
        tracing::info!(keys = %format!("{}*", self.prefix), "dedupe store keys");
        Ok(self)
    }

    /// The prefix of every key written, verbatim (no hash tag is added).
    /// Default: [`DEFAULT_KEY_PREFIX`]; prefer
    /// [`namespace`](Self::namespace).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The deadline for one operation, a reconnection included. Default:
    /// [`DEFAULT_OPERATION_TIMEOUT`].
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        Ok(bounded(self.timeout, call).await?)
    }

    /// `script` on the event's key, with the claim token and `args`.
    async fn run(
        &self,
        script: &Script,
        key: &str,
        token: &ClaimToken,
        args: &[&str],
    ) -> Result<ClaimStatus, StoreError> {
        let key = self.key(key);
        let token = token.to_string();
        let held: i64 = self
            .bounded(self.redis.invoke(script, |command| {
                command.arg(1).arg(&key).arg(&token).arg(args);
            }))
            .await?;
        Ok(status(held == 1))
    }
}

/// The value of a key `token` has claimed; the scripts build it as
/// `'claimed:' .. ARGV[1]`.
fn claimed(token: &ClaimToken) -> String {
    format!("claimed:{token}")
}

impl DedupeStore for RedisStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        let token = ClaimToken::random();
        let key = self.key(key);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(claimed(&token))
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(lease));
        let before: Option<Vec<u8>> = match self.bounded(self.redis.query(set)).await {
            Ok(before) => before,
            Err(error) => {
                // A stalled Redis still runs the SET once it wakes: release
                // the claim it would leave, or the sender's retry would be
                // refused until the lease lapsed. By `EVAL`, which needs no
                // second round trip when Redis has lost its scripts.
                let mut release = redis::cmd("EVAL");
                release.arg(RELEASE).arg(1).arg(key).arg(token.to_string());
                let redis = self.redis.clone();
                tokio::spawn(async move { redis.query::<i64>(release).await });
                return Err(error);
            }
        };
        Ok(match before.as_deref() {
            None => Claim::Acquired(token),
            Some(b"done") => Claim::Done,
            Some(_) => Claim::InFlight,
        })
    }

    async fn renew(
        &self,
        key: &str,
        token: &ClaimToken,
        lease: Duration,
    ) -> Result<ClaimStatus, StoreError> {
        self.run(&self.renew, key, token, &[&millis(lease)]).await
    }

    async fn mark_done(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> Result<ClaimStatus, StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.key(key))
            .arg("done")
            .arg("GET")
            .arg("PX")
            .arg(millis(ttl));
        let before: Option<Vec<u8>> = self.bounded(self.redis.query(set)).await?;
        let held = before.as_deref() == Some(claimed(token).as_bytes());
        Ok(status(held))
    }

    async fn release(&self, key: &str, token: &ClaimToken) -> Result<ClaimStatus, StoreError> {
        self.run(&self.release, key, token, &[]).await
    }
}

fn status(held: bool) -> ClaimStatus {
    if held {
        ClaimStatus::Held
    } else {
        ClaimStatus::Lost
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL (and any password in it) is deliberately absent.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
