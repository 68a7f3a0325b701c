//! Integration tests, compiled into one binary.

#![allow(clippy::unwrap_used)]

mod answers;
mod api;
mod example_config;
mod fixtures;
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
