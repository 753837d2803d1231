//! LTVboost events: the envelope, the [`Event`] enum and its payloads.
//!
//! This module does no I/O. Parse only bytes that [`crate::signature`] has
//! verified.
//!
//! Parsing happens in two steps, so that the cheap, always-present part is read
//! first and the payload is decoded only for a type this crate knows:
//!
//! 1. [`Envelope::from_slice`] reads `{"id", "type", "created_at", "data"}`,
//!    keeping `data` as raw JSON.
//! 2. [`Envelope::event`] decodes `data` into the typed payload that `type`
//!    names, or yields [`Event::Unknown`] for a type this crate does not know.
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

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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
/// # Ok::<(), ltvboost_webhooks::event::UnknownEventType>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventType {
    /// `response.created`: a new quiz response was received.
    ResponseCreated,
    /// `response.scored`: a response was scored and its outcome determined.
    ResponseScored,
    /// `action.queued`: an action was added to the processing queue.
    ActionQueued,
    /// `action.sent`: an action was executed successfully.
    ActionSent,
    /// `action.failed`: an action failed to execute.
    ActionFailed,
    /// `segment.updated`: a segment's membership changed.
    SegmentUpdated,
    /// `segment.ready`: a segment's calculation completed.
    SegmentReady,
}

impl EventType {
    /// Every documented event type, in the order LTVboost's page lists them.
    pub const ALL: [EventType; 7] = [
        EventType::ResponseCreated,
        EventType::ResponseScored,
        EventType::ActionQueued,
        EventType::ActionSent,
        EventType::ActionFailed,
        EventType::SegmentUpdated,
        EventType::SegmentReady,
    ];

    /// The wire name, e.g. `"response.created"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::ResponseCreated => "response.created",
            EventType::ResponseScored => "response.scored",
            EventType::ActionQueued => "action.queued",
            EventType::ActionSent => "action.sent",
            EventType::ActionFailed => "action.failed",
            EventType::SegmentUpdated => "segment.updated",
            EventType::SegmentReady => "segment.ready",
        }
    }
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

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| UnknownEventType(name.to_owned()))
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The outer JSON object of every delivery, with `data` still raw.
///
/// See the [module documentation](self) for what is assumed about its fields.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Envelope {
    /// The event's id (`evt_…`), when the sender includes one.
    #[serde(default, deserialize_with = "optional_identifier")]
    pub id: Option<String>,
    /// The event type's wire name, known to this crate or not.
    #[serde(rename = "type")]
    pub type_name: String,
    /// When the event was created, as sent: RFC 3339 assumed, a Unix
    /// timestamp (sent as a number) kept as its decimal text.
    #[serde(
        default,
        deserialize_with = "optional_identifier",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<String>,
    /// The payload, as raw JSON.
    #[serde(default = "null_data")]
    pub data: Box<RawValue>,
}

fn null_data() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

impl Envelope {
    /// Parses the envelope from (verified) body bytes. `data` is checked to be
    /// well-formed JSON but not decoded.
    pub fn from_slice(body: &[u8]) -> Result<Self, EnvelopeError> {
        serde_json::from_slice(body).map_err(EnvelopeError)
    }

    /// The documented event type, or `None` for a type this crate does not know.
    pub fn event_type(&self) -> Option<EventType> {
        self.type_name.parse().ok()
    }

    /// The raw `data` JSON, whatever the type.
    pub fn data(&self) -> &RawValue {
        &self.data
    }

    /// Decodes `data` into the payload that `type` names.
    ///
    /// An unknown type is not an error: it yields [`Event::Unknown`]. A known
    /// type whose `data` does not fit its payload struct is a [`PayloadError`].
    pub fn event(&self) -> Result<Event, PayloadError> {
        let Some(event_type) = self.event_type() else {
            return Ok(Event::Unknown {
                type_name: self.type_name.clone(),
                data: self.data.clone(),
            });
        };
        let json = &*self.data;
        let fit = |source| PayloadError { event_type, source };
        Ok(match event_type {
            EventType::ResponseCreated => Event::ResponseCreated(decode(json).map_err(fit)?),
            EventType::ResponseScored => Event::ResponseScored(decode(json).map_err(fit)?),
            EventType::ActionQueued => Event::ActionQueued(decode(json).map_err(fit)?),
            EventType::ActionSent => Event::ActionSent(decode(json).map_err(fit)?),
            EventType::ActionFailed => Event::ActionFailed(decode(json).map_err(fit)?),
            EventType::SegmentUpdated => Event::SegmentUpdated(decode(json).map_err(fit)?),
            EventType::SegmentReady => Event::SegmentReady(decode(json).map_err(fit)?),
        })
    }
}

/// A payload struct, decoded from `data` and keeping it raw beside.
trait Payload: serde::de::DeserializeOwned {
    fn keep_raw(&mut self, raw: &RawValue);
}

/// Decodes `data` into its payload struct. Unmodelled fields are skipped
/// without being built (no `#[serde(flatten)]`, which buffers the whole
/// object first); [`unmodelled`] recovers them on demand.
fn decode<T: Payload>(data: &RawValue) -> Result<T, serde_json::Error> {
    let mut payload: T = serde_json::from_str(data.get())?;
    payload.keep_raw(data);
    Ok(payload)
}

/// The members of a raw JSON object whose names are not in `known`.
fn unmodelled(raw: Option<&RawValue>, known: &[&str]) -> Map<String, Value> {
    let Some(Ok(mut all)) = raw.map(|r| serde_json::from_str::<Map<String, Value>>(r.get())) else {
        return Map::new();
    };
    all.retain(|name, _| !known.contains(&name.as_str()));
    all
}

/// The body was not a JSON event envelope (not JSON, not an object, no
/// string `type`, a duplicated key, nesting too deep, …). Answers `400`.
#[derive(Debug, thiserror::Error)]
#[error("body is not a JSON event envelope: {0}")]
pub struct EnvelopeError(#[source] serde_json::Error);

/// A known event type whose `data` does not fit its payload struct.
#[derive(Debug, thiserror::Error)]
#[error("data does not fit {event_type}: {source}")]
pub struct PayloadError {
    /// The type whose payload failed to decode.
    pub event_type: EventType,
    /// What serde_json reported.
    #[source]
    pub source: serde_json::Error,
}

/// A decoded event.
///
/// `#[non_exhaustive]`: LTVboost may add types, and this crate will add them
/// here; until then they arrive as [`Event::Unknown`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// `response.created`
    ResponseCreated(ResponseCreated),
    /// `response.scored`
    ResponseScored(ResponseScored),
    /// `action.queued`
    ActionQueued(ActionQueued),
    /// `action.sent`
    ActionSent(ActionSent),
    /// `action.failed`
    ActionFailed(ActionFailed),
    /// `segment.updated`
    SegmentUpdated(SegmentUpdated),
    /// `segment.ready`
    SegmentReady(SegmentReady),
    /// A type this crate does not know, with its raw `data`.
    Unknown {
        /// The wire name, e.g. `"quiz.archived"`.
        type_name: String,
        /// The raw `data` JSON.
        data: Box<RawValue>,
    },
}

impl Event {
    /// The documented type, or `None` for [`Event::Unknown`].
    pub fn event_type(&self) -> Option<EventType> {
        Some(match self {
            Event::ResponseCreated(_) => EventType::ResponseCreated,
            Event::ResponseScored(_) => EventType::ResponseScored,
            Event::ActionQueued(_) => EventType::ActionQueued,
            Event::ActionSent(_) => EventType::ActionSent,
            Event::ActionFailed(_) => EventType::ActionFailed,
            Event::SegmentUpdated(_) => EventType::SegmentUpdated,
            Event::SegmentReady(_) => EventType::SegmentReady,
            Event::Unknown { .. } => return None,
        })
    }
}

/// Accepts an identifier sent as a string or as an integer.
fn identifier<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Signed(i64),
        Unsigned(u64),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(s) => s,
        Id::Signed(n) => n.to_string(),
        Id::Unsigned(n) => n.to_string(),
    })
}

fn optional_identifier<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "identifier")] String);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
}

macro_rules! payload {
    (
        $(#[$meta:meta])*
        $name:ident, id alias $alias:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, Serialize)]
        #[non_exhaustive]
        pub struct $name {
            #[doc = concat!("The main identifier, sent as `id` or `", $alias, "`.")]
            #[serde(alias = $alias, deserialize_with = "identifier")]
            pub id: String,
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// The whole `data` object as sent (see [`Self::extra`]).
            #[serde(skip)]
            raw: Option<Box<RawValue>>,
        }

        impl $name {
            /// A payload with only its identifier set, for tests and fixtures.
            pub fn new(id: impl Into<String>) -> Self {
                Self { id: id.into(), $( $field: None, )* raw: None }
            }

            /// The fields of `data` this crate does not model, as sent.
            ///
            /// Decoded on demand from the raw `data`, so that payloads without
            /// them cost nothing extra.
            pub fn extra(&self) -> Map<String, Value> {
                unmodelled(self.raw.as_deref(), &["id", $alias, $(stringify!($field)),*])
            }

            /// The whole `data` object as sent, when this payload was decoded
            /// from an event.
            pub fn raw(&self) -> Option<&RawValue> {
                self.raw.as_deref()
            }
        }

        impl Payload for $name {
            fn keep_raw(&mut self, raw: &RawValue) {
                self.raw = Some(raw.to_owned());
            }
        }
    };
}

payload! {
    /// `response.created`: a new quiz response was received.
    ResponseCreated, id alias "response_id" {
        /// The quiz answered.
        #[serde(deserialize_with = "optional_identifier")]
        quiz_id: String,
        /// The customer who answered, when known.
        #[serde(deserialize_with = "optional_identifier")]
        customer_id: String,
        /// The respondent's e-mail address, when collected.
        email: String,
        /// The answers, as raw JSON: decode them into your own types with
        /// `serde_json::from_str(answers.get())`. Kept raw because their
        /// shape is the quiz's, and building a generic tree for every
        /// delivery was most of the parse time.
        answers: Box<RawValue>,
    }
}

payload! {
    /// `response.scored`: a response was scored and its outcome determined.
    ResponseScored, id alias "response_id" {
        /// The quiz answered.
        #[serde(deserialize_with = "optional_identifier")]
        quiz_id: String,
        /// The score.
        score: f64,
        /// The outcome the score led to.
        outcome: String,
    }
}

payload! {
    /// `action.queued`: an action was added to the processing queue.
    ActionQueued, id alias "action_id" {
        /// What kind of action (e-mail, webhook, tag, …), as sent.
        action_type: String,
        /// The response that triggered the action.
        #[serde(deserialize_with = "optional_identifier")]
        response_id: String,
    }
}

payload! {
    /// `action.sent`: an action was executed successfully.
    ActionSent, id alias "action_id" {
        /// What kind of action, as sent.
        action_type: String,
        /// The response that triggered the action.
        #[serde(deserialize_with = "optional_identifier")]
        response_id: String,
    }
}

payload! {
    /// `action.failed`: an action failed to execute.
    ActionFailed, id alias "action_id" {
        /// What kind of action, as sent.
        action_type: String,
        /// The response that triggered the action.
        #[serde(deserialize_with = "optional_identifier")]
        response_id: String,
        /// Why it failed, as sent.
        error: String,
    }
}

payload! {
    /// `segment.updated`: a segment's membership changed.
    SegmentUpdated, id alias "segment_id" {
        /// The segment's name.
        name: String,
        /// How many members the segment has now.
        member_count: u64,
    }
}

payload! {
    /// `segment.ready`: a segment's calculation completed.
    SegmentReady, id alias "segment_id" {
        /// The segment's name.
        name: String,
        /// How many members the segment has.
        member_count: u64,
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
        for t in EventType::ALL {
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
        assert_eq!(e.id.as_deref(), Some("42"));
        let Event::SegmentReady(ready) = e.event().unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(ready.id, "7");
        assert_eq!(ready.name.as_deref(), Some("vip"));
        assert_eq!(ready.member_count, None);
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
        // Deep nesting where a typed field is expected fails at once.
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
