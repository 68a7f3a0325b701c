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
