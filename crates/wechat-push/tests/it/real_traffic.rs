//! Real traffic's rough edges, through the real server and SQLite: pushes
//! that WeChat's own de-duplication advice would merge, documented answers,
//! Cloud Run's gateway, unsplit CDATA and URLs with a trailing slash.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wechat_push::config::AppKind;
use wechat_push::message::Message;
use wechat_push::protocol::answer::DocumentedAnswers;
use wechat_push::protocol::envelope::SealedPush;
use wechat_push::protocol::wire::{self, Fields};
use wechat_push::simulate::{judge_answer, query_pairs, Acknowledgement, Sent};
use wechat_push::store::{Inbox, ListFilter, SqliteStore, Status, StoredPush};
use wechat_push::{Application, Config, Format, Handler, HandlerError, Mode, PassiveReply, Push};

use super::{crypto, run_app, APPID, KEY};

/// Counts handler runs and keeps what each saw.
#[derive(Default)]
struct Seen {
    runs: AtomicUsize,
    messages: Mutex<Vec<Fields>>,
}

impl Handler for Seen {
    async fn handle(&self, push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut seen) = self.messages.lock() {
            seen.push(push.message.fields().clone());
        }
        Ok(None)
    }
}

struct Server {
    base: String,
    http: reqwest::Client,
    store: SqliteStore,
    seen: Arc<Seen>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The server with one app in `mode` and `format`, plus `extra` TOML in its `[[apps]]`.
async fn server(mode: Mode, format: Format, extra: &str) -> Server {
    let dir = super::temp_dir("traffic");
    let db = dir.join("store.db");
    let config = Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{db}"
[inbox]
poll_interval = "50ms"
[[apps]]
appid = "{APPID}"
kind = "mini_program"
token = "AAAAA"
encoding_aes_key = "{KEY}"
mode = "{mode}"
format = "{format}"
{extra}
"#,
        db = db.display()
    ))
    .unwrap();
    let seen = Arc::new(Seen::default());
    let app = Application::build(config, seen.clone()).await.unwrap();
    let (base, stop) = run_app(app);
    Server {
        base,
        http: reqwest::Client::new(),
        store: SqliteStore::open(&db).unwrap(),
        seen,
        _stop: stop,
    }
}

impl Server {
    /// Post `fields` as WeChat does in `mode`/`format`, as delivery `n`
    /// (its own nonce and random bytes, as a retry has): status and body.
    async fn push(&self, fields: &Value, mode: Mode, format: Format, n: u8) -> (u16, Vec<u8>) {
        let push = sealed(fields, mode, format, n);
        self.post(&self.base, &push).await
    }

    async fn post(&self, url: &str, push: &SealedPush) -> (u16, Vec<u8>) {
        let r = self
            .http
            .post(url)
            .query(&query_pairs(&push.query))
            .body(push.body.clone())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    async fn stored(&self) -> Vec<StoredPush> {
        self.store
            .list(ListFilter {
                limit: 1000,
                ..ListFilter::default()
            })
            .await
            .unwrap()
    }

    /// Wait until `n` pushes are done; the handler's runs by then.
    async fn handled(&self, n: usize) -> usize {
        for _ in 0..400 {
            let done = self
                .store
                .list(ListFilter {
                    status: Some(Status::Done),
                    limit: 1000,
                    ..ListFilter::default()
                })
                .await
                .unwrap();
            if done.len() >= n {
                // A moment for a handler that should not run to show itself.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return self.seen.runs.load(Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} pushes were handled");
    }
}

fn sealed(fields: &Value, mode: Mode, format: Format, n: u8) -> SealedPush {
    let inner: Fields = serde_json::from_value(fields.clone()).unwrap();
    let now = wechat_push::clock::now_secs().to_string();
    let openid = inner
        .get("FromUserName")
        .and_then(Value::as_str)
        .map(str::to_owned);
    crypto()
        .seal_push(
            &inner,
            mode,
            format,
            &now,
            &format!("nonce{n}"),
            &[n; 16],
            openid.as_deref(),
        )
        .unwrap()
}

/// The pushes of the issue: each pair (or trio) shares sender and second,
/// and WeChat's advice (messages by MsgId, events by sender and time) would
/// keep only one of them.
fn distinct_pushes() -> Vec<Value> {
    let t = 1_796_000_000;
    let mut pushes = Vec::new();
    for code in ["100001", "100002", "100003"] {
        pushes.push(json!({
            "ToUserName": "gh_0a1b2c3d4e5f", "FromUserName": "oCardUser00000000000000000000",
            "CreateTime": t, "MsgType": "event", "Event": "user_get_card",
            "CardId": "pFS7Fjg8kV1IdDz01r4SQwMkuCKc", "IsGiveByFriend": 0,
            "UserCardCode": code, "OuterStr": "12b",
        }));
    }
    for id in [200163836u64, 200163840] {
        pushes.push(json!({
            "ToUserName": "gh_0a1b2c3d4e5f", "FromUserName": "oTemplateUser000000000000000",
            "CreateTime": t, "MsgType": "event", "Event": "TEMPLATESENDJOBFINISH",
            "MsgID": id, "Status": "success",
        }));
    }
    for (player, order) in [
        ("oPlayer1aaaaaaaaaaaaaaaaaaaa", "ORD1"),
        ("oPlayer2aaaaaaaaaaaaaaaaaaaa", "ORD2"),
    ] {
        pushes.push(json!({
            "ToUserName": "gh_0a1b2c3d4e5f", "FromUserName": "oOFFICIAL0000000000000000000",
            "CreateTime": t, "MsgType": "event", "Event": "xpay_goods_deliver_notify",
            "OpenId": player, "OutTradeNo": order,
            "GoodsInfo": {"ProductId": "gem_100", "Quantity": 1},
        }));
    }
    for user in ["oUserA000000000000000000000", "oUserB000000000000000000000"] {
        pushes.push(json!({
            "ToUserName": "gh_0a1b2c3d4e5f", "FromUserName": user, "CreateTime": t,
            "MsgType": "text", "Content": "hello", "MsgId": 6438483274356786577u64,
        }));
    }
    pushes
}

const DOCUMENTED: &str = r#"{"ErrCode":0,"ErrMsg":"Success"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_that_share_sender_and_second_are_each_stored_and_handled_once() {
    for (mode, format) in [(Mode::Plaintext, Format::Json), (Mode::Safe, Format::Xml)] {
        let s = server(mode, format, "").await;
        let pushes = distinct_pushes();
        // Each delivered, then delivered again as WeChat's retry.
        for delivery in [1u8, 2] {
            for (i, push) in pushes.iter().enumerate() {
                let (status, body) = s.push(push, mode, format, delivery * 20 + i as u8).await;
                assert_eq!(status, 200, "{mode} {format} {push}");
                let expected = (push["Event"] == "xpay_goods_deliver_notify")
                    .then(|| serde_json::from_str::<Fields>(DOCUMENTED).unwrap());
                let verdict = judge_answer(
                    &crypto(),
                    AppKind::MiniProgram,
                    mode,
                    Sent {
                        push: None,
                        documented: expected.as_ref(),
                    },
                    status,
                    &body,
                );
                assert!(verdict.is_ok(), "{mode} {format} {push}: {verdict:?}");
            }
        }
        assert_eq!(
            s.handled(pushes.len()).await,
            pushes.len(),
            "{mode} {format}"
        );
        let stored = s.stored().await;
        assert_eq!(stored.len(), pushes.len(), "{mode} {format}");
        // Every push's own fields reached the handler.
        let seen = s.seen.messages.lock().unwrap().clone();
        for push in &pushes {
            let want: Fields = serde_json::from_value(push.clone()).unwrap();
            let key = |f: &Fields| wechat_push::protocol::canonical::canonical_digest(f);
            assert!(
                seen.iter().any(|f| key(f) == key(&want)),
                "{mode} {format}: {push} was not handled"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_payment_pushes_get_their_documented_answer_in_every_mode_and_format() {
    let push = distinct_pushes()[5].clone();
    let expected: Fields = serde_json::from_str(DOCUMENTED).unwrap();
    for mode in [Mode::Plaintext, Mode::Compatible, Mode::Safe] {
        for format in [Format::Xml, Format::Json] {
            let s = server(mode, format, "").await;
            for delivery in 1..=3u8 {
                let (status, body) = s.push(&push, mode, format, delivery).await;
                let verdict = judge_answer(
                    &crypto(),
                    AppKind::MiniProgram,
                    mode,
                    Sent {
                        push: None,
                        documented: Some(&expected),
                    },
                    status,
                    &body,
                );
                let Ok(Acknowledgement::Documented {
                    encrypted,
                    plaintext,
                }) = verdict
                else {
                    panic!("{mode} {format} delivery {delivery}: {verdict:?}");
                };
                assert_eq!(encrypted, mode.is_encrypted(), "{mode} {format}");
                // In the push's own format.
                assert_eq!(wire::sniff(&plaintext), Some(format), "{mode} {format}");
                if format == Format::Json {
                    assert_eq!(plaintext, DOCUMENTED.as_bytes());
                }
            }
            assert_eq!(s.stored().await.len(), 1, "{mode} {format}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_set_in_the_config_answers_a_kind_the_table_does_not_know() {
    let s = server(
        Mode::Safe,
        Format::Json,
        r#"[apps.answers]
minigame_coin_deliver_completed = { ErrCode = 0, ErrMsg = "ok" }"#,
    )
    .await;
    let push = json!({
        "ToUserName": "gh_0a1b2c3d4e5f", "FromUserName": "oOFFICIAL0000000000000000000",
        "CreateTime": 1_796_000_001, "MsgType": "event",
        "Event": "minigame_coin_deliver_completed", "MiniGame": {"IsMock": true},
    });
    let (status, body) = s.push(&push, Mode::Safe, Format::Json, 1).await;
    let (_, plain) = crypto().open_reply(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(plain, br#"{"ErrCode":0,"ErrMsg":"ok"}"#);
    // Other events still get success.
    let other = json!({
        "ToUserName": "gh", "FromUserName": "oU", "CreateTime": 1_796_000_001,
        "MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": "x",
    });
    assert_eq!(
        s.push(&other, Mode::Safe, Format::Json, 2).await,
        (200, b"success".to_vec())
    );
    // And the table's own kinds are kept.
    assert!(DocumentedAnswers::new([])
        .for_event("xpay_refund_notify")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_run_path_checks_are_answered_and_gateway_pushes_accepted_only_where_trusted() {
    let trusted = server(Mode::Safe, Format::Json, r#"trust = "cloud_run""#).await;
    let signed_only = server(Mode::Safe, Format::Json, "").await;
    let http = reqwest::Client::new();
    // The probe sent when the path is saved: answered for any configured app.
    for s in [&trusted, &signed_only] {
        for probe in [
            r#"{ "action": "CheckContainerPath"}"#,
            "<xml>\n  <action>CheckContainerPath</action>\n</xml>",
        ] {
            let r = http.post(&s.base).body(probe).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), "success");
        }
        assert!(s.stored().await.is_empty());
    }
    let push = json!({
        "ToUserName": "gh_919b00572d95", "FromUserName": "oVneZ57wJnV-ObtCiGv26PRrOz2g",
        "CreateTime": 1651049934, "MsgType": "text", "Content": "回复文本",
        "MsgId": 23637352235060880u64,
    })
    .to_string();
    let gateway = |url: &str, appid: &str| {
        http.post(url)
            .header("x-wx-source", "wx-push")
            .header("x-wx-appid", appid)
            .header("x-wx-openid", "oVneZ57wJnV-ObtCiGv26PRrOz2g")
            .body(push.clone())
    };
    // Unsigned, without the gateway's header: refused.
    let r = http
        .post(&trusted.base)
        .body(push.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("x-wx-source"));
    // Naming another app: refused.
    let r = gateway(&trusted.base, "wx0000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // From the gateway: stored and handled; its retry is a duplicate.
    for _ in 0..2 {
        let r = gateway(&trusted.base, APPID).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "success");
    }
    assert_eq!(trusted.handled(1).await, 1);
    assert_eq!(trusted.stored().await.len(), 1);
    // An app that did not opt in never takes an unsigned push.
    let r = gateway(&signed_only.base, APPID).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(signed_only.stored().await.is_empty());
    // Signed pushes still work for the trusting app.
    let signed = json!({
        "ToUserName": "gh", "FromUserName": "oSigned", "CreateTime": 1651049935,
        "MsgType": "text", "Content": "signed", "MsgId": 1,
    });
    assert_eq!(
        trusted.push(&signed, Mode::Safe, Format::Json, 1).await.0,
        200
    );
    // A forged signature is not waved through as a gateway push.
    let mut forged = sealed(&signed, Mode::Safe, Format::Json, 2);
    forged.query.msg_signature = Some("0".repeat(40));
    let r = http
        .post(&trusted.base)
        .header("x-wx-source", "wx-push")
        .query(&query_pairs(&forged.query))
        .body(forged.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_holding_cdata_is_stored_and_handled_as_the_user_wrote_it() {
    let s = server(Mode::Plaintext, Format::Xml, "").await;
    let meant = "see <b><![CDATA[x]]></b> here";
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oCdata]]></FromUserName><CreateTime>1796000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{meant}]]></Content><MsgId>77</MsgId></xml>"
    );
    let mut push = sealed(&json!({}), Mode::Plaintext, Format::Xml, 1);
    push.body = body;
    assert_eq!(s.post(&s.base, &push).await, (200, b"success".to_vec()));
    assert_eq!(s.handled(1).await, 1);
    let seen = s.seen.messages.lock().unwrap().clone();
    assert_eq!(seen[0]["Content"], meant);
    let stored = &s.stored().await[0];
    let message =
        Message::from_fields(wire::parse_xml(&stored.body, &Default::default()).unwrap()).unwrap();
    assert_eq!(message.fields()["Content"], meant);
    // In compatible mode the envelope carries the text too.
    let c = server(Mode::Compatible, Format::Xml, "").await;
    let fields = json!({
        "ToUserName": "gh_1", "FromUserName": "oCdata", "CreateTime": 1796000000,
        "MsgType": "text", "Content": meant, "MsgId": 78,
    });
    let mut push = sealed(&fields, Mode::Compatible, Format::Xml, 2);
    // WeChat writes the plaintext copy without splitting the section.
    push.body = push.body.replace(
        "<![CDATA[see <b><![CDATA[x]]]]><![CDATA[></b> here]]>",
        &format!("<![CDATA[{meant}]]>"),
    );
    assert!(
        push.body.contains(&format!("<![CDATA[{meant}]]>")),
        "{}",
        push.body
    );
    assert_eq!(c.post(&c.base, &push).await, (200, b"success".to_vec()));
    assert_eq!(c.handled(1).await, 1);
    assert_eq!(c.seen.messages.lock().unwrap()[0]["Content"], meant);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_with_a_trailing_slash_are_served_the_same() {
    let s = server(Mode::Safe, Format::Json, "").await;
    let slash = format!("{}/", s.base);
    let query = [
        (
            "signature",
            wechat_push::protocol::signature::url_signature(crypto().token(), "1796000000", "n1"),
        ),
        ("timestamp", "1796000000".to_owned()),
        ("nonce", "n1".to_owned()),
        ("echostr", "4471418424525049211".to_owned()),
    ];
    let r = s.http.get(&slash).query(&query).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "4471418424525049211");
    let push = sealed(
        &json!({"ToUserName": "gh", "FromUserName": "oSlash", "CreateTime": 1796000000,
                "MsgType": "text", "Content": "/", "MsgId": 5}),
        Mode::Safe,
        Format::Json,
        1,
    );
    assert_eq!(s.post(&slash, &push).await, (200, b"success".to_vec()));
    assert_eq!(s.post(&s.base, &push).await, (200, b"success".to_vec()));
    assert_eq!(s.stored().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_stray_text_and_http_1_0_are_taken_as_wechat_sends_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(Mode::Plaintext, Format::Xml, "").await;
    // U+0002 and U+001D in a text, white space around CDATA, stray text in <xml>.
    let body = "<xml>\n stray\n <ToUserName> <![CDATA[gh_1]]> </ToUserName>\n<FromUserName><![CDATA[oCtl]]></FromUserName><CreateTime>1796000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[a\u{2}b\u{1d}c]]></Content><MsgId>91</MsgId></xml>";
    let mut push = sealed(&json!({}), Mode::Plaintext, Format::Xml, 1);
    push.body = body.to_owned();
    assert_eq!(s.post(&s.base, &push).await, (200, b"success".to_vec()));
    assert_eq!(s.handled(1).await, 1);
    let seen = s.seen.messages.lock().unwrap().clone();
    assert_eq!(seen[0]["Content"], "a\u{2}b\u{1d}c");
    assert_eq!(seen[0]["ToUserName"], "gh_1");
    // HTTP/1.0, no Host header, as some of WeChat's requests are.
    let push = sealed(
        &json!({"ToUserName": "gh_1", "FromUserName": "oHttp10", "CreateTime": 1796000000,
                "MsgType": "text", "Content": "1.0", "MsgId": 92}),
        Mode::Plaintext,
        Format::Xml,
        2,
    );
    let url = reqwest::Url::parse(&s.base).unwrap();
    let query: Vec<String> = query_pairs(&push.query)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let request = format!(
        "POST {}?{} HTTP/1.0\r\nUser-Agent: Mozilla/4.0\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{}",
        url.path(),
        query.join("&"),
        push.body.len(),
        push.body
    );
    let mut socket = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nsuccess"), "{answer}");
    assert_eq!(s.handled(2).await, 2);
}

/// A signed push of 100,000 self-closing elements was stored, though
/// 100,000 `<a>1</a>` fields were refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_100000_empty_elements_is_refused_like_100000_fields() {
    let s = server(Mode::Plaintext, Format::Xml, "").await;
    let fields: String = (0..100_000).map(|i| format!("<a{i}/>")).collect();
    for body in [
        format!("<xml><ToUserName>gh</ToUserName>{fields}</xml>"),
        format!(
            "<xml><ToUserName>gh</ToUserName>{}</xml>",
            "<a>1</a>".repeat(100_000)
        ),
    ] {
        let mut push = sealed(&json!({}), Mode::Plaintext, Format::Xml, 1);
        push.body = body;
        let (status, answer) = s.post(&s.base, &push).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
        assert!(String::from_utf8_lossy(&answer).contains("more than 4096 fields"));
    }
    assert!(s.stored().await.is_empty());
}
