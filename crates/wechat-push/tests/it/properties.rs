//! Property tests: round trips for any input, and no input accepted wrongly or
//! able to panic.

use crate::{sent_at, WINDOW};
use base64::Engine;
use proptest::prelude::*;
use wechat_push::protocol::crypto::{self, AesKey, KeyRing};
use wechat_push::protocol::wire::{self, Fields, Limits};
use wechat_push::{AppCrypto, Format, Mode, PushQuery, Token};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn appid() -> impl Strategy<Value = String> {
    prop_oneof!["wx[0-9a-f]{16}", ".{0,40}"]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encrypt_then_decrypt_is_identity(
        msg in proptest::collection::vec(any::<u8>(), 0..2048),
        key in any::<[u8; 32]>(),
        appid in appid(),
        random in any::<[u8; 16]>(),
    ) {
        let key = AesKey::from_bytes(key);
        let sealed = crypto::encrypt(&key, &appid, &msg, &random).unwrap();
        let raw = B64.decode(&sealed).unwrap();
        prop_assert_eq!(raw.len() % 32, 0);
        prop_assert_eq!(crypto::decrypt(&key, &appid, &sealed).unwrap(), msg);
    }

    #[test]
    fn wrong_key_wrong_appid_and_truncation_are_rejected(
        msg in proptest::collection::vec(any::<u8>(), 0..512),
        key in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        appid in "wx[0-9a-f]{16}",
        cut in any::<prop::sample::Index>(),
    ) {
        prop_assume!(key != other);
        let key = AesKey::from_bytes(key);
        let sealed = crypto::encrypt(&key, &appid, &msg, &[5; 16]).unwrap();
        prop_assert!(crypto::decrypt(&AesKey::from_bytes(other), &appid, &sealed).is_err());
        prop_assert!(crypto::decrypt(&key, "wx0000000000000000", &sealed).is_err());
        let raw = B64.decode(&sealed).unwrap();
        let truncated = &raw[..cut.index(raw.len())];
        prop_assert!(crypto::decrypt(&key, &appid, &B64.encode(truncated)).is_err());
    }

    #[test]
    fn decrypt_never_panics(encrypt in ".{0,300}", raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let key = AesKey::from_bytes([7; 32]);
        let _ = crypto::decrypt(&key, "wx", &encrypt);
        let _ = crypto::decrypt(&key, "wx", &B64.encode(&raw));
    }

    #[test]
    fn any_tampering_with_an_encrypted_push_is_rejected(
        content in ".{0,200}",
        flip_at in any::<prop::sample::Index>(),
        bit in 0u8..8,
        format in prop_oneof![Just(Format::Xml), Just(Format::Json)],
    ) {
        let key = AesKey::from_encoding_aes_key(&format!("{}B", "k".repeat(42))).unwrap();
        let app = AppCrypto::new("wxba5fad812f8e6fb9", Token::new("tok"), Some(KeyRing::new(key, None)));
        let mut inner = Fields::new();
        inner.insert("ToUserName".into(), "gh_1".into());
        inner.insert("FromUserName".into(), "oU".into());
        inner.insert("CreateTime".into(), 1.into());
        inner.insert("MsgType".into(), "text".into());
        inner.insert("Content".into(), content.clone().into());
        inner.insert("MsgId".into(), 1.into());
        let push = app.seal_push(&inner, Mode::Safe, format, "1", "n", &[1; 16], None).unwrap();
        let opened = app.open(&push.query, push.body.as_bytes(), sent_at(&push.query), WINDOW).unwrap();
        prop_assert_eq!(&opened.message.fields()["Content"], &serde_json::Value::from(content));

        let outer = wire::parse(format, push.body.as_bytes(), &Limits::default()).unwrap();
        let encrypt = outer["Encrypt"].as_str().unwrap();
        let mut raw = B64.decode(encrypt).unwrap();
        let i = flip_at.index(raw.len());
        raw[i] ^= 1 << bit;
        let tampered = push.body.replace(encrypt, &B64.encode(&raw));
        prop_assert!(app.open(&push.query, tampered.as_bytes(), sent_at(&push.query), WINDOW).is_err());
    }

    #[test]
    fn no_body_or_query_can_panic_open(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        text in ".{0,400}",
        sig in proptest::option::of("[0-9a-f]{40}"),
    ) {
        let app = AppCrypto::new("wx", Token::new("t"), Some(KeyRing::new(AesKey::from_bytes([1; 32]), None)));
        let q = PushQuery { signature: sig.clone(), msg_signature: sig, timestamp: Some("1".into()), nonce: Some("n".into()), ..PushQuery::default() };
        let _ = app.open(&q, &body, sent_at(&q), WINDOW);
        let _ = app.open(&q, text.as_bytes(), sent_at(&q), WINDOW);
        let _ = app.open(&q, format!("<xml>{text}</xml>").as_bytes(), sent_at(&q), WINDOW);
        let _ = app.open(&q, format!("{{\"Encrypt\":\"{text}\"}}").as_bytes(), sent_at(&q), WINDOW);
    }

    #[test]
    fn wire_parsers_never_panic(text in "[<>a-zA-Z/!\\[\\]{}\":,0-9 &;-]{0,300}") {
        let _ = wire::parse_xml(text.as_bytes(), &Limits::default());
        let _ = wire::parse_json(text.as_bytes(), &Limits::default());
    }
}
