//! `wechat-push serve`: the push endpoint until SIGTERM or Ctrl-C.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;
use wechat_push::api::WechatApi;
use wechat_push::config::LogFormat;
use wechat_push::metrics::Metrics;
use wechat_push::outbox::Outbox;
use wechat_push::rules::RulesHandler;
use wechat_push::Application;

use crate::ConfigArgs;

/// Load the config, start logging, and serve until a signal arrives.
pub fn run(args: &ConfigArgs) -> Result<()> {
    let config = args.load()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A line per request (the access log) written from the request's task
    // cost a tenth of the throughput: lines go through a queue to a thread
    // that writes them in batches. Lossy: when the queue is full (the log's
    // disk is stalled), lines are dropped rather than requests held up.
    // `_flush` writes what is queued when `serve` returns.
    let write_failures = Arc::new(AtomicU64::new(0));
    let (writer, _flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(1 << 16)
        .thread_name("log-writer")
        .finish(LossyStdout {
            pending: Vec::new(),
            lines_lost: write_failures.clone(),
        });
    let queue_drops = writer.error_counter();
    match config.server.log_format {
        // Fields at the top level of each object, beside `timestamp`,
        // `level`, `target` and `message`; the current span, if any, as
        // `span` (the push's at `debug`, a held reply's at `info`).
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .with_writer(writer.clone())
            .with_env_filter(filter)
            .init(),
        // Colours only for a terminal: a log file gets no escape codes (and
        // no push pays for formatting them).
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(writer.clone())
            .with_env_filter(filter)
            .init(),
    }
    let args = args.clone();
    crate::block_on(crate::Threads::All, async move {
        // Installed before the server listens: a SIGHUP in between must
        // not take its default action (killing the server).
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        let store = crate::open_store(&config).await?;
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(count_dropped_log_lines(
            metrics.clone(),
            queue_drops,
            write_failures,
        ));
        let handler = rules(&config, &store, &metrics)?;
        let app = Application::build_with_metrics(config, store.clone(), handler, metrics.clone())
            .await
            .context("cannot start the server")?;
        #[cfg(unix)]
        {
            let reloader = app.reloader();
            tokio::spawn(reload_on_hangup(hangups, args, reloader, store, metrics));
        }
        app.run_until_stopped(shutdown_signal())
            .await
            .context("server failed")
    })
}

/// Carry the log writer's losses into `wechat_push_log_lines_dropped_total`,
/// once a second (both series shown from the start, at 0).
async fn count_dropped_log_lines(
    metrics: Arc<Metrics>,
    queue: tracing_appender::non_blocking::ErrorCounter,
    write: Arc<AtomicU64>,
) {
    use wechat_push::metrics::LOG_LINES_DROPPED;
    let (mut queued, mut written) = (0, 0);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = u64::try_from(queue.dropped_lines()).unwrap_or(u64::MAX);
        metrics.add(LOG_LINES_DROPPED, &[("reason", "queue_full")], now - queued);
        queued = now;
        let now = write.load(Ordering::Relaxed);
        metrics.add(
            LOG_LINES_DROPPED,
            &[("reason", "write_failed")],
            now - written,
        );
        written = now;
    }
}

/// The rules of `config`, answering through the customer-service API.
fn rules(
    config: &wechat_push::Config,
    store: &Arc<dyn wechat_push::store::Store>,
    metrics: &Arc<Metrics>,
) -> Result<RulesHandler> {
    let api = WechatApi::for_config(config, store.clone()).with_metrics(metrics.clone());
    Ok(RulesHandler::new(
        config,
        Some(Outbox::new(store.clone(), api)),
    )?)
}

/// Reload the config file on each SIGHUP: read it again (with the
/// environment), build its rules, and hand both to the server. A config
/// that does not load is refused with its reason; the running one stays.
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    args: ConfigArgs,
    reloader: wechat_push::server::Reloader,
    store: Arc<dyn wechat_push::store::Store>,
    metrics: Arc<Metrics>,
) {
    // Signals arriving during a reload fold into the next one.
    while hangups.recv().await.is_some() {
        tracing::info!(config = %args.config.display(), "SIGHUP: reloading the configuration");
        match args.load() {
            Ok(config) => {
                // Logged and counted by the server.
                let _ = reloader
                    .reload(config, |effective| rules(effective, &store, &metrics))
                    .await;
            }
            Err(e) => {
                metrics.inc(
                    wechat_push::metrics::CONFIG_RELOADS,
                    &[("outcome", "refused")],
                );
                tracing::error!(error = %format!("{e:#}"), "new configuration refused; the running one stays in force");
            }
        }
    }
}

/// Standard output that drops what it cannot write. A log line that cannot
/// be written (the disk under the log file is full) must not stop the
/// server: the logging library reports a failed write on stderr with a
/// macro that panics when stderr fails too, killing whichever thread logged
/// (the store's writer, among others).
///
/// Lines are gathered and written a batch at a time (the log thread
/// flushes when its queue runs dry), not one write per line.
struct LossyStdout {
    pending: Vec<u8>,
    /// Lines in batches standard output refused.
    lines_lost: Arc<AtomicU64>,
}

/// Past this many bytes gathered, a batch is written at once.
const LOG_BATCH: usize = 64 * 1024;

impl std::io::Write for LossyStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= LOG_BATCH {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(&self.pending)
                .and_then(|()| out.flush())
                .is_err()
            {
                // Part of the batch may have gone out: counted whole, as a
                // line cut short is lost too.
                let lines = self.pending.iter().filter(|b| **b == b'\n').count();
                self.lines_lost
                    .fetch_add(u64::try_from(lines).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            self.pending.clear();
        }
        Ok(())
    }
}

impl Drop for LossyStdout {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrived
/// between the "listening" line and that poll took its default action
/// (SIGHUP and SIGTERM killed the server, undrained).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate()).ok()
    };
    async move {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
            _ = term => tracing::info!("SIGTERM: shutting down"),
        }
    }
}
