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
    /// The app.
    appid: String,
}

/// Run one `token` subcommand.
pub fn run(cmd: TokenCommand) -> Result<()> {
    let TokenCommand::Show(a) = cmd;
    let config = a.config.load()?;
    crate::block_on(crate::Threads::One, async move {
        let store = crate::open_store(&config).await?;
        let Some(t) = store.token(a.appid.clone()).await? else {
            bail!("no access token is cached for {}", a.appid);
        };
        let now = now_ms();
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
