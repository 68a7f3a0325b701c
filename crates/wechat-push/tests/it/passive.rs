//! Official Accounts answer in the HTTP reply: every passive type from
//! rules and backends, through the real server, SQLite and the WeChat API
//! stand-in, judged as WeChat judges a reply.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wechat_push::api::WechatApi;
use wechat_push::config::AppKind;
use wechat_push::metrics::Metrics;
use wechat_push::outbox::Outbox;
use wechat_push::protocol::envelope::SealedPush;
use wechat_push::protocol::wire::{self, Fields};
use wechat_push::rules::RulesHandler;
use wechat_push::simulate::{judge_answer, query_pairs, Acknowledgement, Sent};
use wechat_push::store::{AnswerRecord, AnswerStatus, ListFilter, SqliteStore, Store};
use wechat_push::{Application, Config, Format, Mode};

use super::{crypto, APPID, KEY};

/// The Official Account's original id.
const GH: &str = "gh_0a1b2c3d4e5f";

struct Server {
    base: String,
    mock: String,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// An Official Account app (XML, as WeChat has them) in `mode`, with `rules`
/// and `extra` TOML in its table, answering through `mock`; `db` shared
/// when given.
async fn server(mode: Mode, rules: &str, extra: &str, mock: &str, db: &std::path::Path) -> Server {
    let config = Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
reply_budget = "400ms"
[store]
url = "sqlite://{db}"
[wechat]
api_base = "{mock}"
[inbox]
backoff_base = "20ms"
poll_interval = "50ms"
[[apps]]
appid = "{APPID}"
kind = "official_account"
token = "AAAAA"
encoding_aes_key = "{KEY}"
secret = "secret1"
mode = "{mode}"
format = "xml"
{extra}
{rules}
"#,
        db = db.display()
    ))
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).unwrap());
    let metrics = Arc::new(Metrics::default());
    let api = WechatApi::new(
        mock.to_owned(),
        store.clone(),
        config.secrets(),
        config.wechat.token_kind,
    )
    .with_metrics(metrics.clone());
    let handler =
        Arc::new(RulesHandler::new(&config, Some(Outbox::new(store.clone(), api))).unwrap());
    let app = Application::build_with_metrics(config, store.clone(), handler, metrics.clone())
        .await
        .unwrap();
    let (base, stop) = super::run_app(app);
    Server {
        base,
        mock: mock.to_owned(),
        http: reqwest::Client::new(),
        store,
        metrics,
        _stop: stop,
    }
}

/// A text message from `user`, as fields.
fn text(user: &str, msg_id: u64, content: &str) -> Fields {
    serde_json::from_value(json!({
        "ToUserName": GH, "FromUserName": user, "CreateTime": super::create_time(),
        "MsgType": "text", "Content": content, "MsgId": msg_id,
    }))
    .unwrap()
}

fn seal(fields: &Fields, mode: Mode, format: Format, n: u8) -> SealedPush {
    super::seal_fields(fields, mode, format, n)
}

impl Server {
    async fn post(&self, push: &SealedPush) -> (u16, Vec<u8>) {
        let r = self
            .http
            .post(&self.base)
            .query(&query_pairs(&push.query))
            .body(push.body.clone())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    /// Deliver `fields` and judge the answer as WeChat would.
    async fn deliver(&self, fields: &Fields, mode: Mode, format: Format, n: u8) -> Acknowledgement {
        let (status, body) = self.post(&seal(fields, mode, format, n)).await;
        let sent = Sent {
            push: Some(fields),
            documented: None,
        };
        judge_answer(
            &crypto(),
            AppKind::OfficialAccount,
            mode,
            sent,
            status,
            &body,
        )
        .unwrap_or_else(|e| panic!("{mode} {format} {fields:?}: {e}"))
    }

    async fn mock_get(&self, path: &str) -> Value {
        super::get_json(&self.http, &format!("{}{path}", self.mock)).await
    }

    /// The answers of the push with this MsgId, once `n` of them are
    /// neither pending nor missing.
    async fn answers(&self, msg_id: u64, n: usize) -> Vec<AnswerRecord> {
        for _ in 0..200 {
            let pushes = self
                .store
                .list(ListFilter {
                    limit: 1000,
                    ..ListFilter::default()
                })
                .await
                .unwrap();
            let marker = format!(":{msg_id}:");
            if let Some(p) = pushes
                .iter()
                .find(|p| p.dedup_key.as_str().contains(&marker))
            {
                let answers = self.store.answers(p.id).await.unwrap();
                // Settled: neither pending nor on its way.
                let settled = |a: &AnswerRecord| {
                    a.status != AnswerStatus::Pending
                        && a.error.as_deref() != Some(wechat_push::outbox::SENDING)
                };
                if answers.len() >= n && answers.iter().all(settled) {
                    return answers;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("push {msg_id} never had {n} settled answers");
    }
}

fn reply_fields(answer: &Acknowledgement) -> Fields {
    let Acknowledgement::Reply { plaintext, .. } = answer else {
        panic!("not a passive reply: {answer:?}");
    };
    let format = wire::sniff(plaintext).unwrap();
    wire::parse(format, plaintext, &Default::default()).unwrap()
}

const EVERY_TYPE: &str = r#"
[[apps.rules]]
regex = '^text (\w+)$'
reply = { text = "Hi {1}, 你好 👋" }
[[apps.rules]]
keyword = "image"
reply = { image = { media_id = "IMAGE_MEDIA" } }
[[apps.rules]]
keyword = "voice"
reply = { voice = "VOICE_MEDIA" }
[[apps.rules]]
keyword = "video"
reply = { video = { media_id = "VIDEO_MEDIA", title = "A film", description = "Short" } }
[[apps.rules]]
keyword = "music"
reply = { music = { title = "Song", description = "Tune", musicurl = "https://example.com/a.mp3", hqmusicurl = "https://example.com/a.flac", thumb_media_id = "THUMB" } }
[[apps.rules]]
keyword = "news"
reply = { news = { title = "News", description = "Read", url = "https://example.com/n", picurl = "https://example.com/p.png" } }
[[apps.rules]]
keyword = "human"
reply = { transfer_customer_service = true }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_passive_type_answers_an_official_account_in_the_push_format_and_mode() {
    let mock = super::spawn_mock(APPID, false).await;
    let mut n = 0u64;
    for mode in [Mode::Plaintext, Mode::Safe] {
        let db = super::temp_dir("passive").join("store.db");
        let s = server(mode, EVERY_TYPE, "", &mock, &db).await;
        for format in [Format::Xml, Format::Json] {
            for (word, msg_type) in [
                ("text alice", "text"),
                ("image", "image"),
                ("voice", "voice"),
                ("video", "video"),
                ("music", "music"),
                ("news", "news"),
                ("human", "transfer_customer_service"),
            ] {
                n += 1;
                let push = text("oFollower", 9000 + n, word);
                let answer = s.deliver(&push, mode, format, 1).await;
                let Acknowledgement::Reply {
                    msg_type: got,
                    encrypted,
                    plaintext,
                } = &answer
                else {
                    panic!("{mode} {format} {word}: {answer:?}");
                };
                assert_eq!(got, msg_type, "{mode} {format} {word}");
                assert_eq!(*encrypted, mode == Mode::Safe);
                assert_eq!(
                    wire::sniff(plaintext),
                    Some(format),
                    "answered in the push's format"
                );
                let reply = reply_fields(&answer);
                match msg_type {
                    "text" => assert_eq!(reply["Content"], "Hi alice, 你好 👋"),
                    "image" => assert_eq!(reply["Image"]["MediaId"], "IMAGE_MEDIA"),
                    "voice" => assert_eq!(reply["Voice"]["MediaId"], "VOICE_MEDIA"),
                    "video" => assert_eq!(reply["Video"]["Title"], "A film"),
                    "music" => assert_eq!(reply["Music"]["ThumbMediaId"], "THUMB"),
                    "news" => assert_eq!(reply["ArticleCount"], 1),
                    _ => {}
                }
                // Recorded with the push's answers.
                let answers = s.answers(9000 + n, 1).await;
                assert_eq!(answers[0].source, "passive");
                assert_eq!(answers[0].msgtype, msg_type);
                assert_eq!(answers[0].status, AnswerStatus::Sent, "{:?}", answers[0]);
                // WeChat's retry gets the same reply, sealed for its own nonce.
                let again = s.deliver(&push, mode, format, 2).await;
                assert_eq!(reply_fields(&again), reply, "{mode} {format} {word}");
            }
        }
        // Nothing went through the customer-service API.
        assert_eq!(s.mock_get("/_mock/sent").await, json!([]));
    }
}

/// A tiny file standing for a picture, distinct per `tag`.
fn picture(tag: &str) -> std::path::PathBuf {
    let dir = super::temp_dir("pictures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}.png"));
    std::fs::write(&path, format!("\u{89}PNG picture {tag}")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_not_ready_in_time_falls_back_to_the_api_only_where_via_allows() {
    let mock = super::spawn_mock(APPID, false).await;
    let (auto, passive) = (picture("auto"), picture("passive"));
    let rules = format!(
        r#"
[[apps.rules]]
keyword = "auto"
reply = {{ image = {{ file = "{}" }} }}
via = "auto"
[[apps.rules]]
keyword = "passive"
reply = {{ image = {{ file = "{}" }} }}
via = "passive"
"#,
        auto.display(),
        passive.display()
    );
    let db = super::temp_dir("fallback").join("store.db");
    let s = server(Mode::Safe, &rules, "", &mock, &db).await;
    // Uploads take longer than the 400 ms budget.
    s.http
        .post(format!("{mock}/_mock/faults"))
        .json(&json!({"path": "/cgi-bin/media/upload", "delay_ms": 900, "times": 2}))
        .send()
        .await
        .unwrap();
    let push = text("oSlow", 7001, "auto please");
    assert_eq!(
        s.deliver(&push, Mode::Safe, Format::Xml, 1).await,
        Acknowledgement::Success
    );
    let answers = s.answers(7001, 2).await;
    let passive_record = answers.iter().find(|a| a.source == "passive").unwrap();
    assert_eq!(passive_record.status, AnswerStatus::Failed);
    let why = passive_record.error.as_deref().unwrap();
    assert!(
        why.contains("missed: not ready while the push's answer was held"),
        "{why}"
    );
    assert!(
        why.contains("sent through the customer-service API instead"),
        "{why}"
    );
    let sent = s.mock_get("/_mock/sent").await;
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent[0]["msgtype"], "image");
    assert_eq!(sent[0]["touser"], "oSlow");
    assert!(sent[0]["body"]["image"]["media_id"]
        .as_str()
        .unwrap()
        .starts_with("MOCK_MEDIA_"));

    // WeChat's retry of that push (its answer lost) gets `success`, not
    // the image a second time.
    assert_eq!(
        s.deliver(&push, Mode::Safe, Format::Xml, 2).await,
        Acknowledgement::Success
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.mock_get("/_mock/sent").await.as_array().unwrap().len(), 1);

    let push = text("oSlow", 7002, "passive please");
    assert_eq!(
        s.deliver(&push, Mode::Safe, Format::Xml, 1).await,
        Acknowledgement::Success
    );
    let answers = s.answers(7002, 1).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, AnswerStatus::Failed);
    assert!(answers[0]
        .error
        .as_deref()
        .unwrap()
        .contains("not sent: via = \"passive\""));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.mock_get("/_mock/sent").await.as_array().unwrap().len(), 1);

    // Once uploaded, the same file answers passively in time.
    let push = text("oSlow", 7003, "auto again");
    let answer = s.deliver(&push, Mode::Safe, Format::Xml, 1).await;
    assert!(reply_fields(&answer)["Image"]["MediaId"]
        .as_str()
        .unwrap()
        .starts_with("MOCK_MEDIA_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_file_is_uploaded_once_for_two_servers_sharing_a_store() {
    let mock = super::spawn_mock(APPID, false).await;
    let file = picture("shared");
    let rules = format!(
        "[[apps.rules]]\nkeyword = \"pic\"\nreply = {{ image = {{ file = \"{}\" }} }}\n",
        file.display()
    );
    let db = super::temp_dir("shared-media").join("store.db");
    let a = server(Mode::Safe, &rules, "", &mock, &db).await;
    let b = server(Mode::Safe, &rules, "", &mock, &db).await;
    let (pa, pb) = (text("oA", 8001, "pic"), text("oB", 8002, "pic"));
    let (ra, rb) = tokio::join!(
        a.deliver(&pa, Mode::Safe, Format::Xml, 1),
        b.deliver(&pb, Mode::Safe, Format::Xml, 2)
    );
    let (ia, ib) = (reply_fields(&ra), reply_fields(&rb));
    assert_eq!(ia["Image"]["MediaId"], ib["Image"]["MediaId"]);
    let media = a.mock_get("/_mock/media").await;
    assert_eq!(media.as_array().unwrap().len(), 1, "{media}");
    assert_eq!(media[0]["file"], "shared.png");
    assert_eq!(media[0]["type"], "image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_48001_is_recorded_with_what_to_do_and_counted() {
    let mock = super::spawn_mock(APPID, false).await;
    let rules = "[[apps.rules]]\nkeyword = \"hi\"\nreply = { text = \"by API\" }\nvia = \"api\"\n";
    let db = super::temp_dir("48001").join("store.db");
    let s = server(Mode::Safe, rules, "", &mock, &db).await;
    s.http
        .post(format!("{mock}/_mock/faults"))
        .json(&json!({"path": "/cgi-bin/message/custom/send", "errcode": 48001, "errmsg": "api unauthorized"}))
        .send()
        .await
        .unwrap();
    let push = text("oUnverified", 4801, "hi");
    assert_eq!(
        s.deliver(&push, Mode::Safe, Format::Xml, 1).await,
        Acknowledgement::Success
    );
    let answers = s.answers(4801, 1).await;
    assert_eq!(answers[0].status, AnswerStatus::Failed);
    let why = answers[0].error.as_deref().unwrap();
    assert!(why.contains("errcode 48001"), "{why}");
    assert!(
        why.contains("answer with a passive reply (via = \"passive\")"),
        "{why}"
    );
    let metrics = s.metrics.render(
        &wechat_push::metrics::Scrape {
            depth: None,
            done: None,
            backlog: &[],
            targets: &[],
        },
        None,
    );
    assert!(
        metrics.contains(&format!(
            "wechat_push_api_errors_total{{appid=\"{APPID}\",errcode=\"48001\"}} 1"
        )),
        "{metrics}"
    );
}

#[test]
fn a_mini_program_rule_with_a_passive_text_is_refused_at_start() {
    let config = Config::from_toml(&format!(
        r#"
[[apps]]
appid = "{APPID}"
kind = "mini_program"
token = "AAAAA"
secret = "s"
[[apps.rules]]
keyword = "hi"
reply = {{ text = "hello" }}
via = "passive"
"#
    ))
    .unwrap();
    let e = wechat_push::rules::RulesHandler::new(&config, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("apps[0].rules[0].via: a Mini Program accepts no passive reply but transfer_customer_service"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answers_passively_in_time_and_through_the_api_when_late() {
    let mock = super::spawn_mock(APPID, false).await;
    let (receiver, url) =
        super::forward::Receiver::spawn(&[], r#"{"reply": {"text": "from backend"}}"#).await;
    let extra = format!(
        "[[apps.forward]]\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\npassive_reply = true\n"
    );
    let db = super::temp_dir("backend-passive").join("store.db");
    let s = server(Mode::Safe, "", &extra, &mock, &db).await;
    // In time: the backend's text rides on the push's answer.
    let push = text("oBackend", 6001, "hello backend");
    let answer = s.deliver(&push, Mode::Safe, Format::Xml, 1).await;
    assert_eq!(reply_fields(&answer)["Content"], "from backend");
    assert_eq!(s.answers(6001, 1).await[0].status, AnswerStatus::Sent);
    assert_eq!(s.mock_get("/_mock/sent").await, json!([]));
    // Late: WeChat gets `success` at the budget; the text goes through the API.
    receiver.set_delay(Duration::from_millis(900));
    let push = text("oBackend", 6002, "hello again");
    assert_eq!(
        s.deliver(&push, Mode::Safe, Format::Xml, 1).await,
        Acknowledgement::Success
    );
    let answers = s.answers(6002, 2).await;
    let missed = answers.iter().find(|a| a.source == "passive").unwrap();
    assert!(missed
        .error
        .as_deref()
        .unwrap()
        .contains("sent through the customer-service API instead"));
    let by_api = answers
        .iter()
        .find(|a| a.source.starts_with("forward:"))
        .unwrap();
    assert_eq!(by_api.status, AnswerStatus::Sent);
    let sent = s.mock_get("/_mock/sent").await;
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent[0]["body"]["text"]["content"], "from backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_passive_reply_giving_way_to_a_rules_goes_through_the_api() {
    let mock = super::spawn_mock(APPID, false).await;
    let (_receiver, url) =
        super::forward::Receiver::spawn(&[], r#"{"reply": {"text": "from backend"}}"#).await;
    let extra = format!(
        "[[apps.forward]]\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\npassive_reply = true\n"
    );
    let rules = "[[apps.rules]]\nkeyword = \"ruleword\"\nreply = { text = \"from the rule\" }\n";
    let db = super::temp_dir("both-answer").join("store.db");
    let s = server(Mode::Safe, rules, &extra, &mock, &db).await;
    let push = text("oBoth", 6101, "ruleword");
    let answer = s.deliver(&push, Mode::Safe, Format::Xml, 1).await;
    assert_eq!(reply_fields(&answer)["Content"], "from the rule");
    let answers = s.answers(6101, 2).await;
    let backend = answers
        .iter()
        .find(|a| a.source.starts_with("forward:"))
        .unwrap_or_else(|| panic!("the backend's reply was dropped: {answers:?}"));
    assert_eq!(backend.status, AnswerStatus::Sent);
    let sent = s.mock_get("/_mock/sent").await;
    assert_eq!(sent[0]["body"]["text"]["content"], "from backend", "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_reply_wechat_would_refuse_is_not_sent_passively() {
    let mock = super::spawn_mock(APPID, false).await;
    let (_receiver, url) =
        super::forward::Receiver::spawn(&[], r#"{"reply": {"news": {"articles": []}}}"#).await;
    let extra = format!(
        "[[apps.forward]]\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\npassive_reply = true\n"
    );
    let db = super::temp_dir("empty-news").join("store.db");
    let s = server(Mode::Safe, "", &extra, &mock, &db).await;
    let push = text("oEmpty", 6201, "anything");
    assert_eq!(
        s.deliver(&push, Mode::Safe, Format::Xml, 1).await,
        Acknowledgement::Success
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deliveries = {
        let pushes = s.store.list(ListFilter::default()).await.unwrap();
        s.store.deliveries(pushes[0].id).await.unwrap()
    };
    let note = deliveries[0].last_error.as_deref().unwrap_or_default();
    assert!(
        note.contains("reply ignored: news reply with 0 articles"),
        "{note}"
    );
    assert_eq!(s.mock_get("/_mock/sent").await, json!([]));
}
