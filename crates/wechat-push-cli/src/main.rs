//! `wechat-push`: receive WeChat message pushes; crypto tools for debugging them.

mod config;
mod crypto;
mod inbox;
mod mock;
mod serve;
mod simulate;
mod token;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use wechat_push::forward::Forwarder;
use wechat_push::rules::RulesHandler;
use wechat_push::store::Store;
use wechat_push::Config;

/// mimalloc rather than the system's malloc: glibc's malloc and free took
/// about 12% of the server's core under load (perf, closed loop at
/// concurrency 64), where every push allocates its body, its message and
/// its store operation on one thread and frees them on another.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the push endpoint: /wechat/{appid} for each configured app.
    Serve(ConfigArgs),
    /// Look at and re-queue stored pushes.
    #[command(subcommand)]
    Inbox(inbox::InboxCommand),
    /// Play WeChat's push server against any endpoint: handshake, pushes, load.
    #[command(subcommand)]
    Simulate(simulate::SimulateCommand),
    /// Sign, encrypt, decrypt and parse pushes by hand, as WeChat does.
    #[command(subcommand)]
    Crypto(crypto::CryptoCommand),
    /// Look at the shared access tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Check a configuration and show what to enter in WeChat's console.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Manage the store itself.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Serve a local stand-in for WeChat's API (tokens, customer-service messages), faults included.
    MockWechat(mock::MockArgs),
}

/// `wechat-push store …`
#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Bring the store's schema up to date and exit (`serve` also does at
    /// start-up; this runs it alone, e.g. before a rolling deploy).
    Migrate(ConfigArgs),
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The config file (TOML). Every key can also be set by a WECHAT_PUSH_* variable.
    #[arg(long, short, default_value = "wechat-push.toml")]
    config: PathBuf,
}

impl ConfigArgs {
    /// Load the file (it must exist) and the environment.
    fn load(&self) -> Result<Config> {
        self.load_showing().map(|(config, _)| config)
    }

    /// As `load`, with the effective settings as TOML, secrets redacted.
    fn load_showing(&self) -> Result<(Config, String)> {
        if !self.config.exists() {
            bail!(
                "config file {} not found: pass --config FILE (wechat-push.example.toml shows every option)",
                self.config.display()
            );
        }
        // Rules and forward targets are checked where they are built; here
        // too, so that a mistake is named (with its line, or its variable)
        // before any store is opened.
        let check = |config: &Config| {
            RulesHandler::check(config)?;
            Forwarder::check(config)
        };
        let (config, shown) =
            match Config::load_checked(Some(&self.config), std::env::vars(), &check) {
                Ok(loaded) => loaded,
                // These name their file and line, or their variable (a
                // variable's mistake is not the file's).
                Err(
                    e @ (wechat_push::config::ConfigError::Env { .. }
                    | wechat_push::config::ConfigError::InFile { .. }
                    | wechat_push::config::ConfigError::Toml { .. }),
                ) => return Err(anyhow::Error::new(e).context("invalid configuration")),
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "invalid configuration in {}",
                        self.config.display()
                    )))
                }
            };
        Ok((config, shown))
    }
}

/// Where a command runs its async work.
#[derive(Debug, Clone, Copy)]
enum Threads {
    /// On the calling thread: one-shot commands (`inbox`, `token`).
    One,
    /// On every core: servers and load generators.
    All,
}

/// Open the store `store.url` names, saying which when it cannot.
async fn open_store(config: &wechat_push::Config) -> Result<std::sync::Arc<dyn Store>> {
    let location = config.store.location()?;
    wechat_push::store::open(&location).await.with_context(|| {
        format!(
            "cannot open the store at {}",
            wechat_push::config::display_url(&config.store.url)
        )
    })
}

/// Open the store for a command that reads it (`inbox`, `token`): a SQLite
/// file that is not there is an error, not an empty store made on the spot
/// (a wrong `--config`, or a relative `store.url` run from another
/// directory, used to print an empty table).
async fn open_existing_store(config: &wechat_push::Config) -> Result<std::sync::Arc<dyn Store>> {
    if let wechat_push::config::StoreLocation::Sqlite(path) = config.store.location()? {
        if !path.exists() {
            let shown = match std::env::current_dir() {
                Ok(dir) if path.is_relative() => dir.join(&path),
                _ => path.clone(),
            };
            bail!(
                "no store at {} (store.url = {:?}; a relative path is taken from the current \
                 directory): run this where `wechat-push serve` runs, with its config",
                shown.display(),
                wechat_push::config::display_url(&config.store.url)
            );
        }
    }
    open_store(config).await
}

/// Run `work` to completion on a new Tokio runtime.
fn block_on<T>(threads: Threads, work: impl Future<Output = Result<T>>) -> Result<T> {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::All => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(work)
}

/// `store migrate`: opening a store brings its schema up to date (under
/// the store's lock, so instances starting meanwhile wait).
fn migrate(config: &ConfigArgs) -> Result<()> {
    let config = config.load()?;
    block_on(Threads::One, async move {
        open_store(&config).await?;
        println!(
            "the store at {} is up to date",
            wechat_push::config::display_url(&config.store.url)
        );
        Ok(())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command whose output goes to a pipe that closes (`inbox list | head`)
    // stops quietly, as Unix tools do, instead of panicking on the write.
    // Not the servers: a closed log pipe must not kill them (their log
    // writer drops what it cannot write).
    if !matches!(cli.command, Command::Serve(_) | Command::MockWechat(_)) {
        sigpipe::reset();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Inbox(cmd) => inbox::run(cmd),
        Command::Simulate(cmd) => simulate::run(cmd),
        Command::Crypto(cmd) => crypto::run(cmd),
        Command::MockWechat(a) => mock::run(a),
        Command::Token(cmd) => token::run(cmd),
        Command::Store(StoreCommand::Migrate(config)) => migrate(&config),
        Command::Config(cmd) => config::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wechat-push: {err:#}");
            ExitCode::FAILURE
        }
    }
}
