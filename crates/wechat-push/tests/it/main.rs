//! Integration tests, compiled into one binary.

#![allow(clippy::unwrap_used)]

mod answers;
mod api;
mod example_config;
mod fixtures;
mod forward;
mod identity;
mod layers;
mod mock_wechat;
mod passive;
mod postgres_tls;
mod properties;
mod real_traffic;
mod server;
mod store_contract;
mod vectors;

use std::path::PathBuf;

/// The replay window the tests open pushes with.
pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// The time a push says it was sent, so that a recorded push is opened as
/// of then (0 when it says none).
pub fn sent_at(query: &wechat_push::PushQuery) -> i64 {
    query
        .timestamp
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// A file under `tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// The WeChat API stand-in on a free port, knowing `appid` with the secret
/// `secret1`; with `strict`, users get no reply window until one is opened.
pub async fn spawn_mock(appid: &str, strict: bool) -> String {
    let apps = std::collections::HashMap::from([(appid.to_owned(), "secret1".to_owned())]);
    let mut mock = wechat_push::mock_wechat::MockWechat::bind("127.0.0.1:0".parse().unwrap(), apps)
        .await
        .unwrap();
    if strict {
        mock = mock.strict_windows();
    }
    let url = format!("http://{}", mock.local_addr());
    tokio::spawn(mock.run(std::future::pending()));
    url
}

/// A fresh, empty temporary directory for one test.
pub fn temp_dir(prefix: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("wp-{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The app of the answering and forwarding tests (safe mode).
pub const APPID: &str = "wxba5fad812f8e6fb9";
/// Its EncodingAESKey: non-canonical (the last character has spare bits),
/// as most real keys are.
pub const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFH";

/// What WeChat seals pushes to [`APPID`] with (token `AAAAA`).
pub fn crypto() -> wechat_push::AppCrypto {
    use wechat_push::protocol::crypto::{AesKey, KeyRing};
    wechat_push::AppCrypto::new(
        APPID,
        wechat_push::Token::new("AAAAA"),
        Some(KeyRing::new(
            AesKey::from_encoding_aes_key(KEY).unwrap(),
            None,
        )),
    )
}

/// `inner` sealed as WeChat sends it to [`APPID`] in `mode` and `format`,
/// now, from the user it names; `n` varies the nonce and random bytes.
pub fn seal_fields(
    inner: &wechat_push::protocol::wire::Fields,
    mode: wechat_push::Mode,
    format: wechat_push::Format,
    n: u8,
) -> wechat_push::protocol::envelope::SealedPush {
    let now = wechat_push::clock::now_secs().to_string();
    let user = inner
        .get("FromUserName")
        .and_then(|u| u.as_str())
        .map(str::to_owned);
    crypto()
        .seal_push(
            inner,
            mode,
            format,
            &now,
            &format!("nonce{n}"),
            &[n; 16],
            user.as_deref(),
        )
        .unwrap()
}

/// `fields` sealed as WeChat sends them in safe mode, from user `oUser`.
pub fn seal(
    fields: serde_json::Value,
    format: wechat_push::Format,
) -> wechat_push::protocol::envelope::SealedPush {
    let inner: wechat_push::protocol::wire::Fields = serde_json::from_value(fields).unwrap();
    let now = wechat_push::clock::now_secs().to_string();
    crypto()
        .seal_push(
            &inner,
            wechat_push::Mode::Safe,
            format,
            &now,
            "nonce7",
            &[4; 16],
            Some("oUser"),
        )
        .unwrap()
}

/// The `CreateTime` of the tests' pushes: one for the whole run, so that a
/// push sent again is the same push (a retry carries the same fields), even
/// across a second boundary.
pub fn create_time() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(wechat_push::clock::now_secs)
}

/// A text message from `oUser`, sealed.
pub fn text_push(
    msg_id: u64,
    content: &str,
    format: wechat_push::Format,
) -> wechat_push::protocol::envelope::SealedPush {
    seal(
        serde_json::json!({
            "ToUserName": "gh_97417a04a28d", "FromUserName": "oUser",
            "CreateTime": create_time(),
            "MsgType": "text", "Content": content, "MsgId": msg_id,
        }),
        format,
    )
}

/// POST a sealed push to `url`: the status and body of the answer.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    push: &wechat_push::protocol::envelope::SealedPush,
) -> (u16, String) {
    let r = http
        .post(url)
        .query(&wechat_push::simulate::query_pairs(&push.query))
        .body(push.body.clone())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Run a built server until the returned sender is dropped; its push URL.
pub fn run_app(app: wechat_push::Application) -> (String, tokio::sync::oneshot::Sender<()>) {
    let base = format!("http://{}/wechat/{APPID}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// GET `url` and read its JSON body.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}
