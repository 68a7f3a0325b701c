//! Push identity, as properties: WeChat's re-encrypted retries of one push
//! always share a key, and two pushes that differ in any field never do.

use crate::{sent_at, WINDOW};
use proptest::prelude::*;
use serde_json::{json, Value};
use wechat_push::protocol::crypto::{AesKey, KeyRing};
use wechat_push::protocol::wire::Fields;
use wechat_push::{AppCrypto, DedupKey, Format, Mode, Token};

fn app() -> AppCrypto {
    AppCrypto::new(
        super::APPID,
        Token::new("AAAAA"),
        Some(KeyRing::new(
            AesKey::from_encoding_aes_key(super::KEY).unwrap(),
            None,
        )),
    )
}

/// A scalar as WeChat writes them: text (any of it, CJK included) or a number.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9 _.:/-]{0,12}".prop_map(Value::from),
        "[你好世界 ]{1,4}".prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        (1u64 << 53..u64::MAX).prop_map(Value::from),
    ]
}

/// A field value: a scalar, a nested object, or a repeated element (XML
/// cannot carry an empty list or an empty object, so neither is generated).
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::btree_map("[A-Z][a-zA-Z]{0,6}", inner.clone(), 1..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            // XML has no list of lists: a nested list sits in an element.
            proptest::collection::vec(inner, 2..4).prop_map(|items| {
                Value::Array(
                    items
                        .into_iter()
                        .map(|v| match v {
                            Value::Array(_) => json!({ "I": v }),
                            v => v,
                        })
                        .collect(),
                )
            }),
        ]
    })
}

/// A push: the fields every push carries, an id or an event, and extra fields.
fn push() -> impl Strategy<Value = Fields> {
    (
        "o[a-zA-Z0-9_-]{27}",
        1_600_000_000i64..1_900_000_000,
        prop_oneof![
            any::<u64>().prop_map(|id| json!({"MsgType": "text", "MsgId": id})),
            "[a-z_]{3,24}".prop_map(|e| json!({"MsgType": "event", "Event": e})),
        ],
        proptest::collection::btree_map("X[a-zA-Z]{0,8}", value(), 0..6),
    )
        .prop_map(|(from, time, kind, extra)| {
            let mut fields: Fields = serde_json::from_value(json!({
                "ToUserName": "gh_97417a04a28d", "FromUserName": from, "CreateTime": time,
            }))
            .unwrap();
            if let Value::Object(kind) = kind {
                fields.extend(kind);
            }
            fields.extend(extra);
            fields
        })
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::Xml), Just(Format::Json)]
}

/// The key of `fields` as delivered by WeChat: sealed in `mode` and
/// `format` with a random prefix, nonce and timestamp of the delivery's own.
fn delivered(fields: &Fields, mode: Mode, format: Format, delivery: u8) -> DedupKey {
    let app = app();
    let timestamp = (1_700_000_000 + u64::from(delivery)).to_string();
    let push = app
        .seal_push(
            fields,
            mode,
            format,
            &timestamp,
            &format!("nonce{delivery}"),
            &[delivery; 16],
            None,
        )
        .unwrap();
    app.open(
        &push.query,
        push.body.as_bytes(),
        sent_at(&push.query),
        WINDOW,
    )
    .unwrap()
    .message
    .dedup_key()
}

/// One change that makes another push: a value changed, a field added or
/// removed, fields reordered not counting (that is the same push).
#[derive(Debug, Clone)]
enum Change {
    Alter(prop::sample::Index),
    Add(String, Value),
    Remove(prop::sample::Index),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Change::Alter),
        ("Y[a-z]{0,6}", scalar()).prop_map(|(n, v)| Change::Add(n, v)),
        any::<prop::sample::Index>().prop_map(Change::Remove),
    ]
}

/// A different value of the same shape's kind: never equal to `v` in the
/// canonical form (texts and numbers compared by their text).
fn altered(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::from(format!("{s}x")),
        Value::Number(n) => Value::from(format!("{n}1")),
        Value::Array(items) => {
            let mut items = items.clone();
            items.push(Value::from("more"));
            Value::Array(items)
        }
        Value::Object(m) => {
            let mut m = m.clone();
            m.insert("Zz_more".into(), Value::from("more"));
            Value::Object(m)
        }
        other => Value::from(format!("{other}x")),
    }
}

/// `fields` with `change` applied; `None` when it would not be a push any
/// more (a required field removed, `CreateTime` no longer a number).
fn changed(fields: &Fields, change: &Change) -> Option<Fields> {
    let mut out = fields.clone();
    match change {
        Change::Alter(i) => {
            let name = fields.keys().nth(i.index(fields.len()))?.clone();
            let new = match name.as_str() {
                "CreateTime" => Value::from(fields[&name].as_i64()? + 1),
                "MsgType" | "Event" => Value::from(format!("{}x", fields[&name].as_str()?)),
                _ => altered(&fields[&name]),
            };
            out.insert(name, new);
        }
        Change::Add(name, value) => {
            if out.contains_key(name) {
                return None;
            }
            out.insert(name.clone(), value.clone());
        }
        Change::Remove(i) => {
            let name = fields.keys().nth(i.index(fields.len()))?.clone();
            if ["ToUserName", "FromUserName", "CreateTime", "MsgType"].contains(&name.as_str()) {
                return None;
            }
            out.shift_remove(&name);
        }
    }
    Some(out)
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Plaintext),
        Just(Mode::Compatible),
        Just(Mode::Safe)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_delivery_of_one_push_shares_its_key(
        fields in push(),
        modes in (mode(), mode()),
        format in format(),
        other_format in format(),
        shuffle in any::<prop::sample::Index>(),
    ) {
        let first = delivered(&fields, modes.0, format, 1);
        prop_assert_eq!(&first, &delivered(&fields, modes.1, format, 2));
        // The same fields in another order, or in the other format, are the same push.
        let mut entries: Vec<(String, Value)> = fields.clone().into_iter().collect();
        let n = shuffle.index(entries.len());
        entries.rotate_left(n);
        let reordered: Fields = entries.into_iter().collect();
        prop_assert_eq!(&first, &delivered(&reordered, modes.0, other_format, 3));
    }

    #[test]
    fn pushes_that_differ_in_any_field_never_share_a_key(
        fields in push(),
        change in change(),
        mode in mode(),
        format in format(),
    ) {
        let Some(other) = changed(&fields, &change) else {
            return Ok(());
        };
        prop_assert_ne!(
            delivered(&fields, mode, format, 1),
            delivered(&other, mode, format, 2),
            "{:?} -> {:?}", fields, other
        );
    }
}
