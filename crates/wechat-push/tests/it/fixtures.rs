//! A real fixture for every message type and event, in XML and in JSON.

use std::collections::BTreeMap;

use serde_json::Value;
use wechat_push::message::{Body, Event, MsgId, SubscribeStatus};
use wechat_push::protocol::wire::{self, Limits};
use wechat_push::{Format, Message};

/// Every kind this crate types; each must have a fixture in both formats.
const KINDS: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "shortvideo",
    "location",
    "link",
    "miniprogrampage",
    "event:user_enter_tempsession",
    "event:subscribe_msg_popup_event",
    "event:subscribe_msg_change_event",
    "event:subscribe_msg_sent_event",
    "event:wxa_media_check",
    "event:trade_manage_remind_access_api",
    "event:trade_manage_remind_shipping",
    "event:trade_manage_order_settlement",
    "event:add_express_path",
    "event:xpay_goods_deliver_notify",
    "event:xpay_coin_pay_notify",
    "event:user_info_modified",
    "event:user_authorization_revoke",
    "event:wxa_nickname_audit",
    "event:wxa_privacy_apply",
    "event:weapp_audit_success",
    "event:weapp_audit_fail",
    "event:weapp_audit_delay",
    "event:debug_demo",
    "event:subscribe",
    "event:unsubscribe",
    "event:SCAN",
    "event:LOCATION",
    "event:CLICK",
    "event:VIEW",
];

fn open(path: &std::path::Path) -> Message {
    let body = std::fs::read(path).unwrap();
    let format = wire::sniff(&body).unwrap();
    let fields = wire::parse(format, &body, &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Message::from_fields(fields).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_all() -> BTreeMap<(String, Format), Message> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(super::fixture("messages")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let (stem, format) = if let Some(stem) = name.strip_suffix(".xml") {
            (stem, Format::Xml)
        } else if let Some(stem) = name.strip_suffix(".json") {
            (stem, Format::Json)
        } else {
            continue;
        };
        let kind = stem.replacen("event.", "event:", 1);
        out.insert((kind, format), open(&path));
    }
    out
}

#[test]
fn every_kind_has_a_fixture_in_both_formats_and_types_to_its_variant() {
    let all = load_all();
    for kind in KINDS {
        for format in [Format::Xml, Format::Json] {
            let message = all
                .get(&(kind.to_string(), format))
                .unwrap_or_else(|| panic!("no {format} fixture for {kind}"));
            assert_eq!(message.kind(), *kind, "{format} fixture for {kind}");
            assert!(
                !matches!(message.body, Body::Unknown(_)),
                "{kind} {format}: {:?}",
                message.body
            );
        }
    }
    assert_eq!(
        all.len(),
        KINDS.len() * 2,
        "a fixture for a kind not in KINDS"
    );
}

#[test]
fn xml_and_json_fixtures_type_to_the_same_values() {
    let all = load_all();
    for kind in KINDS {
        // These three are WeChat's own published bodies, different in each format.
        if kind.starts_with("event:subscribe_msg_") {
            continue;
        }
        let xml = &all[&(kind.to_string(), Format::Xml)];
        let json = &all[&(kind.to_string(), Format::Json)];
        assert_eq!(xml.body, json.body, "{kind}");
        assert_eq!(xml.dedup_key(), json.dedup_key(), "{kind}");
        assert_eq!(xml.create_time, json.create_time, "{kind}");
    }
}

#[test]
fn typed_fields_hold_the_documented_values() {
    let all = load_all();
    let get = |k: &str, f| &all[&(k.to_string(), f)].body;
    let Body::Text(t) = get("text", Format::Xml) else {
        panic!()
    };
    assert_eq!(t.content, "this is a test 你好 👋");
    assert_eq!(t.msg_id, MsgId::Number(1234567890123456));
    let Body::Location(l) = get("location", Format::Json) else {
        panic!()
    };
    assert_eq!(
        (l.latitude, l.longitude, l.scale),
        (23.134521, 113.358803, 20)
    );
    let Body::Event(Event::SubscribeMsgPopup(p)) =
        get("event:subscribe_msg_popup_event", Format::Xml)
    else {
        panic!()
    };
    assert_eq!(p.items.len(), 2);
    assert_eq!(p.items[1].status, SubscribeStatus::Reject);
    assert_eq!(p.items[0].popup_scene, Some(2));
    let Body::Event(Event::SubscribeMsgPopup(p)) =
        get("event:subscribe_msg_popup_event", Format::Json)
    else {
        panic!()
    };
    assert_eq!((p.items.len(), p.items[0].popup_scene), (1, Some(0)));
    // JSON sends one item as an object, not an array.
    let Body::Event(Event::SubscribeMsgSent(s)) =
        get("event:subscribe_msg_sent_event", Format::Json)
    else {
        panic!()
    };
    assert_eq!(s.items[0].msg_id, MsgId::Number(1864323726461255680));
    let Body::Event(Event::AddExpressPath(a)) = get("event:add_express_path", Format::Xml) else {
        panic!()
    };
    assert_eq!(a.actions.len(), 3);
    assert_eq!(a.actions[2].action_type, 300001);
    let Body::Event(Event::XpayGoodsDeliverNotify(x)) =
        get("event:xpay_goods_deliver_notify", Format::Xml)
    else {
        panic!()
    };
    assert_eq!(x.goods_info.actual_price, 600);
    assert_eq!(
        x.wechat_pay_info.as_ref().and_then(|w| w.paid_time),
        Some(1700000000)
    );
    let Body::Event(Event::WxaMediaCheck(m)) = get("event:wxa_media_check", Format::Xml) else {
        panic!()
    };
    assert_eq!(m.detail.len(), 1);
    assert_eq!(m.result.as_ref().map(|r| r.label), Some(100));
}

#[test]
fn wechats_published_bodies_open() {
    for (file, kind) in [
        ("mp_doc_text_xml.xml", "text"),
        ("mp_doc_text_json.json", "text"),
        ("mp_doc_image_xml.xml", "image"),
        ("mp_doc_image_json.json", "image"),
        ("mp_doc_miniprogrampage_xml.xml", "miniprogrampage"),
        ("mp_doc_miniprogrampage_json.json", "miniprogrampage"),
        (
            "mp_doc_user_enter_tempsession_xml.xml",
            "event:user_enter_tempsession",
        ),
        (
            "mp_doc_user_enter_tempsession_json.json",
            "event:user_enter_tempsession",
        ),
        (
            "mp_doc_subscribe_msg_sent_event_json.json",
            "event:subscribe_msg_sent_event",
        ),
        ("mp_doc_debug_demo_plain_json.json", "event:debug_demo"),
        (
            "mp_doc_wxa_media_check_v2_json.json",
            "event:wxa_media_check",
        ),
        ("mp_doc_cloudfunction_text_event_json.json", "text"),
    ] {
        let message = open(&super::fixture(&format!("doc/{file}")));
        assert_eq!(message.kind(), kind, "{file}");
    }
    // Cloud functions send MsgId as a non-numeric string.
    let m = open(&super::fixture(
        "doc/mp_doc_cloudfunction_text_event_json.json",
    ));
    assert!(m.dedup_key().as_str().starts_with(
        "m:ohl4L0Rnhq7vmmbT_DaNQa4ePaz0:49d72d67b16d115e7935ac386f2f0fa41535298877_1555684067:"
    ));
}

#[test]
fn the_docs_trailing_commas_are_refused_with_a_clear_error() {
    for file in [
        "mp_doc_subscribe_msg_popup_event_json.json",
        "mp_doc_subscribe_msg_change_event_json.json",
    ] {
        let body = std::fs::read(super::fixture(&format!("doc/{file}"))).unwrap();
        let err = wire::parse(Format::Json, &body, &Limits::default()).unwrap_err();
        let cause = std::error::Error::source(&err)
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(cause.contains("trailing comma"), "{file}: {err}: {cause}");
    }
}

#[test]
fn to_json_normalises_typed_fields_and_adds_kind() {
    let m = open(&super::fixture(
        "messages/event.subscribe_msg_sent_event.json",
    ));
    let out = m.to_json();
    // CreateTime was a string on the wire.
    assert_eq!(out["CreateTime"], Value::from(1620963428));
    assert_eq!(out["kind"], "event:subscribe_msg_sent_event");
    assert_eq!(
        out["List"]["TemplateId"],
        "BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8"
    );
}
