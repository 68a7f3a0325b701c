//! Running in production: the admin listener and readiness while draining.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::serve::{send_text, start, write_config};
use super::temp_dir;

/// `config` with `lines` added to its `[server]` table.
fn with_server_lines(config: &std::path::Path, lines: &str) {
    let text = std::fs::read_to_string(config).unwrap().replacen(
        "[server]\n",
        &format!("[server]\n{lines}\n"),
        1,
    );
    std::fs::write(config, text).unwrap();
}

async fn status_of(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// With `server.admin_listen`, `/metrics` and `/readyz` are served there
/// and not on the push port; the push port keeps the pushes and `/healthz`.
#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_are_served_on_the_admin_listener_only() {
    let dir = temp_dir("admin-listen");
    let config = write_config(&dir, 2);
    with_server_lines(&config, "admin_listen = \"127.0.0.1:0\"");
    let server = start(&config, &[]);
    let admin = server.admin.clone().expect("the admin address is logged");
    assert_ne!(admin, server.addr);
    assert_eq!(
        send_text(&server.addr, 1, "hi").await,
        (200, "success".into())
    );

    let public = &server.addr;
    assert_eq!(status_of(&format!("http://{public}/metrics")).await.0, 404);
    assert_eq!(status_of(&format!("http://{public}/readyz")).await.0, 404);
    assert_eq!(status_of(&format!("http://{public}/healthz")).await.0, 200);

    let (status, metrics) = status_of(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("wechat_push_pushes_total"), "{metrics}");
    assert_eq!(status_of(&format!("http://{admin}/readyz")).await.0, 200);
    assert_eq!(status_of(&format!("http://{admin}/healthz")).await.0, 200);
    // Pushes are not taken on the admin port.
    let push = format!("http://{admin}/wechat/{}", super::APPID);
    assert_eq!(status_of(&push).await.0, 404);
}

/// `/readyz` answers 503 from the moment a shutdown begins, while open
/// connections drain, so that a load balancer stops sending first.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_503_as_soon_as_a_shutdown_begins() {
    let dir = temp_dir("readyz-drain");
    let config = write_config(&dir, 2);
    with_server_lines(
        &config,
        "admin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"",
    );
    let mut server = start(&config, &[]);
    let admin = server.admin.clone().unwrap();
    let ready = format!("http://{admin}/readyz");
    assert_eq!(status_of(&ready).await.0, 200);
    // A request whose body is still coming keeps the drain open.
    let mut slow = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /wechat/{}?timestamp=1&nonce=1&signature=x HTTP/1.1\r\nhost: x\r\n\
             content-length: 100\r\n\r\n<xml>",
            super::APPID
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(3);
    let (status, body) = loop {
        let (status, body) = status_of(&ready).await;
        if status != 200 {
            break (status, body);
        }
        assert!(Instant::now() < deadline, "/readyz still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    drop(slow);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

/// `server.drain_delay`: after SIGTERM, `/readyz` on the push port answers
/// 503 at once while pushes are still taken, until the delay is over; then
/// the server drains and exits as before.
#[tokio::test(flavor = "multi_thread")]
async fn during_the_drain_delay_readyz_is_503_and_pushes_are_still_taken() {
    let dir = temp_dir("drain-delay");
    let config = write_config(&dir, 2);
    with_server_lines(&config, "drain_delay = \"2s\"");
    let mut server = start(&config, &[]);
    let ready = format!("http://{}/readyz", server.addr);
    assert_eq!(status_of(&ready).await.0, 200);
    let pid = server.child.id().to_string();
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    loop {
        let (status, body) = status_of(&ready).await;
        if status == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "/readyz still {status} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        send_text(&server.addr, 2, "still taken").await,
        (200, "success".into())
    );
    assert!(signalled.elapsed() < Duration::from_secs(2));
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited before the drain delay was over"
    );
}

/// A self-signed certificate for `localhost` and its key, PEM.
fn self_signed() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (made.cert.pem(), made.key_pair.serialize_pem())
}

/// `simulate send` to `url`, trusting `ca`; its exit status and output.
fn simulate_https(url: &str, ca: &std::path::Path) -> (bool, String) {
    let out = Command::new(super::bin())
        .args([
            "simulate",
            "send",
            "--url",
            url,
            "--token",
            "AAAAA",
            "--aes-key",
            super::KEY,
            "--appid",
            super::APPID,
            "--mode",
            "safe",
            "--format",
            "json",
            "--text",
            "hi",
        ])
        .arg("--ca")
        .arg(ca)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// HTTPS built in (`server.tls_cert`, `server.tls_key`): `simulate send
/// --url https://… --ca FILE` is answered `success`; a renewed certificate
/// written over the files is served without a restart, and a client that
/// trusts only the old one is refused from then on.
#[tokio::test(flavor = "multi_thread")]
async fn https_is_served_and_a_renewed_certificate_is_taken_up_without_a_restart() {
    let dir = temp_dir("https");
    let (cert, key) = self_signed();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let old_ca = dir.join("old-ca.pem");
    std::fs::write(&old_ca, &cert).unwrap();
    let config = write_config(&dir, 2);
    with_server_lines(
        &config,
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert_path.display(),
            key_path.display()
        ),
    );
    let server = start(&config, &[]);
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/wechat/{}", super::APPID);
    let (ok, out) = simulate_https(&url, &old_ca);
    assert!(ok, "{out}");
    assert!(out.contains("success"), "{out}");
    // Plain HTTP on the HTTPS port is not answered as a push.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.is_err(), "{plain:?}");

    // A key that does not match the certificate (a renewal half written)
    // is refused, and the certificate in force stays.
    let (new_cert, new_key) = self_signed();
    std::fs::write(&key_path, &new_key).unwrap();
    // Files are looked at again on a handshake, at most every 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (ok, out) = simulate_https(&url, &old_ca);
    assert!(ok, "the certificate in force was dropped: {out}");
    server.wait_log("cannot be used");

    // Renewed: the new key and its certificate over the same files.
    std::fs::write(&key_path, &new_key).unwrap();
    std::fs::write(&cert_path, &new_cert).unwrap();
    let new_ca = dir.join("new-ca.pem");
    std::fs::write(&new_ca, &new_cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = simulate_https(&url, &new_ca);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, out) = simulate_https(&url, &old_ca);
    assert!(!ok, "the old certificate is still served: {out}");
    server.wait_log("TLS certificate reloaded");
}

/// SIGHUP with `tls_cert`/`tls_key` pointing at other files: served from
/// the next handshake. A pair that does not match is refused whole (the
/// reload changes nothing, the certificate in force stays).
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_takes_up_certificate_files_named_by_the_new_config() {
    let dir = temp_dir("https-reload");
    let write_pair = |name: &str, cert: &str, key: &str| {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    };
    let (cert, key) = self_signed();
    let (cert_path, key_path) = write_pair("first", &cert, &key);
    let first_ca = dir.join("first-ca.pem");
    std::fs::write(&first_ca, &cert).unwrap();
    let config = write_config(&dir, 2);
    let base = std::fs::read_to_string(&config).unwrap();
    let use_pair = |c: &std::path::Path, k: &std::path::Path| {
        std::fs::write(&config, &base).unwrap();
        with_server_lines(
            &config,
            &format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"",
                c.display(),
                k.display()
            ),
        );
    };
    use_pair(&cert_path, &key_path);
    let server = start(&config, &[]);
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/wechat/{}", super::APPID);
    assert!(simulate_https(&url, &first_ca).0);

    // Another certificate's key with this certificate: refused.
    let (second, second_key) = self_signed();
    let (bad_cert, bad_key) = write_pair("mismatched", &cert, &second_key);
    use_pair(&bad_cert, &bad_key);
    hup();
    let line = server.wait_log("new configuration refused");
    assert!(line.contains("does not match the certificate"), "{line}");
    let (ok, out) = simulate_https(&url, &first_ca);
    assert!(ok, "the certificate in force was dropped: {out}");

    let (second_cert, second_key_path) = write_pair("second", &second, &second_key);
    let second_ca = dir.join("second-ca.pem");
    std::fs::write(&second_ca, &second).unwrap();
    use_pair(&second_cert, &second_key_path);
    hup();
    server.wait_log("configuration reloaded");
    let (ok, out) = simulate_https(&url, &second_ca);
    assert!(ok, "the new certificate is not served: {out}");
    assert!(!simulate_https(&url, &first_ca).0, "the old one still is");
}

/// nginx, stopped when the test ends however it ends: SIGTERM, so that its
/// master stops its workers too (SIGKILL would leave them running).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.0.wait();
    }
}

/// The README's reverse-proxy recipe, `deploy/nginx.conf` as written (its
/// port, certificate paths and upstream replaced), run by a real nginx in
/// front of `serve`: `simulate send --ca` through it gets `success`, and
/// `/metrics` is not reachable through it. Needs `WP_TEST_NGINX` (nginx's
/// path, or `1` for the one on PATH), which `.ci/run` sets.
#[tokio::test(flavor = "multi_thread")]
async fn the_nginx_recipe_terminates_tls_in_front_of_serve() {
    let Ok(nginx) = std::env::var("WP_TEST_NGINX") else {
        eprintln!("WP_TEST_NGINX is not set: the nginx recipe is not run (.ci/run sets it)");
        return;
    };
    let nginx = if nginx == "1" {
        "nginx".to_owned()
    } else {
        nginx
    };
    let dir = temp_dir("nginx");
    let config = write_config(&dir, 2);
    with_server_lines(&config, "trusted_proxies = [\"127.0.0.1\"]");
    let server = start(&config, &[]);
    let (cert, key) = self_signed();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let recipe = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nginx.conf"
    ))
    .unwrap();
    let mut site = recipe.clone();
    for (from, to) in [
        ("server 127.0.0.1:8080;", format!("server {};", server.addr)),
        ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
        (
            "/etc/letsencrypt/live/push.example.com/fullchain.pem",
            cert_path.display().to_string(),
        ),
        (
            "/etc/letsencrypt/live/push.example.com/privkey.pem",
            key_path.display().to_string(),
        ),
    ] {
        assert!(
            site.contains(from),
            "deploy/nginx.conf no longer has {from:?}"
        );
        site = site.replace(from, &to);
    }
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\n  access_log {d}/access.log;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .spawn()
        .unwrap_or_else(|e| panic!("WP_TEST_NGINX={nginx} cannot be run: {e}"));
    let _nginx = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "nginx never listened: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("https://localhost:{port}/wechat/{}", super::APPID);
    let (ok, out) = simulate_https(&url, &cert_path);
    assert!(ok, "{out}");
    assert!(out.contains("success"), "{out}");
    // nginx is trusted: the access line names the client behind it.
    let line = server.wait_log("wechat_push::access");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 200, "{line}");
    assert_eq!(v["forwarded"], "127.0.0.1", "{line}");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .build()
        .unwrap();
    let metrics = client
        .get(format!("https://localhost:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 404, "/metrics reached through nginx");
    let health = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// `config check` validates as `serve` does, shows the effective settings
/// with every secret redacted, and what to enter in WeChat's console.
#[test]
fn config_check_shows_the_console_settings_and_no_secret() {
    let dir = temp_dir("config-check");
    let config = write_config(&dir, 2);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "mode = \"safe\"\n",
        "mode = \"safe\"\nsecret = \"s3cr3t-app-secret\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(super::bin())
        .args(["config", "check", "-c"])
        .arg(&config)
        .env("WECHAT_PUSH_INBOX_WORKERS", "7")
        .env("WECHAT_PUSH_STORE_URL", "postgres://wp:pgpass@db:5432/wp")
        .output()
        .unwrap();
    let shown = super::text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("workers = 7"), "{shown}");
    assert!(shown.contains("postgres://wp:***@db:5432/wp"), "{shown}");
    assert!(
        shown.contains(&format!("URL:   http://YOUR-HOST/wechat/{}", super::APPID)),
        "{shown}"
    );
    assert!(shown.contains("Token: AAAAA"), "{shown}");
    assert!(shown.contains("Mode:  safe (安全模式)"), "{shown}");
    for secret in ["s3cr3t", super::KEY, "pgpass"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }

    // A mistake is named by its key, and nothing is printed as valid.
    let out = Command::new(super::bin())
        .args(["config", "check", "--config"])
        .arg(&config)
        .env("WECHAT_PUSH_APP_WXBA5FAD812F8E6FB9_TOKEN", "x")
        .output()
        .unwrap();
    let shown = super::text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("WECHAT_PUSH_APP_WXBA5FAD812F8E6FB9_TOKEN")
            && shown.contains("apps[0].token: must be 3 to 32 characters"),
        "{shown}"
    );
    assert!(!shown.contains(": valid."), "{shown}");
}

/// A mistake in the file is named by file, line and key: of a value
/// `validate` refuses, of a rule and of a forward target (checked by their
/// own layers), and of an unknown key. The same mistake set by a variable
/// names the variable, not the file.
#[test]
fn config_errors_name_the_file_and_line_of_the_key_at_fault() {
    let dir = temp_dir("config-line");
    let config = write_config(&dir, 2);
    let original = std::fs::read_to_string(&config).unwrap();
    let line_of = |text: &str, needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle} not in\n{text}"))
    };
    let check = |text: &str, env: &[(&str, &str)]| {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(super::bin())
            .args(["config", "check", "-c"])
            .arg(&config)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success());
        super::text(&out)
    };
    let path = config.display().to_string();

    let text = original.replacen("[server]\n", "[server]\nheader_timeout = \"0s\"\n", 1);
    let shown = check(&text, &[]);
    let line = line_of(&text, "header_timeout");
    assert!(
        shown.contains(&format!(
            "{path}:{line}:1: server.header_timeout: must be more than 0"
        )),
        "{shown}"
    );

    let text = format!("{original}\n[[apps.rules]]\nregex = \"(\"\nreply = {{ text = \"x\" }}\n");
    let shown = check(&text, &[]);
    let line = line_of(&text, "regex");
    assert!(
        shown.contains(&format!("{path}:{line}:1: apps[0].rules[0]")),
        "{shown}"
    );

    let text = format!("{original}\n[[apps.forward]]\nurl = \"ftp://example.com/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n");
    let shown = check(&text, &[]);
    let line = line_of(&text, "url = \"ftp");
    assert!(
        shown.contains(&format!("{path}:{line}:1: apps[0].forward[0].url")),
        "{shown}"
    );

    let text = original.replacen("[server]\n", "[server]\nlisen = \"0.0.0.0:80\"\n", 1);
    let shown = check(&text, &[]);
    let line = line_of(&text, "lisen");
    assert!(
        shown.contains(&format!(
            "{path}:{line}:1: server.lisen: unknown field `lisen`"
        )),
        "{shown}"
    );

    let shown = check(&original, &[("WECHAT_PUSH_SERVER_HEADER_TIMEOUT", "0s")]);
    assert!(
        shown.contains(
            "environment variable WECHAT_PUSH_SERVER_HEADER_TIMEOUT: server.header_timeout"
        ) && !shown.contains(&format!("{path}:")),
        "{shown}"
    );
}

/// The start-up line names the build, the store without its password, and
/// each app's push URL.
#[tokio::test(flavor = "multi_thread")]
async fn the_start_up_line_names_version_store_and_push_urls() {
    let dir = temp_dir("start-up-line");
    let config = write_config(&dir, 2);
    let server = start(&config, &[]);
    let line = server
        .start_logs
        .iter()
        .find(|l| l.contains("\"listening\""))
        .cloned()
        .expect("a listening line");
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
    assert!(line.contains("/data/inbox.db"), "{line}");
    assert!(
        line.contains(&format!("http://{}/wechat/{}", server.addr, super::APPID)),
        "{line}"
    );
}

/// One access-log line per request: method, path without its query,
/// status, latency, peer, the client behind a trusted proxy, appid and the
/// refusal reason. `X-Forwarded-For` is believed only from
/// `server.trusted_proxies`; `access_log = false` writes none.
#[tokio::test(flavor = "multi_thread")]
async fn each_request_gets_an_access_line_and_forwarded_addresses_only_from_trusted_proxies() {
    let access_lines = |lines: Vec<String>| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "wechat_push::access")
            .collect()
    };
    let client = reqwest::Client::new();
    let refused_url = |addr: &str| {
        format!(
            "http://{addr}/wechat/{}?signature=s3cr3tq&timestamp=1&nonce=1&msg_signature=0000&encrypt_type=aes",
            super::APPID
        )
    };
    for (trusted, expected) in [
        (Some("[\"127.0.0.0/8\"]"), Some("203.0.113.9")),
        (None, None),
    ] {
        let dir = temp_dir("access-log");
        let config = write_config(&dir, 2);
        if let Some(trusted) = trusted {
            with_server_lines(&config, &format!("trusted_proxies = {trusted}"));
        }
        let server = start(&config, &[]);
        let r = client
            .post(refused_url(&server.addr))
            .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
            .body(r#"{"ToUserName":"gh","Encrypt":"abc="}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(send_text(&server.addr, 7, "hi").await.0, 200);
        let lines = access_lines(server.drain_logs());
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (refused, stored) = (&lines[0], &lines[1]);
        assert_eq!(refused["method"], "POST");
        assert_eq!(refused["path"], format!("/wechat/{}", super::APPID));
        assert_eq!(refused["status"], 401);
        assert_eq!(refused["appid"], super::APPID);
        assert_eq!(refused["reason"], "msg_signature_mismatch");
        assert!(refused["latency_ms"].as_f64().unwrap() >= 0.0);
        assert!(refused["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(refused["forwarded"].as_str(), expected, "{refused}");
        assert!(!refused.to_string().contains("s3cr3tq"), "{refused}");
        assert_eq!(stored["status"], 200);
        assert!(stored.get("reason").is_none(), "{stored}");
    }

    let dir = temp_dir("access-log-off");
    let config = write_config(&dir, 2);
    with_server_lines(&config, "access_log = false");
    let server = start(&config, &[]);
    assert_eq!(send_text(&server.addr, 8, "hi").await.0, 200);
    let r = client
        .post(refused_url(&server.addr))
        .body(r#"{"ToUserName":"gh","Encrypt":"abc="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let lines = server.drain_logs();
    assert!(
        lines.iter().any(|l| l.contains("\"refused\"")),
        "the refusal is still logged: {lines:?}"
    );
    assert!(access_lines(lines.clone()).is_empty(), "{lines:?}");
}

/// Log lines standard output refuses (here a pipe whose reader went away)
/// are counted, and the server goes on taking pushes.
#[tokio::test(flavor = "multi_thread")]
async fn log_lines_standard_output_refuses_are_counted() {
    use std::io::BufRead;
    let dir = temp_dir("log-dropped");
    let config = write_config(&dir, 0);
    let mut child = Command::new(super::bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("\"listening\""))
        .expect("never listened");
    let v: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let addr = v["addr"].as_str().unwrap().to_owned();
    drop(lines);
    let dropped = |text: &str, reason: &str| -> u64 {
        let series = format!("wechat_push_log_lines_dropped_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut msg_id = 1;
    let lost = loop {
        let (status, _) = send_text(&addr, msg_id, "hello").await;
        assert_eq!(status, 200);
        msg_id += 1;
        let (_, text) = status_of(&format!("http://{addr}/metrics")).await;
        let lost = dropped(&text, "write_failed");
        assert_eq!(dropped(&text, "queue_full"), 0);
        if lost > 0 || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(lost > 0, "no line counted as dropped after {msg_id} pushes");
}

/// `wechat-push --help` names every command, and each command's `--help`
/// its subcommands (issue 17: a new user starts from there).
#[test]
fn help_names_every_command() {
    let help = |args: &[&str]| {
        let out = Command::new(super::bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", super::text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&["--help"]);
    for command in [
        "serve",
        "inbox",
        "simulate",
        "crypto",
        "token",
        "config",
        "store",
        "mock-wechat",
    ] {
        assert!(
            top.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from:\n{top}"
        );
    }
    assert!(help(&["store", "--help"]).contains("migrate"));
    assert!(help(&["config", "--help"]).contains("check"));
}
