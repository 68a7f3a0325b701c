//! Answering users: rules, the outbox and the API client, through the real
//! server, the WeChat API stand-in and SQLite.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wechat_push::api::WechatApi;
use wechat_push::outbox::Outbox;
use wechat_push::protocol::envelope::SealedPush;
use wechat_push::protocol::wire;
use wechat_push::rules::RulesHandler;
use wechat_push::store::{AnswerStatus, ListFilter, SqliteStore, Status, Store};
use wechat_push::{Application, Config, Format};

use super::{crypto, text_push, APPID, KEY};

struct World {
    base: String,
    mock: String,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn world(format: Format) -> World {
    world_with(format, None).await
}

/// With `router`, a Rust router handles pushes instead of the config's rules.
async fn world_with(format: Format, router: Option<wechat_push::router::Router>) -> World {
    let mock_url = super::spawn_mock(APPID, false).await;
    let dir = super::temp_dir("answers");
    let config = Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{db}"
[wechat]
api_base = "{mock_url}"
[inbox]
backoff_base = "20ms"
poll_interval = "50ms"
[[apps]]
appid = "{APPID}"
kind = "mini_program"
token = "AAAAA"
encoding_aes_key = "{KEY}"
secret = "secret1"
mode = "safe"
format = "{format}"
[[apps.rules]]
keyword = "hello"
reply = {{ text = "Hi! How can we help?" }}
[[apps.rules]]
keyword = "human"
reply = {{ transfer_customer_service = true }}
"#,
        db = dir.join("store.db").display()
    ))
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("store.db")).unwrap());
    let api = WechatApi::new(
        mock_url.clone(),
        store.clone(),
        config.secrets(),
        config.wechat.token_kind,
    );
    let app = match router {
        Some(router) => {
            let router = router
                .with_api(api, store.clone())
                .typing_after(Duration::from_millis(150));
            Application::build_with_store(config, store.clone(), router).await
        }
        None => {
            let rules = RulesHandler::new(&config, Some(Outbox::new(store.clone(), api))).unwrap();
            Application::build_with_store(config, store.clone(), rules).await
        }
    }
    .unwrap();
    let (base, stop) = super::run_app(app);
    World {
        base,
        mock: mock_url,
        http: reqwest::Client::new(),
        store,
        _stop: stop,
    }
}

impl World {
    async fn post(&self, push: &SealedPush) -> (u16, String) {
        super::post(&self.http, &self.base, push).await
    }

    async fn mock_get(&self, path: &str) -> Value {
        super::get_json(&self.http, &format!("{}{path}", self.mock)).await
    }

    async fn calls(&self, suffix: &str) -> usize {
        let calls = self.mock_get("/_mock/calls").await;
        calls
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["path"].as_str().unwrap().ends_with(suffix))
            .count()
    }

    async fn done(&self, n: usize) -> Vec<wechat_push::store::StoredPush> {
        for _ in 0..200 {
            let done = self
                .store
                .list(ListFilter {
                    status: Some(Status::Done),
                    ..ListFilter::default()
                })
                .await
                .unwrap();
            if done.len() >= n {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} pushes done");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyword_push_arriving_four_times_is_answered_once() {
    let w = world(Format::Json).await;
    let push = text_push(501, "Hello there", Format::Json);
    let (a, b, c, d) = tokio::join!(w.post(&push), w.post(&push), w.post(&push), w.post(&push));
    for answer in [a, b, c, d] {
        assert_eq!(answer, (200, "success".to_owned()));
    }
    let done = w.done(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = w.mock_get("/_mock/sent").await;
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent[0]["touser"], "oUser");
    assert_eq!(sent[0]["body"]["text"]["content"], "Hi! How can we help?");
    let answers = w.store.answers(done[0].id).await.unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, AnswerStatus::Sent);
}

#[tokio::test]
async fn a_quota_refusal_is_recorded_and_not_retried() {
    let w = world(Format::Json).await;
    w.http
        .post(format!("{}/_mock/faults", w.mock))
        .json(&json!({"path": "/cgi-bin/message/custom/send", "errcode": 45047}))
        .send()
        .await
        .unwrap();
    assert_eq!(w.post(&text_push(502, "hello", Format::Json)).await.0, 200);
    let done = w.done(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.calls("custom/send").await, 1, "45047 must not be retried");
    let answers = w.store.answers(done[0].id).await.unwrap();
    assert_eq!(answers[0].status, AnswerStatus::Failed);
    assert!(
        answers[0].error.as_deref().unwrap_or("").contains("45047"),
        "{:?}",
        answers[0]
    );
    assert_eq!(done[0].attempts, 1);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_answer_resent() {
    let w = world(Format::Json).await;
    w.http
        .post(format!("{}/_mock/faults", w.mock))
        .json(&json!({"path": "/cgi-bin/message/custom/send", "errcode": 40001}))
        .send()
        .await
        .unwrap();
    assert_eq!(w.post(&text_push(503, "hello", Format::Json)).await.0, 200);
    w.done(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(w.calls("stable_token").await, 2);
    assert_eq!(w.mock_get("/_mock/sent").await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn transfer_to_customer_service_is_an_encrypted_passive_reply() {
    for format in [Format::Xml, Format::Json] {
        let w = world(format).await;
        let (status, body) = w.post(&text_push(504, "I want a human", format)).await;
        assert_eq!(status, 200);
        let (_, plain) = crypto()
            .open_reply(body.as_bytes())
            .unwrap_or_else(|e| panic!("{format}: {e}: {body}"));
        let reply = wire::parse(format, &plain, &Default::default()).unwrap();
        assert_eq!(reply["MsgType"], "transfer_customer_service");
        assert_eq!(reply["ToUserName"], "oUser");
        assert_eq!(w.calls("custom/send").await, 0);
    }
}

#[tokio::test]
async fn a_slow_rust_handler_shows_typing_before_its_answer_and_errors_retry() {
    use wechat_push::router::{Reply, Router};
    let failures = Arc::new(AtomicUsize::new(1));
    let left = failures.clone();
    let router = Router::new().on_msg_type("text", move |ctx| {
        let left = left.clone();
        async move {
            if left.fetch_sub(1, Ordering::SeqCst) > 0 {
                return Err(wechat_push::HandlerError::new("not yet"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Reply::text(format!(
                "echo: {}",
                ctx.text().unwrap_or_default()
            )))
        }
    });
    let w = world_with(Format::Json, Some(router)).await;
    assert_eq!(
        w.post(&text_push(601, "slow one", Format::Json)).await.0,
        200
    );
    let done = w.done(1).await;
    assert_eq!(
        done[0].attempts, 2,
        "the first attempt failed and was retried"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = w.mock_get("/_mock/calls").await;
    let paths: Vec<&str> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .filter(|p| p.contains("custom"))
        .collect();
    assert_eq!(
        paths,
        [
            "/cgi-bin/message/custom/typing",
            "/cgi-bin/message/custom/send"
        ]
    );
    let sent = w.mock_get("/_mock/sent").await;
    assert_eq!(sent[0]["body"]["text"]["content"], "echo: slow one");
}
