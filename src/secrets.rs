//! Where a receiver's secrets come from, and how they change without a
//! restart.
//!
//! Every delivery is verified with the secrets a [`SecretSource`] gives for
//! it. The source is asked once the request's head has arrived and before
//! its body is read, so a request it does not know costs no body read:
//!
//! | the source answers | the receiver |
//! | --- | --- |
//! | `Ok(Some(keys))` | reads the body and verifies it with `keys` |
//! | `Ok(None)`: no such account | answers `404`, body unread |
//! | `Err(_)`: the lookup failed | answers `503`, body unread; LTVboost retries |
//!
//! These sources come with the crate:
//!
//! * a [`Verifier`]: fixed secrets, for the life of the process;
//! * [`SecretFile`]: secrets read from a file, one per line, newest first,
//!   followed without a restart (within two seconds of a change, whether the
//!   file is rewritten in place or replaced by a rename, and at once on
//!   `SIGHUP`), as secret managers (a Vault agent, a Kubernetes secret
//!   volume, systemd credentials) write them;
//! * [`AccountsFile`]: many LTVboost accounts, each with its own secrets,
//!   from a TOML file followed the same way, each account at the
//!   `{account}` segment of the receiver's
//!   [`path`](crate::WebhookConfig::path);
//! * any `Arc` of a source.
//!
//! [`from_env`] picks one as the examples do, from
//! `LTVBOOST_WEBHOOK_ACCOUNTS_FILE`, `LTVBOOST_WEBHOOK_SECRET_FILE` or
//! `LTVBOOST_WEBHOOK_SECRET`.
//!
//! Users write their own over a database or a secret manager. A lookup that
//! is slow to compute can be cached inside the source: keep each answer
//! with the [`Instant`](std::time::Instant) it was fetched, and fetch again
//! once it is older than the time a revoked secret may still be accepted;
//! cache `Ok(None)` too (a flood of requests to unknown accounts then costs
//! no lookup each), and never cache an `Err`.
//!
//! A worker in enqueue mode verifies each entry again, with
//! [`SecretSource::keys`] for the account the receiver found.
//!
//! ```
//! use ltvboost_webhooks::secrets::{Keys, LookupError, RequestHead, SecretSource};
//! use ltvboost_webhooks::signature::{Secret, Verifier};
//!
//! /// Secrets per tenant, named by a header a proxy in front sets.
//! struct Tenants {
//!     acme: Verifier,
//! }
//!
//! impl SecretSource for Tenants {
//!     async fn keys(&self, account: Option<&str>) -> Result<Option<Keys>, LookupError> {
//!         // A database or secret manager would be asked here.
//!         Ok(match account {
//!             Some("acme") => Some(Keys::for_account("acme", self.acme.clone())),
//!             _ => None,
//!         })
//!     }
//!
//!     async fn lookup(&self, head: &RequestHead<'_>) -> Result<Option<Keys>, LookupError> {
//!         let tenant = head.headers().get("x-tenant").and_then(|v| v.to_str().ok());
//!         self.keys(tenant).await
//!     }
//! }
//!
//! let tenants = Tenants { acme: Verifier::new([Secret::new("acme-secret-0123456789")?])? };
//! let config = ltvboost_webhooks::WebhookConfig::new(tenants);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

use crate::metrics;
use crate::signature::{Secret, SecretError, Verifier};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a lookup returns, boxed (see [`ErasedSource`]).
type Lookup<'a> = crate::erase::BoxFuture<'a, Result<Option<Keys>, LookupError>>;

/// A lookup bounded by `deadline`: a source that does not answer in time
/// fails as one that answered with an error (the receiver's and the
/// worker's lookups alike).
pub(crate) async fn within(
    deadline: Duration,
    lookup: Lookup<'_>,
) -> Result<Option<Keys>, LookupError> {
    tokio::time::timeout(deadline, lookup)
        .await
        .unwrap_or_else(|_| {
            Err(LookupError::new(format!(
                "the secret source did not answer within {deadline:?}"
            )))
        })
}

/// How often a [`SecretFile`] reads its file again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The parts of a request a [`SecretSource`] may look at: its head, before
/// the body is read.
///
/// ```
/// use ltvboost_webhooks::secrets::RequestHead;
///
/// let headers = http::HeaderMap::new();
/// let head = RequestHead::new(&http::Method::POST, "/webhooks/ltvboost", &headers);
/// assert_eq!(head.path(), "/webhooks/ltvboost");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
    account: Option<&'a str>,
}

impl<'a> RequestHead<'a> {
    /// A request head (for a source's tests; the receiver makes them).
    pub fn new(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            path,
            headers,
            account: None,
        }
    }

    /// The same head, with the account segment of its path.
    pub fn with_account(mut self, account: Option<&'a str>) -> Self {
        self.account = account;
        self
    }

    /// The `{account}` segment of the path, when the receiver's
    /// [`path`](crate::WebhookConfig::path) has one.
    pub fn account(&self) -> Option<&'a str> {
        self.account
    }

    /// The request's method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request's path, without the query.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }
}

/// The secrets a delivery is verified with, and the account they belong
/// to, if the source has accounts.
///
/// ```
/// use ltvboost_webhooks::secrets::Keys;
/// use ltvboost_webhooks::signature::{Secret, Verifier};
///
/// let verifier = Verifier::new([Secret::new("acme-secret-0123456789")?])?;
/// let keys = Keys::for_account("acme", verifier);
/// assert_eq!(keys.account(), Some("acme"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Keys {
    account: Option<Arc<str>>,
    verifier: Verifier,
}

impl Keys {
    /// Secrets of a receiver without accounts.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            account: None,
            verifier,
        }
    }

    /// Secrets of one account: deliveries verified with them carry its
    /// name, and are deduplicated apart from other accounts' events.
    pub fn for_account(account: impl Into<Arc<str>>, verifier: Verifier) -> Self {
        Self {
            account: Some(account.into()),
            verifier,
        }
    }

    /// The account, if the source has accounts.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The secrets.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

/// A lookup of secrets failed: the receiver answers `503`, and LTVboost
/// retries.
///
/// ```
/// use ltvboost_webhooks::secrets::LookupError;
///
/// let error = LookupError::new("the secrets table did not answer");
/// assert!(error.to_string().contains("did not answer"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the secrets could not be looked up: {0}")]
pub struct LookupError(#[source] BoxError);

impl LookupError {
    /// Wraps the cause. It is logged: it must not quote a secret.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }
}

/// Where a receiver (and a worker) finds the secrets to verify a delivery
/// with. See the [module docs](self) for what each answer does, and for a
/// user-written source.
pub trait SecretSource: Send + Sync + 'static {
    /// The secrets of `account` (`None`: a receiver without accounts), or
    /// `Ok(None)` when there is no such account.
    fn keys(
        &self,
        account: Option<&str>,
    ) -> impl Future<Output = Result<Option<Keys>, LookupError>> + Send;

    /// The secrets for a request, from its head, before its body is read.
    /// By default those of the `{account}` segment of the receiver's path
    /// ([`RequestHead::account`]; none without one); a source that names
    /// accounts otherwise (a header, the host) reads them here.
    fn lookup(
        &self,
        head: &RequestHead<'_>,
    ) -> impl Future<Output = Result<Option<Keys>, LookupError>> + Send {
        self.keys(head.account())
    }
}

/// [`SecretSource`] behind a pointer (the crate's one pattern, see
/// `erase.rs`): what the receiver and the worker hold.
pub(crate) trait ErasedSource: Send + Sync + 'static {
    /// The worker's call (feature `queue`); the receiver looks up by head.
    #[cfg_attr(not(feature = "queue"), allow(dead_code))]
    fn keys_boxed<'a>(&'a self, account: Option<&'a str>) -> Lookup<'a>;
    fn lookup_boxed<'a>(&'a self, head: &'a RequestHead<'a>) -> Lookup<'a>;
}

impl<S: SecretSource> ErasedSource for S {
    fn keys_boxed<'a>(&'a self, account: Option<&'a str>) -> Lookup<'a> {
        Box::pin(SecretSource::keys(self, account))
    }
    fn lookup_boxed<'a>(&'a self, head: &'a RequestHead<'a>) -> Lookup<'a> {
        Box::pin(SecretSource::lookup(self, head))
    }
}

/// Fixed secrets: every request, no accounts.
impl SecretSource for Verifier {
    async fn keys(&self, account: Option<&str>) -> Result<Option<Keys>, LookupError> {
        Ok(account.is_none().then(|| Keys::new(self.clone())))
    }
}

impl<S: SecretSource> SecretSource for Arc<S> {
    fn keys(
        &self,
        account: Option<&str>,
    ) -> impl Future<Output = Result<Option<Keys>, LookupError>> + Send {
        (**self).keys(account)
    }

    fn lookup(
        &self,
        head: &RequestHead<'_>,
    ) -> impl Future<Output = Result<Option<Keys>, LookupError>> + Send {
        (**self).lookup(head)
    }
}

/// Secrets read from a file and followed without a restart: one secret per
/// line, newest first, blank lines and `#` comments skipped (see
/// [`Verifier::from_lines`]).
///
/// The file is read again every [`RELOAD_EVERY`], whether it was rewritten
/// in place or replaced by a rename, and at once on `SIGHUP` (Unix). A
/// change found by a periodic read applies once the next read finds it too
/// (within two seconds; a read in the middle of a rewrite in place is not
/// taken for the new secrets), to the next delivery; connections stay open, and
/// deduplication forgets nothing. A file that becomes empty, unreadable,
/// absent or invalid keeps the last good secrets: the receiver keeps
/// answering, an error naming the file is logged, and
/// `ltvboost_webhook_secret_file_reloads_total{result="failed"}` counts it
/// (alert `LtvboostWebhookSecretFileUnreadable`).
///
/// When a secret stays across a reload, so does the time it last matched
/// ([`Verifier::last_matched`]): a rotation's end is still read off it.
///
/// ```no_run
/// use ltvboost_webhooks::secrets::SecretFile;
/// use ltvboost_webhooks::{WebhookConfig, WebhookLayer, handler::Handlers};
///
/// # async fn run(handlers: Handlers) -> Result<(), Box<dyn std::error::Error>> {
/// let secrets = SecretFile::open("/run/secrets/ltvboost-webhook")?;
/// let layer = WebhookLayer::new(WebhookConfig::new(secrets), handlers);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SecretFile {
    followed: Arc<Followed<Verifier>>,
}

impl SecretFile {
    /// Reads the file at `path` and follows it from now on, on a task of
    /// the current tokio runtime (it ends when the last clone is dropped).
    ///
    /// At start there are no last good secrets to keep: a file that cannot
    /// be read or holds no valid secret is [`SecretError::File`], and so is
    /// a call outside a tokio runtime.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        Ok(Self {
            followed: Followed::open(path.as_ref())?,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.followed.path
    }

    /// The secrets in force.
    pub fn verifier(&self) -> Verifier {
        self.followed.current()
    }

    /// Reads the file now: `Ok(true)` when its secrets changed, `Ok(false)`
    /// when it is as before. An error keeps the last good secrets; it is
    /// logged and counted like a failed periodic read.
    ///
    /// ```no_run
    /// # fn run(secrets: ltvboost_webhooks::secrets::SecretFile) {
    /// match secrets.reload() {
    ///     Ok(changed) => println!("reloaded (changed: {changed})"),
    ///     Err(error) => eprintln!("{error}; the last good secrets stay"),
    /// }
    /// # }
    /// ```
    pub fn reload(&self) -> Result<bool, SecretError> {
        self.followed.reload(false)
    }
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("path", &self.followed.path)
            .field("verifier", &self.verifier())
            .finish()
    }
}

impl SecretSource for SecretFile {
    async fn keys(&self, account: Option<&str>) -> Result<Option<Keys>, LookupError> {
        Ok(account.is_none().then(|| Keys::new(self.verifier())))
    }
}

/// Accounts and their secrets, read from a TOML file and followed without a
/// restart, as [`SecretFile`] follows its file: for one receiver serving
/// many LTVboost accounts, each at `…/{account}` (see
/// [`WebhookConfig::path`](crate::WebhookConfig::path)).
///
/// ```toml
/// [accounts.acme]
/// secrets = ["whsec_new", "whsec_old"]   # newest first
/// [accounts.globex]
/// secrets = ["whsec_g"]
/// ```
///
/// Each account verifies only with its own secrets, and deduplicates apart
/// from the others (the same event id under two accounts is two events).
/// An account's name is 1 to 64 letters, digits, `-`, `_` or `.`. A
/// request for an account the file does not name answers `404`, its body
/// unread. A file that does not parse (or names no account) keeps the last
/// good accounts, logged naming the file and its line, never a secret.
///
/// ```no_run
/// use ltvboost_webhooks::secrets::AccountsFile;
/// use ltvboost_webhooks::{WebhookConfig, WebhookLayer, handler::Handlers};
///
/// # async fn run(handlers: Handlers) -> Result<(), Box<dyn std::error::Error>> {
/// let accounts = AccountsFile::open("/etc/ltvboost/accounts.toml")?;
/// let config = WebhookConfig::new(accounts).path("/webhooks/ltvboost/{account}");
/// let layer = WebhookLayer::new(config, handlers);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AccountsFile {
    followed: Arc<Followed<Accounts>>,
}

impl AccountsFile {
    /// Reads the file at `path` and follows it from now on (see
    /// [`SecretFile::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        Ok(Self {
            followed: Followed::open(path.as_ref())?,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.followed.path
    }

    /// The accounts in force, by name.
    pub fn accounts(&self) -> Vec<String> {
        self.followed
            .current()
            .0
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    /// Reads the file now (see [`SecretFile::reload`]).
    pub fn reload(&self) -> Result<bool, SecretError> {
        self.followed.reload(false)
    }
}

impl std::fmt::Debug for AccountsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountsFile")
            .field("path", &self.followed.path)
            .field("accounts", &self.accounts())
            .finish()
    }
}

impl SecretSource for AccountsFile {
    async fn keys(&self, account: Option<&str>) -> Result<Option<Keys>, LookupError> {
        Ok(account.and_then(|name| {
            let accounts = self.followed.current();
            let (name, verifier) = accounts.0.get_key_value(name)?;
            Some(Keys::for_account(name.clone(), verifier.clone()))
        }))
    }
}

/// The accounts of an [`AccountsFile`]: cheap to clone (the map is shared).
#[derive(Clone)]
struct Accounts(Arc<std::collections::BTreeMap<Arc<str>, Verifier>>);

/// What a followed file holds once parsed.
trait Contents: Clone + Send + Sync + 'static {
    /// What the file is, in log lines.
    const WHAT: &'static str;
    /// The file's text parsed; the reason never quotes the text.
    fn parse(text: &str) -> Result<Self, String>;
    /// Carries over from the contents it replaces what should survive a
    /// reload.
    fn carry_from(&self, old: &Self);
    /// What a log line says of it: names and key ids, never a secret.
    fn summary(&self) -> String;
}

impl Contents for Verifier {
    const WHAT: &'static str = "secret file";

    fn parse(text: &str) -> Result<Self, String> {
        Verifier::from_lines(text).map_err(|e| match e {
            SecretError::NoSecrets => "it holds no secret".to_owned(),
            other => other.to_string(),
        })
    }

    fn carry_from(&self, old: &Self) {
        self.keep_last_matched(old);
    }

    fn summary(&self) -> String {
        let key_ids: Vec<String> = self.key_ids().iter().map(ToString::to_string).collect();
        format!("{} secrets, key ids {}", key_ids.len(), key_ids.join(","))
    }
}

impl Contents for Accounts {
    const WHAT: &'static str = "accounts file";

    fn parse(text: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            accounts: std::collections::BTreeMap<String, Account>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Account {
            secrets: Vec<String>,
        }
        // The parsed copies are wiped, as `Secret`s wipe theirs, on every
        // way out.
        impl Drop for Account {
            fn drop(&mut self) {
                self.secrets.iter_mut().for_each(zeroize::Zeroize::zeroize);
            }
        }
        // The parser's message can quote a value (a secret): only its line.
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |span| {
                let before = text.as_bytes().get(..span.start).unwrap_or_default();
                1 + before.iter().filter(|&&b| b == b'\n').count()
            });
            format!("line {line}: not TOML of the form [accounts.<name>] secrets = [\"…\", …]")
        })?;
        if file.accounts.is_empty() {
            return Err("it names no account".to_owned());
        }
        let mut accounts = std::collections::BTreeMap::new();
        // A secret under two accounts would let a delivery signed for one
        // be posted to the other, and run again under its dedupe key.
        let mut owners = std::collections::HashMap::new();
        for (name, account) in &file.accounts {
            let valid = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                return Err(format!(
                    "account {name:?}: a name is 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
            let verifier = account
                .secrets
                .iter()
                .map(|secret| Secret::new(secret.as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .and_then(Verifier::new)
                .map_err(|e| match e {
                    SecretError::NoSecrets => format!("account {name}: it has no secret"),
                    other => format!("account {name}: {other}"),
                })?;
            for key_id in verifier.key_ids() {
                if let Some(other) = owners.insert(*key_id, name.clone()) {
                    return Err(format!(
                        "accounts {other} and {name} share a secret (key id {key_id}): each \
                         account needs its own"
                    ));
                }
            }
            accounts.insert(Arc::from(name.as_str()), verifier);
        }
        Ok(Accounts(Arc::new(accounts)))
    }

    fn carry_from(&self, old: &Self) {
        for (name, verifier) in self.0.iter() {
            if let Some(before) = old.0.get(name) {
                verifier.keep_last_matched(before);
            }
        }
    }

    fn summary(&self) -> String {
        let names: Vec<&str> = self.0.keys().map(|name| &**name).collect();
        format!("{} accounts: {}", names.len(), names.join(","))
    }
}

/// A file read again every [`RELOAD_EVERY`] and on `SIGHUP`: its parsed
/// contents, the last good ones kept when a read fails.
struct Followed<T> {
    path: PathBuf,
    current: RwLock<T>,
    /// What the last read found: the digest of the text (no secret is kept
    /// beside the parsed contents), or the error, said once until it
    /// changes.
    seen: Mutex<Seen>,
}

#[derive(Default, PartialEq)]
struct Seen {
    digest: Option<[u8; 32]>,
    error: Option<String>,
    /// A change found by the last periodic read, applied if the next
    /// finds it too.
    pending: Option<Pending>,
}

/// What a read found.
#[derive(PartialEq)]
enum Pending {
    Text([u8; 32]),
    Error(std::io::ErrorKind),
}

impl<T: Contents> Followed<T> {
    fn open(path: &Path) -> Result<Arc<Self>, SecretError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            file_error(
                T::WHAT,
                path,
                format!("{} must be opened inside a tokio runtime", T::WHAT),
            )
        })?;
        let text = std::fs::read_to_string(path)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| file_error(T::WHAT, path, e.to_string()))?;
        let contents = T::parse(&text).map_err(|reason| file_error(T::WHAT, path, reason))?;
        tracing::info!(file = %path.display(), "{} loaded: {}", T::WHAT, contents.summary());
        let followed = Arc::new(Self {
            path: path.to_path_buf(),
            current: RwLock::new(contents),
            seen: Mutex::new(Seen {
                digest: Some(digest(&text)),
                error: None,
                pending: None,
            }),
        });
        runtime.spawn(follow(Arc::downgrade(&followed)));
        Ok(followed)
    }

    fn current(&self) -> T {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the file and applies what changed. With `settle`, a change
    /// applies only once two reads in a row found it (a read in the middle
    /// of a rewrite in place is not taken for the new contents); without,
    /// at once (`SIGHUP`, [`SecretFile::reload`]).
    fn reload(&self, settle: bool) -> Result<bool, SecretError> {
        // Read under the lock: two reloads at once cannot apply an older
        // read after a newer one.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let read = std::fs::read_to_string(&self.path).map(zeroize::Zeroizing::new);
        let digest = read.as_ref().ok().map(|text| digest(text));
        if digest.is_some() && digest == seen.digest && seen.error.is_none() {
            seen.pending = None;
            return Ok(false);
        }
        // What this read found, a digest or the error's text.
        let found = match (&digest, &read) {
            (Some(digest), _) => Pending::Text(*digest),
            (None, Err(e)) => Pending::Error(e.kind()),
            (None, Ok(_)) => Pending::Error(std::io::ErrorKind::Other),
        };
        if settle && seen.pending.as_ref() != Some(&found) {
            seen.pending = Some(found);
            return Ok(false);
        }
        seen.pending = None;
        let parsed = read
            .map_err(|e| e.to_string())
            .and_then(|text| T::parse(&text))
            .map_err(|reason| file_error(T::WHAT, &self.path, reason));
        match parsed {
            Ok(contents) => {
                let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
                contents.carry_from(&current);
                let summary = contents.summary();
                *current = contents;
                drop(current);
                *seen = Seen {
                    digest,
                    error: None,
                    pending: None,
                };
                metrics::secret_file_reload(true);
                tracing::info!(
                    file = %self.path.display(),
                    "{} reloaded: {summary}, in force from now on",
                    T::WHAT
                );
                Ok(true)
            }
            Err(error) => {
                metrics::secret_file_reload(false);
                let said = error.to_string();
                if seen.error.as_deref() != Some(said.as_str()) {
                    tracing::error!(
                        %error,
                        "could not reload the {}; the last good contents stay in force",
                        T::WHAT
                    );
                }
                // Read again next time, even if the text comes back as it was.
                *seen = Seen {
                    digest: None,
                    error: Some(said),
                    pending: None,
                };
                Err(error)
            }
        }
    }
}

/// Reads the file again every [`RELOAD_EVERY`] and on `SIGHUP`, until the
/// last handle on it is dropped.
async fn follow<T: Contents>(followed: Weak<Followed<T>>) {
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hung_up = {
            let hangup = async {
                match hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(RELOAD_EVERY) => false,
                _ = hangup => {
                    tracing::info!("SIGHUP: reading the {} again", T::WHAT);
                    true
                }
            }
        };
        #[cfg(not(unix))]
        let hung_up = {
            tokio::time::sleep(RELOAD_EVERY).await;
            false
        };
        let Some(followed) = followed.upgrade() else {
            return;
        };
        // Logged and counted inside.
        let _ = followed.reload(!hung_up);
    }
}

/// The secrets the environment names, for a receiver bound to `bind` (or
/// a worker): the accounts file [`ACCOUNTS_FILE_ENV`] names; else the
/// secret file [`SECRET_FILE_ENV`](crate::signature::SECRET_FILE_ENV)
/// names, followed without a restart ([`SecretFile`]); else the list in
/// [`SECRET_ENV`](crate::signature::SECRET_ENV), fixed; else, on a loopback
/// address only, the development secret (see [`Verifier::from_env`]). Two
/// of the three variables set is [`SecretError::BothSet`].
///
/// ```no_run
/// use ltvboost_webhooks::WebhookConfig;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let secrets = ltvboost_webhooks::secrets::from_env("127.0.0.1:3000".parse()?)?;
/// let config = WebhookConfig::new(secrets);
/// # Ok(()) }
/// ```
pub fn from_env(bind: std::net::SocketAddr) -> Result<EnvSecrets, SecretError> {
    let listed = crate::signature::secret_list_from_env().is_some();
    match (
        accounts_file_from_env(),
        crate::signature::secret_file_from_env(),
    ) {
        (Some(_), file) if listed || file.is_some() => Err(SecretError::BothSet),
        (Some(path), _) => Ok(EnvSecrets::Accounts(AccountsFile::open(path)?)),
        (None, Some(path)) if !listed => Ok(EnvSecrets::File(SecretFile::open(path)?)),
        // A list, nothing, or both a list and a file (refused there).
        (None, _) => Ok(EnvSecrets::Fixed(Verifier::from_env(bind)?)),
    }
}

/// The source the environment names ([`from_env`]): fixed secrets, a
/// followed secret file, or a followed accounts file.
///
/// ```
/// use ltvboost_webhooks::secrets::EnvSecrets;
/// use ltvboost_webhooks::signature::{Secret, Verifier};
///
/// let fixed = EnvSecrets::Fixed(Verifier::new([Secret::new("a-development-secret-0123")?])?);
/// let config = ltvboost_webhooks::WebhookConfig::new(fixed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EnvSecrets {
    /// `LTVBOOST_WEBHOOK_SECRET`, or the development secret on loopback.
    Fixed(Verifier),
    /// `LTVBOOST_WEBHOOK_SECRET_FILE`.
    File(SecretFile),
    /// `LTVBOOST_WEBHOOK_ACCOUNTS_FILE`.
    Accounts(AccountsFile),
}

impl SecretSource for EnvSecrets {
    async fn keys(&self, account: Option<&str>) -> Result<Option<Keys>, LookupError> {
        match self {
            EnvSecrets::Fixed(source) => source.keys(account).await,
            EnvSecrets::File(source) => source.keys(account).await,
            EnvSecrets::Accounts(source) => source.keys(account).await,
        }
    }
}

/// The environment variable naming an [`AccountsFile`].
pub const ACCOUNTS_FILE_ENV: &str = "LTVBOOST_WEBHOOK_ACCOUNTS_FILE";

/// The path [`ACCOUNTS_FILE_ENV`] names, when it is set and not blank.
///
/// ```
/// if let Some(path) = ltvboost_webhooks::secrets::accounts_file_from_env() {
///     println!("accounts from {}", path.display());
/// }
/// ```
pub fn accounts_file_from_env() -> Option<PathBuf> {
    std::env::var_os(ACCOUNTS_FILE_ENV)
        .filter(|path| !path.to_string_lossy().trim().is_empty())
        .map(PathBuf::from)
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn file_error(what: &'static str, path: &Path, reason: String) -> SecretError {
    SecretError::File {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{Secret, sign};

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// A directory of its own under the system's temporary one.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "ltvboost-secrets-{}",
                crate::dedupe::ClaimToken::random()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn a_file_reloads_and_keeps_the_last_good_secrets() {
        let dir = TempDir::new();
        let path = dir.path().join("secrets");
        write(&path, "# newest first\nfirst-secret-0123456789\n");
        let file = SecretFile::open(&path).unwrap();
        let first = Secret::new("first-secret-0123456789").unwrap();
        let second = Secret::new("second-secret-0123456789").unwrap();
        let body = b"{}";
        assert!(
            file.verifier()
                .verify(sign(&first, body).as_bytes(), &body[..])
                .is_ok()
        );
        assert!(!file.reload().unwrap(), "unchanged");

        write(&path, "second-secret-0123456789\nfirst-secret-0123456789\n");
        assert!(file.reload().unwrap());
        let verified = file
            .verifier()
            .verify(sign(&second, body).as_bytes(), &body[..])
            .unwrap();
        assert_eq!(verified.secret_index(), 0);

        for broken in ["", "# all removed\n\n"] {
            write(&path, broken);
            assert!(matches!(file.reload(), Err(SecretError::File { .. })));
            assert!(
                file.verifier()
                    .verify(sign(&second, body).as_bytes(), &body[..])
                    .is_ok()
            );
        }
        std::fs::remove_file(&path).unwrap();
        let error = file.reload().unwrap_err().to_string();
        assert!(error.contains("secrets"), "names the file: {error}");
        assert!(
            !error.contains("0123456789"),
            "never quotes a secret: {error}"
        );
        assert_eq!(file.verifier().secret_count(), 2);

        // Back as it was before the failures: read again and in force.
        write(&path, "first-secret-0123456789\n");
        assert!(file.reload().unwrap());
        assert_eq!(file.verifier().secret_count(), 1);
    }

    #[tokio::test]
    async fn an_unusable_file_at_start_is_refused() {
        let dir = TempDir::new();
        let path = dir.path().join("secrets");
        assert!(SecretFile::open(&path).is_err(), "absent");
        write(&path, "\n# none yet\n");
        let error = SecretFile::open(&path).unwrap_err().to_string();
        assert!(error.contains("holds no secret"), "{error}");
    }

    #[tokio::test]
    async fn a_secret_kept_across_a_reload_keeps_its_last_match() {
        let dir = TempDir::new();
        let path = dir.path().join("secrets");
        write(&path, "old-secret-0123456789\n");
        let file = SecretFile::open(&path).unwrap();
        let old = Secret::new("old-secret-0123456789").unwrap();
        file.verifier()
            .verify(sign(&old, b"{}").as_bytes(), &b"{}"[..])
            .unwrap();
        write(&path, "new-secret-0123456789\nold-secret-0123456789\n");
        assert!(file.reload().unwrap());
        let verifier = file.verifier();
        assert!(verifier.last_matched(0).is_none());
        assert!(verifier.last_matched(1).is_some());
    }

    #[tokio::test]
    async fn an_accounts_file_gives_each_account_its_own_secrets() {
        let dir = TempDir::new();
        let path = dir.path().join("accounts.toml");
        write(
            &path,
            "[accounts.acme]\nsecrets = [\"acme-new-secret-0123\", \"acme-old-secret-0123\"]\n\
             [accounts.globex]\nsecrets = [\"globex-secret-012345\"]\n",
        );
        let accounts = AccountsFile::open(&path).unwrap();
        assert_eq!(accounts.accounts(), ["acme", "globex"]);
        let acme = accounts.keys(Some("acme")).await.unwrap().unwrap();
        assert_eq!(acme.account(), Some("acme"));
        assert_eq!(acme.verifier().secret_count(), 2);
        let globex = Secret::new("globex-secret-012345").unwrap();
        let signed = sign(&globex, b"{}");
        assert!(
            acme.verifier()
                .verify(signed.as_bytes(), &b"{}"[..])
                .is_err()
        );
        assert!(accounts.keys(Some("initech")).await.unwrap().is_none());
        assert!(accounts.keys(None).await.unwrap().is_none());

        for (broken, says) in [
            (
                "[accounts.acme]\nsecrets = \"acme-new-secret-0123\"\n",
                "line 2",
            ),
            (
                "[accounts.acme\nsecrets = [\"acme-new-secret-0123\"]\n",
                "line 1",
            ),
            (
                "[accounts.acme]\nsecret = [\"acme-new-secret-0123\"]\n",
                "line 2",
            ),
            (
                "[accounts.acme]\nsecrets = [\"acme-new-secret-0123\"]\n\
                 [accounts.copy]\nsecrets = [\"acme-new-secret-0123\"]\n",
                "accounts acme and copy share a secret",
            ),
            (
                "[accounts.acme]\nsecrets = []\n",
                "account acme: it has no secret",
            ),
            (
                "[accounts.\"a b\"]\nsecrets = [\"acme-new-secret-0123\"]\n",
                "account \"a b\"",
            ),
            ("[accounts]\n", "names no account"),
        ] {
            write(&path, broken);
            let error = accounts.reload().unwrap_err().to_string();
            assert!(error.contains(says), "{broken:?}: {error}");
            assert!(error.contains("accounts.toml"), "names the file: {error}");
            assert!(!error.contains("new-secret"), "quotes a secret: {error}");
            assert_eq!(
                accounts.accounts(),
                ["acme", "globex"],
                "the last good accounts stay"
            );
        }
        write(
            &path,
            "[accounts.initech]\nsecrets = [\"initech-secret-0123\"]\n",
        );
        assert!(accounts.reload().unwrap());
        assert!(accounts.keys(Some("acme")).await.unwrap().is_none());
        assert!(accounts.keys(Some("initech")).await.unwrap().is_some());
    }
}
