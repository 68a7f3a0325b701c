//! Any plaintext, sealed as WeChat seals a push (valid `msg_signature`, the
//! right appid), so that the fuzzer gets past the signature to decryption,
//! parsing and typing: opened or refused, never a panic; an opened push
//! always has a key and a JSON form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_push::protocol::crypto::{self, AesKey, KeyRing};
use wechat_push::protocol::signature;
use wechat_push::{AppCrypto, PushQuery, Token};

fuzz_target!(|data: &[u8]| {
    let key = AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
        .expect("a valid key");
    let appid = "wxba5fad812f8e6fb9";
    let token = Token::new("AAAAA");
    let Ok(encrypt) = crypto::encrypt(&key, appid, data, &[7; 16]) else {
        return;
    };
    let (timestamp, nonce) = ("1714112445", "415670741");
    let query = PushQuery {
        timestamp: Some(timestamp.into()),
        nonce: Some(nonce.into()),
        encrypt_type: Some("aes".into()),
        msg_signature: Some(signature::msg_signature(&token, timestamp, nonce, &encrypt)),
        ..PushQuery::default()
    };
    let app = AppCrypto::new(appid, token, Some(KeyRing::new(key, None)));
    for body in [
        format!("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
        format!(r#"{{"ToUserName":"gh_1","Encrypt":"{encrypt}"}}"#),
    ] {
        if let Ok(opened) = app.open(&query, body.as_bytes(), 1714112445, std::time::Duration::from_secs(300)) {
            assert!(!opened.message.dedup_key().as_str().is_empty());
            let _ = serde_json::to_string(&opened.message.to_json());
        }
    }
});
