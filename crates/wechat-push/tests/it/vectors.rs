//! WeChat's own test vectors (`tests/fixtures/official.json`), reproduced exactly.

use crate::{sent_at, WINDOW};
use serde_json::Value;
use wechat_push::protocol::crypto::{self, AesKey, KeyRing, KeySlot};
use wechat_push::protocol::signature;
use wechat_push::{AppCrypto, Format, PushQuery, Token};

fn vectors() -> Value {
    let text = std::fs::read_to_string(super::fixture("official.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn query(q: &str) -> PushQuery {
    let mut out = PushQuery::default();
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap();
        let v = Some(v.to_owned());
        match k {
            "signature" => out.signature = v,
            "timestamp" => out.timestamp = v,
            "nonce" => out.nonce = v,
            "openid" => out.openid = v,
            "encrypt_type" => out.encrypt_type = v,
            "msg_signature" => out.msg_signature = v,
            other => panic!("unexpected {other}"),
        }
    }
    out
}

#[test]
fn url_signatures() {
    let all = vectors();
    let list = all["signature"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for v in list {
        let token = Token::new(s(v, "token"));
        let got = signature::url_signature(&token, s(v, "timestamp"), s(v, "nonce"));
        assert_eq!(got, s(v, "signature"), "{}", s(v, "id"));
        assert!(signature::verify_url(&token, s(v, "timestamp"), s(v, "nonce"), &got).is_ok());
        let wrong = Token::new(format!("{}x", s(v, "token")));
        assert!(signature::verify_url(&wrong, s(v, "timestamp"), s(v, "nonce"), &got).is_err());
    }
}

#[test]
fn url_handshake_answers_echostr() {
    let all = vectors();
    let v = &all["signature"][0];
    let app = AppCrypto::new("wxba5fad812f8e6fb9", Token::new(s(v, "token")), None);
    let q = PushQuery {
        signature: Some(s(v, "signature").into()),
        timestamp: Some(s(v, "timestamp").into()),
        nonce: Some(s(v, "nonce").into()),
        echostr: Some(s(v, "echostr").into()),
        ..PushQuery::default()
    };
    assert_eq!(app.verify_handshake(&q).unwrap(), "4375120948345356249");
}

#[test]
fn msg_signatures() {
    let all = vectors();
    let list = all["msg_signature"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for v in list {
        let token = Token::new(s(v, "token"));
        let got =
            signature::msg_signature(&token, s(v, "timestamp"), s(v, "nonce"), s(v, "encrypt"));
        assert_eq!(got, s(v, "msg_signature"), "{}", s(v, "id"));
        let tampered = format!("{}A", s(v, "encrypt"));
        assert!(
            signature::verify_msg(&token, s(v, "timestamp"), s(v, "nonce"), &tampered, &got)
                .is_err()
        );
    }
}

#[test]
fn decryption_and_byte_exact_encryption() {
    let all = vectors();
    let list = all["crypto"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    let mut exact = 0;
    for v in list {
        let id = s(v, "id");
        let key = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
        let appid = s(v, "appid");
        let plain = crypto::decrypt(&key, appid, s(v, "ciphertext_b64")).unwrap();
        if let Some(expected) = v["plaintext"].as_str() {
            assert_eq!(std::str::from_utf8(&plain).unwrap(), expected, "{id}");
            if let Some(n) = v["msg_len"].as_u64() {
                assert_eq!(plain.len() as u64, n, "{id}");
            }
            if let Some(prefix) = v["random_prefix"].as_str() {
                let random: [u8; 16] = prefix.as_bytes().try_into().unwrap();
                let sealed = crypto::encrypt(&key, appid, expected.as_bytes(), &random).unwrap();
                assert_eq!(sealed, s(v, "ciphertext_b64"), "{id}: not byte-exact");
                exact += 1;
            }
        }
        // Another app's appid is refused, naming both.
        let err = crypto::decrypt(&key, "wx0000000000000000", s(v, "ciphertext_b64")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("appid mismatch: got {appid}, expected wx0000000000000000")
        );
    }
    assert_eq!(
        exact, 4,
        "every vector with a random prefix is reproduced byte for byte"
    );
}

#[test]
fn push_envelopes_open_in_their_format() {
    let all = vectors();
    for v in all["crypto"].as_array().unwrap() {
        if s(v, "direction") != "push" {
            continue;
        }
        let id = s(v, "id");
        let key = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
        let app = AppCrypto::new(
            s(v, "appid"),
            Token::new(s(v, "token")),
            Some(KeyRing::new(key, None)),
        )
        .require_encryption(true);
        let envelope = &v["envelope"];
        let body = match &envelope["body"] {
            Value::String(xml) => xml.clone(),
            obj => obj.to_string(),
        };
        let q = match envelope["query"].as_str() {
            Some(q) => query(q),
            None => PushQuery {
                timestamp: Some(s(v, "timestamp").into()),
                nonce: Some(s(v, "nonce").into()),
                msg_signature: Some(s(v, "msg_signature").into()),
                ..PushQuery::default()
            },
        };
        let opened = app
            .open(&q, body.as_bytes(), sent_at(&q), WINDOW)
            .unwrap_or_else(|e| panic!("{id}: {e:#?}"));
        assert_eq!(opened.key, Some(KeySlot::Current));
        let expected_format = if s(envelope, "format") == "json" {
            Format::Json
        } else {
            Format::Xml
        };
        assert_eq!(opened.format, expected_format, "{id}");
        match id {
            "doc_mp_push_secure_in" => {
                assert_eq!(opened.message.kind(), "event:debug_demo");
                assert!(opened
                    .message
                    .dedup_key()
                    .as_str()
                    .starts_with("e:o9AgO5Kd5ggOC-bXrbNODIiE3bGY:1714112445:debug_demo:"));
            }
            "official_mp_spamtest" => {
                // Compatible mode: the encrypted copy says what the plaintext fields say.
                assert_eq!(opened.message.kind(), "text");
                assert_eq!(opened.message.fields()["Content"], "abcdteT");
                assert!(opened
                    .message
                    .dedup_key()
                    .as_str()
                    .contains(":6054768590064713728:"));
            }
            other => panic!("unexpected push vector {other}"),
        }
    }
}

#[test]
fn reply_envelope_is_reproduced_exactly() {
    let all = vectors();
    let v = all["crypto"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "doc_mp_push_secure_reply")
        .unwrap();
    let key = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
    let app = AppCrypto::new(
        s(v, "appid"),
        Token::new(s(v, "token")),
        Some(KeyRing::new(key, None)),
    );
    let random: [u8; 16] = s(v, "random_prefix").as_bytes().try_into().unwrap();
    let timestamp: i64 = s(v, "timestamp").parse().unwrap();
    let sealed = app
        .seal(
            s(v, "plaintext").as_bytes(),
            Format::Json,
            timestamp,
            s(v, "nonce"),
            &random,
            KeySlot::Current,
        )
        .unwrap();
    let sealed: Value = serde_json::from_str(&sealed).unwrap();
    assert_eq!(sealed, v["envelope"]["body"]);
    let (_, plain) = app
        .open_reply(v["envelope"]["body"].to_string().as_bytes())
        .unwrap();
    assert_eq!(plain, s(v, "plaintext").as_bytes());
}
