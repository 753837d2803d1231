use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::EventType;
use crate::receiver::config::DEFAULT_PATH;
use crate::signature::{SIGNATURE_HEADER, Secret, sign};

/// Builds an event body the way LTVboost sends one.
///
/// ```
/// use ltvboost_webhooks::EventType;
/// use ltvboost_webhooks::event::{Envelope, Event};
/// use ltvboost_webhooks::testing::EventBuilder;
/// use serde_json::json;
///
/// let body = EventBuilder::new(EventType::SegmentReady)
///     .id("evt_42")
///     .data(json!({"segment_id": "seg_1", "member_count": 12}))
///     .to_bytes();
/// let envelope = Envelope::from_slice(&body)?;
/// assert_eq!(envelope.id(), Some("evt_42"));
/// assert!(matches!(envelope.event()?, Event::SegmentReady(ready) if ready.member_count == Some(12)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct EventBuilder {
    id: Option<String>,
    type_name: String,
    created_at: Option<Value>,
    data: Value,
}

impl EventBuilder {
    /// An event of a documented type, with a random id, `created_at` now and
    /// empty `data`. [`fixture`] fills `data` with a realistic payload.
    pub fn new(event_type: EventType) -> Self {
        Self::of_type(event_type.as_str())
    }

    /// An event of any type name, known or not (`"quiz.archived"`).
    pub fn of_type(type_name: impl Into<String>) -> Self {
        Self {
            id: Some(format!("evt_{}", random_hex(12))),
            type_name: type_name.into(),
            created_at: Some(Value::String(rfc3339(SystemTime::now()))),
            data: Value::Object(Map::new()),
        }
    }

    /// Sets the event id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Leaves the id out, as a sender that sends none would.
    pub fn without_id(mut self) -> Self {
        self.id = None;
        self
    }

    /// Sets `created_at` (RFC 3339, UTC).
    pub fn created_at(mut self, at: SystemTime) -> Self {
        self.created_at = Some(Value::String(rfc3339(at)));
        self
    }

    /// Sets `created_at` to any JSON value, well formed or not.
    pub fn created_at_raw(mut self, value: Value) -> Self {
        self.created_at = Some(value);
        self
    }

    /// Leaves `created_at` out.
    pub fn without_created_at(mut self) -> Self {
        self.created_at = None;
        self
    }

    /// Replaces `data`.
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Sets one field of `data` (which becomes an object if it was not).
    pub fn field(mut self, name: &str, value: Value) -> Self {
        if !self.data.is_object() {
            self.data = Value::Object(Map::new());
        }
        if let Value::Object(map) = &mut self.data {
            map.insert(name.to_owned(), value);
        }
        self
    }

    /// The event id, if any.
    pub fn event_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The body bytes: `{"id", "type", "created_at", "data"}`, in that order.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain JSON values always serialise; the fields are written in the
        // envelope's order rather than a map's sorted one.
        let json = |v: &Value| serde_json::to_string(v).unwrap_or_default();
        let mut body = String::from("{");
        if let Some(id) = &self.id {
            body.push_str(&format!("\"id\":{},", json(&Value::String(id.clone()))));
        }
        body.push_str(&format!(
            "\"type\":{}",
            json(&Value::String(self.type_name.clone()))
        ));
        if let Some(at) = &self.created_at {
            body.push_str(&format!(",\"created_at\":{}", json(at)));
        }
        body.push_str(&format!(",\"data\":{}}}", json(&self.data)));
        body.into_bytes()
    }
}

/// An event of `event_type` with a realistic payload.
///
/// ```
/// use ltvboost_webhooks::EventType;
/// use ltvboost_webhooks::event::Envelope;
/// use ltvboost_webhooks::testing::fixture;
///
/// for &t in EventType::ALL {
///     let body = fixture(t).to_bytes();
///     assert_eq!(Envelope::from_slice(&body)?.event()?.event_type(), Some(t));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fixture(event_type: EventType) -> EventBuilder {
    let response = format!("rsp_{}", random_hex(8));
    let action = format!("act_{}", random_hex(8));
    let data = match event_type {
        EventType::ResponseCreated => json!({
            "id": response, "quiz_id": "quiz_onboarding", "customer_id": "cus_1042",
            "email": "ada@example.com",
            "answers": [{"question": "goal", "answer": "retention"}],
        }),
        EventType::ResponseScored => json!({
            "id": response, "quiz_id": "quiz_onboarding", "score": 87.5, "outcome": "power-user",
        }),
        EventType::ActionQueued | EventType::ActionSent => json!({
            "id": action, "action_type": "email", "response_id": response,
        }),
        EventType::ActionFailed => json!({
            "id": action, "action_type": "email", "response_id": response,
            "error": "mailbox unavailable",
        }),
        EventType::SegmentUpdated | EventType::SegmentReady => json!({
            "id": format!("seg_{}", random_hex(8)), "name": "Power users", "member_count": 1204,
        }),
    };
    EventBuilder::new(event_type).data(data)
}

/// A `POST` to the default webhook path with `body` signed by `secret`.
pub fn signed_request(secret: &Secret, body: impl Into<Bytes>) -> http::Request<Full<Bytes>> {
    signed_request_to(DEFAULT_PATH, secret, body)
}

/// A `POST` to `uri` with `body` signed by `secret`.
pub fn signed_request_to(
    uri: &str,
    secret: &Secret,
    body: impl Into<Bytes>,
) -> http::Request<Full<Bytes>> {
    let body = body.into();
    let mut request = http::Request::new(Full::new(body.clone()));
    *request.method_mut() = http::Method::POST;
    match uri.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => tracing::warn!(uri, "not a valid URI; the request keeps \"/\""),
    }
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = http::HeaderValue::from_str(&sign(secret, &body)) {
        headers.insert(SIGNATURE_HEADER, value);
    }
    request
}

fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

pub(super) fn random_hex(bytes: usize) -> String {
    let token = crate::dedupe::ClaimToken::random();
    let mut hex = token.to_string();
    hex.truncate(bytes * 2);
    hex
}
