//! LTVboost events: the envelope, the [`Event`] enum and its payloads.
//!
//! This module does no I/O. Parse only bytes that [`crate::signature`] has
//! verified.
//!
//! [`Envelope::from_bytes`] reads `{"id", "type", "created_at", "data"}` and
//! decodes `data` into the typed payload that `type` names, or keeps it raw as
//! [`Event::Unknown`] for a type this crate does not know. When `type` comes
//! before `data`, as LTVboost sends it, that is one pass over the body: `data`
//! is decoded where it stands, never buffered or scanned twice, and nothing
//! of the body is copied (the envelope shares the verified [`Bytes`]). A body
//! with `data` first costs a second pass over `data`, nothing more.
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

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
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

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawJson").field(&self.get()).finish()
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
/// `data` stays reachable through [`Envelope::data`].
#[derive(Clone)]
#[non_exhaustive]
pub struct Envelope {
    id: Option<Text>,
    type_name: Text,
    created_at: Option<Text>,
    body: Bytes,
    data: DataSpan,
    event: Result<Event, PayloadError>,
}

/// A string member of the envelope. Most are found in the body as they are
/// (no escapes), and only their place is kept: no allocation per member.
#[derive(Clone)]
enum Text {
    /// These bytes of the body: UTF-8, as serde_json checked.
    At(Range<usize>),
    /// A known event type's name.
    Static(&'static str),
    /// Text that is not in the body as it is: it had escapes, or was a number.
    Owned(Box<str>),
}

impl Text {
    fn new(scanned: ScannedText<'_>, body: &[u8]) -> Self {
        match scanned {
            ScannedText::Borrowed(text) => match subslice(body, text.as_bytes()) {
                Some(range) => Text::At(range),
                None => Text::Owned(text.into()),
            },
            ScannedText::Owned(text) => Text::Owned(text.into()),
        }
    }

    fn get<'a>(&'a self, body: &'a [u8]) -> &'a str {
        match self {
            // serde_json validated these bytes; the check cannot fail.
            Text::At(range) => body
                .get(range.clone())
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            Text::Static(text) => text,
            Text::Owned(text) => text,
        }
    }
}

/// Where `data` sits in the body.
#[derive(Clone, Debug)]
enum DataSpan {
    /// The envelope has no `data`.
    Absent,
    /// These bytes of the body.
    At(Range<usize>),
    /// Decoded straight into its payload while the envelope was read, so
    /// its place was not recorded; found again on demand.
    Decoded,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id())
            .field("type_name", &self.type_name())
            .field("created_at", &self.created_at())
            .field("data", &self.data())
            .finish()
    }
}

impl Envelope {
    /// Parses the envelope and its typed payload from (verified) body bytes,
    /// copying them once. See [`Envelope::from_bytes`].
    pub fn from_slice(body: &[u8]) -> Result<Self, EnvelopeError> {
        Self::from_bytes(Bytes::copy_from_slice(body))
    }

    /// Parses the envelope and its typed payload from (verified) body bytes,
    /// keeping them without a copy.
    ///
    /// The body must be a JSON object with a string `type`. A known type
    /// whose `data` does not fit its payload is not an error here: the
    /// envelope parses, and [`Envelope::event`] holds the [`PayloadError`].
    ///
    /// When `type` comes before `data`, as LTVboost sends it, the body is
    /// read once: `data` is decoded straight into the payload `type` names.
    pub fn from_bytes(body: Bytes) -> Result<Self, EnvelopeError> {
        match serde_json::from_slice::<Scanned<'_>>(&body) {
            Ok(scanned) => Ok(Self::assemble(scanned, &body)),
            // Either the envelope is malformed or its data does not fit the
            // payload: read again with `data` kept raw to tell which. Only
            // refused bodies pay for this second read.
            Err(_) => {
                let scanned = serde_json::from_slice::<RawScanned<'_>>(&body)
                    .map_err(EnvelopeError)?
                    .0;
                Ok(Self::assemble(scanned, &body))
            }
        }
    }

    fn assemble(scanned: Scanned<'_>, body: &Bytes) -> Self {
        let Scanned {
            id,
            type_name,
            created_at,
            data,
        } = scanned;
        let known = type_name.get().parse::<EventType>().ok();
        let type_name = match known {
            Some(event_type) => Text::Static(event_type.as_str()),
            None => Text::new(type_name, body),
        };
        let type_text = type_name.get(body);
        let (data, event) = match data {
            ScannedData::Decoded(mut event) => {
                event.keep_body(body);
                (DataSpan::Decoded, Ok(event))
            }
            ScannedData::Raw(raw) => {
                let span = subslice(body, raw.get().as_bytes());
                let json = span
                    .clone()
                    .map_or(RawJson::NULL, |r| RawJson(body.slice(r)));
                let event = decode_event(type_text, &json, body);
                (span.map_or(DataSpan::Absent, DataSpan::At), event)
            }
            ScannedData::Absent => (
                DataSpan::Absent,
                decode_event(type_text, &RawJson::NULL, body),
            ),
        };
        Self {
            id: id.map(|id| Text::new(id, body)),
            type_name,
            created_at: created_at.map(|at| Text::new(at, body)),
            body: body.clone(),
            data,
            event,
        }
    }

    /// The event's id (`evt_…`), when the sender includes one. A numeric id
    /// is given as its decimal text.
    pub fn id(&self) -> Option<&str> {
        self.id.as_ref().map(|t| t.get(&self.body))
    }

    /// The event type's wire name, known to this crate or not.
    pub fn type_name(&self) -> &str {
        self.type_name.get(&self.body)
    }

    /// When the event was created, as sent: RFC 3339 assumed, a Unix
    /// timestamp (sent as a number) kept as its decimal text.
    pub fn created_at(&self) -> Option<&str> {
        self.created_at.as_ref().map(|t| t.get(&self.body))
    }

    /// The documented event type, or `None` for a type this crate does not know.
    pub fn event_type(&self) -> Option<EventType> {
        match self.type_name {
            Text::Static(name) => name.parse().ok(),
            _ => None,
        }
    }

    /// The raw `data` JSON, whatever the type (`null` when absent).
    pub fn data(&self) -> RawJson {
        match &self.data {
            DataSpan::Absent => RawJson::NULL,
            DataSpan::At(span) => RawJson(self.body.slice(span.clone())),
            DataSpan::Decoded => find_data(&self.body).unwrap_or(RawJson::NULL),
        }
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
        self.event.as_ref().map_err(Clone::clone)
    }

    /// The typed event, taking the envelope apart.
    pub fn into_event(self) -> Result<Event, PayloadError> {
        self.event
    }
}

/// The raw `data` of an envelope body, found by reading it again.
fn find_data(body: &Bytes) -> Option<RawJson> {
    let scanned = serde_json::from_slice::<RawScanned<'_>>(body).ok()?.0;
    match scanned.data {
        ScannedData::Raw(raw) => {
            subslice(body, raw.get().as_bytes()).map(|r| RawJson(body.slice(r)))
        }
        ScannedData::Absent | ScannedData::Decoded(_) => None,
    }
}

/// Where `inner`, borrowed from `outer`, sits in it.
fn subslice(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

/// Decodes raw `data` into the payload `type_name` names.
fn decode_event(type_name: &str, data: &RawJson, body: &Bytes) -> Result<Event, PayloadError> {
    let Ok(event_type) = type_name.parse::<EventType>() else {
        return Ok(Event::Unknown {
            type_name: type_name.to_owned(),
            data: data.clone(),
        });
    };
    let mut deserializer = serde_json::Deserializer::from_slice(data.as_bytes());
    let mut event = PayloadSeed(event_type)
        .deserialize(&mut deserializer)
        .and_then(|event| deserializer.end().map(|()| event))
        .map_err(|source| PayloadError {
            event_type,
            source: Arc::new(source),
        })?;
    event.keep_body(body);
    Ok(event)
}

/// The envelope as read: `data` either decoded on the way or kept raw.
struct Scanned<'a> {
    id: Option<ScannedText<'a>>,
    type_name: ScannedText<'a>,
    created_at: Option<ScannedText<'a>>,
    data: ScannedData<'a>,
}

/// A string member as read: borrowed from the body when it has no escapes.
enum ScannedText<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl ScannedText<'_> {
    fn get(&self) -> &str {
        match self {
            ScannedText::Borrowed(text) => text,
            ScannedText::Owned(text) => text,
        }
    }

    fn into_string(self) -> String {
        match self {
            ScannedText::Borrowed(text) => text.to_owned(),
            ScannedText::Owned(text) => text,
        }
    }
}

/// Reads a [`ScannedText`]: a JSON string, or with `numbers` an integer too
/// (kept as its decimal text), as identifiers are accepted.
struct TextVisitor<'a> {
    numbers: bool,
    lifetime: PhantomData<&'a ()>,
}

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = ScannedText<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.numbers {
            "a string or an integer identifier"
        } else {
            "a string"
        })
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(ScannedText::Borrowed(s))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(ScannedText::Owned(s.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(ScannedText::Owned(s))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
        if self.numbers {
            Ok(ScannedText::Owned(n.to_string()))
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Signed(n), &self))
        }
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
        if self.numbers {
            Ok(ScannedText::Owned(n.to_string()))
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Unsigned(n), &self))
        }
    }
}

/// Reads a string, or with `numbers` an identifier (a string or an integer),
/// through [`TextVisitor`].
fn scanned_text<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
    numbers: bool,
) -> Result<ScannedText<'a>, D::Error> {
    let visitor = TextVisitor {
        numbers,
        lifetime: PhantomData,
    };
    if numbers {
        deserializer.deserialize_any(visitor)
    } else {
        deserializer.deserialize_str(visitor)
    }
}

/// The envelope's `type`: a string.
struct TypeName<'a>(ScannedText<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for TypeName<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        scanned_text(deserializer, false).map(TypeName)
    }
}

/// An optional identifier member (`id`, `created_at`): a string, an
/// integer, or `null`.
struct OptionalIdentifier<'a>(Option<ScannedText<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for OptionalIdentifier<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Present<'a>(ScannedText<'a>);
        impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                scanned_text(deserializer, true).map(Present)
            }
        }
        Ok(OptionalIdentifier(
            Option::<Present<'a>>::deserialize(deserializer)?.map(|p| p.0),
        ))
    }
}

enum ScannedData<'a> {
    Absent,
    Raw(&'a RawValue),
    Decoded(Event),
}

/// The envelope read with `data` always kept raw.
struct RawScanned<'a>(Scanned<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Scanned<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvelopeVisitor {
            decode: true,
            lifetime: PhantomData,
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawScanned<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(EnvelopeVisitor {
                decode: false,
                lifetime: PhantomData,
            })
            .map(RawScanned)
    }
}

/// Reads the envelope's members in any order, refusing duplicates. With
/// `decode`, a `data` that follows a known `type` is decoded straight into
/// its payload: one pass over the body instead of two.
struct EnvelopeVisitor<'a> {
    decode: bool,
    lifetime: PhantomData<&'a ()>,
}

enum Member {
    Id,
    Type,
    CreatedAt,
    Data,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Member, E> {
                Ok(match name {
                    "id" => Member::Id,
                    "type" => Member::Type,
                    "created_at" => Member::CreatedAt,
                    "data" => Member::Data,
                    _ => Member::Other,
                })
            }
        }
        deserializer.deserialize_identifier(Name)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for EnvelopeVisitor<'a> {
    type Value = Scanned<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scanned<'a>, A::Error> {
        use serde::de::Error;
        let mut id = None;
        let mut type_name: Option<ScannedText<'a>> = None;
        let mut created_at = None;
        let mut data = None;
        while let Some(member) = map.next_key::<Member>()? {
            match member {
                Member::Id if id.is_some() => return Err(A::Error::duplicate_field("id")),
                Member::Id => id = Some(map.next_value::<OptionalIdentifier>()?.0),
                Member::Type if type_name.is_some() => {
                    return Err(A::Error::duplicate_field("type"));
                }
                Member::Type => type_name = Some(map.next_value::<TypeName<'a>>()?.0),
                Member::CreatedAt if created_at.is_some() => {
                    return Err(A::Error::duplicate_field("created_at"));
                }
                Member::CreatedAt => {
                    created_at = Some(map.next_value::<OptionalIdentifier>()?.0);
                }
                Member::Data if data.is_some() => return Err(A::Error::duplicate_field("data")),
                Member::Data => {
                    let known = type_name.as_ref().and_then(|t| t.get().parse().ok());
                    data = Some(match known {
                        Some(event_type) if self.decode => {
                            ScannedData::Decoded(map.next_value_seed(PayloadSeed(event_type))?)
                        }
                        _ => ScannedData::Raw(map.next_value::<&'a RawValue>()?),
                    });
                }
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Scanned {
            id: id.flatten(),
            type_name: type_name.ok_or_else(|| A::Error::missing_field("type"))?,
            created_at: created_at.flatten(),
            data: data.unwrap_or(ScannedData::Absent),
        })
    }
}

/// Decodes `data` into the payload struct of one event type.
struct PayloadSeed(EventType);

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Event;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Event, D::Error> {
        Ok(match self.0 {
            EventType::ResponseCreated => Event::ResponseCreated(Deserialize::deserialize(d)?),
            EventType::ResponseScored => Event::ResponseScored(Deserialize::deserialize(d)?),
            EventType::ActionQueued => Event::ActionQueued(Deserialize::deserialize(d)?),
            EventType::ActionSent => Event::ActionSent(Deserialize::deserialize(d)?),
            EventType::ActionFailed => Event::ActionFailed(Deserialize::deserialize(d)?),
            EventType::SegmentUpdated => Event::SegmentUpdated(Deserialize::deserialize(d)?),
            EventType::SegmentReady => Event::SegmentReady(Deserialize::deserialize(d)?),
        })
    }
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
#[derive(Debug, thiserror::Error)]
#[error("body is not a JSON event envelope: {0}")]
pub struct EnvelopeError(#[source] serde_json::Error);

/// A known event type whose `data` does not fit its payload struct.
#[derive(Debug, Clone, thiserror::Error)]
#[error("data does not fit {event_type}: {source}")]
pub struct PayloadError {
    /// The type whose payload failed to decode.
    pub event_type: EventType,
    /// What serde_json reported (shared, so the error can be cloned).
    #[source]
    pub source: Arc<serde_json::Error>,
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
        data: RawJson,
    },
}

impl Event {
    /// Lets the payload find its raw `data` later (see `raw()` and `extra()`).
    fn keep_body(&mut self, body: &Bytes) {
        let body = Some(body.clone());
        match self {
            Event::ResponseCreated(p) => p.body = body,
            Event::ResponseScored(p) => p.body = body,
            Event::ActionQueued(p) => p.body = body,
            Event::ActionSent(p) => p.body = body,
            Event::ActionFailed(p) => p.body = body,
            Event::SegmentUpdated(p) => p.body = body,
            Event::SegmentReady(p) => p.body = body,
            Event::Unknown { .. } => {}
        }
    }

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
    // A visitor rather than an untagged enum, which would buffer the value
    // into serde's generic `Content` first.
    scanned_text(deserializer, true).map(ScannedText::into_string)
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
        #[derive(Clone, Deserialize, Serialize)]
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
            /// The verified body this payload came from (shared, not
            /// copied), for [`Self::raw`] and [`Self::extra`].
            #[serde(skip)]
            body: Option<Bytes>,
        }

        // The fields as decoded; not the body they came from.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("id", &self.id)
                    $( .field(stringify!($field), &self.$field) )*
                    .finish()
            }
        }

        impl $name {
            /// A payload with only its identifier set, for tests and fixtures.
            pub fn new(id: impl Into<String>) -> Self {
                Self { id: id.into(), $( $field: None, )* body: None }
            }

            /// The fields of `data` this crate does not model, as sent.
            ///
            /// Decoded on demand from the raw `data` (one more read of the
            /// body), so that deliveries that never ask cost nothing extra.
            pub fn extra(&self) -> Map<String, Value> {
                unmodelled(self.raw(), &["id", $alias, $(stringify!($field)),*])
            }

            /// The whole `data` object as sent, when this payload was decoded
            /// from an event. Found on demand by reading the body again.
            pub fn raw(&self) -> Option<RawJson> {
                self.body.as_ref().and_then(find_data)
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
        assert_eq!(e.id(), Some("42"));
        let Event::SegmentReady(ready) = e.event().unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(ready.id, "7");
        assert_eq!(ready.name.as_deref(), Some("vip"));
        assert_eq!(ready.member_count, None);
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
    fn one_pass_and_two_pass_reads_agree() {
        // `type` before `data` decodes in one pass; `data` first takes the
        // raw-then-decode path. Both must see the same event and raw data.
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
        // A payload that does not fit is an error on either path, with the
        // envelope intact.
        for body in [
            r#"{"type":"segment.ready","data":{"id":"s","member_count":"many"}}"#,
            r#"{"data":{"id":"s","member_count":"many"},"type":"segment.ready"}"#,
        ] {
            let e = envelope(body);
            assert_eq!(e.event().unwrap_err().event_type, EventType::SegmentReady);
            assert_eq!(e.data().get(), r#"{"id":"s","member_count":"many"}"#);
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
