//! `AppCrypto::open` on any query and body, as anyone on the internet can
//! send them: refused or opened, never a panic. The first line is the
//! query string, the rest the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_push::protocol::crypto::{AesKey, KeyRing};
use wechat_push::protocol::envelope::is_container_path_check;
use wechat_push::{AppCrypto, PushQuery, Token};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (query, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    let Ok(query) = PushQuery::parse(&String::from_utf8_lossy(query)) else {
        return;
    };
    let key = AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
        .expect("a valid key");
    for require in [false, true] {
        let app = AppCrypto::new(
            "wxba5fad812f8e6fb9",
            Token::new("AAAAA"),
            Some(KeyRing::new(key.clone(), None)),
        )
        .require_encryption(require);
        // As of the moment the push says it was sent, so that the checks
        // after the replay check are reached.
        let now = query.timestamp.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0);
        if let Ok(opened) = app.open(&query, body, now, std::time::Duration::from_secs(300)) {
            let _ = opened.message.dedup_key();
        }
        let _ = app.open_unsigned(body);
        let _ = app.verify_handshake(&query);
    }
    let _ = is_container_path_check(body);
});
