//! `--register`: a temporary endpoint for the run, deleted whatever ends it,
//! and the stops that end it.

use std::future::Future;
use std::time::Duration;

use ltvboost_webhooks::EventType;
use ltvboost_webhooks::client::NewWebhook;
use ltvboost_webhooks::signature::{Secret, Verifier};
use serde_json::json;
use tokio::sync::watch;

use crate::args::ApiArgs;
use crate::output::{Output, hinted, note, safe, usage};

/// How long the delete may take once the user has asked twice to stop.
const HURRIED_DELETE: Duration = Duration::from_secs(5);

/// Ctrl-C, SIGTERM and failed output, counted. The first stop ends the run
/// in order (requests in flight finish, then the endpoint is deleted); the
/// second ends it at once (the delete is given [`HURRIED_DELETE`]).
#[derive(Clone)]
pub(super) struct Stops {
    count: watch::Sender<u32>,
}

impl Stops {
    /// Installs the signal handlers now, not when first awaited, so a
    /// signal that comes while registering is caught.
    pub(super) fn install() -> std::io::Result<Self> {
        let (count, _) = watch::channel(0);
        let stops = Self { count };
        let signalled = stops.clone();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut interrupt = signal(SignalKind::interrupt())?;
            let mut terminate = signal(SignalKind::terminate())?;
            // A closed terminal stops it, as it did before a secret file's
            // reload took SIGHUP over (the file is still read every second).
            let mut hangup = signal(SignalKind::hangup())?;
            tokio::spawn(async move {
                loop {
                    let caught = tokio::select! {
                        caught = interrupt.recv() => caught,
                        caught = terminate.recv() => caught,
                        caught = hangup.recv() => caught,
                    };
                    if caught.is_none() {
                        break;
                    }
                    signalled.request();
                }
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                signalled.request();
            }
        });
        Ok(stops)
    }

    /// Asks for one more stop.
    pub(super) fn request(&self) {
        self.count.send_modify(|count| *count += 1);
    }

    /// Resolves once `n` stops have been asked for.
    pub(super) fn reached(&self, n: u32) -> impl Future<Output = ()> + Send + 'static {
        let mut count = self.count.subscribe();
        async move {
            // The sender lives as long as the run's `Stops`: never dropped first.
            let _ = count.wait_for(|count| *count >= n).await;
        }
    }
}

/// An endpoint registered for this run, with the secret only it knows.
pub(super) struct TemporaryEndpoint {
    id: String,
    url: String,
    events: Vec<String>,
    secret: Secret,
}

impl TemporaryEndpoint {
    /// Registers an endpoint at `public_url` for `events` (every type when
    /// empty), with a new secret.
    pub(super) async fn create(
        api: &ApiArgs,
        public_url: &str,
        events: &[String],
    ) -> anyhow::Result<Self> {
        let client = api.client()?;
        let secret = Secret::generate()?;
        let events: Vec<String> = if events.is_empty() {
            EventType::ALL
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect()
        } else {
            events.to_vec()
        };
        let new = NewWebhook::with_event_names(public_url, events.clone(), secret.clone())
            .map_err(|e| usage(format!("--register {public_url}: {e}")))?;
        let endpoint = client.webhooks().create(&new).await.map_err(|e| {
            hinted(
                anyhow::Error::from(e).context(format!("--register {public_url}")),
                "the endpoint may or may not have been created: `ltvboost endpoints list` shows \
                 whether it exists",
            )
        })?;
        Ok(Self {
            id: endpoint.id,
            url: public_url.to_owned(),
            events,
            secret,
        })
    }

    /// The verifier of deliveries to this endpoint: its own secret only.
    pub(super) fn verifier(&self) -> anyhow::Result<Verifier> {
        Ok(Verifier::new([self.secret.clone()])?)
    }

    /// Says that the endpoint exists (stdout with `--json`, else stderr).
    pub(super) fn announce(&self, out: Output) -> anyhow::Result<()> {
        if out.json {
            out.print(
                json!({"registered": self.id, "url": self.url, "events": self.events}),
                String::new,
            )
        } else {
            note(format_args!(
                "registered {} at {} for {}; it is deleted when this command ends",
                safe(&self.id),
                self.url,
                self.events.join(",")
            ));
            Ok(())
        }
    }

    /// Deletes the endpoint, within the API's time-out; within
    /// [`HURRIED_DELETE`] once a second stop has been asked for, whether it
    /// came before or during the delete. A failure names the command that
    /// deletes it by hand.
    pub(super) async fn delete(
        self,
        api: &ApiArgs,
        out: Output,
        stops: &Stops,
    ) -> anyhow::Result<()> {
        // Shown escaped: the id came from the API.
        let (id, shown) = (&self.id, safe(&self.id));
        let deleted = tokio::select! {
            biased;
            () = stops.reached(2) => {
                note(format_args!("deleting the temporary endpoint {shown} now"));
                delete_within(api, id, Some(HURRIED_DELETE)).await
            }
            deleted = delete_within(api, id, None) => deleted,
        };
        deleted.map_err(|e| {
            hinted(
                e.context(format!("could not delete the temporary endpoint {shown}")),
                &format!("delete it with: ltvboost endpoints delete {shown}"),
            )
        })?;
        if out.json {
            out.print(json!({"deleted": id}), String::new)
        } else {
            note(format_args!("deleted the temporary endpoint {shown}"));
            Ok(())
        }
    }
}

/// One delete call, given `deadline` (the API's time-out when `None`).
async fn delete_within(api: &ApiArgs, id: &str, deadline: Option<Duration>) -> anyhow::Result<()> {
    let client = match deadline {
        Some(deadline) => api.client_within(Some(deadline))?,
        None => api.client()?,
    };
    Ok(client.webhooks().delete(id).await?)
}
