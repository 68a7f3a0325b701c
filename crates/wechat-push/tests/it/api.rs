//! The WeChat API client against the local stand-in, with a real SQLite store.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use wechat_push::api::{ApiError, CsMessage, TokenKind, WechatApi};
use wechat_push::config::Secret;
use wechat_push::store::{SqliteStore, Store};
use wechat_push::OpenId;

struct World {
    mock: String,
    client: reqwest::Client,
    db: std::path::PathBuf,
}

async fn world() -> World {
    let url = super::spawn_mock("wx1", false).await;
    let dir = super::temp_dir("api");
    World {
        mock: url,
        client: reqwest::Client::new(),
        db: dir.join("store.db"),
    }
}

impl World {
    /// A client as one process would have it: its own store handle on the shared file.
    fn api(&self, kind: TokenKind) -> WechatApi {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&self.db).unwrap());
        WechatApi::new(
            &self.mock,
            store,
            HashMap::from([("wx1".to_owned(), Secret::new("secret1"))]),
            kind,
        )
    }

    async fn get(&self, path: &str) -> Value {
        super::get_json(&self.client, &format!("{}{path}", self.mock)).await
    }

    async fn fault(&self, fault: Value) {
        self.client
            .post(format!("{}/_mock/faults", self.mock))
            .json(&fault)
            .send()
            .await
            .unwrap();
    }

    async fn count(&self, suffix: &str) -> usize {
        let calls = self.get("/_mock/calls").await;
        calls
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["path"].as_str().unwrap().ends_with(suffix))
            .count()
    }
}

fn user() -> OpenId {
    OpenId::new("oUser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_fetch_one_token_between_them() {
    let w = world().await;
    let (a, b) = (w.api(TokenKind::Stable), w.api(TokenKind::Stable));
    let mut sends = Vec::new();
    for i in 0..10 {
        let api = if i % 2 == 0 { a.clone() } else { b.clone() };
        sends.push(tokio::spawn(async move {
            api.send(
                "wx1",
                &OpenId::new(format!("o{i}")),
                &CsMessage::Text(format!("hi {i}")),
            )
            .await
        }));
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    assert_eq!(w.count("token").await, 1, "{}", w.get("/_mock/calls").await);
    assert_eq!(w.get("/_mock/sent").await.as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_send_retried() {
    let w = world().await;
    let api = w.api(TokenKind::Classic);
    api.send("wx1", &user(), &CsMessage::Text("warm-up".into()))
        .await
        .unwrap();
    w.fault(json!({"path": "/cgi-bin/message/custom/send", "errcode": 40001}))
        .await;
    api.send("wx1", &user(), &CsMessage::Text("after 40001".into()))
        .await
        .unwrap();
    assert_eq!(w.count("token").await, 2, "one fetch, one refresh");
    assert_eq!(w.count("custom/send").await, 3);
    let sent = w.get("/_mock/sent").await;
    assert_eq!(sent.as_array().unwrap().len(), 2);
    assert_eq!(sent[1]["body"]["text"]["content"], "after 40001");
    // Refused twice in a row: no endless loop, the errcode comes back.
    w.fault(json!({"path": "/cgi-bin/message/custom/send", "errcode": 40001, "times": 2}))
        .await;
    let err = api
        .send("wx1", &user(), &CsMessage::Text("x".into()))
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(40001));
}

#[tokio::test]
async fn quota_errors_are_final_and_busy_is_retried() {
    let w = world().await;
    let api = w.api(TokenKind::Stable);
    w.fault(json!({"path": "/cgi-bin/message/custom/send", "errcode": 45047}))
        .await;
    let err = api
        .send("wx1", &user(), &CsMessage::Image("MEDIA".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::QuotaUsed(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(w.count("custom/send").await, 1, "45047 is not retried");
    w.fault(json!({"path": "/cgi-bin/message/custom/send", "errcode": -1}))
        .await;
    api.send("wx1", &user(), &CsMessage::Text("after busy".into()))
        .await
        .unwrap();
    assert_eq!(w.count("custom/send").await, 3);
    api.typing("wx1", &user(), true).await.unwrap();
    let link = CsMessage::Link(wechat_push::reply::LinkCard {
        title: "t".into(),
        description: "d".into(),
        url: "https://x".into(),
        thumb_url: "https://y".into(),
    });
    api.send("wx1", &user(), &link).await.unwrap();
    let sent = w.get("/_mock/sent").await;
    assert_eq!(
        sent.as_array().unwrap().last().unwrap()["body"]["link"]["url"],
        "https://x"
    );
}

#[tokio::test]
async fn failures_name_no_token_and_a_missing_secret_is_clear() {
    let w = world().await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&w.db).unwrap());
    let no_secret = WechatApi::new(&w.mock, store.clone(), HashMap::new(), TokenKind::Stable);
    let err = no_secret
        .send("wx1", &user(), &CsMessage::Text("x".into()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no secret is configured for app wx1");
    // A token cached, then WeChat unreachable: the error shows no token.
    let api = w.api(TokenKind::Stable);
    let token = api.access_token("wx1").await.unwrap();
    // A port bound and never listened on, held to the end: connections to
    // it are refused, and no other test's server can take it meanwhile
    // (a port let go at once was, and answered).
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = held.local_addr().unwrap();
    let offline = WechatApi::new(
        format!("http://{closed}"),
        store,
        HashMap::from([("wx1".to_owned(), Secret::new("secret1"))]),
        TokenKind::Stable,
    );
    let err = offline
        .send("wx1", &user(), &CsMessage::Text("x".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Network(_)), "{err:?}");
    let shown = wechat_push::display_chain(&err);
    assert!(
        !shown.contains(&token) && !shown.contains("access_token"),
        "{shown}"
    );
    drop(held);
}
