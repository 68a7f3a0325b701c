//! The passive-reply sealer: any text, as a reply to a push, rendered in XML
//! and JSON and sealed, opens again (as WeChat opens it) to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_push::protocol::crypto::{AesKey, KeyRing, KeySlot};
use wechat_push::protocol::wire::{self, Limits};
use wechat_push::reply::{OfficialAccountReply, PassiveReply};
use wechat_push::{AppCrypto, Format, Message, Token};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
        .expect("a valid key");
    let app = AppCrypto::new("wxba5fad812f8e6fb9", Token::new("AAAAA"), Some(KeyRing::new(key, None)));
    let push = wire::parse_json(
        br#"{"ToUserName":"gh_1","FromUserName":"oUser","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":1}"#,
        &Limits::default(),
    )
    .expect("a push");
    let push = Message::from_fields(push).expect("a message");
    let reply = PassiveReply::OfficialAccount(OfficialAccountReply::Text {
        content: text.to_owned(),
    });
    for format in [Format::Xml, Format::Json] {
        let rendered = reply.render_for(&push, 1_714_112_445, format);
        let sealed = app
            .seal(rendered.as_bytes(), format, 1_714_112_445, "nonce", &[3; 16], KeySlot::Current)
            .expect("sealed");
        let (_, plain) = app.open_reply(sealed.as_bytes()).expect("opens as WeChat opens it");
        assert_eq!(plain, rendered.as_bytes());
        // Control characters XML 1.0 cannot carry may be refused by a reader;
        // anything read back is the text sent.
        if let Ok(fields) = wire::parse(format, &plain, &Limits::default()) {
            assert_eq!(fields["Content"], text, "{format}");
        }
    }
});
