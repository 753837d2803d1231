//! Signing and verifying the `x-ltvboost-signature` header.
//!
//! LTVboost signs every delivery with HMAC-SHA256 over the **raw body bytes**,
//! keyed with the endpoint's secret, and sends the digest as
//! `x-ltvboost-signature: sha256=<64 lowercase hex digits>`.
//!
//! This module does no I/O and knows nothing of HTTP servers: it turns a header
//! value and a body into a [`Verified`] body, or an error that says why not.
//!
//! Two mistakes are easy to make here, and LTVboost's own Node example makes
//! both:
//!
//! * **Verifying re-serialised JSON.** A JSON parser that has already consumed
//!   the body and serialises it again rarely reproduces the signed bytes (key
//!   order, whitespace, number formats, escapes). Verify the exact bytes
//!   received; parse afterwards.
//! * **Comparing with `==`.** An early-exit comparison returns sooner the
//!   earlier the first wrong byte is, which lets an attacker find a valid
//!   digest byte by byte. [`Verifier`] compares the 32 decoded bytes with
//!   [`subtle`]'s constant-time equality.
//!
//! # Example
//!
//! ```
//! use ltvboost_webhooks::signature::{sign, Secret, Verifier};
//!
//! let secret = Secret::new("whsec_a-long-random-development-secret")?;
//! let body = br#"{"id":"evt_1","type":"segment.ready","data":{"id":"seg_1"}}"#;
//! let header = sign(&secret, body); // "sha256=…", as LTVboost sends it
//!
//! let verifier = Verifier::new([secret])?;
//! let verified = verifier.verify(header.as_bytes(), body.to_vec())?;
//! assert_eq!(verified.body(), &body[..]);
//! assert_eq!(verified.secret_index(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The request header LTVboost puts the signature in.
pub const SIGNATURE_HEADER: &str = "x-ltvboost-signature";

/// The only scheme LTVboost documents.
const SCHEME: &[u8] = b"sha256=";

/// Bytes in an HMAC-SHA256 digest.
const DIGEST_LEN: usize = 32;

/// Secrets shorter than this are accepted with a warning: they were chosen at
/// registration and may predate this crate, but they are weak.
pub const RECOMMENDED_MIN_SECRET_LEN: usize = 16;

/// An endpoint's signing secret.
///
/// The bytes are wiped from memory when the value is dropped, and never appear
/// in `Debug` output, logs or error messages.
///
/// ```
/// use ltvboost_webhooks::signature::Secret;
///
/// let secret = Secret::new("whsec_a-long-random-development-secret")?;
/// assert_eq!(format!("{secret:?}"), "Secret(\"[redacted]\")");
/// assert!(Secret::new("").is_err());
/// # Ok::<(), ltvboost_webhooks::signature::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps secret bytes. An empty secret is refused; one shorter than
    /// [`RECOMMENDED_MIN_SECRET_LEN`] bytes is accepted with a logged warning.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        if bytes.len() < RECOMMENDED_MIN_SECRET_LEN {
            tracing::warn!(
                len = bytes.len(),
                recommended = RECOMMENDED_MIN_SECRET_LEN,
                "webhook secret is shorter than recommended; rotate to a longer one"
            );
        }
        Ok(Self(bytes))
    }

    /// A new secret from 32 bytes of the operating system's CSPRNG, written
    /// as 64 hex digits: text, as LTVboost's registration API takes it, with
    /// 256 bits of entropy. The HMAC key is that text's bytes.
    ///
    /// ```
    /// use ltvboost_webhooks::signature::Secret;
    ///
    /// let secret = Secret::generate()?;
    /// assert_eq!(secret.expose_str().map(str::len), Some(64));
    /// assert_ne!(secret.expose(), Secret::generate()?.expose());
    /// # Ok::<(), ltvboost_webhooks::signature::SecretError>(())
    /// ```
    pub fn generate() -> Result<Self, SecretError> {
        let mut random = Zeroizing::new([0u8; 32]);
        getrandom::fill(random.as_mut()).map_err(|_| SecretError::NoRandomness)?;
        let mut text = Zeroizing::new(vec![0u8; 64]);
        // Both lengths are fixed and match: encoding cannot fail.
        hex::encode_to_slice(random.as_ref(), text.as_mut())
            .map_err(|_| SecretError::NoRandomness)?;
        Ok(Self(text))
    }

    /// The secret's bytes, for registering it with LTVboost.
    ///
    /// Handle the result as carefully as the secret itself.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text, if it is UTF-8 (the registration API takes text).
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The secret's [`KeyId`].
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.keyed_mac())
    }

    fn keyed_mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length (long keys are hashed first).
        match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secret").field(&"[redacted]").finish()
    }
}

/// Why a secret or a set of secrets was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret had no bytes: every body would verify against a guessable key.
    #[error("webhook secret is empty")]
    Empty,
    /// A verifier needs at least one secret.
    #[error("no webhook secret given")]
    NoSecrets,
    /// The operating system's random number generator failed.
    #[error("no randomness available to generate a secret")]
    NoRandomness,
    /// No secret is configured, and the receiver is not bound to a loopback
    /// address, where the development secret would be allowed.
    #[error(
        "{SECRET_ENV} is unset: set it to the endpoint's secret (the development \
         secret is used only on a loopback address)"
    )]
    Unset,
    /// Both [`SECRET_ENV`] and [`SECRET_FILE_ENV`] are set: which one is
    /// meant is not guessed.
    #[error("{SECRET_ENV} and {SECRET_FILE_ENV} are both set: set one of them")]
    BothSet,
    /// A secret or accounts file could not be read, or holds no valid
    /// secret. The reason never quotes the file's contents.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// What the file is: `secret file` or `accounts file`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why it was refused.
        reason: String,
    },
}

/// A secret's key id: a fingerprint that names a secret without revealing
/// it, for records that say which secret verified something (a queue entry,
/// a log line) to parts that may hold other secrets.
///
/// It is the first 8 bytes of HMAC-SHA256 keyed with the secret over a
/// fixed label, written as 16 hex digits: one-way, and no easier to guess
/// the secret from than any signature the secret made.
///
/// ```
/// use ltvboost_webhooks::signature::{KeyId, Secret, Verifier};
///
/// let old = Secret::new("the-secret-registered-last-year")?;
/// let new = Secret::new("the-secret-registered-this-week")?;
/// let id = old.key_id();
/// assert_eq!(id.to_string().len(), 16);
/// assert_eq!(id.to_string().parse::<KeyId>(), Ok(id));
/// assert!(Verifier::new([new.clone(), old])?.holds(id));
/// assert!(!Verifier::new([new])?.holds(id));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

const KEY_ID_LEN: usize = 8;

/// What a key id is the MAC of; a new label would name every secret anew.
const KEY_ID_LABEL: &[u8] = b"ltvboost-webhooks key id v1";

impl KeyId {
    fn of(keyed: &HmacSha256) -> Self {
        let mut mac = keyed.clone();
        mac.update(KEY_ID_LABEL);
        let digest = mac.finalize().into_bytes();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut id = [0; KEY_ID_LEN];
        hex::decode_to_slice(text, &mut id).map_err(|_| KeyIdError)?;
        Ok(Self(id))
    }
}

/// A key id that is not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key id is 16 hex digits")]
pub struct KeyIdError;

/// The environment variable receivers read their secrets from:
/// comma-separated, newest first, as rotation needs them.
pub const SECRET_ENV: &str = "LTVBOOST_WEBHOOK_SECRET";

/// The environment variable naming a file of secrets, one per line, newest
/// first (see [`Verifier::from_lines`]): how secret managers (a Vault agent,
/// a Kubernetes secret volume, systemd credentials) hand secrets over.
/// [`SecretFile`](crate::secrets::SecretFile) follows its changes without a
/// restart.
pub const SECRET_FILE_ENV: &str = "LTVBOOST_WEBHOOK_SECRET_FILE";

/// The list [`SECRET_ENV`] holds, when it holds a secret (not only blanks
/// and commas).
///
/// ```
/// use ltvboost_webhooks::signature::secret_list_from_env;
///
/// if let Some(list) = secret_list_from_env() {
///     println!("{} secrets", list.split(',').filter(|s| !s.trim().is_empty()).count());
/// }
/// ```
pub fn secret_list_from_env() -> Option<String> {
    std::env::var(SECRET_ENV)
        .ok()
        .filter(|list| !list.trim().trim_matches(',').trim().is_empty())
}

/// The path [`SECRET_FILE_ENV`] names, when it is set and not blank.
///
/// ```
/// use ltvboost_webhooks::signature::secret_file_from_env;
///
/// if let Some(path) = secret_file_from_env() {
///     println!("secrets from {}", path.display());
/// }
/// ```
pub fn secret_file_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os(SECRET_FILE_ENV)
        .filter(|path| !path.to_string_lossy().trim().is_empty())
        .map(std::path::PathBuf::from)
}

/// The secret the examples and the command line use, on a loopback address
/// only, when [`SECRET_ENV`] is unset. Anyone who has read this crate can
/// sign events with it.
pub const DEVELOPMENT_SECRET: &str = "ltvboost-development-secret-do-not-use-in-production";

/// A signature parsed from an `x-ltvboost-signature` header: the 32 digest bytes.
///
/// `Debug` and `Display` show the digest as sent (it is public: it travelled in
/// the request), which is what a dedupe key made from it needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; DIGEST_LEN]);

impl Signature {
    /// Parses a header value strictly: `sha256=` followed by exactly 64 hex
    /// digits. Surrounding spaces and tabs (HTTP's optional white space) are
    /// ignored; anything else — another scheme, a list of values, a digest of
    /// the wrong length, a non-hex character — is refused. Never panics.
    ///
    /// ```
    /// use ltvboost_webhooks::signature::{Signature, SignatureError};
    ///
    /// let hex = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    /// assert!(Signature::parse(format!("sha256={hex}").as_bytes()).is_ok());
    /// assert_eq!(
    ///     Signature::parse(format!("sha1={hex}").as_bytes()),
    ///     Err(SignatureError::UnsupportedScheme)
    /// );
    /// assert_eq!(Signature::parse(b"sha256=abc"), Err(SignatureError::WrongLength));
    /// ```
    pub fn parse(header: &[u8]) -> Result<Self, SignatureError> {
        let value = header.trim_ascii_start();
        let value = trim_ows_end(value);
        if value.is_empty() {
            return Err(SignatureError::Empty);
        }
        let Some(hex_digits) = value.strip_prefix(SCHEME) else {
            return Err(SignatureError::UnsupportedScheme);
        };
        // Length first: no decoding work for a digest that cannot be right.
        if hex_digits.len() != DIGEST_LEN * 2 {
            return Err(SignatureError::WrongLength);
        }
        let mut digest = [0u8; DIGEST_LEN];
        hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| SignatureError::NotHex)?;
        Ok(Self(digest))
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// The header value for this digest: `sha256=<hex>`.
    pub fn to_header_value(&self) -> String {
        format!("sha256={}", hex::encode(self.0))
    }
}

fn trim_ows_end(value: &[u8]) -> &[u8] {
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &value[..end]
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why a signature header was refused. Every variant answers `401`.
///
/// The messages name the reason only: never the secret, never the expected
/// digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `x-ltvboost-signature` header.
    #[error("missing x-ltvboost-signature header")]
    Missing,
    /// The header appeared more than once, so which one counts is ambiguous.
    #[error("more than one x-ltvboost-signature header")]
    Duplicated,
    /// The header was present but empty.
    #[error("empty x-ltvboost-signature header")]
    Empty,
    /// The value did not start with `sha256=`.
    #[error("signature scheme is not sha256=")]
    UnsupportedScheme,
    /// The digest was not 64 hex digits long.
    #[error("signature digest is not 64 hex digits")]
    WrongLength,
    /// The digest had a character that is not a hex digit.
    #[error("signature digest is not hex")]
    NotHex,
    /// The digest is well formed but matches no active secret: a wrong secret,
    /// or a body changed in transit.
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks signatures against one or more active secrets.
///
/// Several secrets may be active at once, so a secret can be rotated without
/// dropping deliveries: register the new one with LTVboost, run the verifier
/// with both, and retire the old one once [`Verified::secret_index`] no longer
/// reports it.
///
/// Each secret's HMAC key schedule is computed once, here, rather than on every
/// request. The keyed states are wiped on drop, like the secrets.
///
/// ```
/// use ltvboost_webhooks::signature::{sign, Secret, Verifier};
///
/// let old = Secret::new("the-secret-registered-last-year")?;
/// let new = Secret::new("the-secret-registered-this-week")?;
/// let verifier = Verifier::new([new.clone(), old.clone()])?;
///
/// let body = br#"{"type":"segment.ready","data":{"id":"seg_1"}}"#;
/// let verified = verifier.verify(sign(&old, body).as_bytes(), &body[..])?;
/// assert_eq!(verified.secret_index(), 1); // still signed with the old secret
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    /// Shared by clones: a clone is one reference count, cheap enough to
    /// hand one to every delivery, and any handle reports the matches.
    shared: Arc<Keyed>,
}

struct Keyed {
    keyed: Vec<HmacSha256>,
    /// Per secret, in the same order.
    key_ids: Vec<KeyId>,
    /// Per secret: when it last matched, in seconds since the Unix epoch
    /// (0: never).
    last_matched: Vec<AtomicU64>,
}

impl Verifier {
    /// A verifier for the given secrets, in order: [`Verified::secret_index`]
    /// is an index into this list. At least one secret is required.
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Result<Self, SecretError> {
        let keyed: Vec<_> = secrets.into_iter().map(|s| s.keyed_mac()).collect();
        if keyed.is_empty() {
            return Err(SecretError::NoSecrets);
        }
        let last_matched = keyed.iter().map(|_| AtomicU64::new(0)).collect();
        let key_ids = keyed.iter().map(KeyId::of).collect();
        Ok(Self {
            shared: Arc::new(Keyed {
                keyed,
                key_ids,
                last_matched,
            }),
        })
    }

    /// A verifier for a comma-separated list of secrets, newest first, as
    /// [`SECRET_ENV`] holds them: each is trimmed of surrounding whitespace,
    /// and empty entries (a trailing comma) are skipped.
    ///
    /// ```
    /// use ltvboost_webhooks::signature::Verifier;
    ///
    /// let verifier = Verifier::from_list(" new-secret-0123456789 , old-secret-0123456789,")?;
    /// assert_eq!(verifier.secret_count(), 2);
    /// assert!(Verifier::from_list(" , ").is_err());
    /// # Ok::<(), ltvboost_webhooks::signature::SecretError>(())
    /// ```
    pub fn from_list(list: &str) -> Result<Self, SecretError> {
        let secrets = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(secrets)
    }

    /// A verifier for the text of a secret file, as [`SECRET_FILE_ENV`]
    /// names one: one secret per line, newest first; each line is trimmed,
    /// and blank lines and lines starting with `#` are skipped. A line may
    /// also hold a comma-separated list, as [`SECRET_ENV`] does (files
    /// written for it keep working): no secret contains a comma.
    ///
    /// ```
    /// use ltvboost_webhooks::signature::Verifier;
    ///
    /// let text = "# rotated on 2026-12-07\nnew-secret-0123456789\n\nold-secret-0123456789\n";
    /// assert_eq!(Verifier::from_lines(text)?.secret_count(), 2);
    /// assert_eq!(Verifier::from_lines("new-secret-0123456789,old-secret-0123456789")?.secret_count(), 2);
    /// assert!(Verifier::from_lines("# nothing yet\n").is_err());
    /// # Ok::<(), ltvboost_webhooks::signature::SecretError>(())
    /// ```
    pub fn from_lines(text: &str) -> Result<Self, SecretError> {
        let secrets = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .map(Secret::new)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(secrets)
    }

    /// A verifier from [`SECRET_ENV`] for a receiver bound to `bind`, or
    /// from the file [`SECRET_FILE_ENV`] names, read once (a receiver that
    /// should follow the file's changes uses
    /// [`SecretFile`](crate::secrets::SecretFile) instead). Setting both is
    /// [`SecretError::BothSet`].
    ///
    /// Neither set (or empty), the [`DEVELOPMENT_SECRET`] is used, with a warning,
    /// only when `bind` is a loopback address; bound anywhere else it is
    /// [`SecretError::Unset`], so that a typo in the variable's name cannot
    /// make a public receiver accept events anyone can forge.
    ///
    /// ```
    /// use ltvboost_webhooks::signature::Verifier;
    ///
    /// // The configured secrets, or on loopback the development secret.
    /// let verifier = Verifier::from_env("127.0.0.1:3000".parse()?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_env(bind: std::net::SocketAddr) -> Result<Self, SecretError> {
        match (secret_list_from_env(), secret_file_from_env()) {
            (Some(_), Some(_)) => return Err(SecretError::BothSet),
            (Some(list), None) => return Self::from_list(&list),
            (None, Some(path)) => return Self::from_file(&path),
            (None, None) => {}
        }
        if !bind.ip().is_loopback() {
            return Err(SecretError::Unset);
        }
        tracing::warn!(
            "{SECRET_ENV} is unset: using the embedded development secret {DEVELOPMENT_SECRET:?} \
             on {bind}; never use it in production"
        );
        Self::new([Secret::new(DEVELOPMENT_SECRET)?])
    }

    /// A verifier for the secret file at `path`, read once (see
    /// [`Self::from_lines`] for its format).
    ///
    /// ```no_run
    /// use ltvboost_webhooks::signature::Verifier;
    ///
    /// let verifier = Verifier::from_file("/run/secrets/ltvboost")?;
    /// # Ok::<(), ltvboost_webhooks::signature::SecretError>(())
    /// ```
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, SecretError> {
        let path = path.as_ref();
        let failed = |reason: String| SecretError::File {
            what: "secret file",
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        Self::from_lines(&text).map_err(|e| match e {
            SecretError::NoSecrets => failed("it holds no secret".to_owned()),
            other => failed(other.to_string()),
        })
    }

    /// When the secret at `index` last verified a delivery, if ever (since
    /// this verifier was built; second precision).
    ///
    /// This is how a rotation ends: once the old secret has not matched for
    /// longer than LTVboost's 24-hour retry window, nothing signed with it is
    /// still on its way, and it can be removed.
    pub fn last_matched(&self, index: usize) -> Option<SystemTime> {
        let seconds = self.shared.last_matched.get(index)?.load(Ordering::Relaxed);
        (seconds != 0).then(|| UNIX_EPOCH + Duration::from_secs(seconds))
    }

    /// Carries over from `old` when each secret that both hold last
    /// matched: a reload keeps what a rotation's end is read off.
    pub(crate) fn keep_last_matched(&self, old: &Verifier) {
        for (index, key_id) in self.shared.key_ids.iter().enumerate() {
            if let Some(before) = old.shared.key_ids.iter().position(|id| id == key_id) {
                let seconds = old.shared.last_matched[before].load(Ordering::Relaxed);
                self.shared.last_matched[index].fetch_max(seconds, Ordering::Relaxed);
            }
        }
    }

    /// How many secrets are active.
    pub fn secret_count(&self) -> usize {
        self.shared.keyed.len()
    }

    /// Whether one of the secrets has this [`KeyId`].
    pub fn holds(&self, key_id: KeyId) -> bool {
        self.shared.key_ids.contains(&key_id)
    }

    /// The secrets' key ids, in order: what [`Verified::secret_index`]
    /// indexes.
    pub fn key_ids(&self) -> &[KeyId] {
        &self.shared.key_ids
    }

    /// Verifies a raw header value against the raw body.
    ///
    /// On success the body is handed back, untouched, inside [`Verified`]:
    /// the bytes that were signed are the bytes you parse.
    pub fn verify(
        &self,
        header: &[u8],
        body: impl Into<Bytes>,
    ) -> Result<Verified, SignatureError> {
        let signature = Signature::parse(header)?;
        self.verify_signature(signature, body.into())
    }

    /// Verifies an already parsed [`Signature`] against the raw body.
    pub fn verify_signature(
        &self,
        signature: Signature,
        body: Bytes,
    ) -> Result<Verified, SignatureError> {
        let secret_index = self
            .match_index(&signature, &body)
            .ok_or(SignatureError::Mismatch)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs().max(1));
        // Written only when the second changes: a write on every request
        // would bounce the cache line between every core that verifies.
        let last = &self.shared.last_matched[secret_index];
        if last.load(Ordering::Relaxed) != now {
            last.store(now, Ordering::Relaxed);
        }
        Ok(Verified {
            body,
            signature,
            secret_index,
            key_id: self.shared.key_ids[secret_index],
        })
    }

    fn match_index(&self, signature: &Signature, body: &[u8]) -> Option<usize> {
        // Every secret is tried until one matches. Stopping at a match tells a
        // caller only which secret their (valid) signature used, which they know.
        self.shared.keyed.iter().position(|keyed| {
            let mut mac = keyed.clone();
            mac.update(body);
            let expected = Zeroizing::new(<[u8; DIGEST_LEN]>::from(mac.finalize().into_bytes()));
            bool::from(expected.ct_eq(signature.as_bytes()))
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.shared.keyed.len()),
            )
            .finish()
    }
}

/// A body whose signature matched one of the active secrets.
///
/// It holds the exact bytes received. Parsing them is a separate step (see
/// [`crate::event::Envelope::from_slice`]), so a receiver can verify, enqueue
/// the bytes, and parse later.
#[derive(Clone)]
pub struct Verified {
    body: Bytes,
    signature: Signature,
    secret_index: usize,
    key_id: KeyId,
}

// The body may carry personal data: its size, never its bytes.
impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("body_len", &self.body.len())
            .field("signature", &self.signature)
            .field("secret_index", &self.secret_index)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Verified {
    /// The verified bytes, exactly as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the verified bytes.
    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// The signature that matched.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Which secret matched: an index into the list given to [`Verifier::new`].
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// Which secret matched, by its [`KeyId`]: the same in every process
    /// that holds the secret, whatever its place in their lists.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

/// Signs a body the way LTVboost does, returning the full header value
/// (`sha256=<hex>`). For tests and for simulating the sender.
///
/// ```
/// use ltvboost_webhooks::signature::{sign, Secret};
///
/// let secret = Secret::new("It's a Secret to Everybody")?;
/// assert_eq!(
///     sign(&secret, b"Hello, World!"),
///     "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
/// );
/// # Ok::<(), ltvboost_webhooks::signature::SecretError>(())
/// ```
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = secret.keyed_mac();
    mac.update(body);
    let digest: [u8; DIGEST_LEN] = mac.finalize().into_bytes().into();
    Signature(digest).to_header_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub publishes this vector for the same `sha256=` HMAC scheme.
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn github_verifier() -> Verifier {
        Verifier::new([Secret::new(GITHUB_SECRET).unwrap()]).unwrap()
    }

    #[test]
    fn github_known_answer() {
        let secret = Secret::new(GITHUB_SECRET).unwrap();
        assert_eq!(sign(&secret, GITHUB_BODY), GITHUB_SIGNATURE);
        let verified = github_verifier()
            .verify(GITHUB_SIGNATURE.as_bytes(), GITHUB_BODY)
            .unwrap();
        assert_eq!(verified.body().as_ref(), GITHUB_BODY);
    }

    #[test]
    fn uppercase_hex_and_surrounding_whitespace_are_accepted() {
        let upper = format!("sha256={}", GITHUB_SIGNATURE[7..].to_ascii_uppercase());
        assert!(
            github_verifier()
                .verify(upper.as_bytes(), GITHUB_BODY)
                .is_ok()
        );
        let padded = format!(" \t{GITHUB_SIGNATURE}\t ");
        assert!(
            github_verifier()
                .verify(padded.as_bytes(), GITHUB_BODY)
                .is_ok()
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let hex64 = &GITHUB_SIGNATURE[7..];
        let cases: &[(&[u8], SignatureError)] = &[
            (b"", SignatureError::Empty),
            (b"   ", SignatureError::Empty),
            (hex64.as_bytes(), SignatureError::UnsupportedScheme),
            (b"SHA256=00", SignatureError::UnsupportedScheme),
            (b"sha1=00", SignatureError::UnsupportedScheme),
            (b"sha256=", SignatureError::WrongLength),
            (b"sha256=abc", SignatureError::WrongLength),
            (&[b'a'; 200], SignatureError::UnsupportedScheme),
        ];
        for (header, want) in cases {
            assert_eq!(Signature::parse(header), Err(*want), "{header:?}");
        }
        let odd = format!("sha256={}", &hex64[..63]);
        assert_eq!(
            Signature::parse(odd.as_bytes()),
            Err(SignatureError::WrongLength)
        );
        let long = format!("sha256={hex64}0");
        assert_eq!(
            Signature::parse(long.as_bytes()),
            Err(SignatureError::WrongLength)
        );
        let not_hex = format!("sha256=zz{}", &hex64[2..]);
        assert_eq!(
            Signature::parse(not_hex.as_bytes()),
            Err(SignatureError::NotHex)
        );
        let inner_space = format!("sha256= {}", &hex64[1..]);
        assert_eq!(
            Signature::parse(inner_space.as_bytes()),
            Err(SignatureError::NotHex)
        );
        let two = format!("{GITHUB_SIGNATURE},{GITHUB_SIGNATURE}");
        assert_eq!(
            Signature::parse(two.as_bytes()),
            Err(SignatureError::WrongLength)
        );
    }

    #[test]
    fn wrong_secret_and_altered_body_mismatch() {
        let other = Verifier::new([Secret::new("another secret entirely").unwrap()]).unwrap();
        assert_eq!(
            other
                .verify(GITHUB_SIGNATURE.as_bytes(), GITHUB_BODY)
                .unwrap_err(),
            SignatureError::Mismatch
        );
        assert_eq!(
            github_verifier()
                .verify(GITHUB_SIGNATURE.as_bytes(), &b"Hello, World?"[..])
                .unwrap_err(),
            SignatureError::Mismatch
        );
    }

    #[test]
    fn rotation_reports_the_matching_secret() {
        let a = Secret::new("secret-number-one-0000").unwrap();
        let b = Secret::new("secret-number-two-0000").unwrap();
        let verifier = Verifier::new([a.clone(), b.clone()]).unwrap();
        let body = b"{}";
        let index = |s: &Secret| {
            verifier
                .verify(sign(s, body).as_bytes(), &body[..])
                .unwrap()
        };
        assert_eq!(index(&a).secret_index(), 0);
        assert_eq!(index(&b).secret_index(), 1);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let secret = Secret::new(GITHUB_SECRET).unwrap();
        let verifier = Verifier::new([secret.clone()]).unwrap();
        for text in [format!("{secret:?}"), format!("{verifier:?}")] {
            assert!(!text.contains("Secret to"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }

    #[test]
    fn empty_secret_and_empty_set_are_refused() {
        assert_eq!(Secret::new(Vec::new()).unwrap_err(), SecretError::Empty);
        assert_eq!(
            Verifier::new(Vec::new()).unwrap_err(),
            SecretError::NoSecrets
        );
    }
}
