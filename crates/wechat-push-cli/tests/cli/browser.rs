//! The console in real browsers: headless Chromium through chromedriver
//! and headless Firefox through geckodriver (WebDriver). Run with
//! `WP_TEST_BROWSER=1` (Chromium) and `WP_TEST_FIREFOX=1` (Firefox);
//! `.ci/run` sets them after making sure each browser runs. Without them
//! the tests pass with a note; with them, a browser that does not start
//! fails its test.
//!
//! Screenshots of each page are saved under
//! `target/console-screenshots/` (the README's come from Chromium's).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use super::serve::{mock_json, spawn_mock, start, wait_sent, write_answering_config};
use super::temp_dir;

const PASSWORD: &str = "correct horse battery";

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where screenshots go: `target/console-screenshots/`.
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Which browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chromium,
    Firefox,
}

impl Kind {
    /// The screenshots' name prefix: none for Chromium (the README's).
    fn prefix(self) -> &'static str {
        match self {
            Kind::Chromium => "",
            Kind::Firefox => "firefox-",
        }
    }
}

async fn shoot(browser: &Client, kind: Kind, name: &str) {
    let png = browser.screenshot().await.unwrap();
    let file = format!("{}{name}.png", kind.prefix());
    std::fs::write(screenshots().join(file), png).unwrap();
}

async fn browser(kind: Kind) -> (Driver, Client) {
    let env = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    let (driver_bin, port_arg, capability) = match kind {
        Kind::Chromium => (
            env("WP_TEST_CHROMEDRIVER", "chromedriver"),
            "--port=",
            (
                "goog:chromeOptions",
                serde_json::json!({
                    "binary": env("WP_TEST_CHROMIUM", "/usr/bin/chromium"),
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=zh-CN"],
                }),
            ),
        ),
        Kind::Firefox => (
            env("WP_TEST_GECKODRIVER", "geckodriver"),
            "--port=",
            (
                "moz:firefoxOptions",
                serde_json::json!({
                    "binary": env("WP_TEST_FIREFOX_BIN", "/usr/bin/firefox-esr"),
                    "args": ["-headless", "--width=1280", "--height=1000"],
                    "prefs": {"intl.accept_languages": "zh-CN"},
                }),
            ),
        ),
    };
    let port = free_port();
    let driver = Driver(
        Command::new(&driver_bin)
            .arg(format!("{port_arg}{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{kind:?} is asked for but {driver_bin} does not start: {e}")
            }),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(capability.0.into(), capability.1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "no browser session: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    (driver, client)
}

/// The text of the page's `<main>`, once `needle` is in it.
async fn wait_text(browser: &Client, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = match browser.find(Locator::Css("main")).await {
            Ok(main) => main.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never showed; the page says:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sign in, see a push sent by `simulate` appear live, open it, retry a
/// dead delivery, answer a user by hand and see the answer in the
/// conversation; a screenshot of each page.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium() {
    if std::env::var("WP_TEST_BROWSER").is_err() {
        eprintln!("WP_TEST_BROWSER is not set: the Chromium test does not run");
        return;
    }
    the_console_in(Kind::Chromium).await;
}

/// The same in Firefox.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_firefox() {
    if std::env::var("WP_TEST_FIREFOX").is_err() {
        eprintln!("WP_TEST_FIREFOX is not set: the Firefox test does not run");
        return;
    }
    the_console_in(Kind::Firefox).await;
}

async fn the_console_in(kind: Kind) {
    let mock = spawn_mock().await;
    let dir = temp_dir(&format!("browser-{kind:?}"));
    let config = write_answering_config(&dir, 2, &mock);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replacen("[server]\n", "[server]\nadmin_listen = \"127.0.0.1:0\"\n", 1)
        // A forward target that refuses every connection: deliveries die.
        + "[[apps.forward]]\nurl = \"http://127.0.0.1:9/hook\"\n\
           secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_schedule = [\"50ms\"]\n"
        + &format!("[console]\npassword = \"{PASSWORD}\"\n");
    std::fs::write(&config, text).unwrap();
    let server = start(&config, &[]);
    let console = format!("http://{}", server.admin.clone().unwrap());
    let push_url = format!("http://{}/wechat/{}", server.addr, super::APPID);
    let simulate = |openid: &str, text: &str| {
        let out = Command::new(super::bin())
            .args(["simulate", "send", "-c"])
            .arg(&config)
            .args(["--url", &push_url, "--openid", openid, "--text", text])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", super::text(&out));
    };
    simulate("oAlice", "hello 你好，第一条消息");
    wait_sent(&mock, 1).await;

    let (_driver, browser) = browser(kind).await;

    // Sign in.
    browser.goto(&format!("{console}/console")).await.unwrap();
    let password = browser
        .wait()
        .for_element(Locator::Css("input[name=password]"))
        .await
        .unwrap();
    shoot(&browser, kind, "sign-in").await;
    password.send_keys(PASSWORD).await.unwrap();
    browser
        .find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&browser, "Pushes by app").await;

    // The inbox, open; a push sent by simulate appears without a reload.
    browser
        .goto(&format!("{console}/console/inbox"))
        .await
        .unwrap();
    wait_text(&browser, "第一条消息").await;
    let marker = browser
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .attr("data-live")
        .await
        .unwrap();
    assert!(marker.is_some(), "the inbox is not live");
    simulate("oBob", "新消息 🎉 arrives live");
    wait_text(&browser, "新消息 🎉 arrives live").await;
    let url_after = browser.current_url().await.unwrap();
    assert_eq!(url_after.path(), "/console/inbox", "the page was left");
    shoot(&browser, kind, "inbox").await;

    // Its deliveries die; open the push and retry one.
    browser
        .find(Locator::XPath("//a[contains(., '新消息')]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&browser, "Fields").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let retry = loop {
        if let Ok(button) = browser
            .find(Locator::XPath(
                "//form[contains(@action, '/console/deliveries/')]//button",
            ))
            .await
        {
            break button;
        }
        assert!(Instant::now() < deadline, "the delivery never died");
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.refresh().await.unwrap();
    };
    shoot(&browser, kind, "push").await;
    retry.click().await.unwrap();
    wait_text(&browser, "Re-queued 0 pushes and 1 delivery").await;

    // Dead letters.
    browser
        .goto(&format!("{console}/console/dead"))
        .await
        .unwrap();
    wait_text(&browser, "Dead deliveries").await;
    shoot(&browser, kind, "dead-letters").await;

    // Answer Alice by hand, and see it in the conversation.
    browser
        .goto(&format!(
            "{console}/console/conversations/{}/oAlice",
            super::APPID
        ))
        .await
        .unwrap();
    wait_text(&browser, "Hi from wechat-push").await;
    let box_ = browser
        .find(Locator::Css("textarea[name=text]"))
        .await
        .unwrap();
    box_.send_keys("您好，我们马上处理").await.unwrap();
    browser
        .find(Locator::Css("form.answer button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = wait_text(&browser, "Answer recorded").await;
    assert!(text.contains("您好，我们马上处理"), "{text}");
    let sent = wait_sent(&mock, 2).await;
    assert_eq!(
        sent.as_array().unwrap()[1]["body"]["text"]["content"],
        "您好，我们马上处理"
    );
    // The answer's own bubble says sent.
    let mine = "//li[contains(@class, 'to-user')][.//div[contains(., '您好，我们马上处理')]]\
                //span[contains(@class, 'badge') and contains(@class, 'sent')]";
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.find(Locator::XPath(mine)).await.is_err() {
        assert!(Instant::now() < deadline, "the answer never showed as sent");
        browser.refresh().await.unwrap();
    }
    shoot(&browser, kind, "conversation").await;

    // The overview, after all that; and a phone-width inbox.
    browser.goto(&format!("{console}/console")).await.unwrap();
    wait_text(&browser, "Pushes per minute").await;
    shoot(&browser, kind, "overview").await;
    browser.set_window_size(390, 844).await.unwrap();
    browser
        .goto(&format!("{console}/console/inbox"))
        .await
        .unwrap();
    wait_text(&browser, "新消息 🎉").await;
    let overflow: serde_json::Value = browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        serde_json::Value::Bool(true),
        "the inbox is wider than a phone"
    );
    shoot(&browser, kind, "inbox-phone").await;
    let all = mock_json(&format!("{mock}/_mock/sent")).await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    browser.close().await.unwrap();
}
