//! wechat-push's side of the peer pipeline benchmark: time `AppCrypto::open`
//! per push on the same cases file the peers read (see bench/run.py).
//!
//! `cargo run --release --example open_cases -- cases.json [seconds]`

use std::time::Instant;

use serde_json::Value;
use wechat_push::protocol::crypto::{AesKey, KeyRing};
use wechat_push::{AppCrypto, PushQuery, Token};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: open_cases CASES.json [SECONDS]")?;
    let seconds: f64 = args.next().map_or(Ok(1.5), |s| s.parse())?;
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut out = Vec::new();
    for c in &cases {
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        let key = AesKey::from_encoding_aes_key(&s("key"))?;
        let app = AppCrypto::new(
            s("appid"),
            Token::new(s("token")),
            Some(KeyRing::new(key, None)),
        );
        let query = PushQuery {
            timestamp: Some(s("timestamp")),
            nonce: Some(s("nonce")),
            msg_signature: Some(s("msg_signature")),
            encrypt_type: Some("aes".into()),
            ..PushQuery::default()
        };
        let body = s("body");
        // Each case is opened as of the moment it says it was sent.
        let now: i64 = s("timestamp").parse()?;
        let window = std::time::Duration::from_secs(300);
        let opened = app.open(&query, body.as_bytes(), now, window)?;
        assert_eq!(opened.message.kind(), "text");
        let (mut n, start) = (0u64, Instant::now());
        while start.elapsed().as_secs_f64() < seconds {
            for _ in 0..200 {
                let opened = app.open(&query, body.as_bytes(), now, window)?;
                std::hint::black_box(opened.message.dedup_key());
            }
            n += 200;
        }
        let ns = start.elapsed().as_secs_f64() / n as f64 * 1e9;
        out.push(serde_json::json!({ "size": c["size"], "ns_per_msg": ns }));
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
