//! The ceiling for the server benchmark: a bare axum handler that verifies
//! and decrypts a push (`AppCrypto::open`) and answers `success`, storing
//! nothing. `wechat-push serve` does all of this plus a durable, de-duplicated
//! insert, so it can only be slower; the benchmark reports by how much.
//!
//! `cargo run --release --example bare_axum -- 127.0.0.1:8090 wechat-push.example.toml`

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::post;
use axum::Router;
use wechat_push::{AppCrypto, Config, PushQuery};

async fn receive(
    State(app): State<Arc<AppCrypto>>,
    Query(q): Query<PushQuery>,
    body: Bytes,
) -> &'static str {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match app.open(&q, &body, now, std::time::Duration::from_secs(300)) {
        Ok(opened) => {
            std::hint::black_box(opened.message.dedup_key());
            "success"
        }
        Err(_) => "refused",
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let config_path = args
        .next()
        .unwrap_or_else(|| "wechat-push.example.toml".into());
    let config = Config::load(Some(std::path::Path::new(&config_path)), std::env::vars())?;
    let app = config.apps.first().ok_or("no [[apps]] in the config")?;
    let crypto = Arc::new(app.crypto(0)?);
    let path = format!("/wechat/{}", app.appid);
    let router = Router::new().route(&path, post(receive)).with_state(crypto);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare axum ceiling listening on {addr}{path}");
    axum::serve(listener, router).await?;
    Ok(())
}
