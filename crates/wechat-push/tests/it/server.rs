//! The real server on a real port with a real SQLite file, driven over HTTP.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use wechat_push::clock::now_secs;
use wechat_push::message::Message;
use wechat_push::protocol::envelope::SealedPush;
use wechat_push::protocol::wire::Fields;
use wechat_push::reply::MiniProgramReply;
use wechat_push::store::{
    AnswerLog, AnswerRecord, Backlog, BoxFuture, CachedToken, Claim, Counts, Delivery,
    DeliveryClaim, DeliveryLog, DeliveryOutcome, Depth, Inbox, Inserted, ListFilter, Millis,
    NewPush, PushId, Retried, SqliteStore, Status, StoreError, StoredPush, TokenCache,
};
use wechat_push::{Application, Config, Format, Handler, HandlerError, Mode, PassiveReply, Push};

use super::{crypto, APPID, KEY};

const TOKEN: &str = "AAAAA";

/// What the test handler saw and how it behaves.
#[derive(Default)]
struct Recorder {
    calls: AtomicUsize,
    /// Fail this many calls first.
    fail_first: AtomicUsize,
    /// Sleep this long in each call.
    delay: Duration,
    /// Answer with transfer_customer_service.
    transfer: bool,
}

impl Handler for Recorder {
    async fn handle(&self, _push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let left = self.fail_first.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_first.store(left - 1, Ordering::SeqCst);
            return Err(HandlerError::new("backend said no"));
        }
        Ok(self.transfer.then_some(PassiveReply::MiniProgram(
            MiniProgramReply::TransferCustomerService,
        )))
    }

    fn may_reply_passively(&self, _appid: &str, _message: &Message) -> bool {
        self.transfer
    }
}

struct TestApp {
    base: String,
    client: reqwest::Client,
    db: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics: Arc<wechat_push::metrics::Metrics>,
}

fn config(mode: Mode, format: Format, extra: &str) -> (Config, PathBuf) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wp-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let db = dir.join("inbox.db");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body = 65536
reply_budget = "1s"
[store]
url = "sqlite://{}"
[inbox]
workers = 4
backoff_base = "20ms"
backoff_max = "100ms"
max_attempts = 3
poll_interval = "50ms"
handler_timeout = "2s"
lease = "5s"
{extra}
[[apps]]
appid = "{APPID}"
kind = "mini_program"
token = "{TOKEN}"
encoding_aes_key = "{KEY}"
mode = "{mode}"
format = "{format}"
"#,
        db.display()
    );
    (Config::from_toml(&text).unwrap(), db)
}

async fn spawn_app(config: Config, handler: impl Handler) -> TestApp {
    let wechat_push::config::StoreLocation::Sqlite(db) = config.store.location().unwrap() else {
        panic!("the test's config names a SQLite store")
    };
    let app = Application::build(config, handler).await.unwrap();
    spawn_built(app, db)
}

fn spawn_built(app: Application, db: PathBuf) -> TestApp {
    let base = format!("http://{}", app.local_addr());
    let metrics = app.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        db,
        stop: Some(stop),
        done,
        metrics,
    }
}

impl TestApp {
    async fn post(&self, appid: &str, push: &SealedPush) -> reqwest::Response {
        Self::post_with(&self.client, &self.base, appid, push).await
    }

    async fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.db).unwrap()
    }

    async fn wait_for(&self, status: Status, n: usize) -> Vec<StoredPush> {
        let store = self.store().await;
        for _ in 0..200 {
            let found = store
                .list(ListFilter {
                    status: Some(status),
                    ..ListFilter::default()
                })
                .await
                .unwrap();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} pushes reached {status}");
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.await.unwrap().unwrap();
    }
}

fn text(msg_id: u64, content: &str) -> Fields {
    serde_json::from_value(serde_json::json!({
        "ToUserName": "gh_97417a04a28d",
        "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
        "CreateTime": super::create_time(),
        "MsgType": "text",
        "Content": content,
        "MsgId": msg_id,
    }))
    .unwrap()
}

fn seal(inner: &Fields, mode: Mode, format: Format) -> SealedPush {
    super::seal_fields(inner, mode, format, 42)
}

#[tokio::test]
async fn official_vectors_handshake_and_posts() {
    let (config, _) = config(Mode::Safe, Format::Json, "");
    // The vectors are from 2024: widen the replay window for them.
    let mut config = config;
    config.server.timestamp_window = Duration::from_secs(100 * 365 * 86400);
    config.apps[0].encoding_aes_key = Some(wechat_push::config::Secret::new("A".repeat(43)));
    config.apps[0].mode = Mode::Compatible;
    let app = spawn_app(config, Arc::new(Recorder::default())).await;

    let r = app
        .client
        .get(format!(
            "{}/wechat/{APPID}?signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "4375120948345356249");

    // Safe-mode JSON push, exactly as on WeChat's documentation page.
    let body = r#"{"ToUserName":"gh_97417a04a28d","Encrypt":"+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="}"#;
    let r = app
        .client
        .post(format!(
            "{}/wechat/{APPID}?signature=6c5c811b55cc85e0e1b54100749188c20beb3f5d&timestamp=1714112445&nonce=415670741&openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes&msg_signature=046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
            app.base
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "success");

    // Plaintext-mode POST of the documented debug_demo body.
    let plain = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714037059,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;
    let r = app
        .client
        .post(format!(
            "{}/wechat/{APPID}?signature=899cf89e464efb63f54ddac96b0a0a235f53aa78&timestamp=1714037059&nonce=486452656",
            app.base
        ))
        .body(plain)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let done = app.wait_for(Status::Done, 2).await;
    let keys: Vec<&str> = done.iter().map(|p| p.dedup_key.as_str()).collect();
    for prefix in [
        "e:o9AgO5Kd5ggOC-bXrbNODIiE3bGY:1714112445:debug_demo:",
        "e:o9AgO5Kd5ggOC-bXrbNODIiE3bGY:1714037059:debug_demo:",
    ] {
        assert!(keys.iter().any(|k| k.starts_with(prefix)), "{keys:?}");
    }
    app.stop().await;
}

/// Handles text that starts with "hi", and nothing else.
#[derive(Default)]
struct Greetings {
    calls: AtomicUsize,
}

impl Handler for Greetings {
    async fn handle(&self, _push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }

    fn handles(&self, _appid: &str, message: &Message) -> bool {
        matches!(&message.body, wechat_push::message::Body::Text(t) if t.content.starts_with("hi"))
    }
}

#[tokio::test]
async fn a_push_the_handler_does_not_take_is_stored_done_without_running_it() {
    let (config, _) = config(Mode::Safe, Format::Xml, "");
    let handler = Arc::new(Greetings::default());
    let app = spawn_app(config, handler.clone()).await;
    for (msg_id, content) in [(1, "weather?"), (2, "hi there")] {
        let push = seal(&text(msg_id, content), Mode::Safe, Format::Xml);
        let r = app.post(APPID, &push).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "success");
        // A retry of either is a duplicate of the stored push.
        let r = app.post(APPID, &push).await;
        assert_eq!(r.text().await.unwrap(), "success");
    }
    let done = app.wait_for(Status::Done, 2).await;
    let attempts = |id: &str| {
        done.iter()
            .find(|p| p.dedup_key.as_str().contains(id))
            .map(|p| (p.attempts, p.finished_at == Some(p.received_at)))
    };
    // Stored done as it arrived, with no attempt; the other handled once.
    assert_eq!(attempts(":1:"), Some((0, true)));
    assert_eq!(attempts(":2:").map(|a| a.0), Some(1));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        app.metrics.get(
            "wechat_push_handled_total",
            &[("appid", APPID), ("outcome", "done")]
        ),
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn every_mode_and_format_is_stored_and_handled() {
    for mode in [Mode::Plaintext, Mode::Compatible, Mode::Safe] {
        for format in [Format::Xml, Format::Json] {
            let (config, _) = config(mode, format, "");
            let recorder = Arc::new(Recorder::default());
            let app = spawn_app(config, recorder.clone()).await;
            let push = seal(&text(7, "你好 👋"), mode, format);
            let r = app.post(APPID, &push).await;
            assert_eq!(r.status(), 200, "{mode} {format}");
            assert_eq!(r.text().await.unwrap(), "success");
            let done = app.wait_for(Status::Done, 1).await;
            assert!(done[0].dedup_key.as_str().contains(":7:"));
            assert_eq!(done[0].kind, "text");
            assert_eq!(done[0].format, format);
            let stored: Value = match format {
                Format::Json => serde_json::from_slice(&done[0].body).unwrap(),
                Format::Xml => Value::Object(
                    wechat_push::protocol::wire::parse_xml(&done[0].body, &Default::default())
                        .unwrap(),
                ),
            };
            assert_eq!(stored["Content"], "你好 👋");
            assert_eq!(recorder.calls.load(Ordering::SeqCst), 1);
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn each_rejection_has_its_status() {
    let (config, _) = config(Mode::Safe, Format::Json, "");
    let app = spawn_app(config, Arc::new(Recorder::default())).await;
    let good = seal(&text(1, "hi"), Mode::Safe, Format::Json);

    // 404: unknown app.
    assert_eq!(app.post("wx0000000000000000", &good).await.status(), 404);

    // 401: bad msg_signature.
    let mut bad = good.clone();
    bad.query.msg_signature = Some("0".repeat(40));
    let r = app.post(APPID, &bad).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), "msg_signature mismatch");

    // 401: plaintext push to a safe-mode app.
    let plain = seal(&text(2, "hi"), Mode::Plaintext, Format::Json);
    assert_eq!(app.post(APPID, &plain).await.status(), 401);

    // 401: replay (timestamp outside the window), correctly signed.
    let old = crypto()
        .seal_push(
            &text(3, "hi"),
            Mode::Safe,
            Format::Json,
            &(now_secs() - 3600).to_string(),
            "n",
            &[0; 16],
            None,
        )
        .unwrap();
    let r = app.post(APPID, &old).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("outside the 300 s window"));

    // 400: signed and decrypted, but not a push.
    let mut junk = Fields::new();
    junk.insert("action".into(), "CheckContainerPath".into());
    let r = app
        .post(APPID, &seal(&junk, Mode::Safe, Format::Json))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "invalid message: missing field ToUserName"
    );

    // 400: malformed envelope.
    let mut broken = good.clone();
    broken.body = "{\"Encrypt\":".into();
    assert_eq!(app.post(APPID, &broken).await.status(), 400);

    // 413: over server.max_body.
    let mut huge = good.clone();
    huge.body = format!("{{\"Encrypt\":\"{}\"}}", "A".repeat(70_000));
    assert_eq!(app.post(APPID, &huge).await.status(), 413);

    // 401: GET handshake with a wrong signature.
    let r = app
        .client
        .get(format!(
            "{}/wechat/{APPID}?signature={}&timestamp=1&nonce=2&echostr=x",
            app.base,
            "0".repeat(40)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Nothing was stored, each refusal was counted.
    assert!(app
        .store()
        .await
        .list(ListFilter::default())
        .await
        .unwrap()
        .is_empty());
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in [
        "msg_signature_mismatch",
        "plaintext_refused",
        "stale_timestamp",
        "malformed_message",
        "too_large",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted:\n{metrics}"
        );
    }
    assert!(metrics
        .contains("wechat_push_rejections_total{appid=\"unknown\",reason=\"unknown_app\"} 1"));
    app.stop().await;
}

#[tokio::test]
async fn four_concurrent_copies_are_stored_and_handled_once() {
    let (config, _) = config(Mode::Safe, Format::Xml, "");
    let recorder = Arc::new(Recorder {
        delay: Duration::from_millis(50),
        ..Recorder::default()
    });
    let app = spawn_app(config, recorder.clone()).await;
    let push = seal(&text(6054768590064713728, "once"), Mode::Safe, Format::Xml);
    let answers = futures_all((0..4).map(|_| {
        let client = app.client.clone();
        let base = app.base.clone();
        let push = push.clone();
        async move {
            let t = TestApp::post_with(&client, &base, APPID, &push).await;
            (t.status().as_u16(), t.text().await.unwrap())
        }
    }))
    .await;
    assert!(
        answers.iter().all(|a| *a == (200, "success".to_owned())),
        "{answers:?}"
    );
    app.wait_for(Status::Done, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        app.store()
            .await
            .list(ListFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.metrics
            .get(wechat_push::metrics::DUPLICATES, &[("appid", APPID)]),
        3
    );
    app.stop().await;
}

impl TestApp {
    async fn post_with(
        client: &reqwest::Client,
        base: &str,
        appid: &str,
        push: &SealedPush,
    ) -> reqwest::Response {
        let q = wechat_push::simulate::query_pairs(&push.query);
        client
            .post(format!("{base}/wechat/{appid}"))
            .query(&q)
            .body(push.body.clone())
            .send()
            .await
            .unwrap()
    }
}

async fn futures_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn passive_reply_is_encrypted_and_replayed_for_duplicates() {
    for format in [Format::Xml, Format::Json] {
        let (config, _) = config(Mode::Safe, format, "");
        let recorder = Arc::new(Recorder {
            transfer: true,
            ..Recorder::default()
        });
        let app = spawn_app(config, recorder.clone()).await;
        let push = seal(&text(11, "人工"), Mode::Safe, format);
        for delivery in 0..2 {
            let r = app.post(APPID, &push).await;
            assert_eq!(r.status(), 200);
            let body = r.text().await.unwrap();
            let (envelope, plain) = crypto().open_reply(body.as_bytes()).unwrap();
            // Seconds, and the request's nonce, as WeChat requires.
            let ts = envelope["TimeStamp"]
                .as_i64()
                .unwrap_or_else(|| envelope["TimeStamp"].as_str().unwrap().parse().unwrap());
            assert!(
                (ts - now_secs()).abs() < 5,
                "TimeStamp {ts} is not in seconds"
            );
            assert_eq!(envelope["Nonce"], "nonce42");
            let reply =
                wechat_push::protocol::wire::parse(format, &plain, &Default::default()).unwrap();
            assert_eq!(
                reply["MsgType"], "transfer_customer_service",
                "delivery {delivery}"
            );
            assert_eq!(reply["ToUserName"], "o9AgO5Kd5ggOC-bXrbNODIiE3bGY");
            assert_eq!(reply["FromUserName"], "gh_97417a04a28d");
        }
        assert_eq!(recorder.calls.load(Ordering::SeqCst), 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_slow_handler_does_not_delay_the_answer_past_the_budget() {
    let (mut config, _) = config(Mode::Safe, Format::Json, "");
    config.server.reply_budget = Duration::from_millis(200);
    let recorder = Arc::new(Recorder {
        transfer: true,
        delay: Duration::from_millis(1500),
        ..Recorder::default()
    });
    let app = spawn_app(config, recorder.clone()).await;
    let started = std::time::Instant::now();
    let r = app
        .post(APPID, &seal(&text(12, "slow"), Mode::Safe, Format::Json))
        .await;
    let took = started.elapsed();
    assert_eq!(r.text().await.unwrap(), "success");
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    // The work went on, and finished.
    let done = app.wait_for(Status::Done, 1).await;
    assert_eq!(done[0].attempts, 1);
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 1);
    app.stop().await;
}

#[tokio::test]
async fn failing_handlers_are_retried_then_dead_then_retried_by_hand() {
    let (config, _) = config(Mode::Plaintext, Format::Xml, "");
    let recorder = Arc::new(Recorder {
        fail_first: AtomicUsize::new(100),
        ..Recorder::default()
    });
    let app = spawn_app(config, recorder.clone()).await;
    let r = app
        .post(
            APPID,
            &seal(&text(13, "fail"), Mode::Plaintext, Format::Xml),
        )
        .await;
    assert_eq!(r.text().await.unwrap(), "success");
    let dead = app.wait_for(Status::Dead, 1).await;
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].last_error.as_deref(), Some("backend said no"));
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 3);
    // Fixed: re-queue it by hand, and it is handled.
    recorder.fail_first.store(0, Ordering::SeqCst);
    let store = app.store().await;
    assert_eq!(
        store
            .retry("m:o9AgO5Kd5ggOC-bXrbNODIiE3bGY:13".into(), None, None)
            .await
            .unwrap()
            .pushes,
        1
    );
    app.wait_for(Status::Done, 1).await;
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 4);
    app.stop().await;
}

#[tokio::test]
async fn healthz_and_metrics() {
    let (config, _) = config(Mode::Safe, Format::Json, "");
    let app = spawn_app(config, Arc::new(Recorder::default())).await;
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.post(APPID, &seal(&text(20, "m"), Mode::Safe, Format::Json))
        .await;
    app.wait_for(Status::Done, 1).await;
    let m = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(&format!(
            "wechat_push_pushes_total{{appid=\"{APPID}\",kind=\"text\",outcome=\"stored\"}} 1"
        )),
        "{m}"
    );
    assert!(m.contains("wechat_push_ack_seconds_count 1"), "{m}");
    assert!(
        m.contains("wechat_push_inbox_depth{status=\"pending\"} 0"),
        "{m}"
    );
    // Done pushes are counted in the background, started by a scrape: a
    // later scrape shows them (a second apart with few pushes).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let later = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if later.contains("wechat_push_inbox_depth{status=\"done\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{later}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        m.contains(&format!(
            "wechat_push_handled_total{{appid=\"{APPID}\",outcome=\"done\"}} 1"
        )),
        "{m}"
    );
    app.stop().await;
}

/// A store that is down: the server must answer 503 so that WeChat retries.
struct DownStore;

fn down<T>() -> BoxFuture<'static, Result<T, StoreError>> {
    Box::pin(async { Err(StoreError::Closed) })
}

impl Inbox for DownStore {
    fn push(&self, _: PushId) -> BoxFuture<'_, Result<Option<StoredPush>, StoreError>> {
        down()
    }

    fn depth_by_app(
        &self,
    ) -> BoxFuture<'_, Result<Vec<(String, wechat_push::store::Depth)>, StoreError>> {
        down()
    }

    fn retry_dead(
        &self,
        _: Option<String>,
        _: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<Retried, StoreError>> {
        down()
    }

    fn arrivals(&self, _: Millis, _: i64) -> BoxFuture<'_, Result<Vec<(Millis, u64)>, StoreError>> {
        down()
    }

    fn kinds_since(
        &self,
        _: Millis,
    ) -> BoxFuture<'_, Result<Vec<wechat_push::store::KindCount>, StoreError>> {
        down()
    }

    fn insert(
        &self,
        _: Arc<NewPush>,
        _: Option<Millis>,
    ) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        down()
    }

    fn insert_handled(&self, _: Arc<NewPush>) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        down()
    }

    fn claim(
        &self,
        _: Millis,
        _: Millis,
        _: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        down()
    }

    fn complete(
        &self,
        _: Vec<(Claim, Option<Vec<u8>>)>,
        _: Millis,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        down()
    }

    fn fail(
        &self,
        _: Claim,
        _: String,
        _: Option<Millis>,
        _: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        down()
    }

    fn release(&self, _: Vec<Claim>) -> BoxFuture<'_, Result<(), StoreError>> {
        down()
    }

    fn list(&self, _: ListFilter) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        down()
    }

    fn get(&self, _: String) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        down()
    }

    fn retry(
        &self,
        _: String,
        _: Option<String>,
        _: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<Retried, StoreError>> {
        down()
    }

    fn prune(&self, _: Millis) -> BoxFuture<'_, Result<usize, StoreError>> {
        down()
    }

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>> {
        down()
    }

    fn depth(&self) -> BoxFuture<'_, Result<Depth, StoreError>> {
        down()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        down()
    }

    fn forget_reply(&self, _: Claim) -> BoxFuture<'_, Result<(), StoreError>> {
        down()
    }
}

impl TokenCache for DownStore {
    fn token(&self, _: String) -> BoxFuture<'_, Result<Option<CachedToken>, StoreError>> {
        down()
    }

    fn lease_token_refresh(
        &self,
        _: String,
        _: String,
        _: Millis,
        _: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        down()
    }

    fn put_token(&self, _: CachedToken, _: String) -> BoxFuture<'_, Result<(), StoreError>> {
        down()
    }

    fn invalidate_token(&self, _: String, _: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        down()
    }

    fn invalidate_token_value(
        &self,
        _: String,
        _: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        down()
    }
}

impl AnswerLog for DownStore {
    fn record_answers(
        &self,
        _: PushId,
        _: String,
        _: Vec<(String, String)>,
        _: Millis,
    ) -> BoxFuture<'_, Result<Vec<AnswerRecord>, StoreError>> {
        down()
    }

    fn take_answer(
        &self,
        _: wechat_push::store::AnswerId,
        _: wechat_push::store::AnswerStatus,
        _: String,
        _: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        down()
    }
    fn mark_answer(
        &self,
        _: wechat_push::store::AnswerId,
        _: wechat_push::store::AnswerStatus,
        _: Option<String>,
        _: Millis,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        down()
    }

    fn answers(&self, _: PushId) -> BoxFuture<'_, Result<Vec<AnswerRecord>, StoreError>> {
        down()
    }
}

impl DeliveryLog for DownStore {
    fn dead_deliveries(
        &self,
        _: Option<String>,
        _: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredPush)>, StoreError>> {
        down()
    }

    fn retry_delivery(
        &self,
        _: wechat_push::store::DeliveryId,
        _: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        down()
    }

    fn add_deliveries(
        &self,
        _: PushId,
        _: Vec<(String, Millis)>,
        _: Millis,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        down()
    }

    fn claim_deliveries(
        &self,
        _: String,
        _: Option<PushId>,
        _: Millis,
        _: Millis,
        _: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredPush)>, StoreError>> {
        down()
    }

    fn finish_delivery(
        &self,
        _: DeliveryClaim,
        _: DeliveryOutcome,
        _: i64,
        _: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        down()
    }

    fn delivery_attempts(
        &self,
        _: PushId,
    ) -> BoxFuture<'_, Result<Vec<wechat_push::store::DeliveryAttempt>, StoreError>> {
        down()
    }

    fn deliveries(&self, _: PushId) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        down()
    }

    fn delivery_backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, StoreError>> {
        down()
    }

    fn bury_unknown_targets(
        &self,
        _: Vec<String>,
        _: Millis,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        down()
    }
}

#[tokio::test]
async fn an_unavailable_store_gets_503_so_wechat_retries() {
    let (config, db) = config(Mode::Safe, Format::Json, "");
    let app =
        Application::build_with_store(config, Arc::new(DownStore), Arc::new(Recorder::default()))
            .await
            .unwrap();
    let app = spawn_built(app, db);
    let r = app
        .post(APPID, &seal(&text(30, "x"), Mode::Safe, Format::Json))
        .await;
    assert_eq!(r.status(), 503);
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_one_store_store_and_handle_each_push_once() {
    let (config_a, db) = config(Mode::Safe, Format::Json, "");
    // The same config: the same SQLite file.
    let config_b = config_a.clone();
    let recorder = Arc::new(Recorder::default());
    let a = spawn_app(config_a, recorder.clone()).await;
    let b = spawn_app(config_b, recorder.clone()).await;
    assert_eq!(a.db, db);
    // Each push reaches both instances at once, as WeChat's retries may
    // when a load balancer spreads them.
    let mut answers = Vec::new();
    for msg_id in 0..20u64 {
        let push = seal(&text(1000 + msg_id, "shared"), Mode::Safe, Format::Json);
        let (ra, rb) = tokio::join!(a.post(APPID, &push), b.post(APPID, &push));
        answers.push((ra.status().as_u16(), rb.status().as_u16()));
    }
    assert!(
        answers.iter().all(|&(x, y)| x == 200 && y == 200),
        "{answers:?}"
    );
    a.wait_for(Status::Done, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 20);
    assert_eq!(
        a.store()
            .await
            .list(ListFilter::default())
            .await
            .unwrap()
            .len(),
        20
    );
    let duplicates = a
        .metrics
        .get(wechat_push::metrics::DUPLICATES, &[("appid", APPID)])
        + b.metrics
            .get(wechat_push::metrics::DUPLICATES, &[("appid", APPID)]);
    assert_eq!(duplicates, 20);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_push_over_the_default_limit_accepted_under_a_larger_max_body_is_handled_not_dead() {
    let (mut config, _) = config(Mode::Plaintext, Format::Json, "");
    config.server.max_body = 2 << 20;
    // Stored by one instance that handles nothing...
    config.inbox.workers = 0;
    let storing = spawn_app(config.clone(), Arc::new(Recorder::default())).await;
    // About 1.25 MB in fields of 250 KB each: over the default 1 MiB body
    // limit, within the default field limit.
    let mut inner = text(40, "big");
    for name in ["A", "B", "C", "D", "E"] {
        inner.insert(name.into(), "x".repeat(250_000).into());
    }
    let r = storing
        .post(APPID, &seal(&inner, Mode::Plaintext, Format::Json))
        .await;
    assert_eq!(r.status(), 200);
    storing.stop().await;
    // ...and handled by another, which reads the stored body back.
    config.inbox.workers = 4;
    let recorder = Arc::new(Recorder::default());
    let handling = spawn_app(config, recorder.clone()).await;
    let done = handling.wait_for(Status::Done, 1).await;
    assert_eq!(done[0].last_error, None);
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 1);
    handling.stop().await;
}

#[tokio::test]
async fn shutdown_gives_back_a_push_whose_handler_outlives_the_grace_period() {
    let (mut config, _) = config(Mode::Safe, Format::Json, "");
    config.inbox.handler_timeout = Duration::from_secs(30);
    config.inbox.lease = Duration::from_secs(60);
    config.server.shutdown_grace = Duration::from_millis(500);
    // Far longer than the grace.
    let recorder = Arc::new(Recorder {
        delay: Duration::from_secs(60),
        ..Recorder::default()
    });
    let app = spawn_app(config, recorder.clone()).await;
    let r = app
        .post(APPID, &seal(&text(15, "stuck"), Mode::Safe, Format::Json))
        .await;
    assert_eq!(r.text().await.unwrap(), "success");
    for _ in 0..100 {
        if recorder.calls.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 1, "handling started");
    let store = app.store().await;
    let started = std::time::Instant::now();
    app.stop().await;
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(1500)).contains(&took),
        "stopped after {took:?}, not after server.shutdown_grace (one deadline for connections and handlers)"
    );
    // Back in the inbox, due at once, its attempt not counted: the next
    // process takes it up without waiting for the lease.
    let p = &store
        .get("m:o9AgO5Kd5ggOC-bXrbNODIiE3bGY:15".into())
        .await
        .unwrap()[0];
    assert_eq!((p.status, p.attempts), (Status::Pending, 0));
    assert_eq!(
        store.claim(Millis(0), Millis(1), 10).await.unwrap().len(),
        1
    );
}
