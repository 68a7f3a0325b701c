//! Answer users from Rust: handlers by message type and event.
//! `cargo run --example router` with a `wechat-push.toml` (apps with a `secret`).

use wechat_push::api::WechatApi;
use wechat_push::router::{Reply, Router};
use wechat_push::{Application, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(Some("wechat-push.toml".as_ref()), std::env::vars())?;
    // SQLite or PostgreSQL, as `store.url` says.
    let store = wechat_push::store::open(&config.store.location()?).await?;
    let api = WechatApi::new(
        &config.wechat.api_base,
        store.clone(),
        config.secrets(),
        config.wechat.token_kind,
    );
    let router = Router::new()
        .with_api(api, store.clone())
        .on_msg_type("text", |ctx| async move {
            // Slow work is fine: after a second the user sees "typing…".
            Ok(Reply::text(format!(
                "You said: {}",
                ctx.text().unwrap_or_default()
            )))
        })
        .on_passive(
            "image",
            |_ctx| async move { Ok(Reply::TransferCustomerService) },
        )
        .on_event("user_enter_tempsession", |_ctx| async move {
            Ok(Reply::text("Welcome! Ask us anything."))
        });
    let app = Application::build_with_store(config, store, router).await?;
    app.run_until_stopped(async {
        tokio::signal::ctrl_c().await.ok();
    })
    .await?;
    Ok(())
}
