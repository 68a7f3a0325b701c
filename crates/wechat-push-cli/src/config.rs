//! `wechat-push config check`: validate a configuration and show what to
//! enter in WeChat's console.

use anyhow::{Context, Result};
use clap::Subcommand;
use wechat_push::config::AppKind;
use wechat_push::Mode;

use crate::ConfigArgs;

/// `wechat-push config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config (file and WECHAT_PUSH_* variables) as `serve`
    /// would, print the effective settings with secrets redacted, and for
    /// each app the URL, Token and mode to enter in WeChat's console.
    Check(ConfigArgs),
}

pub fn run(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Check(args) => check(&args),
    }
}

fn check(args: &ConfigArgs) -> Result<()> {
    let (config, shown) = args.load_showing()?;
    // As `serve` would at start-up (and a reload does): a key that does not
    // match its certificate is refused here too.
    if let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key) {
        wechat_push::tls::CertificateFiles::open(cert, key)
            .context("server.tls_cert and server.tls_key cannot be used")?;
    }
    println!(
        "# {}: valid. The effective settings (built-in defaults, then the file, then WECHAT_PUSH_* variables), secrets redacted:\n",
        args.config.display()
    );
    println!("{}", shown.trim_end());
    let scheme = if config.server.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "\n# In WeChat's console (Mini Program: 开发管理 → 开发设置 → 消息推送; Official Account: \
         设置与开发 → 基本配置 → 服务器配置), for each app. The host is the one WeChat reaches \
         (ports 80 or 443 only; behind a proxy, the proxy's); {} is where serve listens.",
        config.server.listen
    );
    for app in &config.apps {
        // The Token is shown here on purpose: it is what the console asks
        // for. Nothing else prints it.
        println!(
            "\n[{}] {}\n  URL:   {scheme}://YOUR-HOST/wechat/{}\n  Token: {}\n  Mode:  {}",
            app.appid,
            match app.kind {
                AppKind::MiniProgram => "Mini Program",
                AppKind::OfficialAccount => "Official Account",
            },
            app.appid,
            app.token.expose(),
            match app.mode {
                Mode::Plaintext => "plaintext (明文模式)",
                Mode::Compatible => "compatible (兼容模式)",
                Mode::Safe => "safe (安全模式)",
            }
        );
        if app.mode.is_encrypted() {
            println!("  EncodingAESKey: the one in apps.encoding_aes_key (not shown)");
        }
        println!("  Data format: {}", app.format);
    }
    Ok(())
}
