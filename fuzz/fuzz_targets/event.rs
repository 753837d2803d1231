//! The envelope and event parsers on arbitrary bytes: never a panic, and a
//! decoded event agrees with its envelope's type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ltvboost_webhooks::event::{Envelope, Event};
use ltvboost_webhooks::replay::ReplayWindow;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::from_slice(data) else { return };
    let _ = ReplayWindow::default().check(envelope.created_at.as_deref(), std::time::SystemTime::UNIX_EPOCH);
    match envelope.event() {
        Ok(Event::Unknown { type_name, .. }) => {
            assert_eq!(type_name, envelope.type_name);
            assert!(envelope.event_type().is_none());
        }
        Ok(event) => assert_eq!(event.event_type(), envelope.event_type()),
        Err(e) => assert_eq!(Some(e.event_type), envelope.event_type()),
    }
});
