//! `ltvboost listen`: a local receiver for development. It verifies and
//! prints each delivery, forwards it on request to the app being built,
//! and can register a temporary endpoint for the session (LTVboost's
//! deliveries need a public URL: a tunnel to the listening address).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ltvboost_webhooks::client::NewWebhook;
use ltvboost_webhooks::event::Envelope;
use ltvboost_webhooks::signature::{SIGNATURE_HEADER, Secret, SignatureError, Verifier};
use ltvboost_webhooks::{EventType, Outcome as Answer, Rejection};
use serde_json::{Value, json};

use clap::Args;

use crate::{ApiArgs, Failure, Outcome, SecretArgs, api_client, checked_names};

/// What `listen` was asked to do.
#[derive(Args)]
pub(crate) struct ListenArgs {
    /// Where to listen (the example receiver's default is 127.0.0.1:3000, so both run side by side).
    #[arg(long, default_value = "127.0.0.1:3030")]
    addr: std::net::SocketAddr,
    /// Forward each verified delivery here: its original bytes and headers.
    #[arg(long, value_name = "URL")]
    forward_to: Option<String>,
    /// How long the app forwarded to may take before the delivery is answered 504.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    forward_timeout: f64,
    /// Only these event types (comma-separated); others are acknowledged and skipped.
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...")]
    events: Vec<String>,
    /// Register a temporary endpoint at this public URL (a tunnel to --addr) for
    /// --events (default: every type), and delete it on exit (Ctrl-C or SIGTERM).
    #[arg(long, value_name = "PUBLIC_URL")]
    register: Option<String>,
    /// Print each delivery's body too.
    #[arg(long)]
    print_body: bool,
    #[command(flatten)]
    secret: SecretArgs,
}

/// What one request came to, printed as a line or a JSON object.
struct Report {
    status: u16,
    event_type: Option<String>,
    event_id: Option<String>,
    secret_index: Option<usize>,
    refused: Option<String>,
    skipped: bool,
    forwarded: Option<Value>,
    body: Option<Value>,
}

impl Report {
    fn print(&self, json_out: bool, print_body: bool) {
        if json_out {
            let mut line = json!({
                "status": self.status,
                "event_type": self.event_type,
                "event_id": self.event_id,
                "secret_index": self.secret_index,
            });
            if let Some(reason) = &self.refused {
                line["refused"] = json!(reason);
            }
            if self.skipped {
                line["skipped"] = json!(true);
            }
            if let Some(forwarded) = &self.forwarded {
                line["forwarded"] = forwarded.clone();
            }
            if let Some(body) = self.body.as_ref().filter(|_| print_body) {
                line["body"] = body.clone();
            }
            println!("{line}");
            return;
        }
        if let Some(reason) = &self.refused {
            println!("refused ({}): {reason}", self.status);
            return;
        }
        let event_type = self.event_type.as_deref().unwrap_or("(unreadable)");
        let event_id = self.event_id.as_deref().unwrap_or("(no id)");
        let secret = self.secret_index.unwrap_or(0);
        if self.skipped {
            println!("{event_type} {event_id} (secret #{secret}) skipped: not in --events");
            return;
        }
        println!("{event_type} {event_id} (secret #{secret})");
        if let Some(forwarded) = &self.forwarded {
            match (&forwarded["status"], &forwarded["error"]) {
                (Value::Number(status), _) => println!(
                    "  forwarded to {}: {status}",
                    forwarded["url"].as_str().unwrap_or_default()
                ),
                (_, error) => println!(
                    "  forwarding to {} failed: {}",
                    forwarded["url"].as_str().unwrap_or_default(),
                    error.as_str().unwrap_or_default()
                ),
            }
        }
        if let Some(body) = self.body.as_ref().filter(|_| print_body) {
            println!("  {body}");
        }
    }
}

/// The delivery's headers, without those of this hop (RFC 9110 §7.6.1, and
/// those a connection names) or of the tunnel and client in front of it,
/// which the app might trust from a loopback peer.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in named {
        kept.remove(name.as_str());
    }
    for name in [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::EXPECT,
        header::FORWARDED,
        header::ACCEPT_ENCODING,
        header::AUTHORIZATION,
        header::COOKIE,
    ] {
        kept.remove(name);
    }
    let tunnel: Vec<_> = kept
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("x-forwarded-")
                || name.starts_with("cf-")
                || matches!(name, "x-real-ip" | "keep-alive" | "proxy-connection")
        })
        .cloned()
        .collect();
    for name in tunnel {
        kept.remove(name);
    }
    kept
}

/// Answers one request as a receiver answers it (the status table's rows),
/// or as the app it forwards to answers.
async fn answer(listen: Arc<Settings>, headers: HeaderMap, body: Bytes) -> (Response, Report) {
    let mut report = Report {
        status: 200,
        event_type: None,
        event_id: None,
        secret_index: None,
        refused: None,
        skipped: false,
        forwarded: None,
        body: None,
    };
    let verified = match headers.get(SIGNATURE_HEADER) {
        None => Err(SignatureError::Missing),
        Some(header) => listen.verifier.verify(header.as_bytes(), body.clone()),
    };
    let verified = match verified {
        Ok(verified) => verified,
        Err(e) => {
            report.refused = Some(e.to_string());
            let response = Answer::Rejected(Rejection::Signature(e)).into_response();
            report.status = response.status().as_u16();
            return (response, report);
        }
    };
    report.secret_index = Some(verified.secret_index());
    report.body = serde_json::from_slice(&body).ok();
    if let Ok(envelope) = Envelope::from_bytes(verified.body().clone()) {
        report.event_type = Some(envelope.type_name().to_owned());
        report.event_id = envelope.id().map(str::to_owned);
    }
    let wanted = listen.events.is_empty()
        || report
            .event_type
            .as_ref()
            .is_some_and(|t| listen.events.contains(t));
    if !wanted {
        report.skipped = true;
        return (Answer::Handled.into_response(), report);
    }
    let Some(target) = &listen.forward_to else {
        return (Answer::Handled.into_response(), report);
    };
    let forwarded = listen
        .http
        .post(target)
        .headers(forwarded_headers(&headers))
        .timeout(listen.forward_timeout)
        .body(body)
        .send()
        .await;
    let response = match forwarded {
        Ok(answer) => {
            let status = answer.status();
            let text = answer.text().await.unwrap_or_default();
            report.forwarded = Some(json!({"url": target, "status": status.as_u16()}));
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, text).into_response()
        }
        Err(e) => {
            let (status, error) = if e.is_timeout() {
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no answer within {:?}", listen.forward_timeout),
                )
            } else {
                (StatusCode::BAD_GATEWAY, e.to_string())
            };
            report.forwarded = Some(json!({"url": target, "error": error}));
            (status, format!("forwarding failed: {error}\n")).into_response()
        }
    };
    report.status = response.status().as_u16();
    (response, report)
}

/// The listener's fixed parts, shared by its requests.
struct Settings {
    verifier: Verifier,
    http: reqwest::Client,
    forward_to: Option<String>,
    forward_timeout: Duration,
    events: Vec<String>,
    json: bool,
    print_body: bool,
}

pub(crate) async fn run(listen: ListenArgs, json_out: bool, api: &ApiArgs) -> Outcome {
    let forward_timeout = Duration::try_from_secs_f64(listen.forward_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--forward-timeout {}: not a duration",
                listen.forward_timeout
            ))
        })?;
    let events = checked_names(&listen.events);
    // Without --register the secret comes from the arguments: refused before anything starts.
    let given = match &listen.register {
        Some(_) => None,
        None => Some(listen.secret.receiver_verifier(listen.addr)?),
    };
    // Caught from here on: a Ctrl-C while registering still ends the session in order.
    let mut stop = Box::pin(shutdown_armed()?);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let listener = tokio::net::TcpListener::bind(listen.addr).await?;
    let local = listener.local_addr()?;
    // A registered endpoint gets a secret of its own, which is the one to verify with.
    let registered = match &listen.register {
        None => None,
        Some(public_url) => tokio::select! {
            registered = register(api, json_out, public_url, &events) => Some(registered?),
            () = &mut stop => {
                return Err(Failure::Failed(
                    "interrupted while registering: the endpoint may or may not have been \
                     created; `ltvboost endpoints list` shows whether it exists"
                        .into(),
                ));
            }
        },
    };
    let served = async {
        let verifier = match (&registered, given) {
            (Some((_, secret)), _) => Verifier::new([secret.clone()])?,
            (None, Some(verifier)) => verifier,
            (None, None) => return Err(Failure::Failed("no secret to verify with".into())),
        };
        let settings = Arc::new(Settings {
            verifier,
            http,
            forward_to: listen.forward_to.clone(),
            forward_timeout,
            events,
            json: json_out,
            print_body: listen.print_body,
        });
        let handler = move |headers: HeaderMap, body: Bytes| {
            let settings = settings.clone();
            async move {
                let (response, report) = answer(settings.clone(), headers, body).await;
                report.print(settings.json, settings.print_body);
                response
            }
        };
        let app = axum::Router::new().fallback(axum::routing::post(handler));
        eprintln!("listening on http://{local}");
        ltvboost_webhooks::serve::Server::new(listener)
            .serve_with_shutdown(app, stop)
            .await?;
        Ok::<(), Failure>(())
    }
    .await;
    // The temporary endpoint goes whatever ended the session.
    if let Some((id, _)) = registered {
        let unregistered = unregister(api, json_out, &id).await;
        if let (Err(Failure::Failed(e) | Failure::Usage(e)), Err(_)) = (&served, &unregistered) {
            eprintln!("ltvboost: {e}");
        }
        unregistered?;
    }
    served
}

/// Ctrl-C or SIGTERM, with the handlers installed now rather than when the
/// future is first polled.
fn shutdown_armed() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Registers a temporary endpoint at `public_url` with a new secret.
async fn register(
    api: &ApiArgs,
    json_out: bool,
    public_url: &str,
    events: &[String],
) -> Result<(String, Secret), Failure> {
    let client = api_client(api)?;
    let secret = Secret::generate()?;
    let names: Vec<String> = if events.is_empty() {
        EventType::ALL
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect()
    } else {
        events.to_vec()
    };
    let new = NewWebhook::with_event_names(public_url, names.clone(), secret.clone())
        .map_err(|e| Failure::Usage(format!("--register {public_url}: {e}")))?;
    let endpoint = client.webhooks().create(&new).await.map_err(|e| {
        Failure::Failed(format!(
            "--register {public_url}: {e}\nthe endpoint may or may not have been created: \
             `ltvboost endpoints list` shows whether it exists"
        ))
    })?;
    if json_out {
        println!(
            "{}",
            json!({"registered": endpoint.id, "url": public_url, "events": names})
        );
    } else {
        eprintln!(
            "registered {} at {public_url} for {}; it is deleted when this command ends",
            endpoint.id,
            names.join(",")
        );
    }
    Ok((endpoint.id, secret))
}

/// Deletes the session's endpoint.
async fn unregister(api: &ApiArgs, json_out: bool, id: &str) -> Outcome {
    let deleted = async {
        api_client(api)?
            .webhooks()
            .delete(id)
            .await
            .map_err(Failure::from)
    };
    match deleted.await {
        Ok(()) => {
            if json_out {
                println!("{}", json!({"deleted": id}));
            } else {
                eprintln!("deleted the temporary endpoint {id}");
            }
            Ok(())
        }
        Err(Failure::Failed(e) | Failure::Usage(e)) => Err(Failure::Failed(format!(
            "could not delete the temporary endpoint {id}: {e}\ndelete it with: ltvboost \
             endpoints delete {id}"
        ))),
    }
}
