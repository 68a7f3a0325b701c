//! `wechat-push serve` as a process: killed with SIGKILL right after it
//! answered, restarted, and the push is still there and gets handled.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wechat_push::clock::{now_secs, Millis};
use wechat_push::protocol::crypto::{AesKey, KeyRing};
use wechat_push::protocol::wire::Fields;
use wechat_push::{AppCrypto, Format, Mode, Token};

use super::{bin, temp_dir, APPID, KEY};

pub(crate) fn write_config(dir: &Path, workers: usize) -> PathBuf {
    let path = dir.join("wechat-push.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
log_format = "json"
[store]
url = "sqlite://{}/data/inbox.db"
[inbox]
workers = {workers}
poll_interval = "50ms"
[[apps]]
appid = "{APPID}"
kind = "mini_program"
token = "AAAAA"
encoding_aes_key = "{KEY}"
mode = "safe"
format = "json"
"#,
            dir.display()
        ),
    )
    .unwrap();
    path
}

/// A running server and its log lines.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
    /// `server.admin_listen`'s address, when set.
    pub(crate) admin: Option<String>,
    logs: mpsc::Receiver<String>,
    /// The lines logged while starting, up to and with `listening`.
    pub(crate) start_logs: Vec<String>,
}

pub(crate) fn start(config: &Path, env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(bin());
    command
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied());
    start_command(command)
}

/// `wechat-push serve` with `limits` (a shell's `ulimit` and `trap` lines)
/// in force, logs to pipes (which a file-size limit does not touch).
fn start_limited(config: &Path, limits: &str) -> Server {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{limits} && exec \"$0\" serve --config \"$1\""))
        .arg(bin())
        .arg(config)
        .stderr(Stdio::piped());
    start_command(command)
}

/// Spawn `command` (a server), read its JSON log, and wait until it listens.
fn start_command(mut command: Command) -> Server {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, logs) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // From here on, Drop kills the child whatever happens.
    let mut server = Server {
        child,
        addr: String::new(),
        admin: None,
        logs,
        start_logs: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        assert!(
            Instant::now() < deadline,
            "never listened: {:?}",
            server.start_logs
        );
        if let Ok(line) = server.logs.recv_timeout(Duration::from_millis(100)) {
            server.start_logs.push(line.clone());
            if line.contains("\"listening\"") {
                break line;
            }
        }
    };
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    server.addr = v["addr"].as_str().unwrap().to_owned();
    server.admin = v["admin"].as_str().map(str::to_owned);
    server
}

/// A child process killed when dropped, however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    /// A failed test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Wait for a log line containing `needle`.
    pub(crate) fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.logs.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!("no log line with {needle:?}");
    }

    /// The lines logged until none came for half a second.
    pub(crate) fn drain_logs(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.logs.recv_timeout(Duration::from_millis(500)) {
            lines.push(line);
        }
        lines
    }
}

async fn send_push(addr: &str, msg_id: u64) -> (u16, String) {
    send_text(addr, msg_id, "survive kill -9").await
}

fn inbox_json(config: &Path) -> Vec<Value> {
    let out = Command::new(bin())
        .args(["inbox", "list", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_right_after_success_loses_nothing_and_restart_handles_it() {
    let dir = temp_dir("kill9");
    // workers = 0: this process only stores; it cannot handle before it dies.
    let config = write_config(&dir, 0);
    let mut server = start(&config, &[]);
    let (status, body) = send_push(&server.addr, 6054768590064713728).await;
    assert_eq!((status, body.as_str()), (200, "success"));
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let stored = inbox_json(&config);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let p = &stored[0];
    assert_eq!(p["status"], "pending");
    assert!(p["dedup_key"]
        .as_str()
        .unwrap()
        .contains(":6054768590064713728:"));
    for field in [
        "appid",
        "dedup_key",
        "kind",
        "from",
        "create_time",
        "status",
        "attempts",
        "received_at",
    ] {
        assert!(!p[field].is_null(), "--json lacks {field}: {p}");
    }

    // Restarted with workers (set from the environment), it takes the push up.
    let server = start(&config, &[("WECHAT_PUSH_INBOX_WORKERS", "2")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = inbox_json(&config);
        if stored[0]["status"] == "done" {
            assert_eq!(stored[0]["attempts"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not handled after restart: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // WeChat's retry of the same push, after the restart, is a duplicate.
    let (status, body) = send_push(&server.addr, 6054768590064713728).await;
    assert_eq!((status, body.as_str()), (200, "success"));
    assert_eq!(inbox_json(&config).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_down_gracefully() {
    let dir = temp_dir("term");
    let config = write_config(&dir, 2);
    let mut server = start(&config, &[]);
    assert_eq!(send_push(&server.addr, 1).await.1, "success");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    server.wait_log("SIGTERM: shutting down");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert_eq!(inbox_json(&config).len(), 1);
}

/// SIGHUP killed the server at once, with no drain and no log line. It
/// reloads the config file now: a new Token is in force for the next push,
/// on a connection opened before the reload; a bad config is refused with
/// its reason and the running one stays; both are logged and counted.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_config_and_a_bad_one_is_refused() {
    let dir = temp_dir("hup");
    let config = write_config(&dir, 2);
    let mut server = start(&config, &[]);
    let hup = |server: &Server| {
        assert!(Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    // One client throughout: its keep-alive connection outlives the reloads.
    let client = reqwest::Client::new();
    let send = |token: &'static str, id: u64| {
        let (client, addr) = (client.clone(), server.addr.clone());
        async move {
            try_send_text_signed(&client, &addr, token, id, "hi")
                .await
                .unwrap()
        }
    };
    assert_eq!(send("AAAAA", 1).await, (200, "success".into()));

    // A new Token, and a change only a restart applies (named, not applied).
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("token = \"AAAAA\"", "token = \"BBBBB\"")
        .replace("workers = 2", "workers = 3");
    std::fs::write(&config, text).unwrap();
    hup(&server);
    let line = server.wait_log("configuration reloaded");
    assert!(
        line.contains("restart_needed") && line.contains("inbox"),
        "{line}"
    );
    assert_eq!(send("BBBBB", 2).await.0, 200);
    assert_eq!(
        send("AAAAA", 3).await.0,
        401,
        "the old Token still in force"
    );

    // An EncodingAESKey one character short: refused, and the Token of the
    // running config stays in force.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace(KEY, &KEY[1..])).unwrap();
    hup(&server);
    let line = server.wait_log("new configuration refused");
    assert!(line.contains("apps[0].encoding_aes_key"), "{line}");
    assert!(!line.contains(&KEY[1..]), "the key was logged: {line}");
    assert_eq!(send("BBBBB", 4).await.0, 200);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wechat_push_config_reloads_total{outcome=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wechat_push_config_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
}

/// Rules and forward targets are checked where they are built, and by the
/// command line when it loads the config: a mistake is named, with the
/// file and line, before any database is created.
#[test]
fn a_bad_rule_or_target_is_refused_before_the_store_is_opened() {
    let dir = temp_dir("bad-rule");
    let config = write_config(&dir, 0);
    let base = std::fs::read_to_string(&config).unwrap();
    for (extra, named) in [
        (
            "[[apps.rules]]\nregex = \"(unclosed\"\nreply = { text = \"x\" }\n",
            "apps[0].rules[0].regex: ",
        ),
        (
            "[[apps.forward]]\nurl = \"ftp://example.com/\"\nsecret = \"s\"\n",
            "apps[0].forward[0].url: must be http:// or https://",
        ),
    ] {
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        for command in [&["serve"][..], &["inbox", "list"][..]] {
            let out = Command::new(bin())
                .args(command)
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command:?}: {stderr}");
            assert!(
                stderr.contains(&format!("invalid configuration: {}:", config.display())),
                "{stderr}"
            );
            assert!(stderr.contains(named), "{stderr}");
            assert!(!dir.join("data").exists(), "{command:?} created the store");
        }
    }
}

#[test]
fn inbox_show_and_retry_explain_themselves() {
    let dir = temp_dir("show");
    let config = write_config(&dir, 0);
    // Read-only commands made an empty database where there was none (a
    // wrong --config, or run from another directory): a clear error now.
    for command in [
        &["inbox", "list"][..],
        &["inbox", "show", "m:x"][..],
        &["token", "show", APPID][..],
    ] {
        let out = Command::new(bin())
            .args(command)
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?}");
        assert!(
            err.contains(&format!(
                "no store at {}",
                dir.join("data/inbox.db").display()
            )),
            "{command:?}: {err}"
        );
        assert!(!dir.join("data/inbox.db").exists(), "{command:?} made one");
    }
    let out = Command::new(bin())
        .args(["store", "migrate", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin())
        .args(["inbox", "retry", "m:oUser404:404", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "no dead push has the dedup key m:oUser404:404, and no push with it has a dead delivery"
    ));
    let out = Command::new(bin())
        .args(["inbox", "show", "m:oUser404:404", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(bin())
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config file /nonexistent.toml not found")
    );
    std::fs::write(
        dir.join("bad.toml"),
        "[[apps]]\nappid = \"wx1\"\nkind = \"mini_program\"\ntoken = \"t\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(dir.join("bad.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("apps[0].token: must be 3 to 32 characters, got 1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inbox_show_prints_the_decrypted_body() {
    let dir = temp_dir("show2");
    let config = write_config(&dir, 0);
    let mut server = start(&config, &[]);
    send_push(&server.addr, 77).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let out = Command::new(bin())
        .args(["inbox", "show", "m:oUser77:77", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("survive kill -9"), "{text}");
    assert!(
        text.contains("status:      pending after 0 attempt(s)"),
        "{text}"
    );
    let out = Command::new(bin())
        .args(["inbox", "show", "m:oUser77:77", "--json", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["appid"], APPID);
    assert_eq!(v["status"], "pending");
    assert_eq!(v["body"]["Content"], "survive kill -9", "{v}");
    assert!(
        v["received_at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339: {v}"
    );
    assert_eq!(v["answers"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_show_hides_the_token_unless_revealed() {
    use wechat_push::store::{CachedToken, SqliteStore, TokenCache};
    let dir = temp_dir("token");
    let config = write_config(&dir, 0);
    let store = SqliteStore::open(&dir.join("data/inbox.db")).unwrap();
    let now = wechat_push::clock::now_ms();
    let token = CachedToken {
        appid: APPID.into(),
        token: "SECRET_TOKEN_123".into(),
        expires_at: now + Duration::from_secs(7_000),
        fetched_at: now - Duration::from_secs(5),
    };
    store.put_token(token, "test".into()).await.unwrap();
    let out = Command::new(bin())
        .args(["token", "show", APPID, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("(in 6999 s)") || text.contains("(in 7000 s)"),
        "{text}"
    );
    assert!(!text.contains("SECRET_TOKEN_123"), "{text}");
    let out = Command::new(bin())
        .args(["token", "show", APPID, "--reveal", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("SECRET_TOKEN_123"));
    let out = Command::new(bin())
        .args(["token", "show", APPID, "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["appid"], APPID);
    assert!(v["expires_in_s"].as_i64().unwrap() > 6_990, "{v}");
    assert!(v.get("token").is_none(), "{v}");
    // An appid the config does not have is named as such, not as an
    // app with no token yet.
    let out = Command::new(bin())
        .args(["token", "show", "wx0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "no app wx0 in {} (its apps: {APPID})",
            config.display()
        )),
        "{err}"
    );
}

/// [`write_config`] plus an answering app: a secret, the API at `api_base`,
/// and a rule answering "hello".
pub(crate) fn write_answering_config(dir: &Path, workers: usize, api_base: &str) -> PathBuf {
    let path = write_config(dir, workers);
    // Appended after the [[apps]] table: `secret` and the rule belong to it.
    let extra = format!(
        "secret = \"secret1\"\n[[apps.rules]]\nkeyword = \"hello\"\nreply = {{ text = \"Hi from wechat-push\" }}\n[wechat]\napi_base = \"{api_base}\"\n"
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&extra);
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) async fn spawn_mock() -> String {
    let apps = std::collections::HashMap::from([(APPID.to_owned(), "secret1".to_owned())]);
    let mock = wechat_push::mock_wechat::MockWechat::bind("127.0.0.1:0".parse().unwrap(), apps)
        .await
        .unwrap();
    let url = format!("http://{}", mock.local_addr());
    tokio::spawn(mock.run(std::future::pending()));
    url
}

pub(crate) async fn mock_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// One `CreateTime` for the whole run: a push sent again is the same push,
/// as WeChat's retries are, even across a second boundary.
fn create_time() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(now_secs)
}

pub(crate) async fn send_text(addr: &str, msg_id: u64, content: &str) -> (u16, String) {
    try_send_text(addr, msg_id, content).await.unwrap()
}

/// [`send_text`], with what a client may meet (a connection refused or
/// closed) as an error rather than a panic.
async fn try_send_text(
    addr: &str,
    msg_id: u64,
    content: &str,
) -> Result<(u16, String), reqwest::Error> {
    try_send_text_signed(&reqwest::Client::new(), addr, "AAAAA", msg_id, content).await
}

/// A text push signed with `token`, sent by `client` (which may keep its
/// connection open between pushes).
pub(crate) async fn try_send_text_signed(
    client: &reqwest::Client,
    addr: &str,
    token: &str,
    msg_id: u64,
    content: &str,
) -> Result<(u16, String), reqwest::Error> {
    let from = format!("oUser{msg_id}");
    try_send_text_from(client, addr, token, &from, msg_id, content).await
}

/// A text push from `from` (an openid), signed with `token`.
pub(crate) async fn try_send_text_from(
    client: &reqwest::Client,
    addr: &str,
    token: &str,
    from: &str,
    msg_id: u64,
    content: &str,
) -> Result<(u16, String), reqwest::Error> {
    let key = AesKey::from_encoding_aes_key(KEY).unwrap();
    let app = AppCrypto::new(APPID, Token::new(token), Some(KeyRing::new(key, None)));
    let inner: Fields = serde_json::from_value(serde_json::json!({
        "ToUserName": "gh_97417a04a28d", "FromUserName": from, "CreateTime": create_time(),
        "MsgType": "text", "Content": content, "MsgId": msg_id,
    }))
    .unwrap();
    let push = app
        .seal_push(
            &inner,
            Mode::Safe,
            Format::Json,
            &now_secs().to_string(),
            "n",
            &[2; 16],
            None,
        )
        .unwrap();
    let r = client
        .post(format!("http://{addr}/wechat/{APPID}"))
        .query(&wechat_push::simulate::query_pairs(&push.query))
        .body(push.body)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

pub(crate) async fn wait_sent(mock: &str, n: usize) -> Value {
    for _ in 0..200 {
        let sent = mock_json(&format!("{mock}/_mock/sent")).await;
        if sent.as_array().unwrap().len() >= n {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} messages sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_server_processes_sharing_one_store_fetch_one_token() {
    let mock = spawn_mock().await;
    let dir = temp_dir("two-procs");
    let config = write_answering_config(&dir, 4, &mock);
    let (a, b) = (start(&config, &[]), start(&config, &[]));
    let mut answers = Vec::new();
    for i in 0..6u64 {
        let addr = if i % 2 == 0 { &a.addr } else { &b.addr };
        answers.push(send_text(addr, 700 + i, "hello!").await);
    }
    assert!(
        answers.iter().all(|(s, b)| *s == 200 && b == "success"),
        "{answers:?}"
    );
    let sent = wait_sent(&mock, 6).await;
    assert_eq!(sent.as_array().unwrap().len(), 6);
    let calls = mock_json(&format!("{mock}/_mock/calls")).await;
    let fetches = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["path"].as_str().unwrap().ends_with("token"))
        .count();
    assert_eq!(fetches, 1, "{calls}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_storing_and_sending_is_followed_by_one_answer() {
    let mock = spawn_mock().await;
    let dir = temp_dir("crash-send");
    // Store only, then SIGKILL: the push is stored, its answer not sent.
    let mut first = start(&write_answering_config(&dir, 0, &mock), &[]);
    assert_eq!(
        send_text(&first.addr, 801, "hello").await,
        (200, "success".to_owned())
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(mock_json(&format!("{mock}/_mock/sent"))
        .await
        .as_array()
        .unwrap()
        .is_empty());
    // Restarted with workers: the answer goes out once.
    let second = start(&write_answering_config(&dir, 4, &mock), &[]);
    let sent = wait_sent(&mock, 1).await;
    assert_eq!(sent[0]["body"]["text"]["content"], "Hi from wechat-push");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let config = dir.join("wechat-push.toml");
    let out = Command::new(bin())
        .args(["inbox", "show", "m:oUser801:801", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("answer 1 (text): sent"), "{shown}");
    // WeChat delivering the push again changes nothing.
    assert_eq!(
        send_text(&second.addr, 801, "hello").await,
        (200, "success".to_owned())
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mock_json(&format!("{mock}/_mock/sent"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mock_wechat_serves_tokens_from_the_command_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(bin())
        .args([
            "mock-wechat",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--app",
            "wxabc=s3cret",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut answer = Value::Null;
    for _ in 0..100 {
        if let Ok(r) = client
            .post(format!("http://127.0.0.1:{port}/cgi-bin/stable_token"))
            .json(&serde_json::json!({"grant_type": "client_credential", "appid": "wxabc", "secret": "s3cret"}))
            .send()
            .await
        {
            answer = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer["expires_in"], 7200, "{answer}");
    let out = Command::new(bin())
        .args(["mock-wechat", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no apps"));
}

/// A backend that records what it gets and answers 200.
pub(crate) async fn spawn_receiver(
    listener: tokio::net::TcpListener,
) -> std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>> {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hooks/wechat",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                record.lock().unwrap().push((headers, body.to_vec()));
                "ok"
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_down_across_a_kill_and_restart_still_gets_the_push() {
    let dir = temp_dir("forward-down");
    // A port nobody listens on yet: the backend is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let config = write_config(&dir, 2);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[[apps.forward]]\nurl = \"http://127.0.0.1:{port}/hooks/wechat\"\nsecret = \"{secret}\"\ntimeout = \"1s\"\n\
         retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]\n"
    ));
    std::fs::write(&config, text).unwrap();

    let mut first = start(&config, &[]);
    assert_eq!(send_text(&first.addr, 901, "forward me").await.1, "success");
    // It tried, found the backend down, and will retry...
    let line = first.wait_log("delivery failed; will retry");
    assert!(!line.contains(secret), "{line}");
    // ...but dies first.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let show = || {
        let out = Command::new(bin())
            .args(["inbox", "show", "m:oUser901:901", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Waiting for its retry, or caught mid-attempt (then its lease, the
    // timeout plus 5 s, brings it back).
    let shown = show();
    let target = format!("delivery to http://127.0.0.1:{port}/hooks/wechat: ");
    assert!(
        shown.contains(&format!("{target}pending")) || shown.contains(&format!("{target}working")),
        "{shown}"
    );

    let _second = start(&config, &[]);
    // The backend comes up while the restarted server keeps retrying.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = spawn_receiver(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the backend never got the push");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once");
    let (headers, body) = &got[0];
    let header = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    let key = wechat_push::webhook::SigningKey::from_secret(secret).unwrap();
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    assert!(key.verify(
        &header("webhook-id"),
        timestamp,
        body,
        &header("webhook-signature")
    ));
    let json: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["message"]["Content"], "forward me");
    let shown = show();
    assert!(shown.contains(": delivered after "), "{shown}");
}

/// A push of [`APPID`] to put in a store by hand, under `key`.
fn stored_push(key: &str, from: &str, body: &[u8]) -> std::sync::Arc<wechat_push::store::NewPush> {
    std::sync::Arc::new(wechat_push::store::NewPush {
        appid: APPID.into(),
        dedup_key: wechat_push::message::DedupKey::from_stored(key),
        kind: "text".into(),
        from_user: wechat_push::message::OpenId::new(from),
        create_time: 1,
        format: Format::Json,
        body: body.to_vec(),
        received_at_ms: Millis(1),
    })
}

/// `inbox retry e` once re-queued every dead event of every app and sender.
#[tokio::test(flavor = "multi_thread")]
async fn inbox_retry_of_a_key_beginning_that_matches_several_pushes_is_refused() {
    use wechat_push::store::{Inbox, SqliteStore};
    let dir = temp_dir("retry-prefix");
    let config = write_config(&dir, 0);
    let store = SqliteStore::open(&dir.join("data/inbox.db")).unwrap();
    for key in ["e:oU:1:ev:aaaa", "e:oU:1:ev:bbbb"] {
        store
            .insert(stored_push(key, "oU", b"{}"), None)
            .await
            .unwrap();
    }
    for claimed in store
        .claim(Millis(i64::MAX / 2), Millis(i64::MAX / 2 + 1), 10)
        .await
        .unwrap()
    {
        store
            .fail(claimed.claim(), "boom".into(), None, Millis(1))
            .await
            .unwrap();
    }
    drop(store);
    let retry = |key: &str| {
        Command::new(bin())
            .args(["inbox", "retry", key, "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = retry("e:oU:1:ev");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("e:oU:1:ev matches 2 pushes; `inbox retry` re-queues one: give its whole key (e:oU:1:ev:aaaa, e:oU:1:ev:bbbb)"),
        "{err}"
    );
    let out = retry("e:oU:1:ev:aaaa");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-queued 1 push(es)"));
}

/// A TOML syntax error on a secret's line once printed the line, secret and all.
#[test]
fn a_config_syntax_error_never_prints_the_secret_on_its_line() {
    let dir = temp_dir("toml-secret");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("wechat-push.toml");
    std::fs::write(
        &config,
        "[[apps]]\nappid = \"wx1\"\nsecret = \"Sup3rSecretAppSecret\nkind = \"mini_program\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("Sup3rSecret"), "{text}");
    assert!(text.contains("wechat-push.toml:3:"), "{text}");
    assert!(text.contains("is not valid TOML"), "{text}");
}

/// Refusals were logged as `reason=Body(UnsyncBoxBody)`.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_logged_with_their_reason_in_words() {
    let dir = temp_dir("refusal-log");
    let config = write_config(&dir, 0);
    let server = start(&config, &[]);
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/wechat/{APPID}?signature=x&timestamp=1&nonce=1&msg_signature=0000&encrypt_type=aes",
            server.addr
        ))
        .body(r#"{"ToUserName":"gh","Encrypt":"abc="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let line = server.wait_log("\"refused\"");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["reason"], "msg_signature_mismatch", "{line}");
    assert!(
        v["error"].as_str().unwrap().contains("msg_signature"),
        "{line}"
    );
    assert!(!line.contains("UnsyncBoxBody"), "{line}");

    // An appid not configured: counted as `unknown`, logged as sent (its
    // first 32 bytes), for a mistyped URL.
    let sent = format!("wx{}", "e".repeat(40));
    let r = reqwest::Client::new()
        .post(format!("http://{}/wechat/{sent}?signature=x", server.addr))
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let line = server.wait_log("unknown_app");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["appid"], "unknown", "{line}");
    assert_eq!(v["sent_appid"].as_str(), Some(&sent[..32]), "{line}");
}

/// The database (decrypted messages, access tokens) was created 0644.
#[test]
fn the_database_and_its_directory_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("modes");
    let config = write_config(&dir, 0);
    let out = Command::new(bin())
        .args(["store", "migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("data")), 0o700);
    for file in ["inbox.db", "inbox.db-wal", "inbox.db-shm"] {
        let path = dir.join("data").join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    assert!(dir.join("data/inbox.db").exists());
}

/// Once: 1,100 silent connections under `ulimit -n 1024` stopped the
/// server at its descriptor limit (pushes unanswered, health unreachable,
/// nothing logged); slow-header clients were never disconnected; SIGTERM
/// waited for them.
#[tokio::test(flavor = "multi_thread")]
async fn silent_and_slow_clients_cannot_starve_pushes_or_hold_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir("starve");
    let config = write_config(&dir, 0);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "log_format = \"json\"",
        "log_format = \"json\"\nheader_timeout = \"1s\"\nshutdown_grace = \"2s\"",
    );
    std::fs::write(&config, text).unwrap();
    // The server under a descriptor limit of 1024, as on many hosts.
    let mut server = start_limited(&config, "ulimit -n 1024");
    let accepting = server.wait_log("accepting connections");
    assert!(accepting.contains("\"max_connections\":896"), "{accepting}");

    // 1,100 connections that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..1100 {
        silent.push(tokio::net::TcpStream::connect(&server.addr).await.unwrap());
    }
    // A push is still answered within WeChat's retry window (four tries,
    // five seconds each), and soon: silent clients are dropped after the
    // header timeout, and those over the cap at once.
    let started = Instant::now();
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(20) {
        let push = try_send_text(&server.addr, 1, "past the silent ones");
        match tokio::time::timeout(Duration::from_secs(5), push).await {
            Ok(Ok((200, body))) => {
                answered = Some(body);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert_eq!(answered.as_deref(), Some("success"), "no answer in 20 s");
    eprintln!(
        "a push past 1,100 silent connections was answered after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The silent ones were closed by the server.
    let mut closed = 0;
    for s in silent.iter_mut().take(50) {
        let mut buf = [0u8; 256];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "silent connections left open");
    drop(silent);
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wechat_push_connections_refused_total "),
        "{metrics}"
    );

    // Slow-header clients are cut off after the header timeout...
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        s.write_all(b"POST /wechat/x HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let mut buf = [0u8; 256];
    let cut = tokio::time::timeout(Duration::from_secs(4), slow[0].read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(_)) | Ok(Err(_))),
        "slow header not cut off"
    );
    // ...and SIGTERM with slow clients open is done within the grace.
    let mut lingering = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        s.write_all(b"POST /wechat/x HTTP/1.1\r\n").await.unwrap();
        lingering.push(s);
    }
    let pid = server.child.id().to_string();
    let asked = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        asked.elapsed()
    );
    drop(lingering);
}

/// With the SQLite files removed while running, `serve` kept answering
/// `success` into the unlinked file, `/healthz` said 200 and nothing was
/// logged; after a restart none of those pushes existed.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_deleted_under_load_answers_503_and_turns_health_red() {
    let dir = temp_dir("deleted");
    let config = write_config(&dir, 0);
    let server = start(&config, &[]);
    for id in 1..=20 {
        assert_eq!(send_push(&server.addr, id).await.1, "success");
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("data/inbox.db{suffix}")));
    }
    let deleted = Instant::now();
    let mut after = Vec::new();
    for id in 100..160 {
        let sent = Instant::now();
        after.push((sent - deleted, send_push(&server.addr, id).await));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Within the check's period a push may still be taken; none after it.
    for (at, (status, body)) in &after {
        if *at > Duration::from_millis(400) {
            assert_eq!(*status, 503, "{at:?}: {body}");
        }
    }
    assert!(after.iter().any(|(_, (s, _))| *s == 503));
    let health = reqwest::get(format!("http://{}/healthz", server.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    assert!(health.text().await.unwrap().contains("deleted or replaced"));
    let ready = reqwest::get(format!("http://{}/readyz", server.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    server.wait_log("the database file was deleted or replaced");
    // Each refusal names the push WeChat will send again (it came from the
    // `push` span, at debug since).
    let refused = server.wait_log("\"refused\"");
    let v: Value = serde_json::from_str(&refused).unwrap();
    assert_eq!(v["reason"], "store_unavailable", "{refused}");
    assert!(
        v["dedup_key"].as_str().is_some_and(|k| !k.is_empty()),
        "{refused}"
    );
    drop(server);
    // A restart starts from an empty store, and says so.
    let restarted = start(&config, &[]);
    assert!(
        restarted
            .start_logs
            .iter()
            .any(|l| l.contains("creating an empty store")),
        "{:?}",
        restarted.start_logs
    );
}

/// WeChat's API accepted a message but answered after the client's timeout;
/// the client sent it again in the same attempt, and the user got it twice
/// while `inbox show` recorded one.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_whose_fate_is_unknown_is_not_resent_until_asked() {
    let mock = spawn_mock().await;
    let dir = temp_dir("uncertain");
    let config = write_answering_config(&dir, 2, &mock);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("timeout = \"500ms\"\n");
    std::fs::write(&config, text).unwrap();
    let server = start(&config, &[]);
    // The API takes every message, but answers after 1.5 s.
    reqwest::Client::new()
        .post(format!("{mock}/_mock/faults"))
        .json(&serde_json::json!({"path": "/cgi-bin/message/custom/send", "delay_ms": 1500, "late": true, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        send_text(&server.addr, 951, "hello").await,
        (200, "success".to_owned())
    );
    let sent = wait_sent(&mock, 1).await;
    assert_eq!(sent[0]["body"]["text"]["content"], "Hi from wechat-push");
    // Long after the late answer: still one message, recorded as uncertain.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        mock_json(&format!("{mock}/_mock/sent"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let show = |key: &str| {
        let out = Command::new(bin())
            .args(["inbox", "show", key, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = show("m:oUser951:951");
    assert!(
        shown.contains("answer 1 (text): uncertain: sent, but WeChat's answer never came"),
        "{shown}"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wechat_push_answers_uncertain_total 1"),
        "{metrics}"
    );
    // Resent by hand.
    let out = Command::new(bin())
        .args(["inbox", "retry", "m:oUser951:951", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("resent answer 1 (text), which was uncertain: now sent"));
    assert_eq!(
        mock_json(&format!("{mock}/_mock/sent"))
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(show("m:oUser951:951").contains("answer 1 (text): sent"));
}

/// With the disk full, pushes got 503 while `/healthz` said ok.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_turns_health_red() {
    let dir = temp_dir("full-disk");
    let config = write_config(&dir, 0);
    // A file-size limit stands for a full disk: writes past it fail (the
    // signal it would raise is ignored, as a full disk raises none).
    let server = start_limited(&config, "trap '' XFSZ && ulimit -f 2048");
    let health = |addr: String| async move {
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
    };
    assert_eq!(health(server.addr.clone()).await.status(), 200);
    let filler = "x".repeat(4000);
    // Full for good: refused for longer than checkpoints take to free the
    // reusable part of the WAL (a refusal before that is a WAL that filled
    // between two checkpoints: WeChat's retry is stored).
    let mut refused_since = None;
    for id in 1..=6000 {
        let (status, _) = send_text(&server.addr, id, &filler).await;
        match status {
            503 => {
                let since = *refused_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            200 => refused_since = None,
            other => panic!("answered {other}"),
        }
    }
    assert!(refused_since.is_some(), "the disk never filled up");
    let r = health(server.addr.clone()).await;
    let status = r.status();
    let why = r.text().await.unwrap();
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains("the last commit failed") || why.contains("disk"),
        "{why}"
    );
}

/// A database from before push identity keeps working: its keys are found,
/// and a new push never takes an old key.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_with_keys_from_before_the_upgrade_keeps_working() {
    use wechat_push::store::{Inbox, SqliteStore};
    let dir = temp_dir("old-keys");
    let config = write_config(&dir, 0);
    let store = SqliteStore::open(&dir.join("data/inbox.db")).unwrap();
    store
        .insert(
            stored_push(
                "msg:971",
                "oUser971",
                br#"{"MsgType":"text","Content":"from 0.1"}"#,
            ),
            None,
        )
        .await
        .unwrap();
    drop(store);
    let out = Command::new(bin())
        .args(["inbox", "show", "msg:971", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("from 0.1"));
    // The same message arriving now is keyed the new way: stored beside it.
    let server = start(&config, &[]);
    assert_eq!(send_text(&server.addr, 971, "now").await.1, "success");
    let keys: Vec<String> = inbox_json(&config)
        .iter()
        .map(|p| p["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&"msg:971".to_owned()));
    assert!(keys.iter().any(|k| k.starts_with("m:oUser971:971:")));
}

/// CPU time used by process `pid` so far, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces), from field 3.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn write_bounded_config(dir: &Path) -> PathBuf {
    let config = write_config(dir, 0);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "log_format = \"json\"",
        "log_format = \"json\"\nheader_timeout = \"1s\"\nbody_timeout = \"3s\"\nidle_timeout = \"1s\"",
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// A request still in flight when its connection's idle deadline passed
/// made the connection's task spin: a core at 100% until the request ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_outliving_the_idle_deadline_does_not_spin() {
    use tokio::io::AsyncWriteExt;
    let dir = temp_dir("spin");
    let server = start(&write_bounded_config(&dir), &[]);
    let pid = server.child.id();
    let mut s = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    // A header, then a body that never completes: in flight until the body timeout.
    s.write_all(
        format!("POST /wechat/{APPID} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx")
            .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let used = cpu_ticks(pid) - before;
    // Two seconds of a spinning core would be about 200 ticks.
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s with one request waiting"
    );
}

/// A client that pipelined requests and never read the answers held its
/// connection (and its slot under the cap) for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_its_answers_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let dir = temp_dir("no-read");
    let server = start(&write_bounded_config(&dir), &[]);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(server.addr.parse().unwrap()).await.unwrap();
    let requests = "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".repeat(2000);
    // The server stops reading once its answers back up: the write may stall.
    let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(requests.as_bytes())).await;
    let metrics = || async {
        reqwest::get(format!("http://{}/metrics", server.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let mut open = String::new();
    for _ in 0..40 {
        open = metrics()
            .await
            .lines()
            .find(|l| l.starts_with("wechat_push_open_connections "))
            .unwrap()
            .to_owned();
        if open.ends_with(" 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        open, "wechat_push_open_connections 1",
        "the reader-less client is still connected"
    );
    drop(s);
}

/// With the log file on the full disk, the logging library's last resort
/// panicked in the store's writer thread: the store closed for good. And
/// once room came back, health stayed red until a push happened to succeed.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_the_log_too_is_survived_and_health_recovers_by_itself() {
    let dir = temp_dir("full-log");
    let config = write_config(&dir, 0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let log = dir.join("serve.log");
    // Killed however the test ends: a failed run once left its server behind.
    let child = KillOnDrop(
        Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ && ulimit -S -f 2048 && exec \"$0\" serve --config \"$1\" >\"$2\" 2>&1")
            .arg(bin())
            .arg(&config)
            .arg(&log)
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    let health = |addr: String| async move { reqwest::get(format!("http://{addr}/healthz")).await };
    for _ in 0..100 {
        if health(addr.clone()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Fill the disk: the database stops taking pushes, and every refusal
    // logs a line the full disk cannot take either.
    let filler = "x".repeat(4000);
    let mut refused = 0;
    for id in 1..=8000 {
        if send_text(&addr, id, &filler).await.0 == 503 {
            refused += 1;
            // Enough refusals, each logged, to fill the log file too.
            if refused == 4000 {
                break;
            }
        }
    }
    assert_eq!(refused, 4000, "the disk never filled up");
    let logged = std::fs::metadata(&log).unwrap().len();
    assert!(logged >= 1 << 20, "the log never filled up: {logged} bytes");
    let r = health(addr.clone()).await.unwrap();
    assert_eq!(r.status(), 503);
    let why = r.text().await.unwrap();
    assert!(!why.contains("closed"), "the store's thread died: {why}");
    // Room again: health turns green by itself, no push needed.
    assert!(Command::new("prlimit")
        .args(["--pid", &child.0.id().to_string(), "--fsize=unlimited"])
        .status()
        .unwrap()
        .success());
    let r = health(addr.clone()).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(send_text(&addr, 9999, "room again").await.0, 200);
}

/// `inbox list | head -1` panicked ("failed printing to stdout: Broken
/// pipe") once `head` had what it wanted.
#[tokio::test]
async fn inbox_list_into_a_pipe_that_closes_stops_quietly() {
    use std::io::Read;
    use wechat_push::store::{Inbox, SqliteStore};
    let dir = temp_dir("pipe");
    let config = write_config(&dir, 0);
    let store = SqliteStore::open(&dir.join("data/inbox.db")).unwrap();
    // Far more than a pipe's buffer (64 KiB) of rows.
    for i in 0..2_000 {
        let key = format!("m:oUser{i}:{i}:{i:032x}");
        store
            .insert(stored_push(&key, &format!("oUser{i}"), b"{}"), None)
            .await
            .unwrap();
    }
    drop(store);
    let mut child = Command::new(bin())
        .args(["inbox", "list", "--limit", "2000", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reading end closes, as `head` does once it has its line.
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(13) || status.success(),
        "{status:?}: {stderr}"
    );
}

/// `store migrate` brings a store up to date and says which, without
/// serving (the README's step before a rolling deploy).
#[test]
fn store_migrate_prepares_the_store_and_exits() {
    let dir = temp_dir("migrate");
    let config = write_config(&dir, 0);
    let out = Command::new(bin())
        .args(["store", "migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("is up to date"), "{text}");
    assert!(dir.join("data/inbox.db").exists());
}
