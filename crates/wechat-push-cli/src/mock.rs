//! `wechat-push mock-wechat`: a local stand-in for WeChat's API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use wechat_push::mock_wechat::MockWechat;
use wechat_push::Config;

#[derive(Debug, Args)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9080")]
    listen: SocketAddr,
    /// An app it knows, APPID=SECRET (repeatable).
    #[arg(long = "app", value_name = "APPID=SECRET")]
    apps: Vec<String>,
    /// Take the apps (with a secret) from a wechat-push config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Give users no reply window until POST /_mock/user_action opens one.
    #[arg(long)]
    strict_windows: bool,
}

/// Serve until Ctrl-C.
pub fn run(a: MockArgs) -> Result<()> {
    let mut apps = HashMap::new();
    for app in &a.apps {
        let (appid, secret) = app
            .split_once('=')
            .with_context(|| format!("--app {app:?} is not APPID=SECRET"))?;
        apps.insert(appid.to_owned(), secret.to_owned());
    }
    if let Some(path) = &a.config {
        let config = Config::load(Some(path), std::env::vars())
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        for app in config.apps {
            if let Some(secret) = app.secret {
                apps.insert(app.appid, secret.expose().to_owned());
            }
        }
    }
    if apps.is_empty() {
        bail!("no apps: pass --app APPID=SECRET or --config FILE with apps that have a secret");
    }
    crate::block_on(crate::Threads::All, async move {
        let count = apps.len();
        let mut mock = MockWechat::bind(a.listen, apps)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        if a.strict_windows {
            mock = mock.strict_windows();
        }
        eprintln!("mock WeChat API on http://{} for {count} app(s); /_mock/sent, /_mock/calls, /_mock/faults", mock.local_addr());
        mock.run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("mock server failed")
    })
}
