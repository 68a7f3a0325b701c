//! Several `serve` processes sharing one PostgreSQL store, as several hosts
//! behind a load balancer: WeChat's retries of one push land on different
//! instances at once, instances die holding claims, tokens are shared.
//!
//! Run against the database `WP_TEST_POSTGRES_URL` names (`.ci/run` makes
//! one), each test in a schema of its own. Without the variable they pass
//! with a note; with it, a database that does not answer fails them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wechat_push::store::{DeliveryLog, Inbox, ListFilter, PostgresStore};

use super::serve::{
    mock_json, send_text, spawn_mock, start, wait_sent, write_answering_config, write_config,
};
use super::temp_dir;

/// A fresh schema for `name` in the test database, as a store URL; `None`
/// (with a note) when `WP_TEST_POSTGRES_URL` is not set.
async fn database(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("WP_TEST_POSTGRES_URL") else {
        eprintln!("{name}: WP_TEST_POSTGRES_URL is not set, not run");
        return None;
    };
    let schema = format!("cli_{}_{name}", std::process::id());
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("WP_TEST_POSTGRES_URL={base} does not answer: {e}"));
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{separator}options=-csearch_path%3D{schema}"))
}

/// `config` with its store moved to `url`, and `extra` appended.
fn on_postgres(config: &Path, url: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("url = \"sqlite://") {
                format!("url = \"{url}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(config, format!("{text}{extra}")).unwrap();
    config.to_path_buf()
}

/// A forward target that records each delivery it answers, by
/// `webhook-id`, and hangs (never answers in time) while `hang` is set.
async fn spawn_backend(hang: Arc<AtomicBool>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hooks/wechat",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let (record, hang) = (record.clone(), hang.clone());
            async move {
                if hang.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                record.lock().unwrap().push(id);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, got)
}

fn forward_to(port: u16) -> String {
    format!(
        "[[apps.forward]]\nurl = \"http://127.0.0.1:{port}/hooks/wechat\"\n\
         secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntimeout = \"1s\"\n\
         retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]\n"
    )
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Test 1: the same 1,000 pushes sent 4 times each, spread over two
/// instances at once: every request answered right, one row per push, one
/// handling and one delivery per push.
#[tokio::test(flavor = "multi_thread")]
async fn retries_spread_over_two_instances_are_one_push_handled_once() {
    let Some(url) = database("spread").await else {
        return;
    };
    let (port, got) = spawn_backend(Arc::default()).await;
    let dir = temp_dir("pg-spread");
    let config = on_postgres(&write_config(&dir, 8), &url, &forward_to(port));
    let (a, b) = (start(&config, &[]), start(&config, &[]));
    let addrs = Arc::new([a.addr.clone(), b.addr.clone()]);
    let pushes = 1_000u64;
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..pushes {
        for copy in 0..4u64 {
            let (addrs, limit) = (addrs.clone(), limit.clone());
            sends.spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                let addr = &addrs[((i + copy) % 2) as usize];
                send_text(addr, 50_000 + i, "one push, four deliveries").await
            });
        }
    }
    let mut answers = 0;
    while let Some(answer) = sends.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!((status, body.as_str()), (200, "success"));
        answers += 1;
    }
    assert_eq!(answers, 4 * pushes);
    let store = PostgresStore::open(&url).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        counts.pending + counts.working + counts.done + counts.dead,
        pushes
    );
    wait_for("every push delivered", Duration::from_secs(60), || {
        got.lock().unwrap().len() as u64 >= pushes
    })
    .await;
    // Time for a second delivery of any, to be caught.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = got.lock().unwrap().clone();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for id in &got {
        *ids.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(ids.len() as u64, pushes, "one webhook-id per push");
    assert!(ids.values().all(|&n| n == 1), "each delivered once");
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.done, counts.dead), (pushes, 0), "{counts:?}");
    // Handled once: one claim each (a second handling would be a second
    // attempt, even where its delivery was de-duplicated).
    let all = store.list(ListFilter::default()).await.unwrap();
    assert_eq!(all.len() as u64, pushes);
    let again: Vec<_> = all.iter().filter(|p| p.attempts != 1).collect();
    assert!(again.is_empty(), "handled more than once: {again:?}");
}

/// Test 2: `kill -9` of an instance while it holds deliveries (its backend
/// hangs): the other instance finishes every one once the lease runs out
/// (the target's timeout, 1 s, plus 5 s), each with one more attempt, and
/// what was finished before is not sent again. A push answered and not yet
/// handled when its instance dies is handled by the other.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_holding_claims_leaves_them_to_the_other() {
    let Some(url) = database("kill").await else {
        return;
    };
    let hang = Arc::new(AtomicBool::new(false));
    let (port, got) = spawn_backend(hang.clone()).await;
    let dir = temp_dir("pg-kill");
    let config = on_postgres(&write_config(&dir, 8), &url, &forward_to(port));
    let mut a = start(&config, &[]);
    // Finished before the kill: delivered once, never again.
    for i in 0..5 {
        assert_eq!(send_text(&a.addr, 60_000 + i, "early").await.1, "success");
    }
    wait_for(
        "the early pushes delivered",
        Duration::from_secs(20),
        || got.lock().unwrap().len() == 5,
    )
    .await;
    hang.store(true, Ordering::SeqCst);
    for i in 5..15 {
        assert_eq!(send_text(&a.addr, 60_000 + i, "held").await.1, "success");
    }
    // Give the deliveries time to be claimed and posted (they hang).
    let store = PostgresStore::open(&url).await.unwrap();
    let working = || async {
        let mut n = 0;
        for i in 5..15u64 {
            let p = store
                .get(format!("m:oUser{}:{}", 60_000 + i, 60_000 + i))
                .await
                .unwrap();
            for d in store.deliveries(p[0].id).await.unwrap() {
                if d.status == wechat_push::store::DeliveryStatus::Working {
                    n += 1;
                }
            }
        }
        n
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while working().await < 10 {
        assert!(
            Instant::now() < deadline,
            "the held deliveries were never claimed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed_at = Instant::now();
    // Attempts so far (the killed instance retried each hung delivery
    // after its 1 s timeout, some maybe more than once).
    let mut at_kill = Vec::new();
    for i in 5..15u64 {
        let p = store
            .get(format!("m:oUser{}:{}", 60_000 + i, 60_000 + i))
            .await
            .unwrap();
        at_kill.push(store.deliveries(p[0].id).await.unwrap()[0].attempts);
    }
    hang.store(false, Ordering::SeqCst);
    let b = start(&config, &[]);
    // The lease (1 s + 5 s), a claim poll, and a little.
    wait_for(
        "the held deliveries finished by the other instance",
        Duration::from_secs(12),
        || got.lock().unwrap().len() == 15,
    )
    .await;
    let took = killed_at.elapsed();
    // Some were still leased to the dead instance (claimed at most ~1.2 s
    // before the kill, for 6 s).
    assert!(
        took >= Duration::from_secs(4),
        "taken before the lease ran out: {took:?}"
    );
    for i in 5..15u64 {
        let p = store
            .get(format!("m:oUser{}:{}", 60_000 + i, 60_000 + i))
            .await
            .unwrap();
        // The backend has it; the outcome is recorded once its answer is read.
        let deadline = Instant::now() + Duration::from_secs(5);
        let d = loop {
            let d = store.deliveries(p[0].id).await.unwrap().remove(0);
            if d.status == wechat_push::store::DeliveryStatus::Delivered {
                break d;
            }
            assert!(Instant::now() < deadline, "never recorded delivered: {d:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            d.attempts,
            at_kill[(i - 5) as usize] + 1,
            "one more attempt than the killed one made"
        );
    }
    let got = got.lock().unwrap().clone();
    let distinct: std::collections::HashSet<&String> = got.iter().collect();
    assert_eq!(
        distinct.len(),
        15,
        "nothing finished was sent again: {got:?}"
    );
    drop(b);
}

/// Test 2, the other half: `kill -9` right after an instance answered
/// `success` for a push it had not handled yet (its one worker is stuck on
/// an earlier push, whose customer-service call WeChat holds): the push is
/// not lost, the other instance handles it and its answer reaches the user.
/// The stuck push's answer, whose fate the dead instance never learned, is
/// not sent a second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_answered_then_its_instance_killed_is_handled_by_the_other() {
    let Some(url) = database("kill_answered").await else {
        return;
    };
    let mock = spawn_mock().await;
    let fault = reqwest::Client::new()
        .post(format!("{mock}/_mock/faults"))
        .json(&serde_json::json!({
            "path": "/cgi-bin/message/custom/send", "errcode": -1, "delay_ms": 120_000
        }))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success(), "{:?}", fault.text().await);
    let dir = temp_dir("pg-kill-answered");
    let config = write_answering_config(&dir, 1, &mock);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "poll_interval = \"50ms\"",
        "poll_interval = \"50ms\"\nlease = \"4s\"\nhandler_timeout = \"3s\"",
    );
    std::fs::write(&config, text).unwrap();
    let config = on_postgres(&config, &url, "");
    let mut a = start(&config, &[]);
    // The first push takes A's only worker, which waits on WeChat.
    assert_eq!(send_text(&a.addr, 80_001, "hello").await.1, "success");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = mock_json(&format!("{mock}/_mock/calls")).await;
        let sends = calls.as_array().unwrap().iter();
        if sends
            .filter(|c| c["path"] == "/cgi-bin/message/custom/send")
            .count()
            == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "A never called WeChat: {calls}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The second is stored and answered, and waits for the worker.
    assert_eq!(send_text(&a.addr, 80_002, "hello").await.1, "success");
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    let store = PostgresStore::open(&url).await.unwrap();
    let second = store.get("m:oUser80002:80002".into()).await.unwrap();
    assert_eq!(second.len(), 1, "the answered push is stored");
    assert_ne!(
        second[0].status,
        wechat_push::store::Status::Done,
        "not handled before the kill, as the test intends"
    );
    let b = start(&config, &[]);
    // The lease (4 s), a poll, and a little.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = store.get("m:oUser80002:80002".into()).await.unwrap();
        if p[0].status == wechat_push::store::Status::Done {
            break;
        }
        assert!(Instant::now() < deadline, "never handled: {:?}", p[0]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = wait_sent(&mock, 1).await;
    let sent = sent.as_array().unwrap();
    assert_eq!(sent[0]["touser"], "oUser80002", "{sent:?}");
    // Nothing more: the first push's answer stays uncertain, not sent twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = mock_json(&format!("{mock}/_mock/sent")).await;
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    drop(b);
}

/// Test 3: three instances against `mock-wechat`: one access-token fetch
/// in all; after WeChat refuses it once (40001), one refresh in all.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_fetch_one_token_and_refresh_it_once() {
    let Some(url) = database("token").await else {
        return;
    };
    let mock = spawn_mock().await;
    let dir = temp_dir("pg-token");
    let config = on_postgres(&write_answering_config(&dir, 4, &mock), &url, "");
    let servers = [
        start(&config, &[]),
        start(&config, &[]),
        start(&config, &[]),
    ];
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..9u64 {
        let addr = servers[(i % 3) as usize].addr.clone();
        sends.spawn(async move { send_text(&addr, 70_000 + i, "hello!").await });
    }
    while let Some(answer) = sends.join_next().await {
        assert_eq!(answer.unwrap().1, "success");
    }
    wait_sent(&mock, 9).await;
    let fetches = |calls: &serde_json::Value| {
        calls
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["path"].as_str().unwrap().ends_with("token"))
            .count()
    };
    let calls = mock_json(&format!("{mock}/_mock/calls")).await;
    assert_eq!(fetches(&calls), 1, "{calls}");

    // WeChat refuses the token once: one refresh, whoever meets it first.
    let fault = reqwest::Client::new()
        .post(format!("{mock}/_mock/faults"))
        .json(&serde_json::json!({"path": "/cgi-bin/message/custom/send", "errcode": 40001}))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success(), "{:?}", fault.text().await);
    let mut sends = tokio::task::JoinSet::new();
    for i in 9..18u64 {
        let addr = servers[(i % 3) as usize].addr.clone();
        sends.spawn(async move { send_text(&addr, 70_000 + i, "hello!").await });
    }
    while let Some(answer) = sends.join_next().await {
        assert_eq!(answer.unwrap().1, "success");
    }
    wait_sent(&mock, 18).await;
    let calls = mock_json(&format!("{mock}/_mock/calls")).await;
    assert_eq!(fetches(&calls), 2, "{calls}");
}

/// The database going away: pushes get 503 (WeChat retries them) and
/// `/healthz` turns 503; when it is back the server recovers by itself.
/// The database is cut by a proxy of the test's own between the server and
/// PostgreSQL, so the machine's PostgreSQL keeps serving other tests.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_down_answers_503_and_the_server_recovers_when_it_returns() {
    let Some(url) = database("down").await else {
        return;
    };
    let target = {
        let config: tokio_postgres::Config = url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            other => panic!("a TCP host is needed for the proxy: {other:?}"),
        };
        format!(
            "{host}:{}",
            config.get_ports().first().copied().unwrap_or(5432)
        )
    };
    let proxy = Proxy::start(target).await;
    let through = replace_host_port(&url, &format!("127.0.0.1:{}", proxy.port));
    let dir = temp_dir("pg-down");
    let config = on_postgres(&write_config(&dir, 2), &through, "");
    let server = start(&config, &[]);
    let health = |addr: String| async move {
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send_text(&server.addr, 80_001, "up").await.0, 200);
    assert_eq!(health(server.addr.clone()).await, 200);

    proxy.cut(true);
    let (status, _) = send_text(&server.addr, 80_002, "down").await;
    assert_eq!(
        status, 503,
        "a push the store could not take must be retried"
    );
    assert_eq!(health(server.addr.clone()).await, 503);

    proxy.cut(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = send_text(&server.addr, 80_002, "down").await;
        if status == 200 {
            assert_eq!(body, "success");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health(server.addr.clone()).await, 200);
    let store = PostgresStore::open(&url).await.unwrap();
    assert_eq!(
        store.get("m:oUser80002:80002".into()).await.unwrap().len(),
        1
    );
}

fn replace_host_port(url: &str, host_port: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!(
        "{scheme}://{}{host_port}{path}",
        userinfo.unwrap_or_default()
    )
}

/// A TCP proxy to PostgreSQL that can cut every connection and refuse new
/// ones, as a database host going away does.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (down2, generation2) = (down.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if down2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cut = generation2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            down,
            generation,
        }
    }

    fn cut(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}
