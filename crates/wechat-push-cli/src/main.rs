//! `wechat-push`: receive WeChat message pushes; crypto tools for debugging them.

mod crypto;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Receive WeChat message pushes (Mini Programs, Official Accounts): verify,
/// decrypt, store, acknowledge and answer.
#[derive(Debug, Parser)]
#[command(name = "wechat-push", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign, encrypt, decrypt and parse pushes by hand, as WeChat does.
    #[command(subcommand)]
    Crypto(crypto::CryptoCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crypto(cmd) => crypto::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wechat-push: {err:#}");
            ExitCode::FAILURE
        }
    }
}
