//! The web console through the real binary: sign-in, sessions and CSRF on
//! every page and form, the pages showing what was stored, and retries.

use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use wechat_push::message::{DedupKey, OpenId};
use wechat_push::store::{Inbox, Inserted, Millis, NewPush, SqliteStore};
use wechat_push::Format;

use super::serve::{send_text, start, write_config, Server};
use super::temp_dir;

const PASSWORD: &str = "correct horse battery";

/// A browser's view of the console: cookies kept by hand, redirects not
/// followed (they are what is tested).
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(admin: &str) -> Self {
        Browser {
            client: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{admin}"),
            cookies: Vec::new(),
        }
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> (u16, String, Option<String>) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let location = r
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (r.status().as_u16(), r.text().await.unwrap(), location)
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String, Option<String>) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let location = r
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (r.status().as_u16(), r.text().await.unwrap(), location)
    }
}

/// The value of the hidden `csrf` input in `page`.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("no csrf input") + 19;
    page[at..at + 64].to_owned()
}

/// A server with the console on a loopback admin listener, `extra` added
/// to the config.
fn console_server(name: &str, password: Option<&str>, extra: &str) -> (Server, std::path::PathBuf) {
    let dir = temp_dir(name);
    let config = write_config(&dir, 2);
    let console = match password {
        Some(p) => format!("[console]\npassword = \"{p}\"\n"),
        None => "[console]\n".to_owned(),
    };
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n",
        1,
    ) + &console
        + extra;
    std::fs::write(&config, text).unwrap();
    (start(&config, &[]), dir)
}

async fn signed_in(server: &Server) -> Browser {
    let mut b = Browser::new(server.admin.as_deref().unwrap());
    let (status, page, _) = b.get("/console/sign-in").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    let (status, _, location) = b
        .post(
            "/console/sign-in",
            &[("csrf", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!((status, location.as_deref()), (303, Some("/console")));
    b
}

/// Every page needs a session, every form the session's CSRF token; a
/// wrong password is refused slowly and the password is never logged.
#[tokio::test(flavor = "multi_thread")]
async fn every_page_needs_a_session_and_every_form_its_csrf_token() {
    let (server, _dir) = console_server("console-auth", Some(PASSWORD), "");
    let admin = server.admin.clone().unwrap();
    // The start-up line says where the console is.
    let listening = server.start_logs.last().unwrap();
    assert!(
        listening.contains(&format!("\"console\":\"http://{admin}/console\"")),
        "{listening}"
    );
    let mut b = Browser::new(&admin);
    for path in [
        "/console",
        "/console/inbox",
        "/console/dead",
        "/console/pushes/1",
    ] {
        let (status, _, location) = b.get(path).await;
        assert_eq!(
            (status, location.as_deref()),
            (303, Some("/console/sign-in")),
            "{path}"
        );
    }
    for path in [
        "/console/dead/retry",
        "/console/pushes/1/retry",
        "/console/deliveries/1/retry",
        "/console/sign-out",
    ] {
        assert_eq!(b.post(path, &[("csrf", "x")]).await.0, 403, "{path}");
    }
    // The console is not on the push port.
    let public = reqwest::get(format!("http://{}/console", server.addr))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);

    // Sign-in: its form's token must come back with its cookie.
    let (_, page, _) = b.get("/console/sign-in").await;
    let csrf = csrf_of(&page);
    let mut stranger = Browser::new(&admin);
    assert_eq!(
        stranger
            .post(
                "/console/sign-in",
                &[("csrf", &csrf), ("password", PASSWORD)]
            )
            .await
            .0,
        403
    );
    let started = Instant::now();
    let (status, page, _) = b
        .post(
            "/console/sign-in",
            &[("csrf", &csrf), ("password", "hunter2-guess")],
        )
        .await;
    assert_eq!(status, 401);
    assert!(page.contains("Wrong password"));
    assert!(started.elapsed() >= Duration::from_millis(900));

    let csrf = csrf_of(&page);
    let r = b
        .client
        .post(format!("{}/console/sign-in", b.base))
        .header(COOKIE, b.cookie_header())
        .header("x-forwarded-proto", "https")
        .form(&[("csrf", csrf.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("wp_console="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    b.keep(&r);
    let (status, page, _) = b.get("/console").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Overview"));
    let good = csrf_of(&page);

    // A form posted from another site is refused, even with the token.
    let r = b
        .client
        .post(format!("{}/console/dead/retry", b.base))
        .header(COOKIE, b.cookie_header())
        .header("origin", "http://evil.example")
        .form(&[("csrf", good.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No other site may frame a page or load anything into it.
    let r = b
        .client
        .get(format!("{}/console", b.base))
        .header(COOKIE, b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));

    // A form with another token is refused, with the session's it is taken.
    assert_eq!(
        b.post("/console/dead/retry", &[("csrf", "0".repeat(64).as_str())])
            .await
            .0,
        403
    );
    let (status, _, location) = b.post("/console/dead/retry", &[("csrf", &good)]).await;
    assert_eq!(status, 303);
    assert!(location
        .unwrap()
        .starts_with("/console/dead?requeued_pushes=0"));

    // Signed out, the session is gone.
    assert_eq!(b.post("/console/sign-out", &[("csrf", &good)]).await.0, 303);
    assert_eq!(b.get("/console").await.0, 303);

    let logs = server.drain_logs().join("\n");
    assert!(logs.contains("console: signed in"), "{logs}");
    assert!(logs.contains("a sign-in with a wrong password"), "{logs}");
    assert!(
        !logs.contains(PASSWORD) && !logs.contains("hunter2-guess"),
        "{logs}"
    );
}

/// Without a password (the admin listener on loopback) a session is
/// opened on the first visit, and forms still need its token; a password
/// is required when the admin listener is not on loopback.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_password_only_on_loopback_and_forms_still_need_the_token() {
    let (server, dir) = console_server("console-open", None, "");
    // `config check` shows the console's settings, defaults included.
    let out = std::process::Command::new(super::bin())
        .args(["config", "check", "-c"])
        .arg(dir.join("wechat-push.toml"))
        .output()
        .unwrap();
    let shown = super::text(&out);
    assert!(
        shown.contains("session_ttl = \"12h\"") && shown.contains("password = \"[none: loopback"),
        "{shown}"
    );
    let mut b = Browser::new(server.admin.as_deref().unwrap());
    let (status, page, _) = b.get("/console").await;
    assert_eq!(status, 200);
    assert!(!page.contains("Sign out"));
    assert!(b.cookies.iter().any(|(n, _)| n == "wp_console"));
    // The same session on the next page (a form's token is the session's).
    let (_, page, _) = b.get("/console/dead").await;
    assert_eq!(b.cookies.len(), 1);
    assert_eq!(
        b.post("/console/dead/retry", &[("csrf", "nope")]).await.0,
        403
    );
    let mut stranger = Browser::new(server.admin.as_deref().unwrap());
    assert_eq!(
        stranger
            .post("/console/dead/retry", &[("csrf", &csrf_of(&page))])
            .await
            .0,
        403
    );
    assert_eq!(
        b.post("/console/dead/retry", &[("csrf", &csrf_of(&page))])
            .await
            .0,
        303
    );
    // Without a password, only requests made directly to a loopback name:
    // not a name re-pointed at 127.0.0.1, not through a proxy.
    let url = format!("{}/console", b.base);
    let r = b
        .client
        .get(&url)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .client
        .get(&url)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .client
        .get(&url)
        .header("host", "localhost:9090")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let dir = temp_dir("console-exposed");
    let config = write_config(&dir, 0);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        "[server]\nadmin_listen = \"0.0.0.0:0\"\n",
        1,
    ) + "[console]\n";
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(super::bin())
        .args(["serve", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let shown = super::text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains(
            "console.password: is needed unless server.admin_listen is a loopback address"
        ),
        "{shown}"
    );
}

/// What `simulate`-like pushes put in the store shows on the pages: the
/// inbox (filtered, searched, Chinese and emoji intact), a push's fields
/// and deliveries; a dead push and a dead delivery are retried from them.
#[tokio::test(flavor = "multi_thread")]
async fn pushes_show_and_dead_ones_are_retried_from_the_console() {
    // A forward target that refuses every connection: deliveries die. Its
    // URL holds credentials, which no page may show.
    let extra = "[[apps.forward]]\nurl = \"http://hook:s3cretpw@127.0.0.1:9/hook?token=t0ken\"\n\
                 secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
                 retry_schedule = [\"50ms\"]\n";
    let (server, dir) = console_server("console-pages", Some(PASSWORD), extra);
    // A dead push, stored as a failed handler leaves one.
    let store = SqliteStore::open(&dir.join("data/inbox.db")).unwrap();
    let dead = std::sync::Arc::new(NewPush {
        appid: super::APPID.into(),
        dedup_key: DedupKey::from_stored("m:oDead:1:abc"),
        kind: "text".into(),
        from_user: OpenId::new("oDead"),
        create_time: 1,
        format: Format::Json,
        body: br#"{"MsgType":"text","Content":"stuck","FromUserName":"oDead","ToUserName":"gh_1","CreateTime":1,"MsgId":1}"#.to_vec(),
        received_at_ms: Millis(1_000),
    });
    let Inserted::New(claim) = store.insert(dead, Some(Millis(i64::MAX))).await.unwrap() else {
        panic!()
    };
    assert!(store
        .fail(claim, "handler said no".into(), None, Millis(2_000))
        .await
        .unwrap());
    drop(store);

    for (id, text) in [
        (101, "你好 👋 order 42"),
        (102, "hello there"),
        (103, "你好 again"),
        (104, "<script>alert(1)</script>"),
    ] {
        assert_eq!(send_text(&server.addr, id, text).await.0, 200);
    }
    let mut b = signed_in(&server).await;
    let (status, page, _) = b.get("/console/inbox").await;
    assert_eq!(status, 200);
    for text in [
        "你好 👋 order 42",
        "hello there",
        "你好 again",
        "oUser101",
        "stuck",
    ] {
        assert!(page.contains(text), "{text} not in the inbox");
    }
    // What users write is shown, never run.
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<script>"));
    let (_, page, _) = b.get("/console/inbox?q=%E4%BD%A0%E5%A5%BD").await;
    assert!(
        page.contains("你好 👋") && page.contains("你好 again") && !page.contains("hello there")
    );
    let (_, page, _) = b.get("/console/inbox?openid=oUser102").await;
    assert!(page.contains("hello there") && !page.contains("你好"));
    let (status, page, _) = b.get("/console/inbox?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(page.contains("is not a time"));
    // By app, kind, time span and page: (query, shown, not shown).
    for (query, shown, hidden) in [
        (format!("app={}", super::APPID), Some("hello there"), None),
        (
            "app=wx00000000000000ff".to_owned(),
            None,
            Some("hello there"),
        ),
        ("kind=text".to_owned(), Some("hello there"), None),
        ("kind=event".to_owned(), None, Some("hello there")),
        (
            "since=2000-01-01T00:00".to_owned(),
            Some("hello there"),
            Some("stuck"),
        ),
        (
            "since=2999-01-01T00:00".to_owned(),
            None,
            Some("hello there"),
        ),
        (
            "until=2000-01-01T00:00".to_owned(),
            Some("stuck"),
            Some("hello there"),
        ),
        // The dead push was stored first (id 1): the page before id 2.
        ("before=2".to_owned(), Some("stuck"), Some("hello there")),
    ] {
        let (status, page, _) = b.get(&format!("/console/inbox?{query}")).await;
        assert_eq!(status, 200, "{query}");
        if let Some(shown) = shown {
            assert!(page.contains(shown), "{shown} not shown for {query}");
        }
        if let Some(hidden) = hidden {
            assert!(!page.contains(hidden), "{hidden} shown for {query}");
        }
    }

    // Each push's deliveries die (two attempts, 50 ms apart).
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (_, page, _) = b.get("/console/dead").await;
        if page.matches("/console/deliveries/").count() >= 4 {
            break page;
        }
        assert!(Instant::now() < deadline, "deliveries never died:\n{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.contains("handler said no"));
    assert!(page.contains("127.0.0.1:9/hook"));
    let csrf = csrf_of(&page);

    // A push's page: its fields and its dead delivery, retried from there.
    let (_, inbox, _) = b.get("/console/inbox?openid=oUser101").await;
    let at = inbox.find("/console/pushes/").unwrap();
    let id: String = inbox[at + 16..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let (status, page, _) = b.get(&format!("/console/pushes/{id}")).await;
    assert_eq!(status, 200);
    for shown in ["Content", "你好 👋 order 42", "MsgId", "101", "dead"] {
        assert!(page.contains(shown), "{shown} not on the push's page");
    }
    // Each attempt of the delivery: the first retried, the second dead.
    let attempts = page
        .split("<tr class=\"attempts\">")
        .nth(1)
        .expect("no attempts");
    let retry = attempts.find("badge retry").expect("no retried attempt");
    let dead = attempts.find("badge dead").expect("no dead attempt");
    assert!(retry < dead && attempts.contains(" ms"), "{attempts}");
    let at = page.find("/console/deliveries/").unwrap();
    let delivery: String = page[at + 20..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let (status, _, location) = b
        .post(
            &format!("/console/deliveries/{delivery}/retry"),
            &[("csrf", &csrf), ("back", &format!("/console/pushes/{id}"))],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        location.unwrap(),
        format!("/console/pushes/{id}?requeued_pushes=0&requeued_deliveries=1")
    );
    // Somewhere else is never where a retry sends the browser.
    let (_, _, location) = b
        .post(
            &format!("/console/deliveries/{delivery}/retry"),
            &[("csrf", &csrf), ("back", "https://evil.example/")],
        )
        .await;
    assert!(location.unwrap().starts_with("/console/dead?"));

    // The dead push, retried: handled again (no handler: done).
    let (_, dead_page, _) = b.get("/console/inbox?status=dead").await;
    let at = dead_page.find("/console/pushes/").unwrap();
    let dead_id: String = dead_page[at + 16..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let (status, _, location) = b
        .post(
            &format!("/console/pushes/{dead_id}/retry"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 303);
    assert!(location.unwrap().contains("requeued_pushes=1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page, _) = b.get(&format!("/console/pushes/{dead_id}")).await;
        if page.contains("badge done") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retried push was never handled:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Retry all: every dead delivery left is re-queued, and counted.
    let (_, page, location) = b
        .post("/console/dead/retry", &[("csrf", &csrf), ("app", "")])
        .await;
    let location = location.unwrap_or_else(|| panic!("{page}"));
    assert!(location.starts_with("/console/dead?requeued_pushes=0&requeued_deliveries="));
    let requeued: u32 = location.rsplit('=').next().unwrap().parse().unwrap();
    assert!(requeued >= 2, "{location}");
    let (_, page, _) = b.get(&location).await;
    assert!(page.contains(&format!("Re-queued 0 pushes and {requeued} deliveries")));

    // No secret on any page: the target's password and query, its webhook
    // secret, the app's Token and EncodingAESKey.
    for path in [
        "/console".to_owned(),
        "/console/inbox".to_owned(),
        "/console/dead".to_owned(),
        format!("/console/pushes/{id}"),
        "/console/conversations".to_owned(),
        format!("/console/conversations/{}/oUser101", super::APPID),
    ] {
        let (status, page, _) = b.get(&path).await;
        assert_eq!(status, 200, "{path}");
        for secret in [
            "s3cretpw",
            "t0ken",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "AAAAA",
            super::KEY,
        ] {
            assert!(!page.contains(secret), "{secret} shown on {path}");
        }
    }

    // The overview counts what came in, and charts it: pushes per minute
    // (a bar for the minute they came in) and this host's latency.
    let (status, page, _) = b.get("/console").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(super::APPID) && page.contains("text"),
        "{page}"
    );
    assert!(
        page.contains("Pushes per minute") && page.contains("class=\"bar\""),
        "{page}"
    );
    let points = page
        .split("polyline class=\"p50\" points=\"")
        .nth(1)
        .unwrap();
    assert!(
        points.starts_with(|c: char| c.is_ascii_digit()),
        "no latency point: {page}"
    );
    let (status, page, _) = b.get("/console?span=day").await;
    assert_eq!(status, 200);
    assert!(page.contains("Pushes per 15 minutes") && page.contains("class=\"bar\""));
}

/// A conversation shows the user's messages and every answer, in order;
/// an answer by hand reaches WeChat's API (mock-wechat) once however often
/// its form is posted; past the 48-hour window the box is closed and an
/// answer posted anyway is refused before WeChat is asked.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_is_answered_by_hand_within_the_48_hour_window_only() {
    use super::serve::{mock_json, spawn_mock, wait_sent, write_answering_config};
    let mock = spawn_mock().await;
    let dir = temp_dir("console-answer");
    let config = write_answering_config(&dir, 2, &mock);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n",
        1,
    ) + &format!("[console]\npassword = \"{PASSWORD}\"\n");
    std::fs::write(&config, text).unwrap();
    // A user last heard from 49 hours ago.
    let store = SqliteStore::open(&dir.join("data/inbox.db")).unwrap();
    let old = wechat_push::clock::now_ms() - Duration::from_secs(49 * 3600);
    store
        .insert(
            std::sync::Arc::new(NewPush {
                appid: super::APPID.into(),
                dedup_key: DedupKey::from_stored("m:oOld:5:abc"),
                kind: "text".into(),
                from_user: OpenId::new("oOld"),
                create_time: 1,
                format: Format::Json,
                body: br#"{"MsgType":"text","Content":"anyone there?","FromUserName":"oOld","ToUserName":"gh_1","CreateTime":1,"MsgId":5}"#.to_vec(),
                received_at_ms: old,
            }),
            Some(Millis(0)),
        )
        .await
        .unwrap();
    drop(store);
    let server = start(&config, &[]);

    assert_eq!(send_text(&server.addr, 201, "hello 你好").await.0, 200);
    wait_sent(&mock, 1).await;
    let mut b = signed_in(&server).await;
    let path = format!("/console/conversations/{}/oUser201", super::APPID);
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let (status, page, _) = b.get(&path).await;
        assert_eq!(status, 200, "{page}");
        if page.contains("Hi from wechat-push") && page.contains("badge sent") {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the rule's answer never showed:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(page.find("hello 你好").unwrap() < page.find("Hi from wechat-push").unwrap());
    assert!(page.contains("Open until"));
    let (_, listing, _) = b.get("/console/conversations").await;
    assert!(listing.contains("oUser201") && listing.contains("oOld"));

    // Answered by hand; the same form posted twice is one answer, even
    // when the user wrote again in between.
    let csrf = csrf_of(&page);
    let answer_id = hidden(&page, "answer_id");
    let push_id = hidden(&page, "push_id");
    for round in 0..2 {
        let (status, _, location) = b
            .post(
                &format!("{path}/answer"),
                &[
                    ("csrf", &csrf),
                    ("answer_id", &answer_id),
                    ("push_id", &push_id),
                    ("text", "我们马上处理 🙏"),
                ],
            )
            .await;
        assert_eq!(status, 303);
        assert!(location.unwrap().ends_with("?answered=1"));
        if round == 0 {
            // Not "hello": no rule answers it.
            assert_eq!(send_text_as(&server.addr, 201, 2011, "还在吗").await, 200);
        }
    }
    let sent = wait_sent(&mock, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_now = mock_json(&format!("{mock}/_mock/sent")).await;
    assert_eq!(sent_now.as_array().unwrap().len(), 2, "{sent_now}");
    let manual = &sent.as_array().unwrap()[1];
    assert_eq!(manual["touser"], "oUser201", "{manual}");
    assert_eq!(
        manual["body"]["text"]["content"], "我们马上处理 🙏",
        "{manual}"
    );
    let (_, page, _) = b.get(&path).await;
    assert!(
        page.contains("我们马上处理 🙏") && page.contains("console:"),
        "{page}"
    );
    // Without the session's token, nothing is sent; nor under a push of
    // another conversation.
    assert_eq!(
        b.post(
            &format!("{path}/answer"),
            &[
                ("csrf", "x"),
                ("answer_id", &"a".repeat(64)),
                ("push_id", &push_id),
                ("text", "forged")
            ],
        )
        .await
        .0,
        403
    );

    // WeChat busy: the answer is recorded, not sent, and the page offers
    // to send the same answer again, which then goes once.
    reqwest::Client::new()
        .post(format!("{mock}/_mock/faults"))
        // Busy four times: the API client's own three retries too.
        .json(
            &serde_json::json!({"path": "/cgi-bin/message/custom/send", "errcode": -1, "times": 4}),
        )
        .send()
        .await
        .unwrap();
    let (_, page, _) = b.get(&path).await;
    let (status, _, location) = b
        .post(
            &format!("{path}/answer"),
            &[
                ("csrf", &csrf),
                ("answer_id", &hidden(&page, "answer_id")),
                ("push_id", &hidden(&page, "push_id")),
                ("text", "稍等"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    assert!(location.contains("error=not_sent"), "{location}");
    let (_, page, _) = b.get(&location).await;
    assert!(page.contains("Send the recorded answer again"), "{page}");
    assert!(
        page.contains("稍等") && page.contains("badge pending"),
        "{page}"
    );
    let (status, _, location) = b
        .post(
            &format!("{path}/answer"),
            &[
                ("csrf", &csrf),
                ("answer_id", &hidden(&page, "answer_id")),
                ("push_id", &hidden(&page, "push_id")),
                ("text", &hidden(&page, "text")),
            ],
        )
        .await;
    assert_eq!(
        (
            status,
            location.as_deref().map(|l| l.ends_with("?answered=1"))
        ),
        (303, Some(true))
    );
    let sent = wait_sent(&mock, 3).await;
    assert_eq!(
        sent.as_array().unwrap()[2]["body"]["text"]["content"],
        "稍等"
    );

    // The user heard from 49 hours ago: the box is closed, and a post is refused.
    let old_path = format!("/console/conversations/{}/oOld", super::APPID);
    let (_, page, _) = b.get(&old_path).await;
    assert!(page.contains("48-hour window has passed"), "{page}");
    assert!(page.contains("disabled"), "{page}");
    let (status, _, location) = b
        .post(
            &format!("{old_path}/answer"),
            &[
                ("csrf", &csrf),
                ("answer_id", &"b".repeat(64)),
                ("push_id", &hidden(&page, "push_id")),
                ("text", "late"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    assert!(location.ends_with("?error=window"), "{location}");
    let (_, page, _) = b.get(&location).await;
    assert!(
        page.contains("Not sent: WeChat&#39;s 48-hour window")
            || page.contains("Not sent: WeChat's 48-hour window"),
        "{page}"
    );
    let sent_now = mock_json(&format!("{mock}/_mock/sent")).await;
    assert_eq!(sent_now.as_array().unwrap().len(), 3, "{sent_now}");
}

/// The value of the hidden input `name` in `page`.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[at..].split('"').next().unwrap().to_owned()
}

/// A text push from user `oUser<user>` with MsgId `msg_id`.
async fn send_text_as(addr: &str, user: u64, msg_id: u64, content: &str) -> u16 {
    let from = format!("oUser{user}");
    super::serve::try_send_text_from(
        &reqwest::Client::new(),
        addr,
        "AAAAA",
        &from,
        msg_id,
        content,
    )
    .await
    .unwrap()
    .0
}

/// A push shows on a live page without a reload: the page's event stream
/// sends its row (the page's filter applied); an open stream does not hold
/// a shutdown up.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_push_reaches_an_open_page_and_an_open_stream_does_not_hold_shutdown() {
    let (mut server, _dir) = console_server("console-live", Some(PASSWORD), "");
    assert_eq!(send_text(&server.addr, 301, "before the page").await.0, 200);
    assert_eq!(
        send_text(&server.addr, 300, "live, on the page already")
            .await
            .0,
        200
    );
    let mut b = signed_in(&server).await;
    let (_, page, _) = b.get("/console/inbox?q=live").await;
    let at = page.find("data-live=\"").unwrap() + 11;
    let live = page[at..].split('"').next().unwrap().replace("&amp;", "&");
    assert!(live.starts_with("/console/events?q=live&after="), "{live}");
    let mut stream = b
        .client
        .get(format!("{}{live}", b.base))
        .header(COOKIE, b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(
        send_text(&server.addr, 302, "not for this page").await.0,
        200
    );
    assert_eq!(send_text(&server.addr, 303, "live 直播 🎥").await.0, 200);
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.contains("live 直播 🎥") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no push event in 10 s: {got}"))
            .unwrap()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(got.contains("event: push"), "{got}");
    assert!(
        !got.contains("not for this page")
            && !got.contains("before the page")
            && !got.contains("on the page already"),
        "{got}"
    );
    // Without a session, no stream.
    let r = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{live}", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    // The overview counts each push as it arrives (its counts are reused
    // for a few seconds, and brought up to date with what came since).
    let last_hour = |page: &str| -> u64 {
        let row = page
            .split(&format!(">{}</a></td>", super::APPID))
            .nth(1)
            .unwrap_or_else(|| panic!("no app row: {page}"));
        row.split("class=\"num\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (_, page, _) = b.get("/console").await;
    let before = last_hour(&page);
    assert_eq!(before, 4, "{page}");
    assert_eq!(send_text(&server.addr, 304, "one more").await.0, 200);
    let (_, page, _) = b.get("/console").await;
    assert_eq!(last_hour(&page), before + 1);

    // SIGTERM with the stream open: the server is gone well before its
    // 10 s grace.
    let started = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(8);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "an open stream held the shutdown up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(stream);
}

/// A reload (SIGHUP) reaches the console: apps added show in its filters,
/// a new password signs everyone out and is the one that signs in, and a
/// forward target removed is not retried into (its dead deliveries stay
/// dead: nothing would deliver them).
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_reaches_the_console_and_deliveries_to_removed_targets_stay_dead() {
    let target = "[[apps.forward]]\nurl = \"http://127.0.0.1:9/hook\"\n\
                  secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_schedule = [\"50ms\"]\n";
    let (server, dir) = console_server("console-reload", Some(PASSWORD), target);
    assert_eq!(
        send_text(&server.addr, 401, "to a target that is gone")
            .await
            .0,
        200
    );
    let mut b = signed_in(&server).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b
        .get("/console/dead")
        .await
        .1
        .contains("/console/deliveries/")
    {
        assert!(Instant::now() < deadline, "the delivery never died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, page, _) = b.get("/console/inbox").await;
    assert!(!page.contains("wxadded00000001"));
    let config = dir.join("wechat-push.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replacen(target, "", 1)
        .replacen(
            "[console]\npassword = \"correct horse battery\"",
            "[[apps]]\nappid = \"wxadded00000001\"\nkind = \"mini_program\"\ntoken = \"BBBBB\"\n\
             mode = \"plaintext\"\n[console]\npassword = \"battery staple horse\"",
            1,
        );
    std::fs::write(&config, text).unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    server.wait_log("configuration reloaded");
    // Signed out by the new password; the new one signs in.
    assert_eq!(b.get("/console").await.0, 303);
    let mut b = Browser::new(server.admin.as_deref().unwrap());
    let (_, page, _) = b.get("/console/sign-in").await;
    let csrf = csrf_of(&page);
    let (status, _, _) = b
        .post(
            "/console/sign-in",
            &[("csrf", &csrf), ("password", "battery staple horse")],
        )
        .await;
    assert_eq!(status, 303);
    let (_, page, _) = b.get("/console/inbox").await;
    assert!(page.contains("<option value=\"wxadded00000001\""), "{page}");
    let (_, page, _) = b.get("/console/dead").await;
    let (status, _, location) = b
        .post("/console/dead/retry", &[("csrf", &csrf_of(&page))])
        .await;
    assert_eq!(status, 303);
    assert!(
        location
            .as_deref()
            .unwrap()
            .contains("requeued_deliveries=0"),
        "{location:?}"
    );
    assert!(b
        .get("/console/dead")
        .await
        .1
        .contains("/console/deliveries/"));
}
