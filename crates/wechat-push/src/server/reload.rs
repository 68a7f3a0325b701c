//! Configuration reload (SIGHUP in `serve`): a new configuration's apps
//! (appids, Tokens, EncodingAESKeys, modes), its handler (rules), its
//! forward targets, its WeChat API settings and the TLS certificate take
//! over from the running ones, without closing a connection. A request or
//! a push already being handled finishes with the configuration it began
//! with.
//!
//! Everything that can fail is built before anything is replaced: a new
//! configuration that is invalid, or whose certificate cannot be used,
//! is refused whole and the running one stays in force. Settings that only
//! a restart applies (the listening addresses, the store, `[inbox]`, the
//! other `[server]` keys) are named in [`Reloaded::restart_needed`] and
//! keep their running values.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{handling, Apps, Shared};
use crate::config::{Config, ConfigError};
use crate::forward::Forwarder;
use crate::handler::Handler;
use crate::lease::Stop;
use crate::metrics::{self, Metrics};
use crate::store::Store;
use crate::tls::{CertificateFiles, TlsError};
use crate::worker::Handling;

/// Why a new configuration was refused. The running one stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid (the key at fault is named).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new certificate or key cannot be used.
    #[error("cannot use the new TLS certificate")]
    Tls(#[from] TlsError),
    /// The handler of the new configuration could not be built.
    #[error("cannot build the handler of the new configuration")]
    Handler(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server has stopped: there is nothing to reload.
    #[error("the server has stopped")]
    Stopped,
}

/// What a reload applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// How many apps are configured now.
    pub apps: usize,
    /// Keys whose new values take effect only at a restart (`server.listen`,
    /// `store.url`, `inbox`, …); their running values stay in force.
    pub restart_needed: Vec<&'static str>,
}

/// A new configuration, built and ready to put in force.
pub(super) struct Request {
    /// The new configuration, its restart-only keys set to the running values.
    config: Config,
    restart_needed: Vec<&'static str>,
    handling: Handling,
    forwarder: Option<Arc<Forwarder>>,
    done: oneshot::Sender<Result<Reloaded, ReloadError>>,
}

/// The configuration in force, shared by the [`Reloader`]s and the task
/// that applies them.
pub(super) type Running = Arc<Mutex<Config>>;

pub(super) type Requests = mpsc::Receiver<Request>;

/// Makes a running [`Application`](super::Application) take up a new
/// configuration. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    requests: mpsc::Sender<Request>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    running: Running,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

pub(super) fn channel(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    running: Running,
) -> (Reloader, Requests) {
    let (requests, rx) = mpsc::channel(1);
    (
        Reloader {
            requests,
            store,
            metrics,
            running,
        },
        rx,
    )
}

impl Reloader {
    /// Put `config` in force with the handler `make_handler` builds for it
    /// (the rules of the new configuration), as
    /// [`Application::build`](super::Application::build) would have.
    /// `make_handler` gets the configuration as it will run: `config` with
    /// the restart-only keys at their running values. Logged, and counted
    /// in `wechat_push_config_reloads_total{outcome="applied"|"refused"}`.
    ///
    /// # Errors
    /// [`ReloadError`]: nothing was replaced.
    pub async fn reload<H, E>(
        &self,
        config: Config,
        make_handler: impl FnOnce(&Config) -> Result<H, E>,
    ) -> Result<Reloaded, ReloadError>
    where
        H: Handler,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let result = self.apply(config, make_handler).await;
        match &result {
            Ok(reloaded) => {
                self.metrics
                    .inc(metrics::CONFIG_RELOADS, &[("outcome", "applied")]);
                if reloaded.restart_needed.is_empty() {
                    tracing::info!(apps = reloaded.apps, "configuration reloaded");
                } else {
                    tracing::warn!(
                        apps = reloaded.apps,
                        restart_needed = %reloaded.restart_needed.join(", "),
                        "configuration reloaded; some changed keys take effect only at a restart, their running values stay"
                    );
                }
            }
            Err(e) => {
                self.metrics
                    .inc(metrics::CONFIG_RELOADS, &[("outcome", "refused")]);
                tracing::error!(
                    error = %crate::display_chain(e),
                    "new configuration refused; the running one stays in force"
                );
            }
        }
        result
    }

    async fn apply<H, E>(
        &self,
        mut config: Config,
        make_handler: impl FnOnce(&Config) -> Result<H, E>,
    ) -> Result<Reloaded, ReloadError>
    where
        H: Handler,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let running = match self.running.lock() {
            Ok(running) => running.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let restart_needed = restart_needed(&running, &config);
        // Checked and built as it will run: a passive rule is refused under
        // the running `inbox.workers = 0` even if the new file raises it.
        let (tls_cert, tls_key) = (config.server.tls_cert.take(), config.server.tls_key.take());
        config.server = running.server.clone();
        if running.server.tls_cert.is_some() && tls_cert.is_some() {
            (config.server.tls_cert, config.server.tls_key) = (tls_cert, tls_key);
        }
        config.store = running.store.clone();
        config.inbox = running.inbox.clone();
        if config.console.is_some() != running.console.is_some() {
            config.console = running.console.clone();
        }
        config.validate()?;
        let handler = make_handler(&config).map_err(|e| ReloadError::Handler(e.into()))?;
        let (handling, forwarder) = handling(&config, &self.store, &self.metrics, handler)?;
        let (done, reloaded) = oneshot::channel();
        self.requests
            .send(Request {
                config,
                restart_needed,
                handling,
                forwarder,
                done,
            })
            .await
            .map_err(|_| ReloadError::Stopped)?;
        reloaded.await.map_err(|_| ReloadError::Stopped)?
    }
}

/// A forwarder running under one configuration.
struct RunningForwarder {
    stop: watch::Sender<Option<tokio::time::Instant>>,
    task: JoinHandle<()>,
}

impl RunningForwarder {
    fn start(forwarder: Arc<Forwarder>) -> RunningForwarder {
        let (stop, until) = watch::channel(None);
        RunningForwarder {
            stop,
            task: tokio::spawn(forwarder.run(until)),
        }
    }
}

/// Applies reloads while the server runs, and runs each configuration's
/// forwarder.
pub(super) struct Task {
    pub(super) shared: Arc<Shared>,
    /// The configuration in force (the restart-only keys as started).
    pub(super) running: Running,
    pub(super) certificates: Option<Arc<CertificateFiles>>,
    pub(super) forwarder: Option<Arc<Forwarder>>,
    /// The web console, whose apps (and their outbox) follow the reload.
    pub(super) console: Option<Arc<crate::console::Console>>,
    /// `server.shutdown_grace`: how long a replaced forwarder's deliveries
    /// in flight may run on.
    pub(super) grace: std::time::Duration,
}

impl Task {
    /// Until `shutdown` gives a deadline; then the forwarders get until it.
    pub(super) async fn run(mut self, mut requests: Requests, mut shutdown: Stop) {
        let mut current = self.forwarder.take().map(RunningForwarder::start);
        let mut replaced: Vec<JoinHandle<()>> = Vec::new();
        let mut open = true;
        loop {
            if shutdown.borrow().is_some() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                request = requests.recv(), if open => match request {
                    Some(request) => {
                        let result =
                            self.apply(request.config, request.restart_needed, request.handling);
                        if result.is_ok() {
                            let new = request.forwarder.map(RunningForwarder::start);
                            if let Some(old) = std::mem::replace(&mut current, new) {
                                let deadline = tokio::time::Instant::now() + self.grace;
                                let _ = old.stop.send(Some(deadline));
                                replaced.push(old.task);
                            }
                            replaced.retain(|task| !task.is_finished());
                        }
                        let _ = request.done.send(result);
                    }
                    None => open = false,
                },
            }
        }
        let deadline = shutdown.borrow().unwrap_or_else(tokio::time::Instant::now);
        if let Some(running) = current {
            let _ = running.stop.send(Some(deadline));
            replaced.push(running.task);
        }
        for task in replaced {
            let _ = task.await;
        }
    }

    /// Replace the certificate, the apps and the handling; the caller
    /// replaces the forwarder.
    fn apply(
        &mut self,
        config: Config,
        restart_needed: Vec<&'static str>,
        handling: Handling,
    ) -> Result<Reloaded, ReloadError> {
        let apps = Apps::new(&config, config.server.max_body)?;
        // The last step that can fail: a certificate refused leaves
        // everything as it was.
        if let (Some(files), Some(cert), Some(key)) = (
            &self.certificates,
            &config.server.tls_cert,
            &config.server.tls_key,
        ) {
            files.replace(cert, key)?;
            tracing::info!(cert = %cert.display(), "TLS certificate loaded");
        }
        let count = apps.by_appid.len();
        // The handler first: a push of an app added now is accepted only
        // once the apps are replaced, and then finds a handler that knows it.
        self.shared.pool.processor().handling.replace(handling);
        self.shared.replace_apps(apps);
        if let (Some(console), Some(settings)) = (&self.console, &config.console) {
            console.reconfigure(settings);
        }
        if let Some(console) = &self.console {
            console.replace_apps(crate::console::ConsoleApps::of(
                &config,
                &self.shared.store,
                &self.shared.metrics,
            ));
        }
        match self.running.lock() {
            Ok(mut running) => *running = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(Reloaded {
            apps: count,
            restart_needed,
        })
    }
}

/// The keys of `new` that differ from `running` and only a restart applies.
fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.server, &new.server);
    [
        ("server.listen", a.listen != b.listen),
        ("server.admin_listen", a.admin_listen != b.admin_listen),
        (
            "server.tls_cert",
            a.tls_cert.is_some() != b.tls_cert.is_some(),
        ),
        (
            "server.timestamp_window",
            a.timestamp_window != b.timestamp_window,
        ),
        ("server.max_body", a.max_body != b.max_body),
        ("server.reply_budget", a.reply_budget != b.reply_budget),
        ("server.log_format", a.log_format != b.log_format),
        ("server.access_log", a.access_log != b.access_log),
        (
            "server.trusted_proxies",
            a.trusted_proxies != b.trusted_proxies,
        ),
        (
            "server.header_timeout",
            a.header_timeout != b.header_timeout,
        ),
        ("server.body_timeout", a.body_timeout != b.body_timeout),
        ("server.idle_timeout", a.idle_timeout != b.idle_timeout),
        (
            "server.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "server.shutdown_grace",
            a.shutdown_grace != b.shutdown_grace,
        ),
        ("server.drain_delay", a.drain_delay != b.drain_delay),
        ("store.url", running.store.url != new.store.url),
        ("inbox", running.inbox != new.inbox),
        // On or off only at a restart (the admin listener's routes are
        // made then); its settings follow a reload.
        (
            "console",
            running.console.is_some() != new.console.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}
