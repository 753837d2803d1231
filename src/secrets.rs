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
//! Three sources come with the crate:
//!
//! * a [`Verifier`]: fixed secrets, for the life of the process;
//! * [`SecretFile`]: secrets read from a file, one per line, newest first,
//!   followed without a restart (within a second of a change, whether the
//!   file is rewritten in place or replaced by a rename, and at once on
//!   `SIGHUP`), as secret managers (a Vault agent, a Kubernetes secret
//!   volume, systemd credentials) write them;
//! * any `Arc` of a source.
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
//! use std::future::Future;
//! use std::pin::Pin;
//! use ltvboost_webhooks::secrets::{Keys, LookupError, RequestHead, SecretSource};
//! use ltvboost_webhooks::signature::{Secret, Verifier};
//!
//! /// Secrets per tenant, named by a header a proxy in front sets.
//! struct Tenants {
//!     acme: Verifier,
//! }
//!
//! impl SecretSource for Tenants {
//!     fn keys<'a>(
//!         &'a self,
//!         account: Option<&'a str>,
//!     ) -> Pin<Box<dyn Future<Output = Result<Option<Keys>, LookupError>> + Send + 'a>> {
//!         Box::pin(async move {
//!             // A database or secret manager would be asked here.
//!             Ok(match account {
//!                 Some("acme") => Some(Keys::for_account("acme", self.acme.clone())),
//!                 _ => None,
//!             })
//!         })
//!     }
//!
//!     fn lookup<'a>(
//!         &'a self,
//!         head: &'a RequestHead<'a>,
//!     ) -> Pin<Box<dyn Future<Output = Result<Option<Keys>, LookupError>> + Send + 'a>> {
//!         let tenant = head.headers().get("x-tenant").and_then(|v| v.to_str().ok());
//!         self.keys(tenant)
//!     }
//! }
//!
//! let tenants = Tenants { acme: Verifier::new([Secret::new("acme-secret-0123456789")?])? };
//! let config = ltvboost_webhooks::WebhookConfig::new(tenants);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

use crate::metrics;
use crate::signature::{SecretError, Verifier};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a lookup returns.
type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Option<Keys>, LookupError>> + Send + 'a>>;

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
}

impl<'a> RequestHead<'a> {
    /// A request head (for a source's tests; the receiver makes them).
    pub fn new(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            path,
            headers,
        }
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
    fn keys<'a>(&'a self, account: Option<&'a str>) -> Lookup<'a>;

    /// The secrets for a request, from its head, before its body is read.
    /// By default those of [`keys(None)`](Self::keys): a source with
    /// accounts finds the account in the path or a header.
    fn lookup<'a>(&'a self, head: &'a RequestHead<'a>) -> Lookup<'a> {
        let _ = head;
        self.keys(None)
    }
}

/// Fixed secrets: every request, no accounts.
impl SecretSource for Verifier {
    fn keys<'a>(&'a self, account: Option<&'a str>) -> Lookup<'a> {
        let keys = account.is_none().then(|| Keys::new(self.clone()));
        Box::pin(std::future::ready(Ok(keys)))
    }
}

impl<S: SecretSource + ?Sized> SecretSource for Arc<S> {
    fn keys<'a>(&'a self, account: Option<&'a str>) -> Lookup<'a> {
        (**self).keys(account)
    }

    fn lookup<'a>(&'a self, head: &'a RequestHead<'a>) -> Lookup<'a> {
        (**self).lookup(head)
    }
}

/// Secrets read from a file and followed without a restart: one secret per
/// line, newest first, blank lines and `#` comments skipped (see
/// [`Verifier::from_lines`]).
///
/// The file is read again every [`RELOAD_EVERY`], whether it was rewritten
/// in place or replaced by a rename, and at once on `SIGHUP` (Unix). A
/// change applies to the next delivery; connections stay open, and
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
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    current: RwLock<Verifier>,
    /// What the last read found: the digest of the text (no secret is kept
    /// beside the verifier), or the error, said once until it changes.
    seen: Mutex<Seen>,
}

#[derive(Default, PartialEq)]
struct Seen {
    digest: Option<[u8; 32]>,
    error: Option<String>,
}

impl SecretFile {
    /// Reads the file at `path` and follows it from now on, on a task of
    /// the current tokio runtime (it ends when the last clone is dropped).
    ///
    /// At start there are no last good secrets to keep: a file that cannot
    /// be read or holds no valid secret is [`SecretError::File`], and so is
    /// a call outside a tokio runtime.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        let path = path.as_ref().to_path_buf();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SecretError::File {
            path: path.clone(),
            reason: "SecretFile::open must be called inside a tokio runtime".to_owned(),
        })?;
        let (verifier, digest) = read(&path)?;
        let shared = Arc::new(Shared {
            path,
            current: RwLock::new(verifier),
            seen: Mutex::new(Seen {
                digest: Some(digest),
                error: None,
            }),
        });
        runtime.spawn(follow(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The secrets in force.
    pub fn verifier(&self) -> Verifier {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        self.shared.reload()
    }
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("path", &self.shared.path)
            .field("verifier", &self.verifier())
            .finish()
    }
}

impl SecretSource for SecretFile {
    fn keys<'a>(&'a self, account: Option<&'a str>) -> Lookup<'a> {
        let keys = account.is_none().then(|| Keys::new(self.verifier()));
        Box::pin(std::future::ready(Ok(keys)))
    }
}

impl Shared {
    fn reload(&self) -> Result<bool, SecretError> {
        let read = std::fs::read_to_string(&self.path);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let digest = read.as_ref().ok().map(|text| digest(text));
        if digest.is_some() && digest == seen.digest && seen.error.is_none() {
            return Ok(false);
        }
        let parsed = read
            .map_err(|e| file_error(&self.path, e.to_string()))
            .and_then(|text| parse(&self.path, &text));
        match parsed {
            Ok(verifier) => {
                let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
                verifier.keep_last_matched(&current);
                let key_ids: Vec<String> =
                    verifier.key_ids().iter().map(ToString::to_string).collect();
                *current = verifier;
                drop(current);
                *seen = Seen {
                    digest,
                    error: None,
                };
                metrics::secret_file_reload(true);
                tracing::info!(
                    file = %self.path.display(),
                    secrets = key_ids.len(),
                    key_ids = %key_ids.join(","),
                    "secret file loaded: its secrets verify from now on"
                );
                Ok(true)
            }
            Err(error) => {
                metrics::secret_file_reload(false);
                let said = error.to_string();
                if seen.error.as_deref() != Some(said.as_str()) {
                    tracing::error!(
                        %error,
                        "could not reload the secret file; the last good secrets stay in force"
                    );
                }
                // Read again next time, even if the text comes back as it was.
                *seen = Seen {
                    digest: None,
                    error: Some(said),
                };
                Err(error)
            }
        }
    }
}

/// Reads the file again every [`RELOAD_EVERY`] and on `SIGHUP`, until the
/// last [`SecretFile`] is dropped.
async fn follow(shared: Weak<Shared>) {
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        {
            let hangup = async {
                match hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(RELOAD_EVERY) => {}
                _ = hangup => tracing::info!("SIGHUP: reading the secret file again"),
            }
        }
        #[cfg(not(unix))]
        tokio::time::sleep(RELOAD_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Logged and counted inside.
        let _ = shared.reload();
    }
}

/// The secrets the environment names, for a receiver bound to `bind` (or
/// a worker): the file [`SECRET_FILE_ENV`](crate::signature::SECRET_FILE_ENV)
/// names, followed without a restart ([`SecretFile`]); else the list in
/// [`SECRET_ENV`](crate::signature::SECRET_ENV), fixed; else, on a loopback
/// address only, the development secret (see [`Verifier::from_env`]).
/// Both variables set is [`SecretError::BothSet`].
///
/// ```no_run
/// use ltvboost_webhooks::WebhookConfig;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let secrets = ltvboost_webhooks::secrets::from_env("127.0.0.1:3000".parse()?)?;
/// let config = WebhookConfig::new(secrets);
/// # Ok(()) }
/// ```
pub fn from_env(bind: std::net::SocketAddr) -> Result<Arc<dyn SecretSource>, SecretError> {
    let listed = std::env::var(crate::signature::SECRET_ENV)
        .is_ok_and(|list| !list.trim().trim_matches(',').trim().is_empty());
    match crate::signature::secret_file_from_env() {
        Some(_) if listed => Err(SecretError::BothSet),
        Some(path) => Ok(Arc::new(SecretFile::open(path)?)),
        None => Ok(Arc::new(Verifier::from_env(bind)?)),
    }
}

fn read(path: &Path) -> Result<(Verifier, [u8; 32]), SecretError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
    Ok((parse(path, &text)?, digest(&text)))
}

fn parse(path: &Path, text: &str) -> Result<Verifier, SecretError> {
    Verifier::from_lines(text).map_err(|e| match e {
        SecretError::NoSecrets => file_error(path, "it holds no secret".to_owned()),
        other => file_error(path, other.to_string()),
    })
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn file_error(path: &Path, reason: String) -> SecretError {
    SecretError::File {
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
}
