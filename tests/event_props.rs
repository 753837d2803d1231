//! Properties of the envelope parser: an envelope with `type` before `data`
//! and the same with `data` first must read alike.

use ltvboost_webhooks::event::{Envelope, Event, EventType};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Any small JSON value, so that every modelled field is also tried with a
/// shape the crate does not expect.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z\\\\\"é]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The members any payload models, and one it does not.
const MEMBERS: &[&str] = &[
    "id",
    "response_id",
    "action_id",
    "segment_id",
    "quiz_id",
    "customer_id",
    "email",
    "answers",
    "score",
    "outcome",
    "action_type",
    "error",
    "name",
    "member_count",
    "other",
];

fn any_data() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => proptest::collection::vec((proptest::sample::select(MEMBERS), any_json()), 0..6)
            .prop_map(|members| {
                Value::Object(members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>())
            }),
        1 => any_json(),
    ]
}

fn any_type() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(EventType::ALL).prop_map(|t| t.as_str().to_owned()),
        Just("quiz.archived".to_owned()),
    ]
}

/// What a reader of the envelope can see of it.
fn seen(envelope: &Envelope) -> (Option<String>, String, String, String, Option<String>) {
    let raw = match envelope.event() {
        Ok(Event::ResponseCreated(p)) => p.raw().map(|r| r.get().to_owned()),
        Ok(Event::ActionFailed(p)) => p.raw().map(|r| r.get().to_owned()),
        Ok(Event::SegmentReady(p)) => p.raw().map(|r| r.get().to_owned()),
        _ => None,
    };
    (
        envelope.id().map(str::to_owned),
        envelope.type_name().to_owned(),
        format!("{:?}", envelope.event()),
        envelope.data().get().to_owned(),
        raw,
    )
}

proptest! {
    #[test]
    fn type_first_and_data_first_read_alike(t in any_type(), data in any_data(), id in any_json()) {
        let data_text = data.to_string();
        let id_text = id.to_string();
        let t_text = json!(t).to_string();
        let type_first = format!(r#"{{"id":{id_text},"type":{t_text},"data":{data_text}}}"#);
        let data_first = format!(r#"{{"data":{data_text},"id":{id_text},"type":{t_text}}}"#);
        let one = Envelope::from_slice(type_first.as_bytes()).unwrap();
        let two = Envelope::from_slice(data_first.as_bytes()).unwrap();
        prop_assert_eq!(seen(&one), seen(&two));
        prop_assert_eq!(one.data().get().to_owned(), data_text.clone());
        if let Some(raw) = seen(&one).4 {
            prop_assert_eq!(raw, data_text);
        }
    }
}
