//! The whole server with a handler of your own (the README's example).
//!
//! `cargo run --example handler` with a `wechat-push.toml` in the current directory.

use wechat_push::{Application, Body, Config, Handler, HandlerError, PassiveReply, Push};

struct Echo;

impl Handler for Echo {
    async fn handle(&self, push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        if let Body::Text(text) = &push.message.body {
            println!("{} said {}", push.message.from_user, text.content);
        }
        Ok(None) // an error is retried with backoff
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(Some("wechat-push.toml".as_ref()), std::env::vars())?;
    let app = Application::build(config, Echo).await?;
    app.run_until_stopped(async {
        tokio::signal::ctrl_c().await.ok();
    })
    .await?;
    Ok(())
}
