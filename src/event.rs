//! LTVboost events: the envelope, the [`Event`] enum and its payloads.
//!
//! This module does no I/O. Parse only bytes that [`crate::signature`] has
//! verified.
//!
//! [`Envelope::from_bytes`] reads `{"id", "type", "created_at", "data"}`,
//! keeps `data` as a slice of the body, then decodes it into the typed
//! payload that `type` names, whatever order the members came in. A type
//! this crate does not know keeps its `data` raw, as [`Event::Unknown`].
//! Nothing of the body is copied: the envelope, [`Envelope::data`] and each
//! payload's `raw()` share the verified [`Bytes`].
//!
//! # Assumptions
//!
//! LTVboost's page documents only `event.type` and `event.data`. Where it is
//! silent, this crate assumes — and stays tolerant, so that a real payload
//! that differs does not break a receiver:
//!
//! * The envelope is `{"id": "evt_…", "type": "…", "created_at": "<RFC 3339>",
//!   "data": {…}}`. Only `type` is required. Without `id`, deduplication keys
//!   on the signature instead (a retry carries identical bytes, hence an
//!   identical signature). Without `created_at`, the replay-window check is
//!   skipped. Other envelope fields are ignored; the raw body stays available.
//! * Identifiers are strings; a number is accepted and kept as its decimal
//!   text. In each payload every field but the main identifier is optional,
//!   and the identifier may be sent as `id` or as `<kind>_id`
//!   (`response_id`, `action_id`, `segment_id`). Unknown fields stay
//!   reachable through each payload's `extra()`, and the raw `data` through
//!   [`Envelope::data`] and each payload's `raw()`.
//! * **A wrong guess never costs an event.** Every typed field is a guess:
//!   a field whose JSON shape differs from the model (`"score": "high"`
//!   where a number is expected) decodes as `None`, its value stays in
//!   `raw()`, and the event still reaches its typed handler. Only `data`
//!   that is not an object, or has no usable identifier, does not fit.
//!   Where either shape is plausible, both are modelled: an action's
//!   `error` is a [`ActionError`] read from a string or an object.
//! * An unknown `type` is not an error: it becomes [`Event::Unknown`], which a
//!   receiver acknowledges, so a new event on LTVboost's side never turns into
//!   a retry storm.
//!
//! ```
//! use ltvboost_webhooks::event::{Envelope, Event, EventType};
//!
//! let body = br#"{"id":"evt_1","type":"response.scored","created_at":"2026-11-27T10:00:00Z",
//!                 "data":{"response_id":"rsp_9","score":87.5,"outcome":"power-user","locale":"de"}}"#;
//! let envelope = Envelope::from_slice(body)?;
//! assert_eq!(envelope.event_type(), Some(EventType::ResponseScored));
//!
//! match envelope.event()? {
//!     Event::ResponseScored(scored) => {
//!         assert_eq!(scored.id, "rsp_9");
//!         assert_eq!(scored.score, Some(87.5));
//!         assert_eq!(scored.extra()["locale"], "de"); // unknown fields are kept
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Writes the event list once: the [`EventType`] enum, its names, the
/// [`Event`] enum and the decoding of each payload.
macro_rules! events {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// The seven event types LTVboost documents.
        ///
        /// Serialises as the wire name (`"response.created"`, …), so the same type
        /// serves the registration API's `events` list.
        ///
        /// ```
        /// use ltvboost_webhooks::event::EventType;
        ///
        /// let t: EventType = "action.failed".parse()?;
        /// assert_eq!(t, EventType::ActionFailed);
        /// assert_eq!(t.to_string(), "action.failed");
        /// assert!("quiz.archived".parse::<EventType>().is_err());
        /// assert_eq!(EventType::ALL.len(), 7);
        /// # Ok::<(), ltvboost_webhooks::event::UnknownEventType>(())
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum EventType {
            $( $(#[$doc])* $variant, )*
        }

        impl EventType {
            /// Every documented event type, in the order LTVboost's page lists them.
            pub const ALL: &'static [EventType] = &[ $( EventType::$variant, )* ];

            /// The wire name, e.g. `"response.created"`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( EventType::$variant => $name, )*
                }
            }
        }

        impl FromStr for EventType {
            type Err = UnknownEventType;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                match name {
                    $( $name => Ok(EventType::$variant), )*
                    _ => Err(UnknownEventType(name.to_owned())),
                }
            }
        }

        /// A decoded event.
        ///
        /// `#[non_exhaustive]`: LTVboost may add types, and this crate will add them
        /// here; until then they arrive as [`Event::Unknown`].
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub enum Event {
            $( $(#[$doc])* $variant($variant), )*
            /// A type this crate does not know, with its raw `data`.
            Unknown {
                /// The wire name, e.g. `"quiz.archived"`.
                type_name: String,
                /// The raw `data` JSON.
                data: RawJson,
            },
        }

        impl Event {
            /// The documented type, or `None` for [`Event::Unknown`].
            pub fn event_type(&self) -> Option<EventType> {
                match self {
                    $( Event::$variant(_) => Some(EventType::$variant), )*
                    Event::Unknown { .. } => None,
                }
            }

            /// Gives the payload its raw `data`, for `raw()` and `extra()`.
            fn keep_data(&mut self, data: &RawJson) {
                match self {
                    $( Event::$variant(payload) => payload.data = Some(data.clone()), )*
                    Event::Unknown { .. } => {}
                }
            }
        }

        impl<'de> DeserializeSeed<'de> for PayloadOf {
            type Value = Event;

            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Event, D::Error> {
                Ok(match self.0 {
                    $( EventType::$variant => Event::$variant($variant::deserialize(deserializer)?), )*
                })
            }
        }
    };
}

events! {
    /// `response.created`: a new quiz response was received.
    ResponseCreated = "response.created",
    /// `response.scored`: a response was scored and its outcome determined.
    ResponseScored = "response.scored",
    /// `action.queued`: an action was added to the processing queue.
    ActionQueued = "action.queued",
    /// `action.sent`: an action was executed successfully.
    ActionSent = "action.sent",
    /// `action.failed`: an action failed to execute.
    ActionFailed = "action.failed",
    /// `segment.updated`: a segment's membership changed.
    SegmentUpdated = "segment.updated",
    /// `segment.ready`: a segment's calculation completed.
    SegmentReady = "segment.ready",
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the seven documented event types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown LTVboost event type {0:?}")]
pub struct UnknownEventType(pub String);

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// One JSON value exactly as it was sent: a slice of the verified body,
/// shared with it rather than copied.
///
/// The bytes are always one well-formed JSON value in UTF-8 (this crate only
/// makes a `RawJson` from a value the JSON parser accepted).
///
/// ```
/// use ltvboost_webhooks::event::Envelope;
///
/// let envelope = Envelope::from_slice(br#"{"type":"quiz.archived","data":{"quiz_id":"q1"}}"#)?;
/// let data = envelope.data();
/// assert_eq!(data.get(), r#"{"quiz_id":"q1"}"#);
/// let parsed: serde_json::Value = data.parse()?;
/// assert_eq!(parsed["quiz_id"], "q1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Bytes);

impl RawJson {
    /// The JSON `null`.
    pub const NULL: RawJson = RawJson(Bytes::from_static(b"null"));

    /// The JSON text.
    pub fn get(&self) -> &str {
        // Checked rather than assumed, to keep this crate free of `unsafe`:
        // the bytes came from a `&str` the JSON parser returned, so this
        // never fails, and it costs a few nanoseconds a kilobyte.
        std::str::from_utf8(&self.0).unwrap_or("null")
    }

    /// The JSON text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text as a shared [`Bytes`] (no copy).
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Decodes the value into your own type.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    /// A copy as serde_json's [`RawValue`].
    pub fn to_raw_value(&self) -> Box<RawValue> {
        RawValue::from_string(self.get().to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
    }
}

/// Its size, never its content: payloads may carry personal data, and
/// `Debug` output ends up in logs.
impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawJson")
            .field("len", &self.0.len())
            .finish()
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(self.get()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// The outer JSON object of every delivery, parsed together with its typed
/// payload.
///
/// See the [module documentation](self) for what is assumed about its fields.
/// The envelope keeps the verified body (shared, not copied), so the raw
/// `data` stays reachable through [`Envelope::data`]. Its `Debug` shows the
/// id, the type and the body's size, never the body: it may carry personal
/// data.
#[derive(Clone)]
#[non_exhaustive]
pub struct Envelope {
    id: Option<Box<str>>,
    type_name: TypeName,
    created_at: Option<Box<str>>,
    /// `data` as sent: a slice of `body`.
    data: RawJson,
    body: Bytes,
    /// The typed payload, decoded when first asked for: a receiver in
    /// enqueue mode never decodes it, a worker does.
    event: std::sync::OnceLock<Result<Event, PayloadError>>,
}

#[derive(Clone)]
enum TypeName {
    Known(EventType),
    Other(Box<str>),
}

/// The envelope as sent: the members this crate reads, borrowed from the
/// body. A member sent twice is an error; other members are ignored.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    type_name: Cow<'a, str>,
    #[serde(default, borrow)]
    created_at: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Decodes `data` into the payload of the type it carries.
struct PayloadOf(EventType);

/// `raw`, a value read from `body`, as a shared slice of it (a copy, should
/// it ever not lie inside `body`).
fn slice_of(body: &Bytes, raw: &RawValue) -> RawJson {
    let inner = raw.get().as_bytes();
    let start = (inner.as_ptr() as usize).checked_sub(body.as_ptr() as usize);
    match start.map(|start| (start, start.saturating_add(inner.len()))) {
        Some((start, end)) if end <= body.len() => RawJson(body.slice(start..end)),
        _ => RawJson(Bytes::copy_from_slice(inner)),
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id())
            .field("type_name", &self.type_name())
            .field("created_at", &self.created_at())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Envelope {
    /// Parses the envelope from (verified) body bytes, copying them once.
    /// See [`Envelope::from_bytes`].
    pub fn from_slice(body: &[u8]) -> Result<Self, EnvelopeError> {
        Self::from_bytes(Bytes::copy_from_slice(body))
    }

    /// Parses the envelope from (verified) body bytes, keeping them without
    /// a copy. The typed payload is decoded when first asked for
    /// ([`Envelope::event`]), once: a receiver that only hands the body on
    /// (enqueue mode) never decodes it.
    ///
    /// The body must be a JSON object with a string `type`. A known type
    /// whose `data` does not fit its payload is not an error here: the
    /// envelope parses, and [`Envelope::event`] returns the [`PayloadError`].
    pub fn from_bytes(body: Bytes) -> Result<Self, EnvelopeError> {
        // serde reads a struct from an array too, by position: an envelope
        // is an object.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(EnvelopeError(
                <serde_json::Error as serde::de::Error>::invalid_type(
                    serde::de::Unexpected::Other("a value that is not an object"),
                    &"an event envelope object",
                ),
            ));
        }
        let wire: Wire<'_> = serde_json::from_slice(&body).map_err(EnvelopeError)?;
        let data = wire.data.map_or(RawJson::NULL, |raw| slice_of(&body, raw));
        let type_name = match wire.type_name.parse::<EventType>() {
            Ok(known) => TypeName::Known(known),
            Err(_) => TypeName::Other(wire.type_name.into_owned().into()),
        };
        let id = wire.id.and_then(identifier_text).map(Into::into);
        let created_at = wire.created_at.and_then(identifier_text).map(Into::into);
        Ok(Self {
            id,
            type_name,
            created_at,
            data,
            body,
            event: std::sync::OnceLock::new(),
        })
    }

    /// The event's id (`evt_…`), when the sender includes one. A numeric id
    /// is given as its decimal text; an id of another shape counts as absent.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The event type's wire name, known to this crate or not.
    pub fn type_name(&self) -> &str {
        match &self.type_name {
            TypeName::Known(known) => known.as_str(),
            TypeName::Other(name) => name,
        }
    }

    /// When the event was created, as sent: RFC 3339 assumed, a Unix
    /// timestamp (sent as a number) kept as its decimal text.
    pub fn created_at(&self) -> Option<&str> {
        self.created_at.as_deref()
    }

    /// The documented event type, or `None` for a type this crate does not know.
    pub fn event_type(&self) -> Option<EventType> {
        match self.type_name {
            TypeName::Known(known) => Some(known),
            TypeName::Other(_) => None,
        }
    }

    /// The raw `data` JSON, whatever the type (`null` when absent): a
    /// shared slice of the body.
    pub fn data(&self) -> RawJson {
        self.data.clone()
    }

    /// The whole body, as verified.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The typed event that `type` names.
    ///
    /// An unknown type is not an error: it is [`Event::Unknown`]. A known
    /// type whose `data` does not fit its payload struct is a [`PayloadError`]
    /// (cheap to clone: it shares serde_json's error).
    pub fn event(&self) -> Result<&Event, PayloadError> {
        self.event
            .get_or_init(|| self.decode())
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The typed event, taking the envelope apart.
    pub fn into_event(mut self) -> Result<Event, PayloadError> {
        match self.event.take() {
            Some(event) => event,
            None => self.decode(),
        }
    }

    /// Decodes `data` into the payload `type` names.
    fn decode(&self) -> Result<Event, PayloadError> {
        match &self.type_name {
            TypeName::Known(known) => decode(*known, &self.data),
            TypeName::Other(name) => Ok(Event::Unknown {
                type_name: name.to_string(),
                data: self.data.clone(),
            }),
        }
    }
}

/// Decodes `data` into the payload `event_type` names.
fn decode(event_type: EventType, data: &RawJson) -> Result<Event, PayloadError> {
    let mut json = serde_json::Deserializer::from_slice(data.as_bytes());
    let mut event = PayloadOf(event_type)
        .deserialize(&mut json)
        .and_then(|event| json.end().map(|()| event))
        .map_err(|source| PayloadError {
            event_type,
            source: Arc::new(source),
        })?;
    event.keep_data(data);
    Ok(event)
}

/// A string, or an integer as its decimal text; anything else is `None`.
/// The one reading of an identifier: the envelope's id and the payloads'.
fn id_text(value: Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// [`id_text`] of a raw JSON value.
fn identifier_text(raw: &RawValue) -> Option<String> {
    id_text(serde_json::from_str::<Value>(raw.get()).ok()?)
}

/// The members of a raw JSON object whose names are not in `known`.
fn unmodelled(raw: Option<RawJson>, known: &[&str]) -> Map<String, Value> {
    let Some(Ok(mut all)) = raw.map(|r| r.parse::<Map<String, Value>>()) else {
        return Map::new();
    };
    all.retain(|name, _| !known.contains(&name.as_str()));
    all
}

/// The body was not a JSON event envelope (not JSON, not an object, no
/// string `type`, a duplicated key, nesting too deep, …). Answers `400`.
///
/// Its text and `Debug` name the kind of fault and the place (line and
/// column), never a value from the body; serde_json's own message, which
/// may quote one, is its [`source`](std::error::Error::source).
#[derive(thiserror::Error)]
#[error(
    "body is not a JSON event envelope: {} at line {} column {}",
    describe_envelope(.0),
    .0.line(),
    .0.column()
)]
pub struct EnvelopeError(#[source] serde_json::Error);

impl fmt::Debug for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeError")
            .field("fault", &describe_envelope(&self.0))
            .field("line", &self.0.line())
            .field("column", &self.0.column())
            .finish()
    }
}

fn describe_envelope(error: &serde_json::Error) -> &'static str {
    describe_as(error, "not an object with a string type, or a member twice")
}

/// A known event type whose `data` does not fit its payload struct: it is
/// not an object, or it has no usable identifier.
///
/// Its text names the type and the place (line and column), never a value
/// from the body, so it can be logged; serde_json's own message, which may
/// quote a value, is in [`source`](Self::source).
#[derive(Clone, thiserror::Error)]
#[error(
    "data does not fit {event_type}: {} at line {} column {}",
    describe(source),
    source.line(),
    source.column()
)]
pub struct PayloadError {
    /// The type whose payload failed to decode.
    pub event_type: EventType,
    /// What serde_json reported (shared, so the error can be cloned). It
    /// names the line and column, never a value from the body.
    #[source]
    pub source: Arc<serde_json::Error>,
}

/// The type, the kind of fault and the place, never serde_json's message.
impl fmt::Debug for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadError")
            .field("event_type", &self.event_type)
            .field("fault", &describe(&self.source))
            .field("line", &self.source.line())
            .field("column", &self.source.column())
            .finish()
    }
}

fn describe(error: &serde_json::Error) -> &'static str {
    describe_as(error, "not an object, or no string or integer identifier")
}

/// What kind of fault serde_json found, in words of ours (its own message
/// may quote the body); `data` names a fault in the data's shape.
fn describe_as(error: &serde_json::Error, data: &'static str) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Data => data,
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON",
        serde_json::error::Category::Io => "unreadable",
    }
}

/// The main identifier: a string or an integer, required.
fn identifier<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    id_text(Value::deserialize(deserializer)?)
        .ok_or_else(|| serde::de::Error::custom("the identifier is not a string or an integer"))
}

/// An optional field read tolerantly: a value of another shape is `None`
/// (it stays in `raw()`), never an error.
fn tolerant<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Ok(T::deserialize(Value::deserialize(deserializer)?).ok())
}

/// An optional identifier read tolerantly: a string, or an integer as its
/// decimal text; anything else is `None`.
fn tolerant_identifier<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(id_text(Value::deserialize(deserializer)?))
}

macro_rules! payload {
    (
        $(#[$meta:meta])*
        $name:ident, id alias $alias:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty as $read:literal, )*
        }
    ) => {
        $(#[$meta])*
        ///
        /// Its `Debug` shows the identifier, which fields are set and the
        /// size of `data`, never their content (it may be personal data).
        #[derive(Clone, Deserialize, Serialize)]
        #[non_exhaustive]
        pub struct $name {
            #[doc = concat!("The main identifier, sent as `id` or `", $alias, "`.")]
            #[serde(alias = $alias, deserialize_with = "identifier")]
            pub id: String,
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[serde(deserialize_with = $read)]
                pub $field: Option<$ty>,
            )*
            /// The `data` this payload was decoded from: a shared slice of
            /// the verified body.
            #[serde(skip)]
            data: Option<RawJson>,
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut set: Vec<&str> = Vec::new();
                $( if self.$field.is_some() { set.push(stringify!($field)); } )*
                f.debug_struct(stringify!($name))
                    .field("id", &self.id)
                    .field("fields_set", &set)
                    .field("data_len", &self.data.as_ref().map(|raw| raw.as_bytes().len()))
                    .finish()
            }
        }

        impl $name {
            /// A payload with only its identifier set, for tests and fixtures.
            pub fn new(id: impl Into<String>) -> Self {
                Self { id: id.into(), $( $field: None, )* data: None }
            }

            /// The fields of `data` this crate does not model, as sent.
            ///
            /// Decoded on demand from the raw `data`, so that deliveries that
            /// never ask cost nothing extra.
            pub fn extra(&self) -> Map<String, Value> {
                unmodelled(self.raw(), &["id", $alias, $(stringify!($field)),*])
            }

            /// The whole `data` object as sent, when this payload was decoded
            /// from an event: a field of a shape this crate did not expect is
            /// still here.
            pub fn raw(&self) -> Option<RawJson> {
                self.data.clone()
            }
        }
    };
}

payload! {
    /// `response.created`: a new quiz response was received.
    ResponseCreated, id alias "response_id" {
        /// The quiz answered.
        quiz_id: String as "tolerant_identifier",
        /// The customer who answered, when known.
        customer_id: String as "tolerant_identifier",
        /// The respondent's e-mail address, when collected.
        email: String as "tolerant",
        /// The answers, as raw JSON: decode them into your own types with
        /// `serde_json::from_str(answers.get())`. Kept raw because their
        /// shape is the quiz's.
        answers: Box<RawValue> as "raw_value",
    }
}

payload! {
    /// `response.scored`: a response was scored and its outcome determined.
    ResponseScored, id alias "response_id" {
        /// The quiz answered.
        quiz_id: String as "tolerant_identifier",
        /// The score.
        score: f64 as "tolerant",
        /// The outcome the score led to.
        outcome: String as "tolerant",
    }
}

payload! {
    /// `action.queued`: an action was added to the processing queue.
    ActionQueued, id alias "action_id" {
        /// What kind of action (e-mail, webhook, tag, …), as sent.
        action_type: String as "tolerant",
        /// The response that triggered the action.
        response_id: String as "tolerant_identifier",
    }
}

payload! {
    /// `action.sent`: an action was executed successfully.
    ActionSent, id alias "action_id" {
        /// What kind of action, as sent.
        action_type: String as "tolerant",
        /// The response that triggered the action.
        response_id: String as "tolerant_identifier",
    }
}

payload! {
    /// `action.failed`: an action failed to execute.
    ActionFailed, id alias "action_id" {
        /// What kind of action, as sent.
        action_type: String as "tolerant",
        /// The response that triggered the action.
        response_id: String as "tolerant_identifier",
        /// Why it failed, sent as a string or as an object.
        error: ActionError as "tolerant",
    }
}

payload! {
    /// `segment.updated`: a segment's membership changed.
    SegmentUpdated, id alias "segment_id" {
        /// The segment's name.
        name: String as "tolerant",
        /// How many members the segment has now.
        member_count: u64 as "tolerant",
    }
}

payload! {
    /// `segment.ready`: a segment's calculation completed.
    SegmentReady, id alias "segment_id" {
        /// The segment's name.
        name: String as "tolerant",
        /// How many members the segment has.
        member_count: u64 as "tolerant",
    }
}

/// Any JSON value, kept raw: it always fits.
fn raw_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// Why an action failed: LTVboost's page does not say whether this is a
/// message (`"error": "mailbox full"`) or an object (`"error": {"code":
/// "bounced", "message": "mailbox full"}`), so both are read.
///
/// ```
/// use ltvboost_webhooks::event::{Envelope, Event};
///
/// for data in [r#""mailbox full""#, r#"{"code":"bounced","message":"mailbox full"}"#] {
///     let body = format!(r#"{{"type":"action.failed","data":{{"id":"act_1","error":{data}}}}}"#);
///     let Event::ActionFailed(failed) = Envelope::from_slice(body.as_bytes())?.into_event()? else {
///         unreachable!()
///     };
///     assert_eq!(failed.error.unwrap().message.as_deref(), Some("mailbox full"));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ActionError {
    /// A machine-readable code, when the error is an object with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The human-readable message: the string itself, or the object's
    /// `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The code, and the message's length, never its text.
impl fmt::Debug for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionError")
            .field("code", &self.code)
            .field("message_len", &self.message.as_ref().map(String::len))
            .finish()
    }
}

impl<'de> Deserialize<'de> for ActionError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        match Value::deserialize(deserializer)? {
            Value::String(message) => Ok(Self {
                code: None,
                message: Some(message),
            }),
            Value::Object(object) => Ok(Self {
                code: text(object.get("code")),
                message: text(object.get("message")),
            }),
            _ => Err(serde::de::Error::custom(
                "an error is a string or an object",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(json: &str) -> Envelope {
        Envelope::from_slice(json.as_bytes()).unwrap()
    }

    #[test]
    fn every_type_round_trips_through_its_name() {
        for &t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), t);
            let body = format!(r#"{{"type":"{t}","data":{{"id":"x_1"}}}}"#);
            assert_eq!(envelope(&body).event().unwrap().event_type(), Some(t));
        }
    }

    #[test]
    fn identifiers_accept_alias_and_numbers() {
        let e =
            envelope(r#"{"id":42,"type":"segment.ready","data":{"segment_id":7,"name":"vip"}}"#);
        assert_eq!(e.id(), Some("42"));
        let Event::SegmentReady(ready) = e.event().unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(ready.id, "7");
        assert_eq!(ready.name.as_deref(), Some("vip"));
        assert_eq!(ready.member_count, None);
    }

    #[test]
    fn a_field_of_another_shape_is_none_and_the_event_still_decodes() {
        // Every optional field of every payload, sent with a shape the model
        // does not expect: each decodes as None, its value stays in raw().
        let odd = r#"{"nested":{"deep":[1,2]}}"#;
        for (t, fields) in [
            ("response.created", &["quiz_id", "customer_id", "email"][..]),
            ("response.scored", &["quiz_id", "score", "outcome"]),
            ("action.queued", &["action_type", "response_id"]),
            ("action.sent", &["action_type", "response_id"]),
            ("action.failed", &["action_type", "response_id", "error"]),
            ("segment.updated", &["name", "member_count"]),
            ("segment.ready", &["name", "member_count"]),
        ] {
            let members: Vec<String> = fields.iter().map(|f| format!(r#""{f}":[{odd}]"#)).collect();
            let data = format!(r#"{{"id":"x_1",{}}}"#, members.join(","));
            let e = envelope(&format!(r#"{{"type":"{t}","data":{data}}}"#));
            let event = e.event().unwrap_or_else(|err| panic!("{t}: {err}"));
            let debug = format!("{event:?}");
            assert!(debug.contains("fields_set: []"), "{t}: {debug}");
            assert!(debug.contains(r#"id: "x_1""#), "{t}: {debug}");
            assert_eq!(e.data().get(), data);
        }
        // The example the crate once got wrong: an error object, not a string.
        let failed = envelope(
            r#"{"type":"action.failed","data":{"id":"a","error":{"code":"bounced","message":"mailbox full"}}}"#,
        );
        let Event::ActionFailed(failed) = failed.event().unwrap() else {
            panic!("wrong variant")
        };
        let error = failed.error.as_ref().unwrap();
        assert_eq!(error.code.as_deref(), Some("bounced"));
        assert_eq!(error.message.as_deref(), Some("mailbox full"));
    }

    #[test]
    fn an_id_of_another_shape_counts_as_absent() {
        // Deduplication then keys on the signature: the event is not lost.
        for id in [
            "1e400",
            "123456789012345678901234567890",
            "1.5",
            "{}",
            "[1]",
            "true",
        ] {
            let e = envelope(&format!(
                r#"{{"id":{id},"type":"quiz.archived","data":{{}}}}"#
            ));
            assert_eq!(e.id(), None, "{id}");
            let e = envelope(&format!(r#"{{"created_at":{id},"type":"quiz.archived"}}"#));
            assert_eq!(e.created_at(), None, "{id}");
        }
    }

    #[test]
    fn an_envelope_is_an_object_never_an_array() {
        for body in [
            r#"[null,"quiz.archived"]"#,
            r#"["evt_1","response.created","2026-11-27T10:00:00Z",{"id":"r"}]"#,
            r#"  []"#,
            r#""response.created""#,
        ] {
            assert!(Envelope::from_slice(body.as_bytes()).is_err(), "{body}");
        }
        assert!(Envelope::from_slice(br#" {"type":"quiz.archived"}"#).is_ok());
    }

    #[test]
    fn errors_name_no_value_from_the_body() {
        let payload = envelope(r#"{"type":"response.created","data":"ada@example.com"}"#)
            .event()
            .unwrap_err();
        let not_an_event = Envelope::from_slice(br#"{"type":"ada@example.com"x}"#).unwrap_err();
        let missing_type = Envelope::from_slice(br#"{"id":"ada@example.com"}"#).unwrap_err();
        for text in [
            format!("{payload} {payload:?}"),
            format!("{not_an_event} {not_an_event:?}"),
            format!("{missing_type} {missing_type:?}"),
        ] {
            assert!(!text.contains("ada@example.com"), "{text}");
        }
    }

    #[test]
    fn debug_shows_no_body() {
        let e = envelope(
            r#"{"id":"evt_1","type":"response.created","data":{"id":"r","email":"ada@example.com"}}"#,
        );
        let debug = format!("{e:?}");
        assert!(!debug.contains("ada@example.com"), "{debug}");
        assert!(
            debug.contains("evt_1") && debug.contains("body_len"),
            "{debug}"
        );
        // Nor does any type that holds payload data: sizes and names only.
        let failed = envelope(
            r#"{"type":"action.failed","data":{"id":"a","action_type":"email","error":{"code":"bounced","message":"ada@example.com bounced"}}}"#,
        );
        let event = format!("{:?}", failed.event().unwrap());
        let data = format!("{:?}", failed.data());
        let unknown = envelope(r#"{"type":"quiz.archived","data":{"email":"ada@example.com"}}"#);
        let unknown = format!("{:?}", unknown.event().unwrap());
        for debug in [&event, &data, &unknown] {
            assert!(!debug.contains("ada@example.com"), "{debug}");
            assert!(!debug.contains("email\""), "{debug}");
        }
        assert!(
            event.contains("fields_set: [\"action_type\", \"error\"]"),
            "{event}"
        );
        assert!(
            event.contains("message_len") || event.contains("data_len"),
            "{event}"
        );
        assert!(data.contains("len"), "{data}");
    }

    #[test]
    fn envelope_strings_read_alike_with_or_without_escapes() {
        // Plain members are kept as places in the body; escaped ones are
        // unescaped into text of their own. Both must read the same.
        let plain = envelope(
            r#"{"id":"evt_1","type":"response.created","created_at":"2026-11-27T10:00:00Z","data":{"id":"r"}}"#,
        );
        let escaped = envelope(
            r#"{"id":"evt\u005f1","type":"response\u002ecreated","created_at":"2026-11-27T10:00:00\u005a","data":{"id":"r"}}"#,
        );
        for e in [&plain, &escaped] {
            assert_eq!(e.id(), Some("evt_1"));
            assert_eq!(e.type_name(), "response.created");
            assert_eq!(e.event_type(), Some(EventType::ResponseCreated));
            assert_eq!(e.created_at(), Some("2026-11-27T10:00:00Z"));
            assert!(matches!(e.event(), Ok(Event::ResponseCreated(_))));
        }
        let unknown = envelope(r#"{"type":"quiz.\u0061rchived","id":null}"#);
        assert_eq!(unknown.type_name(), "quiz.archived");
        assert_eq!(unknown.event_type(), None);
        assert_eq!(unknown.id(), None);
        assert!(Envelope::from_slice(br#"{"type":7}"#).is_err());
        assert!(Envelope::from_slice(br#"{"type":null}"#).is_err());
    }

    #[test]
    fn unmodelled_fields_and_raw_data_stay_reachable() {
        let e = envelope(
            r#"{"type":"response.created","data":{"response_id":"r1","answers":[{"q":"goal","a":"x"}],"locale":"de","score":{"n":1}}}"#,
        );
        let Event::ResponseCreated(created) = e.event().unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(created.id, "r1");
        assert_eq!(
            created.answers.as_ref().unwrap().get(),
            r#"[{"q":"goal","a":"x"}]"#
        );
        let extra = created.extra();
        assert_eq!(extra.keys().collect::<Vec<_>>(), ["locale", "score"]);
        assert_eq!(created.raw().unwrap().get(), e.data().get());
        assert!(ResponseCreated::new("r2").extra().is_empty());
    }

    #[test]
    fn member_order_does_not_matter() {
        // `type` before `data`, as LTVboost sends it, and `data` first must
        // see the same event and raw data.
        let data = r#"{"response_id":"r1","quiz_id":7,"email":"a@b.c","answers":[1,{"x":"\u00e9"}],"extra":true}"#;
        for (t, d) in [
            ("response.created", data),
            (
                "response.scored",
                r#"{"id":"r","score":1e2,"outcome":null}"#,
            ),
            ("action.failed", r#"{"action_id":9,"error":"timeout"}"#),
            ("segment.ready", r#"{"segment_id":"s","member_count":3}"#),
            ("quiz.archived", r#"[1,2]"#),
        ] {
            let first = envelope(&format!(r#"{{"id":"e","type":"{t}","data":{d}}}"#));
            let second = envelope(&format!(r#"{{"data":{d},"id":"e","type":"{t}"}}"#));
            assert_eq!(
                format!("{:?}", first.event()),
                format!("{:?}", second.event()),
                "{t}"
            );
            assert_eq!(first.data().get(), d);
            assert_eq!(second.data().get(), d);
            if let Ok(Event::ResponseCreated(p)) = first.event() {
                assert_eq!(p.raw().unwrap().get(), d);
                assert_eq!(p.extra()["extra"], true);
            }
        }
        // A payload without an identifier does not fit, in either order,
        // with the envelope intact.
        for body in [
            r#"{"type":"segment.ready","data":{"name":"s","member_count":3}}"#,
            r#"{"data":{"name":"s","member_count":3},"type":"segment.ready"}"#,
        ] {
            let e = envelope(body);
            assert_eq!(e.event().unwrap_err().event_type, EventType::SegmentReady);
            assert_eq!(e.data().get(), r#"{"name":"s","member_count":3}"#);
        }
        // A malformed envelope stays an envelope error even when its data
        // would not fit either.
        assert!(
            Envelope::from_slice(
                br#"{"type":"segment.ready","data":{"member_count":"x"},"type":"a"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_type_keeps_raw_data() {
        let e = envelope(r#"{"type":"quiz.archived","data":{"quiz_id":"q1"}}"#);
        assert_eq!(e.event_type(), None);
        match e.event().unwrap() {
            Event::Unknown { type_name, data } => {
                assert_eq!(type_name, "quiz.archived");
                assert_eq!(data.get(), r#"{"quiz_id":"q1"}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_data_is_null_and_fails_a_known_type() {
        let e = envelope(r#"{"type":"action.sent"}"#);
        assert_eq!(e.data().get(), "null");
        let err = e.event().unwrap_err();
        assert_eq!(err.event_type, EventType::ActionSent);
    }

    #[test]
    fn payload_without_identifier_does_not_fit() {
        let e = envelope(r#"{"type":"response.created","data":{"quiz_id":"q"}}"#);
        assert!(
            e.event()
                .unwrap_err()
                .to_string()
                .contains("response.created")
        );
    }

    #[test]
    fn envelopes_that_are_not_envelopes_fail() {
        for body in [
            "",
            "null",
            "[]",
            r#"{"data":{}}"#,
            r#"{"type":7,"data":{}}"#,
            r#"{"type":"a","type":"b"}"#,
            "{\"type\":\"a\"",
            // Well formed up to a late fault.
            r#"{"type":"segment.ready","data":{"id":"s"},"data":{"id":"t"}}"#,
            r#"{"type":"segment.ready","data":{"id":"s"},"id":"e","id":"f"}"#,
            r#"{"type":"segment.ready","data":{"id":"s"}} x"#,
            r#"{"type":"segment.ready","data":{"id":"s"}"#,
        ] {
            assert!(Envelope::from_slice(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn deep_nesting_never_overflows_the_stack() {
        let (open, close) = ("[".repeat(100_000), "]".repeat(100_000));
        // Raw values are skipped over without recursion: the envelope and a
        // payload whose deep part is kept raw both parse…
        let deep =
            format!(r#"{{"type":"response.created","data":{{"id":"r","answers":{open}{close}}}}}"#);
        let e = Envelope::from_slice(deep.as_bytes()).unwrap();
        let Event::ResponseCreated(created) = e.event().unwrap() else {
            panic!("wrong variant")
        };
        // …and whoever decodes the raw part meets serde_json's recursion limit.
        let answers = created.answers.as_ref().unwrap();
        assert!(serde_json::from_str::<Value>(answers.get()).is_err());
        assert!(created.extra().is_empty());
        // Deep nesting where a typed field is expected stops at serde_json's
        // recursion limit: the payload does not fit, nothing overflows.
        let deep_score =
            format!(r#"{{"type":"response.scored","data":{{"id":"r","score":{open}{close}}}}}"#);
        assert!(
            Envelope::from_slice(deep_score.as_bytes())
                .unwrap()
                .event()
                .is_err()
        );
        // Deep nesting in the envelope itself is refused outright.
        let deep_type = format!(r#"{{"type":{open}{close}}}"#);
        assert!(Envelope::from_slice(deep_type.as_bytes()).is_err());
    }
}
