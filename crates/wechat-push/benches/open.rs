//! Opening one safe-mode push: verify msg_signature, base64, AES-CBC decrypt,
//! unpad, check appid, parse, type. Run with `cargo bench -p wechat-push --bench open`.

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use wechat_push::protocol::crypto::{AesKey, KeyRing};
use wechat_push::protocol::wire::Fields;
use wechat_push::{AppCrypto, Format, Mode, Token};

/// A text push whose inner body is about `size` bytes.
fn push(app: &AppCrypto, format: Format, size: usize) -> (wechat_push::PushQuery, String) {
    let mut inner = Fields::new();
    inner.insert("ToUserName".into(), "gh_97417a04a28d".into());
    inner.insert("FromUserName".into(), "o9AgO5Kd5ggOC-bXrbNODIiE3bGY".into());
    inner.insert("CreateTime".into(), Value::from(1714112445));
    inner.insert("MsgType".into(), "text".into());
    inner.insert("Content".into(), "".into());
    inner.insert("MsgId".into(), Value::from(6054768590064713728u64));
    let base = wechat_push::protocol::envelope::render(format, &inner).len();
    inner.insert(
        "Content".into(),
        "你好, wechat-push! "
            .repeat(1 + size.saturating_sub(base) / 22)
            .into(),
    );
    let sealed = app
        .seal_push(
            &inner,
            Mode::Safe,
            format,
            "1714112445",
            "415670741",
            &[7; 16],
            Some("o9AgO5Kd5ggOC-bXrbNODIiE3bGY"),
        )
        .expect("seal");
    (sealed.query, sealed.body)
}

const WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// A push is opened as of the moment it says it was sent.
fn sent_at(query: &wechat_push::PushQuery) -> i64 {
    query
        .timestamp
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn open(c: &mut Criterion) {
    let key =
        AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").expect("key");
    let app = AppCrypto::new(
        "wxba5fad812f8e6fb9",
        Token::new("AAAAA"),
        Some(KeyRing::new(key, None)),
    )
    .require_encryption(true);
    let mut group = c.benchmark_group("open_safe_push");
    for format in [Format::Xml, Format::Json] {
        for size in [300, 2 << 10, 10 << 10, 32 << 10] {
            let (query, body) = push(&app, format, size);
            group.throughput(Throughput::Elements(1));
            group.bench_with_input(
                BenchmarkId::new(format.to_string(), size),
                &body,
                |b, body| {
                    b.iter(|| {
                        let opened = app
                            .open(&query, body.as_bytes(), sent_at(&query), WINDOW)
                            .expect("opens");
                        std::hint::black_box(opened.message.dedup_key());
                    })
                },
            );
        }
    }
    group.finish();

    // Hostile bodies that look like WeChat's unsplit CDATA everywhere: an
    // unsigned request must cost time linear in its size (once it cost a
    // scan of the rest of the body per section: minutes for 1 MiB).
    let mut group = c.benchmark_group("hostile_cdata_envelope");
    group.sample_size(20);
    for sections in [8_000usize, 16_000, 32_000] {
        let body = format!("<xml>{}</xml>", "<a><![CDATA[x]]>z</a>".repeat(sections));
        let query = wechat_push::PushQuery {
            msg_signature: Some("0".repeat(40)),
            timestamp: Some("1".into()),
            nonce: Some("n".into()),
            ..wechat_push::PushQuery::default()
        };
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(body.len()), &body, |b, body| {
            b.iter(|| {
                std::hint::black_box(
                    app.open(&query, body.as_bytes(), sent_at(&query), WINDOW)
                        .is_err(),
                )
            })
        });
    }
    group.finish();

    // The push's identity alone: a digest of every field in canonical form.
    let mut group = c.benchmark_group("dedup_key");
    for format in [Format::Xml, Format::Json] {
        let (query, body) = push(&app, format, 300);
        let opened = app
            .open(&query, body.as_bytes(), sent_at(&query), WINDOW)
            .expect("opens");
        group.bench_function(format.to_string(), |b| {
            b.iter(|| std::hint::black_box(opened.message.dedup_key()))
        });
    }
    group.finish();
}

// criterion_group! generates an undocumented function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::open);
}

criterion_main!(group::benches);
