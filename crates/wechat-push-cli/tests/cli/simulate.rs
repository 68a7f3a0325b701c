//! `wechat-push simulate` against the project's own server, a slow endpoint,
//! and endpoints that answer wrongly, each diagnosed.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wechat_push::clock::now_secs;
use wechat_push::handler::LogHandler;
use wechat_push::protocol::crypto::{AesKey, KeyRing, KeySlot};
use wechat_push::store::{Inbox, ListFilter, SqliteStore};
use wechat_push::{AppCrypto, Application, Config, Format, Token};

use super::{bin, temp_dir, text, APPID, KEY};

async fn simulate(args: &[&str]) -> Output {
    tokio::process::Command::new(bin())
        .arg("simulate")
        .args(args)
        .output()
        .await
        .unwrap()
}

/// Our own server, in-process, for one mode and format. Returns its URL and database.
async fn own_server(
    mode: &str,
    format: &str,
) -> (String, PathBuf, tokio::sync::oneshot::Sender<()>) {
    own_server_with(mode, format, "").await
}

/// [`own_server`] with `extra` TOML in the app's table.
async fn own_server_with(
    mode: &str,
    format: &str,
    extra: &str,
) -> (String, PathBuf, tokio::sync::oneshot::Sender<()>) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = temp_dir(&format!("sim-{}", N.fetch_add(1, Ordering::SeqCst)));
    let db = dir.join("inbox.db");
    let config = Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{}"
[[apps]]
appid = "{APPID}"
kind = "mini_program"
token = "AAAAA"
encoding_aes_key = "{KEY}"
mode = "{mode}"
format = "{format}"
{extra}
"#,
        db.display()
    ))
    .unwrap();
    let app = Application::build(config, Arc::new(LogHandler))
        .await
        .unwrap();
    let url = format!("http://{}/wechat/{APPID}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (url, db, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mode_and_format_against_our_server() {
    for mode in ["plaintext", "compatible", "safe"] {
        for format in ["xml", "json"] {
            let (url, db, _stop) = own_server(mode, format).await;
            let o = simulate(&["verify-url", "--url", &url, "--token", "AAAAA"]).await;
            assert!(o.status.success(), "{mode} {format}: {}", text(&o));
            let mut args = vec![
                "send", "--url", &url, "--token", "AAAAA", "--mode", mode, "--format", format,
            ];
            args.extend(["--aes-key", KEY, "--appid", APPID]);
            for content in [
                &["--text", "你好"][..],
                &["--image", "MEDIA_1"],
                &[
                    "--event",
                    "user_enter_tempsession",
                    "--field",
                    "SessionFrom=home",
                ],
            ] {
                let mut a = args.clone();
                a.extend(content);
                let o = simulate(&a).await;
                assert!(
                    o.status.success(),
                    "{mode} {format} {content:?}: {}",
                    text(&o)
                );
                assert!(
                    text(&o).contains("attempt 1: answered success"),
                    "{}",
                    text(&o)
                );
            }
            let kinds: Vec<String> = SqliteStore::open(&db)
                .unwrap()
                .list(ListFilter::default())
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.kind)
                .collect();
            assert_eq!(kinds.len(), 3, "{kinds:?}");
            assert!(kinds.contains(&"event:user_enter_tempsession".to_owned()));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repeat_sends_copies_that_the_server_stores_once() {
    let (url, db, _stop) = own_server("safe", "xml").await;
    let o = simulate(&[
        "send",
        "--url",
        &url,
        "--token",
        "AAAAA",
        "--aes-key",
        KEY,
        "--appid",
        APPID,
        "--mode",
        "safe",
        "--format",
        "xml",
        "--text",
        "storm",
        "--repeat",
        "4",
        "--concurrency",
        "4",
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("all 4 copies answered rightly"));
    assert_eq!(
        SqliteStore::open(&db)
            .unwrap()
            .list(ListFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn app_and_config_flags_and_load() {
    let (url, _db, _stop) = own_server("safe", "json").await;
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let dir = temp_dir("sim-cfg");
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"{addr}\"\n[[apps]]\nappid = \"{APPID}\"\nkind = \"mini_program\"\ntoken = \"AAAAA\"\nencoding_aes_key = \"{KEY}\"\nmode = \"safe\"\nformat = \"json\"\n"),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let o = simulate(&[
        "send",
        "--app",
        APPID,
        "--config",
        cfg,
        "--text",
        "from config",
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("sending a safe json push"),
        "{}",
        text(&o)
    );
    let o = simulate(&[
        "load",
        "--app",
        APPID,
        "--config",
        cfg,
        "--concurrency",
        "8",
        "--duration",
        "1s",
        "--json",
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["ok"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["errors"], 0);
    assert!(report["p99_ms"].as_f64().unwrap() >= report["p50_ms"].as_f64().unwrap());

    // The only app of a config needs no --app; -c is --config.
    let o = simulate(&["send", "-c", cfg, "--text", "only app", "--json"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let sent: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sent["right"], true, "{sent}");
    assert_eq!(sent["mode"], "safe");
    assert_eq!(sent["attempts"][0]["ok"], true, "{sent}");
    assert!(sent["attempts"][0]["elapsed_ms"].as_f64().unwrap() > 0.0);
    let o = simulate(&["verify-url", "-c", cfg, "--json"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let verified: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["echostr"].as_str().is_some_and(|e| !e.is_empty()));
    // Two apps: which one must be said.
    let two = dir.join("two.toml");
    let text2 = std::fs::read_to_string(&config).unwrap();
    let second = &text2[text2.find("[[apps]]").unwrap()..];
    std::fs::write(
        &two,
        format!("{text2}{}", second.replace(APPID, "wx0000000000000002")),
    )
    .unwrap();
    let o = simulate(&["send", "-c", two.to_str().unwrap(), "--text", "x"]).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!(
            "has 2 apps: pick one with --app ({APPID}, wx0000000000000002)"
        )),
        "{}",
        text(&o)
    );
}

/// A fake endpoint: answers each request with `respond(request)`, after `delay`.
async fn fake_endpoint(
    delay: Duration,
    respond: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wechat/{APPID}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let respond = Arc::new(respond);
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let respond = respond.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut read = 0;
                loop {
                    let Ok(n) = socket.read(&mut buf[read..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read += n;
                    let head = String::from_utf8_lossy(&buf[..read]).to_string();
                    if let Some(end) = head.find("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if read >= end + 4 + len {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let request = String::from_utf8_lossy(&buf[..read]).to_string();
                let (status, body) = respond(&request);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

fn crypto() -> AppCrypto {
    AppCrypto::new(
        APPID,
        Token::new("AAAAA"),
        Some(KeyRing::new(
            AesKey::from_encoding_aes_key(KEY).unwrap(),
            None,
        )),
    )
}

fn safe_send_args(url: &str) -> Vec<String> {
    [
        "send",
        "--url",
        url,
        "--token",
        "AAAAA",
        "--aes-key",
        KEY,
        "--appid",
        APPID,
        "--mode",
        "safe",
        "--format",
        "json",
        "--text",
        "hi",
        "--deadline",
        "300ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn simulate_owned(args: Vec<String>) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    simulate(&refs).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_endpoint_gets_four_deliveries() {
    let (url, hits) = fake_endpoint(Duration::from_secs(2), |_| (200, "success".into())).await;
    let o = simulate_owned(safe_send_args(&url)).await;
    assert!(!o.status.success());
    let out = text(&o);
    assert_eq!(out.matches("no answer within 300ms").count(), 4, "{out}");
    assert!(out.contains("4 deliveries in all"), "{out}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_answers_are_diagnosed() {
    // An unencrypted reply in safe mode.
    // To and From swapped relative to simulate's push, as WeChat requires.
    let reply = r#"{"ToUserName":"o_simulated_user_000000000000","FromUserName":"gh_0123456789ab","CreateTime":1,"MsgType":"transfer_customer_service"}"#;
    let (url, _) = fake_endpoint(Duration::ZERO, move |_| (200, reply.to_owned())).await;
    let o = simulate_owned(safe_send_args(&url)).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unencrypted reply in safe mode"),
        "{}",
        text(&o)
    );

    // An encrypted reply whose TimeStamp is in milliseconds.
    let sealed = crypto()
        .seal(
            reply.as_bytes(),
            Format::Json,
            now_secs() * 1000,
            "n",
            &[1; 16],
            KeySlot::Current,
        )
        .unwrap();
    let (url, _) = fake_endpoint(Duration::ZERO, move |_| (200, sealed.clone())).await;
    let o = simulate_owned(safe_send_args(&url)).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("is in milliseconds"), "{}", text(&o));

    // A correct encrypted reply passes.
    let sealed = crypto()
        .seal(
            reply.as_bytes(),
            Format::Json,
            now_secs(),
            "n",
            &[1; 16],
            KeySlot::Current,
        )
        .unwrap();
    let (url, _) = fake_endpoint(Duration::ZERO, move |_| (200, sealed.clone())).await;
    let o = simulate_owned(safe_send_args(&url)).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("an encrypted passive reply of type transfer_customer_service"),
        "{}",
        text(&o)
    );

    // A reply that does not swap To and From is dropped by WeChat.
    let unswapped = crypto()
        .seal(
            br#"{"ToUserName":"gh_0123456789ab","FromUserName":"o_simulated_user_000000000000","CreateTime":1,"MsgType":"transfer_customer_service"}"#,
            Format::Json,
            now_secs(),
            "n",
            &[1; 16],
            KeySlot::Current,
        )
        .unwrap();
    let (url, _) = fake_endpoint(Duration::ZERO, move |_| (200, unswapped.clone())).await;
    let o = simulate_owned(safe_send_args(&url)).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("To and From are swapped in a reply"),
        "{}",
        text(&o)
    );

    // A server error is retried, like WeChat does.
    let (url, hits) = fake_endpoint(Duration::ZERO, |_| (500, "boom".into())).await;
    let o = simulate_owned(safe_send_args(&url)).await;
    assert!(text(&o).contains("answered HTTP 500"), "{}", text(&o));
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    // A handshake answered with echostr in quotes.
    let echo_quoted = |req: &str| {
        let echostr = req
            .split("echostr=")
            .nth(1)
            .unwrap()
            .split([' ', '&'])
            .next()
            .unwrap();
        (200, format!("\"{echostr}\""))
    };
    let (url, _) = fake_endpoint(Duration::ZERO, echo_quoted).await;
    let o = simulate(&["verify-url", "--url", &url, "--token", "AAAAA"]).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("echostr in quotes"), "{}", text(&o));

    // With a trailing newline.
    let (url, _) = fake_endpoint(Duration::ZERO, |req: &str| {
        let echostr = req
            .split("echostr=")
            .nth(1)
            .unwrap()
            .split([' ', '&'])
            .next()
            .unwrap();
        (200, format!("{echostr}\n"))
    })
    .await;
    let o = simulate(&["verify-url", "--url", &url, "--token", "AAAAA"]).await;
    assert!(text(&o).contains("trailing newline"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_answers_are_judged_as_wechat_judges_them() {
    let xpay = [
        "--event",
        "xpay_goods_deliver_notify",
        "--field",
        "OpenId=oPlayer1",
        "--field",
        "OutTradeNo=ORD1",
    ];
    // Our server answers a virtual-payment push as documented, sealed.
    for format in ["xml", "json"] {
        let (url, _db, _stop) = own_server("safe", format).await;
        let mut args = vec![
            "send",
            "--url",
            &url,
            "--token",
            "AAAAA",
            "--aes-key",
            KEY,
            "--appid",
            APPID,
            "--mode",
            "safe",
            "--format",
            format,
        ];
        args.extend(xpay);
        let o = simulate(&args).await;
        assert!(o.status.success(), "{format}: {}", text(&o));
        assert!(
            text(&o).contains("answered the documented answer, encrypted:"),
            "{}",
            text(&o)
        );
        assert!(text(&o).contains("ErrCode"), "{}", text(&o));
    }
    // An endpoint that answers `success` to it is wrong: WeChat sends it again.
    let (url, _) = fake_endpoint(Duration::ZERO, |_| (200, "success".into())).await;
    let mut args = vec![
        "send",
        "--url",
        &url,
        "--token",
        "AAAAA",
        "--format",
        "json",
        "--deadline",
        "300ms",
    ];
    args.extend(xpay);
    let o = simulate(&args).await;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(r#"answered success where the push's documentation specifies the answer {"ErrCode":0,"ErrMsg":"Success"}"#),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_run_pushes_are_sent_as_the_gateway_sends_them() {
    let (url, db, _stop) = own_server_with("safe", "json", r#"trust = "cloud_run""#).await;
    let args = [
        "send",
        "--cloud-run",
        "--url",
        &url,
        "--token",
        "AAAAA",
        "--appid",
        APPID,
        "--format",
        "json",
        "--text",
        "via the gateway",
        "--deadline",
        "2s",
    ];
    let o = simulate(&args).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("sending a Cloud Run plaintext json push"),
        "{}",
        text(&o)
    );
    let stored = SqliteStore::open(&db)
        .unwrap()
        .list(ListFilter::default())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(String::from_utf8_lossy(&stored[0].body).contains("via the gateway"));
    // A server whose app did not opt in refuses it, and simulate says so.
    let (url, _db, _stop2) = own_server("safe", "json").await;
    let mut args = args.to_vec();
    args[3] = &url;
    let o = simulate(&args).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("answered HTTP 401"), "{}", text(&o));
}
