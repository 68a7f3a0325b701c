//! Integration tests, compiled into one binary.

#![allow(clippy::unwrap_used)]

mod answers;
mod api;
mod example_config;
mod fixtures;
mod forward;
mod mock_wechat;
mod properties;
mod server;
mod vectors;

use std::path::PathBuf;

/// A file under `tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// The WeChat API stand-in on a free port, knowing `appid` with the secret
/// `secret1`; with `strict`, users get no reply window until one is opened.
pub async fn spawn_mock(appid: &str, strict: bool) -> String {
    let apps = std::collections::HashMap::from([(appid.to_owned(), "secret1".to_owned())]);
    let mut mock = wechat_push::mock_wechat::MockWechat::bind("127.0.0.1:0".parse().unwrap(), apps)
        .await
        .unwrap();
    if strict {
        mock = mock.strict_windows();
    }
    let url = format!("http://{}", mock.local_addr());
    tokio::spawn(mock.run(std::future::pending()));
    url
}

/// A fresh, empty temporary directory for one test.
pub fn temp_dir(prefix: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("wp-{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
