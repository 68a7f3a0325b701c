//! The `wechat-push` command as users run it: one test binary, each
//! command's contract in its own module, the helpers they share here.

#![allow(clippy::unwrap_used)]

mod browser;
mod console;
mod crypto;
mod operations;
mod postgres;
mod serve;
mod simulate;

use std::path::PathBuf;
use std::process::Output;

/// The test apps' appid and EncodingAESKey (WeChat's documented example appid).
const APPID: &str = "wxba5fad812f8e6fb9";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFH";

/// The binary under test.
fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wechat-push")
}

/// An empty directory of this test's own, under the system's temporary one.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wp-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A command's standard output and error, together.
fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
