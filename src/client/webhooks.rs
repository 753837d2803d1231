use std::fmt;
use std::net::IpAddr;

use reqwest::Method;
use serde::de::Deserializer;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use url::{Host, Url};

use super::{Client, ClientError, ValidationError, json_body};
use crate::event::EventType;
use crate::signature::Secret;

/// A registered webhook endpoint, as the API returns it.
///
/// Fields the client does not model are kept in `extra`. A secret in the
/// answer is held as a [`Secret`] (redacted in `Debug`), never as text.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Endpoint {
    /// The endpoint's id.
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    /// The URL LTVboost delivers to.
    #[serde(default)]
    pub url: Option<String>,
    /// The subscribed event types this crate knows.
    #[serde(default, deserialize_with = "known_events")]
    pub events: Events,
    /// The signing secret, if the API echoes it.
    #[serde(default, deserialize_with = "optional_secret")]
    pub secret: Option<Secret>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An endpoint's event subscriptions: the types this crate knows, and the
/// names it does not (a newer API may list types added since).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    /// Documented types.
    pub known: Vec<EventType>,
    /// Names this crate does not know, as sent.
    pub unknown: Vec<String>,
}

fn id_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "endpoint id is {other}, not a string"
        ))),
    }
}

fn known_events<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Events, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    let mut events = Events::default();
    for name in names {
        match name.parse() {
            Ok(t) => events.known.push(t),
            Err(_) => events.unknown.push(name),
        }
    }
    Ok(events)
}

fn optional_secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.and_then(|t| Secret::new(t).ok()))
}

/// The body of `POST /webhooks`: `{"url", "events", "secret"}`, exactly as
/// LTVboost's page shows it. Validated when built.
#[derive(Clone)]
pub struct NewWebhook {
    url: String,
    events: Vec<String>,
    secret: Secret,
}

impl NewWebhook {
    /// Checks the URL (absolute; `https`, or `http` on a loopback host), the
    /// event list (non-empty; duplicates dropped) and the secret (text).
    pub fn new(
        url: impl Into<String>,
        events: impl IntoIterator<Item = EventType>,
        secret: Secret,
    ) -> Result<Self, ValidationError> {
        Self::with_event_names(url, events.into_iter().map(EventType::as_str), secret)
    }

    /// As [`NewWebhook::new`], with the events by name: a type LTVboost added
    /// after this version of the crate can be subscribed to as well.
    ///
    /// ```
    /// use ltvboost_webhooks::client::NewWebhook;
    /// use ltvboost_webhooks::signature::Secret;
    ///
    /// let secret = Secret::generate()?;
    /// let new = NewWebhook::with_event_names(
    ///     "https://app.example/webhooks/ltvboost",
    ///     ["response.created", "quiz.archived"],
    ///     secret,
    /// )?;
    /// # let _ = new;
    /// assert!(NewWebhook::with_event_names("https://app.example/", ["bad name"], Secret::generate()?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_event_names(
        url: impl Into<String>,
        events: impl IntoIterator<Item = impl Into<String>>,
        secret: Secret,
    ) -> Result<Self, ValidationError> {
        let url = url.into();
        checked_url(&url)?;
        let events = checked_events(events)?;
        checked_secret(&secret)?;
        Ok(Self {
            url,
            events,
            secret,
        })
    }
}

impl fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret)
            .finish()
    }
}

impl Serialize for NewWebhook {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut body = serializer.serialize_struct("NewWebhook", 3)?;
        body.serialize_field("url", &self.url)?;
        body.serialize_field("events", &self.events)?;
        body.serialize_field("secret", self.secret.expose_str().unwrap_or_default())?;
        body.end()
    }
}

/// The body of `PATCH /webhooks/{id}`: only the fields set are sent.
#[derive(Clone, Default)]
pub struct WebhookUpdate {
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<Secret>,
    validation: Option<ValidationError>,
}

impl WebhookUpdate {
    /// An update that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new URL (checked as in [`NewWebhook::new`]).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        if let Err(e) = checked_url(&url) {
            self.validation.get_or_insert(e);
        }
        self.url = Some(url);
        self
    }

    /// A new event list (non-empty).
    pub fn events(self, events: impl IntoIterator<Item = EventType>) -> Self {
        self.event_names(events.into_iter().map(EventType::as_str))
    }

    /// A new event list by name (non-empty), which may name types added
    /// after this version of the crate.
    ///
    /// ```
    /// use ltvboost_webhooks::client::WebhookUpdate;
    ///
    /// let update = WebhookUpdate::new().event_names(["segment.ready", "quiz.archived"]);
    /// # let _ = update;
    /// ```
    pub fn event_names(mut self, events: impl IntoIterator<Item = impl Into<String>>) -> Self {
        match checked_events(events) {
            Ok(events) => self.events = Some(events),
            Err(e) => {
                self.validation.get_or_insert(e);
            }
        }
        self
    }

    /// A new signing secret (see the rotation steps in the
    /// [module docs](super)).
    pub fn secret(mut self, secret: Secret) -> Self {
        if let Err(e) = checked_secret(&secret) {
            self.validation.get_or_insert(e);
        }
        self.secret = Some(secret);
        self
    }

    fn checked(&self) -> Result<(), ValidationError> {
        self.validation.clone().map_or(Ok(()), Err)
    }
}

impl fmt::Debug for WebhookUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookUpdate")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl Serialize for WebhookUpdate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut body = serializer.serialize_map(None)?;
        if let Some(url) = &self.url {
            body.serialize_entry("url", url)?;
        }
        if let Some(events) = &self.events {
            body.serialize_entry("events", events)?;
        }
        if let Some(secret) = &self.secret {
            body.serialize_entry("secret", secret.expose_str().unwrap_or_default())?;
        }
        body.end()
    }
}

/// The webhook endpoints API: `client.webhooks()`.
#[derive(Debug, Clone, Copy)]
pub struct Webhooks<'a> {
    client: &'a Client,
}

impl<'a> Webhooks<'a> {
    pub(super) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// `POST /webhooks`: registers an endpoint, with a generated
    /// `Idempotency-Key` that every retry repeats, so a retry never
    /// registers it twice.
    pub async fn create(&self, webhook: &NewWebhook) -> Result<Endpoint, ClientError> {
        let key = crate::dedupe::ClaimToken::random().to_string();
        self.create_with_key(webhook, &key).await
    }

    /// [`create`](Self::create) with the caller's idempotency key: a call
    /// repeated with the same key (after a crash, say) registers once.
    pub async fn create_with_key(
        &self,
        webhook: &NewWebhook,
        idempotency_key: &str,
    ) -> Result<Endpoint, ClientError> {
        let url = self.client.url(&["webhooks"]);
        let body = json_body(webhook)?;
        let (status, bytes) = self
            .client
            .send_raw(Method::POST, url, Some(body), Some(idempotency_key))
            .await?;
        super::decode(status, &bytes)
    }

    /// `GET /webhooks`: every registered endpoint, following the API's
    /// pages (see the [module docs](super)).
    pub async fn list(&self) -> Result<Vec<Endpoint>, ClientError> {
        let mut all = Vec::new();
        let mut pages = self.pages();
        while let Some(page) = pages.next_page().await {
            all.extend(page?);
        }
        Ok(all)
    }

    /// The endpoints one page at a time.
    pub fn pages(&self) -> Pages<'a> {
        Pages {
            client: self.client,
            next: Some(self.client.url(&["webhooks"])),
            fetched: 0,
            refused: None,
        }
    }

    /// `GET /webhooks/{id}`.
    pub async fn get(&self, id: &str) -> Result<Endpoint, ClientError> {
        let url = self.client.url(&["webhooks", checked_id(id)?]);
        self.client.send(Method::GET, url, None).await
    }

    /// `PATCH /webhooks/{id}` with the fields the update sets.
    pub async fn update(&self, id: &str, update: &WebhookUpdate) -> Result<Endpoint, ClientError> {
        update.checked()?;
        let url = self.client.url(&["webhooks", checked_id(id)?]);
        self.client
            .send(Method::PATCH, url, Some(json_body(update)?))
            .await
    }

    /// `PATCH /webhooks/{id}` with only a new signing secret. Any `2xx`
    /// answer is success, with or without a body. The request carries an
    /// `Idempotency-Key`, so it is retried like an idempotent method: setting
    /// the same secret twice changes nothing. On an error the change may or
    /// may not have been applied, and calling again with the same secret is
    /// safe. See the rotation steps in the [module docs](super).
    ///
    /// ```no_run
    /// # async fn run(client: ltvboost_webhooks::client::Client, new: ltvboost_webhooks::signature::Secret) -> Result<(), Box<dyn std::error::Error>> {
    /// // Every receiver already accepts `new` (it runs with "new,old").
    /// client.webhooks().set_secret("wh_123", &new).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_secret(&self, id: &str, secret: &Secret) -> Result<(), ClientError> {
        let update = WebhookUpdate::new().secret(secret.clone());
        update.checked()?;
        let url = self.client.url(&["webhooks", checked_id(id)?]);
        let key = crate::dedupe::ClaimToken::random().to_string();
        self.client
            .send_raw(Method::PATCH, url, Some(json_body(&update)?), Some(&key))
            .await?;
        Ok(())
    }

    /// `DELETE /webhooks/{id}`. Whatever body the API answers with is ignored.
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        let url = self.client.url(&["webhooks", checked_id(id)?]);
        self.client
            .send_raw(Method::DELETE, url, None, None)
            .await?;
        Ok(())
    }
}

/// At most this many pages are fetched by one listing.
pub const MAX_PAGES: usize = 100;

/// The pages of `GET /webhooks`: `while let Some(page) = pages.next_page().await`.
#[derive(Debug)]
pub struct Pages<'a> {
    client: &'a Client,
    next: Option<Url>,
    fetched: usize,
    /// A continuation refused after its page was returned.
    refused: Option<ClientError>,
}

impl Pages<'_> {
    /// The next page, or `None` after the last (or after [`MAX_PAGES`]).
    pub async fn next_page(&mut self) -> Option<Result<Vec<Endpoint>, ClientError>> {
        if let Some(refused) = self.refused.take() {
            return Some(Err(refused));
        }
        let url = self.next.take()?;
        if self.fetched >= MAX_PAGES {
            tracing::warn!("stopped listing after {MAX_PAGES} pages");
            return None;
        }
        self.fetched += 1;
        let page: Page = match self.client.send(Method::GET, url.clone(), None).await {
            Ok(page) => page,
            Err(e) => return Some(Err(e)),
        };
        let (endpoints, next) = match page {
            Page::Bare(all) => (all, None),
            Page::Object {
                data,
                has_more,
                next,
                cursor,
            } => {
                let next = match (next, cursor) {
                    (Some(next), _) => match url.join(&next) {
                        Ok(next) if next.origin() == url.origin() => Some(next),
                        _ => {
                            self.refused = Some(ClientError::ForeignPage(next));
                            None
                        }
                    },
                    (None, Some(cursor)) => Some(with_query(&url, "cursor", &cursor)),
                    (None, None) if has_more => data
                        .last()
                        .map(|last| with_query(&url, "starting_after", &last.id)),
                    (None, None) => None,
                };
                (data, next)
            }
        };
        self.next = next;
        Some(Ok(endpoints))
    }
}

/// One answer of `GET /webhooks`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Page {
    Bare(Vec<Endpoint>),
    Object {
        #[serde(alias = "webhooks")]
        data: Vec<Endpoint>,
        #[serde(default)]
        has_more: bool,
        #[serde(default)]
        next: Option<String>,
        #[serde(default, alias = "next_cursor")]
        cursor: Option<String>,
    },
}

/// `url` with its query set to `name=value` alone.
fn with_query(url: &Url, name: &str, value: &str) -> Url {
    let mut next = url.clone();
    next.query_pairs_mut().clear().append_pair(name, value);
    next
}

/// An id that is exactly one path segment: `delete("..")` must never become
/// `DELETE /v1/webhooks`.
fn checked_id(id: &str) -> Result<&str, ValidationError> {
    let bad =
        |c: char| matches!(c, '/' | '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control();
    if id.is_empty() {
        Err(ValidationError::EmptyId)
    } else if id == "." || id == ".." || id.contains(bad) {
        Err(ValidationError::BadId(id.to_owned()))
    } else {
        Ok(id)
    }
}

fn checked_events(
    events: impl IntoIterator<Item = impl Into<String>>,
) -> Result<Vec<String>, ValidationError> {
    let mut list: Vec<String> = Vec::new();
    for event in events {
        let event = event.into();
        if event.is_empty() || !event.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::BadEventName(event));
        }
        if !list.contains(&event) {
            list.push(event);
        }
    }
    if list.is_empty() {
        return Err(ValidationError::NoEvents);
    }
    Ok(list)
}

fn checked_secret(secret: &Secret) -> Result<(), ValidationError> {
    secret
        .expose_str()
        .map(drop)
        .ok_or(ValidationError::SecretNotText)
}

/// An absolute `https` URL, or `http` on a loopback host.
pub(super) fn checked_url(text: &str) -> Result<Url, ValidationError> {
    let url = Url::parse(text).map_err(|_| ValidationError::NotAbsolute(text.to_owned()))?;
    let loopback = match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => return Err(ValidationError::NotAbsolute(text.to_owned())),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(ValidationError::NotHttps(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("a-registered-secret-0123").unwrap()
    }

    #[test]
    fn ids_are_one_path_segment() {
        for id in ["we_1", "wh-2.json", "ABC~9"] {
            assert_eq!(checked_id(id), Ok(id));
        }
        assert_eq!(checked_id(""), Err(ValidationError::EmptyId));
        for id in [
            ".", "..", "a/b", "../x", "a?b", "a#b", "a%2Fb", "a b", "a\nb", "a\\b",
        ] {
            assert_eq!(
                checked_id(id),
                Err(ValidationError::BadId(id.to_owned())),
                "{id:?}"
            );
        }
    }

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        for ok in [
            "https://example.com/hook",
            "http://localhost:3000/webhooks/ltvboost",
            "http://127.0.0.1:3000/x",
            "http://127.8.9.10/x",
            "http://[::1]:3000/x",
        ] {
            assert!(checked_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/hook",
            "http://10.0.0.1/x",
            "ftp://example.com/",
            "ws://localhost/",
        ] {
            assert!(
                matches!(checked_url(bad), Err(ValidationError::NotHttps(_))),
                "{bad}"
            );
        }
        for bad in ["/webhooks/ltvboost", "example.com/hook", ""] {
            assert!(
                matches!(checked_url(bad), Err(ValidationError::NotAbsolute(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_new_webhook_serialises_as_the_page_shows() {
        let hook = NewWebhook::new(
            "https://your-app.com/webhooks/ltvboost",
            [
                EventType::ResponseCreated,
                EventType::ActionSent,
                EventType::ResponseCreated,
            ],
            secret(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&hook).unwrap(),
            serde_json::json!({
                "url": "https://your-app.com/webhooks/ltvboost",
                "events": ["response.created", "action.sent"],
                "secret": "a-registered-secret-0123",
            })
        );
        assert!(!format!("{hook:?}").contains("a-registered-secret"));
    }

    #[test]
    fn empty_events_and_binary_secrets_are_refused() {
        assert_eq!(
            NewWebhook::new("https://a.example/", [], secret()).unwrap_err(),
            ValidationError::NoEvents
        );
        let binary = Secret::new(vec![0xff, 0xfe, 0xfd]).unwrap();
        assert_eq!(
            NewWebhook::new("https://a.example/", [EventType::SegmentReady], binary).unwrap_err(),
            ValidationError::SecretNotText
        );
    }

    #[test]
    fn updates_send_only_what_they_set() {
        let update = WebhookUpdate::new().events([EventType::SegmentReady]);
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            serde_json::json!({"events": ["segment.ready"]})
        );
        assert!(
            WebhookUpdate::new()
                .url("http://example.com/")
                .checked()
                .is_err()
        );
    }

    #[test]
    fn endpoints_keep_unknown_fields_and_events() {
        let endpoint: Endpoint = serde_json::from_value(serde_json::json!({
            "id": 17, "url": "https://a.example/", "events": ["response.created", "quiz.archived"],
            "secret": "echoed-secret-value-000", "status": "active",
        }))
        .unwrap();
        assert_eq!(endpoint.id, "17");
        assert_eq!(endpoint.events.known, [EventType::ResponseCreated]);
        assert_eq!(endpoint.events.unknown, ["quiz.archived"]);
        assert_eq!(endpoint.extra["status"], "active");
        assert!(!format!("{endpoint:?}").contains("echoed-secret"));
    }
}
