//! The options several commands share: where a secret comes from, the
//! registration API, and clap's parsers for durations and event names.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ltvboost_webhooks::EventType;
use ltvboost_webhooks::client::Client;
use ltvboost_webhooks::secrets::{EnvSecrets, SecretFile};
use ltvboost_webhooks::signature::{
    DEVELOPMENT_SECRET, SECRET_ENV, Secret, SecretError, Verifier, secret_file_from_env,
};

use crate::output::{note, usage};

/// The registration API: its token, its base URL and a time-out.
#[derive(Args)]
pub(crate) struct ApiArgs {
    /// The registration API's token (endpoints commands, listen --register).
    #[arg(
        long,
        global = true,
        env = "LTVBOOST_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    api_key: Option<String>,
    /// The registration API's base URL (default: LTVboost's).
    #[arg(long, global = true, env = "LTVBOOST_API_BASE", value_name = "URL")]
    api_base: Option<String>,
    /// How long one API call may take, retries included. Default: 120.
    #[arg(long, global = true, value_name = "SECONDS", value_parser = seconds)]
    api_timeout: Option<Duration>,
}

impl ApiArgs {
    /// The API client from --api-key/LTVBOOST_API_TOKEN and --api-base/LTVBOOST_API_BASE.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        self.client_within(self.api_timeout)
    }

    /// The API client, each call given at most `deadline`, retries included.
    pub(crate) fn client_within(&self, deadline: Option<Duration>) -> anyhow::Result<Client> {
        let token = self
            .api_key
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| usage("no API token: give --api-key or set LTVBOOST_API_TOKEN"))?;
        let mut builder = Client::builder(token);
        if let Some(base) = &self.api_base {
            builder = builder.base_url(base.clone());
        }
        if let Some(deadline) = deadline {
            builder = builder.timeout(deadline).deadline(deadline);
        }
        builder.build().map_err(|e| usage(e.to_string()))
    }
}

/// Where a secret comes from: --secret-file (or LTVBOOST_WEBHOOK_SECRET_FILE),
/// --secret, or LTVBOOST_WEBHOOK_SECRET.
#[derive(Args)]
pub(crate) struct SecretArgs {
    /// The secret (or a comma-separated list, newest first, for verifying).
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    secret: Option<String>,
    /// A file holding the secrets, one per line, newest first (used before
    /// --secret; `listen` follows its changes without a restart). Without
    /// --secret-file, --secret or LTVBOOST_WEBHOOK_SECRET, the file
    /// LTVBOOST_WEBHOOK_SECRET_FILE names.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

impl SecretArgs {
    /// The secret list as given, or the environment's; the development
    /// secret (said on stderr) when `development` allows and nothing is set.
    pub(crate) fn list(&self, development: bool) -> anyhow::Result<String> {
        if let Some(path) = self.file()? {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("--secret-file {}: {e}", path.display())))?;
            // One secret per line (a comma-separated list on one line, too).
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .collect();
            return Ok(lines.join(","));
        }
        match self.given() {
            Some(list) => Ok(list.to_owned()),
            None if development => {
                note(format_args!(
                    "{SECRET_ENV} is unset: using the development secret"
                ));
                Ok(DEVELOPMENT_SECRET.to_owned())
            }
            None => Err(usage(format!(
                "no secret: give --secret, --secret-file or {SECRET_ENV}"
            ))),
        }
    }

    /// The secret file: --secret-file's, or without any other secret
    /// given, LTVBOOST_WEBHOOK_SECRET_FILE's. Both variables set in the
    /// environment is refused, as the example receiver refuses it.
    fn file(&self) -> anyhow::Result<Option<PathBuf>> {
        let from_env = secret_file_from_env();
        if from_env.is_some() && std::env::var(SECRET_ENV).is_ok_and(|v| !v.trim().is_empty()) {
            return Err(usage(SecretError::BothSet.to_string()));
        }
        Ok(self
            .secret_file
            .clone()
            .or_else(|| self.given().is_none().then_some(from_env).flatten()))
    }

    /// --secret or the environment's, unless blank.
    fn given(&self) -> Option<&str> {
        self.secret
            .as_deref()
            .filter(|list| !list.replace(',', "").trim().is_empty())
    }

    /// The first secret of the list: the one to sign with.
    pub(crate) fn signing(&self) -> anyhow::Result<Secret> {
        let list = self.list(true)?;
        let first = list
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        Secret::new(first).map_err(|e| usage(e.to_string()))
    }

    /// Every secret of the list, for verifying.
    pub(crate) fn verifier(&self) -> anyhow::Result<Verifier> {
        Verifier::from_list(&self.list(true)?).map_err(|e| usage(e.to_string()))
    }

    /// The secrets of a receiver bound to `bind`, by the library's policy:
    /// a secret file followed without a restart, or the list, or the
    /// development secret only on a loopback address. Both variables set in
    /// the environment is refused, as the example receiver refuses it.
    pub(crate) fn receiver_secrets(
        &self,
        bind: std::net::SocketAddr,
    ) -> anyhow::Result<EnvSecrets> {
        if let Some(path) = self.file()? {
            let file = SecretFile::open(path).map_err(|e| usage(e.to_string()))?;
            return Ok(EnvSecrets::File(file));
        }
        if self.given().is_none() {
            let verifier = Verifier::from_env(bind).map_err(|e| {
                usage(format!(
                    "{e}: listening on {bind} needs a secret (--secret, --secret-file or {SECRET_ENV})"
                ))
            })?;
            return Ok(EnvSecrets::Fixed(verifier));
        }
        Ok(EnvSecrets::Fixed(self.verifier()?))
    }
}

/// clap's parser for a positive number of seconds, e.g. `0.5` or `120`.
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

/// clap's parser for an event name: printable ASCII, no spaces. Names this
/// version does not know are kept (LTVboost may have added them since);
/// [`warn_unknown`] says so.
pub(crate) fn event_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{text:?} is not an event name"));
    }
    Ok(name.to_owned())
}

/// Warns on stderr of each name this version does not know; they are used
/// as they are.
pub(crate) fn warn_unknown(names: &[String]) {
    for name in names {
        if name.parse::<EventType>().is_err() {
            note(format_args!(
                "warning: {name} is not an event type this version knows; used as it is"
            ));
        }
    }
}

/// Reads all of stdin.
pub(crate) fn stdin_bytes() -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut body).context("reading stdin")?;
    Ok(body)
}
