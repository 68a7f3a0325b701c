//! The HTTP endpoint: `GET /wechat/{appid}` answers the URL handshake,
//! `POST /wechat/{appid}` receives pushes; `/healthz` and `/metrics` for
//! operators.
//!
//! A push goes: look up the app → read the body (bounded) → **verify and
//! open** it ([`AppCrypto::open`]: the signature, then the timestamp, and only
//! then decryption) → **store** it,
//! de-duplicated ([`Inbox::insert`](crate::store::Inbox::insert), durable before it returns) →
//! **acknowledge**. Handling happens after that, in [`crate::worker`]; only
//! when the handler may give a passive reply does the answer wait for it,
//! within the reply budget. Forwarding to the team's backend is part of
//! handling ([`crate::forward`]).
//!
//! Every refusal maps to its status code in one place, [`PushError`]'s
//! `IntoResponse`, and is logged and counted with its reason.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::api::WechatApi;
use crate::clock::{now_ms, now_secs};
use crate::config::{Ack, AppConfig, Config, ConfigError, ServerConfig, Trust};
use crate::forward::{Forwarder, ForwardingHandler};
use crate::handler::{Handler, SharedHandler};
use crate::metrics::{self, Metrics};
use crate::outbox::Outbox;
use crate::protocol::answer::DocumentedAnswers;
use crate::protocol::crypto::KeySlot;
use crate::protocol::envelope::{
    is_container_path_check, render, AppCrypto, OpenError, Opened, PushQuery,
};
use crate::protocol::message::DedupKey;
use crate::protocol::wire::{Limits, WireError};
use crate::protocol::Format;
use crate::store::{Claim, NewPush, Store, StoreError};
use crate::worker::{self, Accepted, CurrentHandling, Handling, Pool, Processor};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// `server.listen`, the address that could not be bound.
        addr: SocketAddr,
        /// The I/O error from binding it (address in use, permission denied, …).
        #[source]
        source: std::io::Error,
    },
    /// `server.tls_cert` or `server.tls_key` cannot be used.
    #[error("cannot serve HTTPS")]
    Tls(#[from] crate::tls::TlsError),
}

mod reload;

pub use reload::{ReloadError, Reloaded, Reloader};

/// One configured app.
struct App {
    crypto: AppCrypto,
    config: AppConfig,
    /// The answers to pushes whose documentation specifies one.
    answers: DocumentedAnswers,
}

/// The configured apps, replaced whole by a reload.
struct Apps {
    by_appid: HashMap<String, App>,
    /// Whether any app forwards (then `/metrics` shows the targets' backlog).
    forwards: bool,
}

impl Apps {
    /// Each app of `config`, ready to open its pushes.
    fn new(config: &Config, max_body: usize) -> Result<Apps, ConfigError> {
        let limits = Limits {
            max_body,
            ..Limits::default()
        };
        let mut by_appid = HashMap::new();
        for (i, app) in config.apps.iter().enumerate() {
            by_appid.insert(
                app.appid.clone(),
                App {
                    crypto: app.crypto(i)?.with_limits(limits),
                    answers: DocumentedAnswers::new(app.answers.clone()),
                    config: app.clone(),
                },
            );
        }
        Ok(Apps {
            by_appid,
            forwards: config.apps.iter().any(|a| !a.forward.is_empty()),
        })
    }
}

/// What every request needs.
struct Shared {
    apps: RwLock<Arc<Apps>>,
    store: Arc<dyn Store>,
    pool: Pool,
    metrics: Arc<Metrics>,
    server: ServerConfig,
    /// Set when a shutdown begins: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    done: std::sync::Mutex<DoneCount>,
}

impl Shared {
    /// The apps in force now (a request keeps the ones it started with).
    fn apps(&self) -> Arc<Apps> {
        match self.apps.read() {
            Ok(apps) => apps.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace_apps(&self, apps: Apps) {
        let apps = Arc::new(apps);
        match self.apps.write() {
            Ok(mut current) => *current = apps,
            Err(poisoned) => *poisoned.into_inner() = apps,
        }
    }
}

/// The handling of one configuration: the handler (wrapped to forward when
/// an app has forward targets) and the forwarder delivering to them.
fn handling(
    config: &Config,
    store: &Arc<dyn Store>,
    metrics: &Arc<Metrics>,
    handler: impl Handler,
) -> Result<(Handling, Option<Arc<Forwarder>>), ConfigError> {
    // Forward targets answer users through the customer-service API,
    // with tokens shared through the store like every other client's.
    let forwards = config.apps.iter().any(|a| !a.forward.is_empty());
    let outbox = forwards.then(|| {
        let api = WechatApi::for_config(config, store.clone()).with_metrics(metrics.clone());
        Outbox::new(store.clone(), api)
    });
    let forwarder = Forwarder::new(config, store.clone(), metrics.clone(), outbox)?;
    let handler: SharedHandler = match &forwarder {
        Some(f) => Arc::new(ForwardingHandler::new(f.clone(), Arc::new(handler))),
        None => Arc::new(handler),
    };
    let kinds = config
        .apps
        .iter()
        .map(|a| (a.appid.clone(), a.kind))
        .collect();
    Ok((Handling { handler, kinds }, forwarder))
}

/// The server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    /// HTTPS on `listener`, when `server.tls_cert` is set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// `server.admin_listen`, bound.
    admin: Option<TcpListener>,
    /// The web console, served on `admin` when `[console]` is configured.
    console: Option<Arc<crate::console::Console>>,
    shared: Arc<Shared>,
    completions: mpsc::Receiver<Claim>,
    retention: Duration,
    forwarder: Option<Arc<Forwarder>>,
    /// `store.url` as shown in the start-up line: without credentials.
    store_url: String,
    /// The configuration in force, for telling what a reload changes.
    running: reload::Running,
    /// `server.tls_cert` and `tls_key`, which a reload may point elsewhere.
    certificates: Option<Arc<crate::tls::CertificateFiles>>,
    reloads: reload::Requests,
    reloader: Reloader,
}

impl Application {
    /// Open the configured store, bind the configured address, and prepare
    /// every app. Port 0 binds a free port (see [`Application::local_addr`]).
    ///
    /// # Errors
    /// [`StartError`] when the config, store or address is unusable.
    pub async fn build(config: Config, handler: impl Handler) -> Result<Self, StartError> {
        let store = crate::store::open(&config.store.location()?).await?;
        Self::build_with_store(config, store, handler).await
    }

    /// As [`Application::build`], with a store of the caller's.
    ///
    /// # Errors
    /// [`StartError`] when the config or address is unusable.
    pub async fn build_with_store(
        config: Config,
        store: Arc<dyn Store>,
        handler: impl Handler,
    ) -> Result<Self, StartError> {
        Self::build_with_metrics(config, store, handler, Arc::default()).await
    }

    /// As [`Application::build_with_store`], counting in `metrics` (shared
    /// with the caller's own parts, such as a [`WechatApi`] answering users).
    ///
    /// # Errors
    /// [`StartError`] when the config or address is unusable.
    pub async fn build_with_metrics(
        config: Config,
        store: Arc<dyn Store>,
        handler: impl Handler,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let apps = Apps::new(&config, config.server.max_body)?;
        let (handling, forwarder) = handling(&config, &store, &metrics, handler)?;
        let (completions_tx, completions) = mpsc::channel(4096);
        let processor = Processor {
            store: store.clone(),
            handling: CurrentHandling::new(handling),
            config: config.inbox.clone(),
            metrics: metrics.clone(),
            completions: completions_tx,
            reply_budget: config.server.reply_budget,
        };
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let certificates = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => {
                Some(Arc::new(crate::tls::CertificateFiles::open(cert, key)?))
            }
            _ => None,
        };
        let tls = match &certificates {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(files.server_config()?)),
            None => None,
        };
        let admin = match config.server.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let console = config.console.as_ref().map(|c| {
            let apps = crate::console::ConsoleApps::of(&config, &store, &metrics);
            Arc::new(crate::console::Console::new(
                c,
                store.clone(),
                apps,
                metrics.clone(),
            ))
        });
        let running: reload::Running = Arc::new(std::sync::Mutex::new(config.clone()));
        let (reloader, reloads) = reload::channel(store.clone(), metrics.clone(), running.clone());
        Ok(Application {
            listener,
            tls,
            admin,
            console,
            shared: Arc::new(Shared {
                apps: RwLock::new(Arc::new(apps)),
                store,
                pool: Pool::new(processor),
                metrics,
                server: config.server.clone(),
                draining: AtomicBool::new(false),
                done: std::sync::Mutex::default(),
            }),
            completions,
            retention: config.inbox.retention,
            forwarder,
            store_url: crate::config::display_url(&config.store.url),
            running,
            certificates,
            reloads,
            reloader,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The address `server.admin_listen` bound, if set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The server's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// A handle that makes the running server take up a new configuration
    /// (see [`Reloader::reload`]); `serve` uses it on SIGHUP.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serve until `shutdown` completes: then stop accepting, finish
    /// in-flight requests, and stop the workers (unfinished handling stays in
    /// the inbox).
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        // One deadline for connections, handlers and deliveries: the grace
        // counts from the moment the shutdown began.
        let (deadline, until) = watch::channel(None);
        let addr = self.local_addr();
        let admin_addr = self.admin_addr();
        let shared = self.shared.clone();
        let grace = shared.server.shutdown_grace;
        let workers = tokio::spawn(shared.pool.clone().run(until.clone()));
        // Reloads, and the forwarder of each configuration, until the end.
        let reloads = tokio::spawn(
            reload::Task {
                shared: shared.clone(),
                running: self.running,
                certificates: self.certificates,
                forwarder: self.forwarder,
                console: self.console.clone(),
                grace,
            }
            .run(self.reloads, until.clone()),
        );
        let began = Arc::new(std::sync::OnceLock::new());
        let console_stop = self.console.clone();
        let shutdown = {
            let (began, shared) = (began.clone(), shared.clone());
            async move {
                shutdown.await;
                shared.draining.store(true, Ordering::SeqCst);
                if let Some(console) = &console_stop {
                    console.stop();
                }
                let delay = shared.server.drain_delay;
                if !delay.is_zero() {
                    tracing::info!(?delay, "draining: /readyz answers 503, pushes still taken");
                    tokio::time::sleep(delay).await;
                }
                let _ = began.set(tokio::time::Instant::now());
            }
        };
        // The admin endpoints outlive the push port's drain, so that a load
        // balancer's check sees `/readyz` turn 503 rather than a refused
        // connection, and metrics are scraped until the end.
        let (admin_stop, admin_stopped) = watch::channel(false);
        let console = self.console;
        let console_on = console.is_some();
        let admin = self.admin.map(|listener| {
            let (shared, config) = (shared.clone(), shared.server.clone());
            let mut stopped = admin_stopped;
            tokio::spawn(async move {
                crate::listener::serve(
                    listener,
                    None,
                    admin_router(shared.clone(), console),
                    &config,
                    shared.metrics.clone(),
                    async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    },
                )
                .await;
            })
        });
        let pruner = tokio::spawn(worker::prune(shared.store.clone(), self.retention, stopped));
        let (finish, finishing) = watch::channel(false);
        let completer = tokio::spawn(worker::complete_batches(
            shared.store.clone(),
            self.completions,
            finishing,
        ));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        // What an operator checks first: which build, which store, and the
        // URL to give WeChat for each app (behind a proxy, its host instead).
        let apps = shared.apps();
        let mut appids: Vec<&String> = apps.by_appid.keys().collect();
        appids.sort();
        let push_urls = appids
            .iter()
            .map(|appid| format!("{scheme}://{addr}/wechat/{appid}"))
            .collect::<Vec<_>>()
            .join(" ");
        let version = env!("CARGO_PKG_VERSION");
        let store = &self.store_url;
        match admin_addr {
            Some(admin) => {
                let console = if console_on {
                    format!("http://{admin}/console")
                } else {
                    "off".to_owned()
                };
                tracing::info!(version, %addr, scheme, %admin, console, store, apps = appids.len(), push_urls, "listening")
            }
            None => {
                tracing::info!(version, %addr, scheme, store, apps = appids.len(), push_urls, "listening")
            }
        }
        crate::listener::serve(
            self.listener,
            self.tls,
            router(shared.clone(), admin_addr.is_none()),
            &shared.server,
            shared.metrics.clone(),
            shutdown,
        )
        .await;
        tracing::info!("stopped accepting; stopping workers");
        let began = began
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        let _ = deadline.send(Some(began + grace));
        let _ = stop.send(true);
        let _ = workers.await;
        let _ = pruner.await;
        let _ = reloads.await;
        // Workers are done: flush the last completions.
        let _ = finish.send(true);
        let _ = completer.await;
        let _ = admin_stop.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        Ok(())
    }
}

/// The push port: the push endpoints and `/healthz`, and the admin
/// endpoints too when `with_admin` (no `server.admin_listen`).
fn router(shared: Arc<Shared>, with_admin: bool) -> Router {
    let router = Router::new()
        .route("/wechat/{appid}", get(handshake).post(receive))
        // Users paste the URL both ways into WeChat's console, which follows no redirect.
        .route("/wechat/{appid}/", get(handshake).post(receive))
        .route("/healthz", get(healthz));
    let router = if with_admin {
        router
            .route("/readyz", get(readyz))
            .route("/metrics", get(render_metrics))
    } else {
        router
    };
    router.with_state(shared)
}

/// `server.admin_listen`: what operators and their monitoring read.
fn admin_router(shared: Arc<Shared>, console: Option<Arc<crate::console::Console>>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(shared);
    match console {
        Some(console) => router.merge(console.router()),
        None => router,
    }
}

/// Why a request was refused. The one place errors become status codes.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// No app with this appid is configured.
    #[error("unknown app")]
    UnknownApp,
    /// The query string is malformed.
    #[error("malformed query: {0}")]
    BadQuery(String),
    /// The body is over `server.max_body`.
    #[error("body over the limit of {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive within `server.body_timeout`.
    #[error("body not received within {0:?}")]
    BodyTimeout(Duration),
    /// The client broke off before its body was whole.
    #[error("body cut off before its declared length")]
    BodyBroken,
    /// The push failed a check of [`AppCrypto::open`] (signature, timestamp,
    /// decryption, parsing) or of [`AppCrypto::open_unsigned`].
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The store is unavailable: WeChat should retry.
    #[error("store unavailable")]
    Store(#[from] StoreError),
    /// An unsigned push to a `trust = "cloud_run"` app without the gateway's
    /// marks (or naming another app).
    #[error("unsigned push not from WeChat Cloud Run's gateway: {0}")]
    NotFromGateway(&'static str),
}

impl PushError {
    /// The status code WeChat (or a prober) gets.
    pub fn status(&self) -> StatusCode {
        match self {
            PushError::UnknownApp => StatusCode::NOT_FOUND,
            PushError::BadQuery(_) => StatusCode::BAD_REQUEST,
            PushError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PushError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            PushError::BodyBroken => StatusCode::BAD_REQUEST,
            PushError::Open(OpenError::Envelope(WireError::BodyTooLarge { .. })) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            PushError::Open(e) if e.is_unauthorized() => StatusCode::UNAUTHORIZED,
            PushError::NotFromGateway(_) => StatusCode::UNAUTHORIZED,
            PushError::Open(_) => StatusCode::BAD_REQUEST,
            PushError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PushError::UnknownApp => "unknown_app",
            PushError::BadQuery(_) => "bad_query",
            PushError::BodyTimeout(_) => "body_timeout",
            PushError::BodyBroken => "body_broken",
            PushError::TooLarge(_)
            | PushError::Open(OpenError::Envelope(WireError::BodyTooLarge { .. })) => "too_large",
            PushError::Open(e) => e.reason(),
            PushError::Store(_) => "store_unavailable",
            PushError::NotFromGateway(_) => "not_from_gateway",
        }
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let text = crate::display_chain(&self);
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response();
        // For the access log's line.
        response
            .extensions_mut()
            .insert(crate::listener::Refusal(self.reason()));
        response
    }
}

/// Longest unknown appid written to the log (WeChat's are 18 characters):
/// anyone can send a long one.
const MAX_LOGGED_APPID: usize = 32;

/// Log and count a refusal, then answer it; `dedup_key` is the push's when
/// it was opened before being refused (the store failed).
fn refuse(shared: &Shared, appid: &str, dedup_key: Option<&DedupKey>, err: PushError) -> Response {
    // Unknown appids are not used as labels: anyone can invent them.
    let known = shared.apps().by_appid.contains_key(appid);
    let label = if known { appid } else { "unknown" };
    // But the log shows what was sent, for a mistyped URL.
    let sent = (!known).then(|| crate::listener::truncated(appid, MAX_LOGGED_APPID));
    shared.metrics.inc(
        metrics::REJECTIONS,
        &[("appid", label), ("reason", err.reason())],
    );
    let status = err.status();
    // The same words as the metric's reason, and the whole cause chain.
    tracing::warn!(
        appid = label,
        sent_appid = sent,
        dedup_key = dedup_key.map(|k| k.as_str()),
        status = status.as_u16(),
        reason = err.reason(),
        error = %crate::display_chain(&err),
        "refused"
    );
    err.into_response()
}

fn parse_query(uri: &Uri) -> Result<PushQuery, PushError> {
    PushQuery::parse(uri.query().unwrap_or_default()).map_err(PushError::BadQuery)
}

async fn handshake(
    State(shared): State<Arc<Shared>>,
    Path(appid): Path<String>,
    uri: Uri,
) -> Response {
    let result = (|| {
        let apps = shared.apps();
        let app = apps.by_appid.get(&appid).ok_or(PushError::UnknownApp)?;
        let query = parse_query(&uri)?;
        let echostr = app.crypto.verify_handshake(&query)?;
        Ok::<_, PushError>(echostr.to_owned())
    })();
    match result {
        Ok(echostr) => {
            tracing::info!(%appid, "URL handshake verified");
            ([(header::CONTENT_TYPE, "text/plain")], echostr).into_response()
        }
        Err(e) => refuse(&shared, &appid, None, e),
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(appid): Path<String>,
    request: axum::extract::Request,
) -> Response {
    // The request taken whole: extracting its URI and headers would copy them.
    let (parts, body) = request.into_parts();
    let (uri, headers) = (&parts.uri, &parts.headers);
    let started = Instant::now();
    // Debug, like the line that ends it: at `info` every push would pay for
    // formatting its fields (5% of the pushes a second at concurrency 64).
    // Lines at `info` and above on the way name their push themselves
    // (a refusal its app, its key once known, and its reason).
    let span = tracing::debug_span!(
        "push",
        %appid,
        dedup_key = tracing::field::Empty,
        outcome = tracing::field::Empty
    );
    // Known once the push is opened: a store failure's refusal names it.
    let mut opened = None;
    let result = receive_push(&shared, &appid, uri, headers, body, &mut opened)
        .instrument(span.clone())
        .await;
    let response = match result {
        Ok((response, outcome)) => {
            span.record("outcome", outcome);
            tracing::debug!(parent: &span, "answered");
            response
        }
        Err(e) => {
            span.record("outcome", e.reason());
            let _guard = span.enter();
            refuse(&shared, &appid, opened.as_ref(), e)
        }
    };
    shared.metrics.observe_ack(started.elapsed());
    response
}

async fn receive_push(
    shared: &Shared,
    appid: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    opened: &mut Option<DedupKey>,
) -> Result<(Response, &'static str), PushError> {
    let apps = shared.apps();
    let app = apps.by_appid.get(appid).ok_or(PushError::UnknownApp)?;
    let query = parse_query(uri)?;
    let max = shared.server.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(PushError::TooLarge(max));
    }
    let limit = shared.server.body_timeout;
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Err(_) => return Err(PushError::BodyTimeout(limit)),
        Ok(Ok(bytes)) => bytes,
        // Within its declared length, the client broke off mid-body.
        Ok(Err(_)) if declared.is_some() => return Err(PushError::BodyBroken),
        Ok(Err(_)) => return Err(PushError::TooLarge(max)),
    };
    if is_container_path_check(&bytes) {
        tracing::info!(%appid, "WeChat Cloud Run path check answered");
        return Ok((ack(&app.config), "path_check"));
    }
    let Opened {
        message,
        plaintext,
        format,
        key,
    } = if from_cloud_run_gateway(app, appid, &query, headers)? {
        // No signature and no timestamp: the gateway vouches for it.
        app.crypto.open_unsigned(&bytes)?
    } else {
        let window = shared.server.timestamp_window;
        app.crypto.open(&query, &bytes, now_secs(), window)?
    };
    // Rendered only for the few kinds that have one (virtual payment).
    let documented = message
        .event()
        .and_then(|event| app.answers.for_event(event))
        .map(|fields| render(format, fields).into_bytes());
    let acknowledge = || match &documented {
        Some(body) => passive_reply(app, format, key, &query, body),
        None => ack(&app.config),
    };

    let dedup_key = message.dedup_key();
    tracing::Span::current().record("dedup_key", dedup_key.as_str());
    *opened = Some(dedup_key.clone());
    let new = NewPush {
        appid: appid.to_owned(),
        dedup_key,
        kind: message.kind(),
        from_user: message.from_user.clone(),
        create_time: message.create_time,
        format,
        body: plaintext,
        received_at_ms: now_ms(),
    };
    let kind = new.kind.clone();
    let accepted = shared.pool.accept(new, message).await?;
    let outcome = match &accepted {
        Accepted::Duplicate { status, .. } => {
            shared.metrics.inc(metrics::DUPLICATES, &[("appid", appid)]);
            tracing::debug!(%status, "duplicate delivery");
            "duplicate"
        }
        Accepted::Stored | Accepted::Replied(_) => "stored",
    };
    shared.metrics.inc(
        metrics::PUSHES,
        &[("appid", appid), ("kind", &kind), ("outcome", outcome)],
    );
    match accepted {
        Accepted::Stored | Accepted::Duplicate { reply: None, .. } => Ok((acknowledge(), outcome)),
        Accepted::Replied(reply) => {
            Ok((passive_reply(app, format, key, &query, &reply), "replied"))
        }
        Accepted::Duplicate {
            reply: Some(reply), ..
        } => Ok((passive_reply(app, format, key, &query, &reply), outcome)),
    }
}

/// Whether an unsigned push is one that WeChat Cloud Run's gateway
/// delivered to an app that trusts it: `trust = "cloud_run"`, no signature
/// in the query, and the `x-wx-source` header the gateway sets (with
/// `x-wx-appid`, when present, naming this app).
fn from_cloud_run_gateway(
    app: &App,
    appid: &str,
    query: &PushQuery,
    headers: &HeaderMap,
) -> Result<bool, PushError> {
    let unsigned = query.signature.is_none() && query.msg_signature.is_none();
    if app.config.trust != Trust::CloudRun || !unsigned {
        return Ok(false);
    }
    if !headers.contains_key("x-wx-source") {
        return Err(PushError::NotFromGateway("no x-wx-source header"));
    }
    match headers.get("x-wx-appid").map(|v| v.as_bytes()) {
        Some(named) if named != appid.as_bytes() => {
            Err(PushError::NotFromGateway("x-wx-appid names another app"))
        }
        _ => Ok(true),
    }
}

fn ack(app: &AppConfig) -> Response {
    match app.ack {
        Ack::Success => ([(header::CONTENT_TYPE, "text/plain")], "success").into_response(),
        Ack::Empty => StatusCode::OK.into_response(),
    }
}

/// Answer with a passive reply, sealed when the push came encrypted.
fn passive_reply(
    app: &App,
    format: Format,
    key: Option<KeySlot>,
    query: &PushQuery,
    reply: &[u8],
) -> Response {
    let content_type = match format {
        Format::Xml => "application/xml",
        Format::Json => "application/json",
    };
    let Some(slot) = key else {
        return ([(header::CONTENT_TYPE, content_type)], reply.to_vec()).into_response();
    };
    let mut random = [0u8; 16];
    if getrandom::fill(&mut random).is_err() {
        tracing::error!(appid = %app.config.appid, "no system randomness: answering without the reply");
        return ack(&app.config);
    }
    let nonce = query.nonce.as_deref().unwrap_or_default();
    match app
        .crypto
        .seal(reply, format, now_secs(), nonce, &random, slot)
    {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => {
            tracing::error!(appid = %app.config.appid, error = %e, "cannot seal the reply: answering without it");
            ack(&app.config)
        }
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), shared.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {}", crate::display_chain(&e)),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store did not answer in 2 s",
        )
            .into_response(),
    }
}

/// Ready for pushes: not draining, and the store takes writes. A load
/// balancer's check: 503 from the moment a shutdown begins, so that it stops
/// sending before the port closes.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down").into_response();
    }
    healthz(State(shared)).await
}

/// The done pushes are counted (a scan of every push kept, off the
/// scrape's path) at most every this many times as long as the last count
/// took: at most 1% of a core, every second with few pushes, every 10 s
/// when counting takes 100 ms.
const DONE_COUNT_SPACING: u32 = 100;

/// A done count not finished by then is given up (the next scrape starts another).
const DONE_COUNT_LIMIT: Duration = Duration::from_secs(300);

/// The last count of done pushes, when it was asked for, and how long it took.
#[derive(Default)]
struct DoneCount {
    value: Option<u64>,
    asked: Option<Instant>,
    took: Duration,
    /// A count is under way: no second one is started meanwhile (each
    /// scrape started another while the first, paced, was still counting).
    counting: bool,
}

impl Shared {
    /// The last count of done pushes; a new count is started in the
    /// background when this one is old enough (see [`DONE_COUNT_SPACING`]).
    fn done_count(self: &Arc<Self>) -> Option<u64> {
        let Ok(mut done) = self.done.lock() else {
            return None;
        };
        let spacing =
            (done.took * DONE_COUNT_SPACING).clamp(Duration::from_secs(1), Duration::from_secs(60));
        if !done.counting && done.asked.is_none_or(|at| at.elapsed() >= spacing) {
            let started = Instant::now();
            done.asked = Some(started);
            done.counting = true;
            let shared = self.clone();
            tokio::spawn(async move {
                // A count that hangs must not stop every later one.
                let counted = tokio::time::timeout(DONE_COUNT_LIMIT, shared.store.counts()).await;
                let counted = counted.ok().and_then(Result::ok);
                if let Ok(mut done) = shared.done.lock() {
                    done.counting = false;
                    done.took = started.elapsed();
                    if let Some(counts) = counted {
                        done.value = Some(counts.done);
                    }
                }
            });
        }
        done.value
    }
}

/// `GET /metrics`: what a scrape reads costs the same with ten pushes
/// stored or ten million (partial indexes, and the done count refreshed
/// in the background), and reads nothing through the store's writer.
async fn render_metrics(State(shared): State<Arc<Shared>>) -> Response {
    let depth = tokio::time::timeout(Duration::from_secs(2), shared.store.depth())
        .await
        .ok()
        .and_then(Result::ok);
    let apps = shared.apps();
    let backlog = if apps.forwards {
        tokio::time::timeout(Duration::from_secs(2), shared.store.delivery_backlog())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    // Every configured target shows, at 0 when it owes nothing: a gauge
    // that vanishes cannot be told from a target that stopped reporting.
    let targets = crate::config::forward_targets(apps.by_appid.values().map(|app| &app.config));
    let scrape = metrics::Scrape {
        depth,
        done: shared.done_count(),
        backlog: &backlog,
        targets: &targets,
    };
    let text = shared
        .metrics
        .render(&scrape, shared.store.writer_stats().as_ref());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}
