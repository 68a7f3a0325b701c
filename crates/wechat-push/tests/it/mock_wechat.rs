//! The WeChat API stand-in answers like WeChat: tokens, checks, quotas, faults.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Mock {
    base: String,
    client: reqwest::Client,
}

async fn spawn(strict: bool) -> Mock {
    let base = super::spawn_mock("wx1", strict).await;
    Mock {
        base,
        client: reqwest::Client::new(),
    }
}

impl Mock {
    async fn post(&self, path: &str, body: Value) -> Value {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        super::get_json(&self.client, &format!("{}{path}", self.base)).await
    }

    async fn stable(&self, force: bool) -> Value {
        self.post(
            "/cgi-bin/stable_token",
            json!({"grant_type": "client_credential", "appid": "wx1", "secret": "secret1", "force_refresh": force}),
        )
        .await
    }

    async fn send(&self, token: &str, to: &str) -> i64 {
        let r = self
            .post(
                &format!("/cgi-bin/message/custom/send?access_token={token}"),
                json!({"touser": to, "msgtype": "text", "text": {"content": "hi"}}),
            )
            .await;
        r["errcode"].as_i64().unwrap()
    }
}

#[tokio::test]
async fn tokens_like_wechat() {
    let m = spawn(false).await;
    let bad = m
        .post(
            "/cgi-bin/stable_token",
            json!({"grant_type": "client_credential", "appid": "wx1", "secret": "nope"}),
        )
        .await;
    assert_eq!(bad["errcode"], 40125);
    let unknown = m
        .get("/cgi-bin/token?grant_type=client_credential&appid=wx9&secret=x")
        .await;
    assert_eq!(unknown["errcode"], 40013);
    // stable_token: the same token until it expires.
    let a = m.stable(false).await;
    let b = m.stable(false).await;
    assert_eq!(a["access_token"], b["access_token"]);
    assert_eq!(a["expires_in"], 7200);
    // token: a new one each time; the previous lives five more minutes.
    let t1 = m
        .get("/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=secret1")
        .await;
    let t2 = m
        .get("/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=secret1")
        .await;
    let (t1, t2) = (
        t1["access_token"].as_str().unwrap().to_owned(),
        t2["access_token"].as_str().unwrap().to_owned(),
    );
    assert_ne!(t1, t2);
    assert_eq!(m.send(&t1, "oA").await, 0);
    m.post("/_mock/advance", json!({"seconds": 301})).await;
    assert_eq!(m.send(&t1, "oA").await, 42001);
    assert_eq!(m.send(&t2, "oA").await, 0);
    assert_eq!(m.send("forged", "oA").await, 40001);
    assert_eq!(m.send("", "oA").await, 41001);
    m.post("/_mock/advance", json!({"seconds": 7200})).await;
    assert_eq!(m.send(&t2, "oA").await, 42001);
    // Forced refresh: at most every 30 s.
    assert!(m.stable(true).await["access_token"].is_string());
    assert_eq!(m.stable(true).await["errcode"], 45009);
    let calls = m.get("/_mock/calls").await;
    let token_fetches = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["path"].as_str().unwrap().ends_with("token"))
        .count();
    assert_eq!(token_fetches, 8);
}

#[tokio::test]
async fn reply_windows_and_quotas() {
    let m = spawn(true).await;
    let token = m.stable(false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Strict: no window before the user acts.
    assert_eq!(m.send(&token, "oU").await, 45015);
    m.post(
        "/_mock/user_action",
        json!({"appid": "wx1", "openid": "oU", "action": "message"}),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(m.send(&token, "oU").await, 0);
    }
    assert_eq!(m.send(&token, "oU").await, 45047);
    // A new message resets the quota; after 48 hours the window closes.
    m.post(
        "/_mock/user_action",
        json!({"appid": "wx1", "openid": "oU", "action": "message"}),
    )
    .await;
    assert_eq!(m.send(&token, "oU").await, 0);
    m.post("/_mock/advance", json!({"seconds": 48 * 3600 + 1}))
        .await;
    let token = m.stable(false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(m.send(&token, "oU").await, 45015);
    // Entering the session: 2 within a minute.
    m.post(
        "/_mock/user_action",
        json!({"appid": "wx1", "openid": "oS", "action": "enter_session"}),
    )
    .await;
    assert_eq!(m.send(&token, "oS").await, 0);
    assert_eq!(m.send(&token, "oS").await, 0);
    assert_eq!(m.send(&token, "oS").await, 45047);
    let sent = m.get("/_mock/sent").await;
    assert_eq!(sent.as_array().unwrap().len(), 8);
    assert_eq!(sent[0]["body"]["text"]["content"], "hi");
    // A malformed message.
    let r = m
        .post(
            &format!("/cgi-bin/message/custom/send?access_token={token}"),
            json!({"touser": "oS", "msgtype": "text"}),
        )
        .await;
    assert_eq!(r["errcode"], 47001);
}

#[tokio::test]
async fn faults_are_injected_once_each() {
    let m = spawn(false).await;
    let token = m.stable(false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    m.post(
        "/_mock/faults",
        json!({"path": "/cgi-bin/message/custom/send", "errcode": 40001}),
    )
    .await;
    assert_eq!(m.send(&token, "oF").await, 40001);
    assert_eq!(m.send(&token, "oF").await, 0);
    m.post("/_mock/faults", json!({"errcode": -1, "times": 2}))
        .await;
    assert_eq!(m.send(&token, "oF").await, -1);
    assert_eq!(m.stable(false).await["errcode"], -1);
    assert_eq!(m.send(&token, "oF").await, 0);
    m.post("/_mock/faults", json!({"errcode": 45047})).await;
    assert_eq!(m.send(&token, "oF").await, 45047);
    m.post("/_mock/faults", json!({"delay_ms": 400})).await;
    let started = Instant::now();
    assert_eq!(m.send(&token, "oF").await, 0);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let typing = m
        .post(
            &format!("/cgi-bin/message/custom/typing?access_token={token}"),
            json!({"touser": "oF", "command": "Typing"}),
        )
        .await;
    assert_eq!(typing["errcode"], 0);
}

#[tokio::test]
async fn media_uploads_are_checked_for_type_and_size_like_wechat() {
    let m = spawn(false).await;
    let token = m.stable(false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let upload = |kind: &'static str, name: &'static str, size: usize| {
        let part = reqwest::multipart::Part::bytes(vec![7u8; size]).file_name(name);
        m.client
            .post(format!(
                "{}/cgi-bin/media/upload?access_token={token}&type={kind}",
                m.base
            ))
            .multipart(reqwest::multipart::Form::new().part("media", part))
            .send()
    };
    let ok: Value = upload("image", "a.png", 1000)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ok["media_id"].as_str().unwrap().starts_with("MOCK_MEDIA_"),
        "{ok}"
    );
    assert_eq!(ok["type"], "image");
    assert!(ok["created_at"].as_i64().unwrap() > 1_600_000_000);
    let wrong_type: Value = upload("image", "a.exe", 10)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wrong_type["errcode"], 40005);
    let too_big: Value = upload("voice", "a.mp3", (2 << 20) + 1)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(too_big["errcode"], 40006);
    let bad_kind: Value = upload("sticker", "a.png", 10)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad_kind["errcode"], 40004);
    let no_token: Value = m
        .client
        .post(format!("{}/cgi-bin/media/upload?type=image", m.base))
        .multipart(reqwest::multipart::Form::new().part(
            "media",
            reqwest::multipart::Part::bytes(vec![1]).file_name("a.png"),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(no_token["errcode"], 41001);
    let media = m.get("/_mock/media").await;
    assert_eq!(media.as_array().unwrap().len(), 1, "{media}");
}
