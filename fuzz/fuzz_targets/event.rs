//! The envelope and event parsers on arbitrary bytes: never a panic, a
//! decoded event agrees with its envelope's type, and the envelope's members
//! read as serde_json reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ltvboost_webhooks::event::{Envelope, Event};
use ltvboost_webhooks::replay::ReplayWindow;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::from_slice(data) else { return };
    let _ = ReplayWindow::default().check(envelope.created_at(), std::time::SystemTime::UNIX_EPOCH);
    if let Ok(serde_json::Value::Object(members)) = serde_json::from_slice(data) {
        let text = |name: &str| match members.get(name) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        };
        assert_eq!(text("type").as_deref(), Some(envelope.type_name()));
        assert_eq!(text("id").as_deref(), envelope.id());
        assert_eq!(text("created_at").as_deref(), envelope.created_at());
    }
    match envelope.event() {
        Ok(Event::Unknown { type_name, data }) => {
            assert_eq!(type_name, envelope.type_name());
            assert!(envelope.event_type().is_none());
            assert_eq!(*data, envelope.data());
        }
        Ok(event) => assert_eq!(event.event_type(), envelope.event_type()),
        Err(e) => assert_eq!(Some(e.event_type), envelope.event_type()),
    }
    // The raw data is one JSON value.
    let data = envelope.data();
    assert!(serde_json::from_str::<&serde_json::value::RawValue>(data.get()).is_ok());
});
