//! `wechat-push token show APPID`: the shared access token's age and expiry.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use wechat_push::clock::now_ms;

use crate::ConfigArgs;

/// The `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Show the cached access token's age and expiry (the token itself only with --reveal).
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the token itself too.
    #[arg(long)]
    reveal: bool,
    /// One JSON object: appid, fetched_at and expires_at (RFC 3339),
    /// expires_in_s (negative once expired), and token with --reveal.
    #[arg(long)]
    json: bool,
    /// The app.
    appid: String,
}

/// Run one `token` subcommand.
pub fn run(cmd: TokenCommand) -> Result<()> {
    let TokenCommand::Show(a) = cmd;
    let config = a.config.load()?;
    if !config.apps.iter().any(|app| app.appid == a.appid) {
        let known: Vec<&str> = config.apps.iter().map(|app| app.appid.as_str()).collect();
        bail!(
            "no app {} in {} (its apps: {})",
            a.appid,
            a.config.config.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    crate::block_on(crate::Threads::One, async move {
        let store = crate::open_existing_store(&config).await?;
        let Some(t) = store.token(a.appid.clone()).await? else {
            bail!("no access token is cached for {}", a.appid);
        };
        let now = now_ms();
        if a.json {
            let mut object = serde_json::json!({
                "appid": t.appid,
                "fetched_at": t.fetched_at.to_rfc3339(),
                "expires_at": t.expires_at.to_rfc3339(),
                "expires_in_s": (t.expires_at - now) / 1000,
            });
            if a.reveal {
                object["token"] = serde_json::Value::from(t.token.clone());
            }
            println!("{object}");
            return Ok(());
        }
        println!("appid:    {}", t.appid);
        println!(
            "fetched:  {} ({} s ago)",
            t.fetched_at.to_rfc3339(),
            (now - t.fetched_at) / 1000
        );
        if t.expires_at > now {
            println!(
                "expires:  {} (in {} s)",
                t.expires_at.to_rfc3339(),
                (t.expires_at - now) / 1000
            );
        } else {
            println!(
                "expires:  {} (expired {} s ago)",
                t.expires_at.to_rfc3339(),
                (now - t.expires_at) / 1000
            );
        }
        if a.reveal {
            println!("token:    {}", t.token);
        }
        Ok(())
    })
}
