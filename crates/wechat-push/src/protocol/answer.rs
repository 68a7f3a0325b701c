//! Documented answers: pushes that WeChat wants answered with something
//! other than `success` or an empty body.
//!
//! The seed article lists three correct answers to a push: `success`, an
//! empty body, or "what the interface's documentation specifies". Virtual
//! payment is the case in point: its notifications are sent again (15 s,
//! 15 s, 30 s, 3 min, … for hours) until the answer says
//! `{"ErrCode":0,"ErrMsg":"Success"}`, and a retry must get the same answer
//! as the first delivery. This module holds that table, in one place.
//!
//! Sources (WeChat's documentation):
//! - Mini Program virtual payment, message push section:
//!   <https://developers.weixin.qq.com/miniprogram/dev/platform-capabilities/business-capabilities/virtual-payment.html>
//! - Receiving virtual-payment callbacks through message push (lists the
//!   `xpay_*` events and the `{ErrCode: 0, ErrMsg}` answer):
//!   <https://developers.weixin.qq.com/miniprogram/dev/wxcloudservice/wxcloud/guide/wechatpay/virtual-payment-callback.html>
//! - Mini-game direct item purchase (retries until "delivery succeeded" is
//!   answered; the same answer for every retry):
//!   <https://developers.weixin.qq.com/minigame/introduction/commercialization/virtual-payment/goods.html>
//!
//! `xpay_subscribe_ios_refund_query_notify` is not in the table: its answer
//! is a business decision (`result_code` 0 to suggest a refund, 1 to refuse,
//! with `evidence`), which a handler or an `[apps.answers]` entry must make.
//! Kinds not in the table yet are added per app in the config
//! (`[apps.answers]`), which also overrides the table.
//!
//! Like every answer other than `success` or empty, a documented answer is
//! written in the push's format ([`super::envelope::render`]) and sealed in
//! encrypted modes.

use std::collections::HashMap;

use serde_json::Value;

use super::wire::Fields;

/// The events whose documentation specifies `{"ErrCode":0,"ErrMsg":"Success"}`
/// as the answer: every virtual-payment notification the documentation
/// says is acknowledged with `ErrCode` 0.
pub const DOCUMENTED: &[&str] = &[
    "xpay_goods_deliver_notify",
    "xpay_coin_pay_notify",
    "xpay_refund_notify",
    "xpay_complaint_notify",
];

/// The answer of the events in [`DOCUMENTED`].
fn err_code_0() -> Fields {
    let mut answer = Fields::new();
    answer.insert("ErrCode".into(), Value::from(0));
    answer.insert("ErrMsg".into(), Value::from("Success"));
    answer
}

/// The documented answers one app gives: [`DOCUMENTED`], overridden and
/// extended by the app's own entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentedAnswers {
    by_event: HashMap<String, Fields>,
}

impl DocumentedAnswers {
    /// [`DOCUMENTED`] with `overrides` (event name → answer fields) on top.
    pub fn new(overrides: impl IntoIterator<Item = (String, Fields)>) -> Self {
        let mut by_event: HashMap<String, Fields> = DOCUMENTED
            .iter()
            .map(|event| ((*event).to_owned(), err_code_0()))
            .collect();
        by_event.extend(overrides);
        DocumentedAnswers { by_event }
    }

    /// The answer to a push with this `Event`, if its documentation specifies one.
    pub fn for_event(&self, event: &str) -> Option<&Fields> {
        self.by_event.get(event)
    }
}

/// Whether `got` is the answer `expected`: `ErrCode` alone decides where the
/// documented answer has one (WeChat reads the code, not the message's
/// wording), every field otherwise; numbers and their text are one value.
pub fn matches(got: &Fields, expected: &Fields) -> bool {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match expected.get("ErrCode") {
        Some(code) => {
            text(got.get("ErrCode")).is_some() && text(got.get("ErrCode")) == text(Some(code))
        }
        None => {
            super::canonical::canonical_digest(got) == super::canonical::canonical_digest(expected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{parse_json, parse_xml, Limits};

    #[test]
    fn virtual_payment_notifications_are_answered_with_err_code_0() {
        let answers = DocumentedAnswers::new([]);
        for event in [
            "xpay_goods_deliver_notify",
            "xpay_coin_pay_notify",
            "xpay_refund_notify",
        ] {
            let answer = answers.for_event(event).unwrap();
            assert_eq!(answer["ErrCode"], 0, "{event}");
        }
        assert!(answers.for_event("user_enter_tempsession").is_none());
        assert!(answers
            .for_event("xpay_subscribe_ios_refund_query_notify")
            .is_none());
    }

    #[test]
    fn answers_are_written_in_the_push_format() {
        use crate::protocol::envelope::render;
        use crate::protocol::Format;
        let answers = DocumentedAnswers::new([]);
        let answer = answers.for_event("xpay_goods_deliver_notify").unwrap();
        assert_eq!(
            render(Format::Json, answer),
            r#"{"ErrCode":0,"ErrMsg":"Success"}"#
        );
        let xml = render(Format::Xml, answer);
        assert_eq!(
            xml,
            "<xml><ErrCode>0</ErrCode><ErrMsg><![CDATA[Success]]></ErrMsg></xml>"
        );
        let back = parse_xml(xml.as_bytes(), &Limits::default()).unwrap();
        assert!(matches(&back, answer));
    }

    #[test]
    fn overrides_replace_and_extend_the_table() {
        let mine: Fields = serde_json::from_str(r#"{"ErrCode":0,"ErrMsg":"ok"}"#).unwrap();
        let answers = DocumentedAnswers::new([
            ("minigame_coin_deliver_completed".to_owned(), mine.clone()),
            ("xpay_refund_notify".to_owned(), mine.clone()),
        ]);
        assert_eq!(
            answers.for_event("minigame_coin_deliver_completed"),
            Some(&mine)
        );
        assert_eq!(answers.for_event("xpay_refund_notify"), Some(&mine));
    }

    #[test]
    fn a_wrong_code_does_not_match() {
        let expected: Fields = serde_json::from_str(r#"{"ErrCode":0,"ErrMsg":"Success"}"#).unwrap();
        let got = parse_json(br#"{"ErrCode":"0","ErrMsg":"success"}"#, &Limits::default()).unwrap();
        assert!(matches(&got, &expected));
        let got = parse_json(br#"{"ErrCode":1,"ErrMsg":"Success"}"#, &Limits::default()).unwrap();
        assert!(!matches(&got, &expected));
        let got = parse_json(br#"{"ErrMsg":"Success"}"#, &Limits::default()).unwrap();
        assert!(!matches(&got, &expected));
    }
}
