//! The web console, at `/console` on `server.admin_listen` when
//! `[console]` is configured: what came in, what is stuck, and buttons to
//! retry it. Server-rendered HTML (no script, nothing loaded from
//! elsewhere).
//!
//! Every page needs a session: signed in with `[console] password`, or,
//! with no password (allowed only on a loopback admin listener), opened on
//! the first visit. Every POST carries the session's CSRF token, and the
//! session cookie is `HttpOnly` and `SameSite=Strict` (and `Secure` when
//! the request came over HTTPS through a proxy).

pub mod conversation;
pub mod live;
pub mod pages;
pub mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cookie::{Cookie, SameSite};
use maud::Markup;
use serde::Deserialize;

use crate::clock::{now_ms, Millis};
use crate::config::ConsoleConfig;
use crate::store::{DeliveryId, Depth, ListFilter, PushId, Status, Store};
use pages::{Frame, InboxQuery};
use session::{Session, Sessions, COOKIE, SIGN_IN_COOKIE};

/// Pushes on one inbox page.
const PAGE_SIZE: usize = 50;

/// Dead pushes and dead deliveries shown on the dead-letter page.
const DEAD_SHOWN: usize = 200;

/// An app as the console knows it.
#[derive(Debug, Clone)]
pub struct ConsoleApp {
    /// Its appid.
    pub appid: String,
    /// Mini Program or Official Account.
    pub kind: crate::protocol::AppKind,
    /// Whether it has an AppSecret: the customer-service API needs one.
    pub can_answer: bool,
}

/// The apps the console knows, and the outbox it answers their users
/// through: replaced whole when a reload changes the apps.
#[derive(Debug)]
pub struct ConsoleApps {
    /// The apps, by appid.
    pub apps: Vec<ConsoleApp>,
    /// Their appids, sorted.
    pub appids: Vec<String>,
    /// The outbox (none: no app has an AppSecret).
    pub outbox: Option<crate::outbox::Outbox>,
    /// The forward targets configured, by URL: a dead delivery to any
    /// other is not re-queued, since nothing would deliver it.
    pub targets: Vec<String>,
}

impl ConsoleApps {
    /// The apps of `config`, answering through the customer-service API
    /// with tokens every instance shares through `store`.
    pub fn of(
        config: &crate::config::Config,
        store: &Arc<dyn Store>,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> Self {
        let mut apps: Vec<ConsoleApp> = config
            .apps
            .iter()
            .map(|a| ConsoleApp {
                appid: a.appid.clone(),
                kind: a.kind,
                can_answer: a.secret.is_some(),
            })
            .collect();
        apps.sort_by(|a, b| a.appid.cmp(&b.appid));
        let outbox = apps.iter().any(|a| a.can_answer).then(|| {
            let api = crate::api::WechatApi::for_config(config, store.clone())
                .with_metrics(metrics.clone());
            crate::outbox::Outbox::new(store.clone(), api)
        });
        let targets = crate::config::forward_targets(&config.apps);
        ConsoleApps {
            appids: apps.iter().map(|a| a.appid.clone()).collect(),
            apps,
            outbox,
            targets,
        }
    }

    /// The app `appid`, if configured.
    pub fn app(&self, appid: &str) -> Option<&ConsoleApp> {
        self.apps.iter().find(|a| a.appid == appid)
    }
}

/// The console: the store it reads, the apps it knows, who is signed in.
pub struct Console {
    store: Arc<dyn Store>,
    apps: std::sync::RwLock<Arc<ConsoleApps>>,
    /// This process's metrics: the acknowledgement latency chart.
    metrics: Arc<crate::metrics::Metrics>,
    sessions: Sessions,
    /// The overview's counts of the last hour and day, and when they were
    /// read: a day of pushes is read at most once per [`COUNTS_FOR`],
    /// however many people watch the overview.
    counts: tokio::sync::Mutex<Option<(Instant, i64, Counted)>>,
    /// Set when the server stops: live streams end, so that they do not
    /// hold the shutdown up.
    stopping: std::sync::atomic::AtomicBool,
    /// The newest push id, for live pages (see [`live`]).
    newest: live::Newest,
    /// The task that reads it, started by the first live page.
    poller: std::sync::OnceLock<()>,
}

/// Pushes by app and kind: the last hour's and the last day's.
type Counted = (Vec<crate::store::KindCount>, Vec<crate::store::KindCount>);

/// One more push of its app and kind in `counts`.
fn count_in(counts: &mut Vec<crate::store::KindCount>, push: &crate::store::StoredPush) {
    match counts
        .iter_mut()
        .find(|k| k.appid == push.appid && k.kind == push.kind)
    {
        Some(k) => k.count += 1,
        None => counts.push(crate::store::KindCount {
            appid: push.appid.clone(),
            kind: push.kind.clone(),
            count: 1,
        }),
    }
}

/// How long the overview's counts are reused.
const COUNTS_FOR: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("apps", &self.apps())
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console over `store` for `apps`, as `config` says.
    pub fn new(
        config: &ConsoleConfig,
        store: Arc<dyn Store>,
        apps: ConsoleApps,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Console {
            store,
            apps: std::sync::RwLock::new(Arc::new(apps)),
            metrics,
            sessions: Sessions::new(config.password.clone(), config.session_ttl),
            counts: tokio::sync::Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            newest: tokio::sync::watch::Sender::new(0),
            poller: std::sync::OnceLock::new(),
        }
    }

    /// Start the one task that reads the newest push id, once.
    fn start_poller(self: &Arc<Self>) {
        self.poller.get_or_init(|| {
            tokio::spawn(live::poll_newest(self.clone()));
        });
    }

    /// The server is stopping: end the live streams.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last hour's and day's counts up to push `newest`: read again
    /// when older than [`COUNTS_FOR`] (one reader at a time; the others
    /// wait for it), and in between brought up to date with the pushes
    /// stored since, which are few, so that a live overview counts each
    /// push as it arrives.
    async fn counted(&self, now: Millis, newest: i64) -> Result<Counted, crate::store::StoreError> {
        /// More new pushes than this: count afresh.
        const TOPPED_UP: usize = 1_000;
        let hour_ago = now - Duration::from_secs(3600);
        let day_ago = now - Duration::from_secs(86_400);
        let mut cached = self.counts.lock().await;
        if let Some((at, upto, (hour, day))) = cached.as_mut() {
            if at.elapsed() < COUNTS_FOR {
                if newest > *upto {
                    let new = self
                        .store
                        .list(ListFilter {
                            after: Some(PushId(*upto)),
                            limit: TOPPED_UP + 1,
                            ..ListFilter::default()
                        })
                        .await?;
                    if new.len() <= TOPPED_UP {
                        for p in &new {
                            if p.received_at >= hour_ago {
                                count_in(hour, p);
                            }
                            if p.received_at >= day_ago {
                                count_in(day, p);
                            }
                        }
                        *upto = new.first().map_or(*upto, |p| p.id.0.max(*upto));
                        return Ok((hour.clone(), day.clone()));
                    }
                } else {
                    return Ok((hour.clone(), day.clone()));
                }
            }
        }
        let hour = self.store.kinds_since(hour_ago).await?;
        let day = self.store.kinds_since(day_ago).await?;
        *cached = Some((Instant::now(), newest, (hour.clone(), day.clone())));
        Ok((hour, day))
    }

    /// The id of the newest push stored (0: none yet).
    async fn newest_id(&self) -> Result<i64, crate::store::StoreError> {
        let newest = self
            .store
            .list(ListFilter {
                limit: 1,
                ..ListFilter::default()
            })
            .await?;
        Ok(newest.first().map_or(0, |p| p.id.0))
    }

    /// The apps in force.
    pub fn apps(&self) -> Arc<ConsoleApps> {
        match self.apps.read() {
            Ok(apps) => apps.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The targets a retry may re-queue deliveries to: those configured
    /// (a delivery to any other would wait for ever).
    fn targets(&self) -> Option<Vec<String>> {
        Some(self.apps().targets.clone())
    }

    /// Take up a reloaded `[console]` (see [`Sessions::reconfigure`]).
    pub fn reconfigure(&self, config: &ConsoleConfig) {
        self.sessions
            .reconfigure(config.password.clone(), config.session_ttl);
    }

    /// Take up the apps of a reloaded configuration.
    pub fn replace_apps(&self, apps: ConsoleApps) {
        match self.apps.write() {
            Ok(mut current) => *current = Arc::new(apps),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(apps),
        }
    }

    /// The console's routes, all under `/console`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/console", get(overview))
            .route("/console/", get(overview))
            .route("/console/assets/console.css", get(stylesheet))
            .route("/console/assets/console.js", get(script))
            .route("/console/events", get(live::events))
            .route("/console/sign-in", get(sign_in_page).post(sign_in))
            .route("/console/sign-out", post(sign_out))
            .route("/console/inbox", get(inbox))
            .route("/console/pushes/{id}", get(push))
            .route("/console/pushes/{id}/retry", post(retry_push))
            .route("/console/deliveries/{id}/retry", post(retry_delivery))
            .route("/console/dead", get(dead))
            .route("/console/dead/retry", post(retry_dead))
            .route("/console/conversations", get(conversation::list))
            .route(
                "/console/conversations/{appid}/{openid}",
                get(conversation::page),
            )
            .route(
                "/console/conversations/{appid}/{openid}/answer",
                post(conversation::answer),
            )
            .layer(axum::middleware::map_response(guard_headers))
            .with_state(self)
    }

    /// The visitor's session, or what to answer instead: to sign in, or
    /// (no password) a new session and its cookie.
    pub(crate) fn visitor(&self, headers: &HeaderMap) -> Result<Visitor, TurnedAway> {
        self.check_origin(headers)?;
        let now = Instant::now();
        if let Some(id) = cookie(headers, COOKIE) {
            if let Some(session) = self.sessions.get(&id, now) {
                return Ok(Visitor {
                    id,
                    session,
                    set_cookie: None,
                });
            }
        }
        if self.sessions.needs_password() {
            return Err(TurnedAway::SignIn);
        }
        let id = self.sessions.open(now).ok_or(TurnedAway::NoRandomness)?;
        let session = self
            .sessions
            .get(&id, now)
            .ok_or(TurnedAway::NoRandomness)?;
        let set_cookie = self.session_cookie(headers, &id);
        Ok(Visitor {
            id,
            session,
            set_cookie: Some(set_cookie),
        })
    }

    /// The session of a form's POST, if it carries the session's CSRF
    /// token; else 403.
    pub(crate) fn poster(&self, headers: &HeaderMap, csrf: &str) -> Result<Visitor, TurnedAway> {
        self.check_origin(headers)?;
        let now = Instant::now();
        let id = cookie(headers, COOKIE).ok_or(TurnedAway::Forbidden)?;
        let session = self.sessions.get(&id, now).ok_or(TurnedAway::Forbidden)?;
        if !session::same_token(csrf, &session.csrf) {
            return Err(TurnedAway::Forbidden);
        }
        Ok(Visitor {
            id,
            session,
            set_cookie: None,
        })
    }

    /// Refuse what a page elsewhere could make a browser send: a form
    /// posted from another origin (its `Origin` differs from `Host`);
    /// and, without a password, any request not addressed to a loopback
    /// name or one relayed by a proxy, since a loopback listener is the
    /// only guard then (a site whose name is re-pointed at 127.0.0.1, or a
    /// proxy in front, would otherwise pass it).
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), TurnedAway> {
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let host = text(header::HOST).unwrap_or("");
        if let Some(origin) = text(header::ORIGIN) {
            let same = url::Url::parse(origin).ok().is_some_and(|o| {
                let port = o.port().map(|p| format!(":{p}")).unwrap_or_default();
                o.host_str().is_some_and(|h| format!("{h}{port}") == host)
            });
            if !same {
                return Err(TurnedAway::Forbidden);
            }
        }
        if !self.sessions.needs_password() {
            let name = host
                .rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                .map_or(host, |(name, _)| name);
            let loopback = matches!(name, "localhost" | "127.0.0.1" | "[::1]")
                || name
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback());
            let relayed =
                headers.contains_key("x-forwarded-for") || headers.contains_key(header::FORWARDED);
            if !loopback || relayed {
                return Err(TurnedAway::NotLoopback);
            }
        }
        Ok(())
    }

    fn session_cookie(&self, headers: &HeaderMap, id: &str) -> HeaderValue {
        let cookie = Cookie::build((COOKIE, id.to_owned()))
            .path("/console")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(over_https(headers))
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(self.sessions.ttl().as_secs()).unwrap_or(i64::MAX),
            ))
            .build();
        header_value(&cookie)
    }
}

/// Why a request gets no page.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TurnedAway {
    /// No session, and a password is needed: to the sign-in page.
    SignIn,
    /// A POST without the session's CSRF token (or without a session).
    Forbidden,
    /// No random bytes for a new session.
    NoRandomness,
    /// No password, and the request is not addressed to a loopback name
    /// directly.
    NotLoopback,
}

impl IntoResponse for TurnedAway {
    fn into_response(self) -> Response {
        match self {
            TurnedAway::SignIn => Redirect::to("/console/sign-in").into_response(),
            TurnedAway::Forbidden => forbidden(),
            TurnedAway::NoRandomness => no_randomness().into_response(),
            TurnedAway::NotLoopback => (
                StatusCode::FORBIDDEN,
                "403: the console has no password, so it answers only requests made directly \
                 to a loopback address (localhost, 127.0.0.1, [::1]); set [console] password \
                 to reach it any other way",
            )
                .into_response(),
        }
    }
}

/// Who is asking, and the cookie to set when the session is new.
pub(crate) struct Visitor {
    id: String,
    session: Session,
    set_cookie: Option<HeaderValue>,
}

/// A page's visitor, as an extractor: a request without a session (or
/// from another origin) gets [`TurnedAway`]'s answer instead of the page.
impl axum::extract::FromRequestParts<Arc<Console>> for Visitor {
    type Rejection = TurnedAway;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Self, TurnedAway> {
        console.visitor(&parts.headers)
    }
}

impl Visitor {
    pub(crate) fn frame<'a>(&'a self, console: &Console) -> Frame<'a> {
        Frame {
            csrf: &self.session.csrf,
            signed_in: console.sessions.needs_password(),
        }
    }

    /// `markup` as the answer, with the session's cookie if it is new.
    /// Pages are never cached: they show what is stored now.
    pub(crate) fn page(&self, status: StatusCode, markup: Markup) -> Response {
        let mut response = (status, markup).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(cookie) = &self.set_cookie {
            headers.insert(header::SET_COOKIE, cookie.clone());
        }
        response
    }
}

/// On every console answer: nothing but the console's own pages and
/// stylesheet load, no other site frames it, and types are not guessed.
async fn guard_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Whether the request came over HTTPS: a proxy in front says so. A
/// forged header only makes the cookie stricter.
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    // A cookie of ASCII hex and fixed attributes is a valid header value.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// The value of cookie `name` in the request, if sent.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "403: this form has expired or did not come from the console; reload the page and try again",
    )
        .into_response()
}

fn no_randomness() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "503: the system's random source failed; no session was started",
    )
}

/// A store error, for a page.
pub(crate) fn store_error(error: &crate::store::StoreError) -> String {
    crate::display_chain(error)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::CSS,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::SCRIPT,
    )
        .into_response()
}

async fn sign_in_page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !console.sessions.needs_password() {
        return Redirect::to("/console").into_response();
    }
    sign_in_form(&headers, false)
}

/// The sign-in form, with a fresh token in its own cookie (there is no
/// session to hold one yet): a form posted from elsewhere has no match.
fn sign_in_form(headers: &HeaderMap, failed: bool) -> Response {
    let Some(token) = session::random_token() else {
        return no_randomness().into_response();
    };
    let cookie = Cookie::build((SIGN_IN_COOKIE, token.clone()))
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_https(headers))
        .build();
    let status = if failed {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let mut response = (status, pages::sign_in(&token, failed)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, header_value(&cookie));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A form's CSRF token, and nothing else.
#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

async fn sign_in(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Err(turned) = console.check_origin(&headers) {
        return turned.into_response();
    }
    let expected = cookie(&headers, SIGN_IN_COOKIE);
    if !expected.is_some_and(|t| session::same_token(&form.csrf, &t)) {
        return forbidden();
    }
    match console.sessions.sign_in(&form.password).await {
        Ok(id) => {
            tracing::info!(target: "wechat_push::console", "console: signed in");
            let mut response = Redirect::to("/console").into_response();
            let cookie = console.session_cookie(&headers, &id);
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            // The sign-in form's token has done its work.
            let spent = Cookie::build((SIGN_IN_COOKIE, ""))
                .path("/console")
                .max_age(cookie::time::Duration::ZERO)
                .build();
            response
                .headers_mut()
                .append(header::SET_COOKIE, header_value(&spent));
            response
        }
        Err(session::SignInRefused::Wrong) => {
            tracing::warn!(target: "wechat_push::console", "console: a sign-in with a wrong password");
            sign_in_form(&headers, true)
        }
        Err(session::SignInRefused::Busy) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "429: another sign-in is being checked; try again in a second",
        )
            .into_response(),
        Err(session::SignInRefused::NoRandomness) => no_randomness().into_response(),
    }
}

async fn sign_out(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let visitor = match console.poster(&headers, &form.csrf) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    console.sessions.sign_out(&visitor.id);
    let gone = Cookie::build((COOKIE, ""))
        .path("/console")
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut response = Redirect::to("/console/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, header_value(&gone));
    response
}

/// The overview's span: the last hour (by minute) or day (by 15 minutes).
#[derive(Deserialize, Default)]
struct OverviewQuery {
    #[serde(default)]
    span: String,
}

async fn overview(
    State(console): State<Arc<Console>>,
    visitor: Visitor,
    Query(query): Query<OverviewQuery>,
) -> Response {
    let frame = visitor.frame(&console);
    let now = now_ms();
    let store = &console.store;
    let read = async {
        let newest = console.newest_id().await?;
        let (last_hour, last_day) = console.counted(now, newest).await?;
        let depth_by_app = store.depth_by_app().await?;
        let day = query.span == "day";
        let (since, per_minutes): (Millis, i64) = if day {
            (now - Duration::from_secs(86_400), 15)
        } else {
            (now - Duration::from_secs(3600), 1)
        };
        let charts = pages::Charts {
            day,
            since,
            now,
            per: Duration::from_secs(60 * per_minutes.unsigned_abs()),
            arrivals: store.arrivals(since, per_minutes * 60_000).await?,
            latency: console.metrics.ack_series(since, per_minutes),
        };
        Ok::<_, crate::store::StoreError>(pages::Overview {
            last_hour,
            last_day,
            depth: depth_by_app
                .iter()
                .fold(Depth::default(), |all, (_, d)| Depth {
                    pending: all.pending + d.pending,
                    working: all.working + d.working,
                    dead: all.dead + d.dead,
                }),
            depth_by_app,
            backlog: store.delivery_backlog().await?,
            appids: console.apps().appids.clone(),
            now,
            charts,
            newest,
        })
    };
    match read.await {
        Ok(o) => visitor.page(StatusCode::OK, pages::overview(&frame, &o)),
        Err(e) => visitor.page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(&frame, &store_error(&e)),
        ),
    }
}

/// A `datetime-local` value (`YYYY-MM-DDTHH:MM[:SS]`, taken as UTC) or a
/// full RFC 3339 time, as milliseconds.
fn parse_time(text: &str) -> Result<Option<Millis>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let full = if text.len() == 16 {
        format!("{text}:00Z")
    } else if text.ends_with('Z') || text.contains('+') {
        text.to_owned()
    } else {
        format!("{text}Z")
    };
    let at = humantime::parse_rfc3339_weak(&full)
        .map_err(|_| format!("{text:?} is not a time (YYYY-MM-DDTHH:MM, UTC)"))?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?
        .as_millis();
    Ok(Some(Millis(i64::try_from(ms).unwrap_or(i64::MAX))))
}

pub(crate) fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// How far back a text search looks when no start is given: a search
/// reads every push in its span (300 ms for a million, 45 ms for a day of
/// them at 140,000 a day).
pub const TEXT_SEARCH_SPAN: Duration = Duration::from_secs(86_400);

/// The inbox's filter (without its page), as the store takes it.
pub(crate) fn inbox_filter(query: &InboxQuery) -> Result<ListFilter, String> {
    let text = non_empty(&query.q);
    let until = parse_time(&query.until)?;
    let since = match parse_time(&query.since)? {
        // The 24 hours before the end asked, or before now.
        None if text.is_some() => Some(until.unwrap_or_else(now_ms) - TEXT_SEARCH_SPAN),
        since => since,
    };
    Ok(ListFilter {
        appid: non_empty(&query.app),
        status: Status::parse(query.status.trim()),
        kind: non_empty(&query.kind),
        from: non_empty(&query.openid),
        since,
        until,
        text,
        ..ListFilter::default()
    })
}

async fn inbox(
    State(console): State<Arc<Console>>,
    visitor: Visitor,
    Query(query): Query<InboxQuery>,
) -> Response {
    let frame = visitor.frame(&console);
    let filter = match inbox_filter(&query) {
        Ok(f) => f,
        Err(e) => {
            let page = pages::inbox(&frame, &query, &console.apps().appids, &[], None, Some(&e));
            return visitor.page(StatusCode::BAD_REQUEST, page);
        }
    };
    let filter = ListFilter {
        before: query.before.map(PushId),
        limit: PAGE_SIZE + 1,
        ..filter
    };
    match console.store.list(filter).await {
        Ok(mut pushes) => {
            let next = (pushes.len() > PAGE_SIZE).then(|| {
                pushes.truncate(PAGE_SIZE);
                pushes.last().map_or(0, |p| p.id.0)
            });
            let page = pages::inbox(&frame, &query, &console.apps().appids, &pushes, next, None);
            visitor.page(StatusCode::OK, page)
        }
        Err(e) => visitor.page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(&frame, &store_error(&e)),
        ),
    }
}

/// What a retry re-queued, carried to the page it redirects to.
#[derive(Deserialize, Default)]
struct Requeued {
    #[serde(default)]
    requeued_pushes: Option<u64>,
    #[serde(default)]
    requeued_deliveries: Option<u64>,
    #[serde(default)]
    app: String,
}

impl Requeued {
    fn counts(&self) -> Option<(u64, u64)> {
        match (self.requeued_pushes, self.requeued_deliveries) {
            (None, None) => None,
            (p, d) => Some((p.unwrap_or(0), d.unwrap_or(0))),
        }
    }
}

async fn push(
    State(console): State<Arc<Console>>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Query(requeued): Query<Requeued>,
) -> Response {
    let frame = visitor.frame(&console);
    let store = &console.store;
    let read = async {
        let Some(push) = store.push(PushId(id)).await? else {
            return Ok(None);
        };
        Ok::<_, crate::store::StoreError>(Some(pages::PushPage {
            answers: store.answers(push.id).await?,
            deliveries: store.deliveries(push.id).await?,
            attempts: store.delivery_attempts(push.id).await?,
            push,
            requeued: requeued.counts(),
        }))
    };
    match read.await {
        Ok(Some(page)) => visitor.page(StatusCode::OK, pages::push(&frame, &page)),
        Ok(None) => visitor.page(
            StatusCode::NOT_FOUND,
            pages::not_found(&frame, &format!("No push {id} is stored (pruned?).")),
        ),
        Err(e) => visitor.page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(&frame, &store_error(&e)),
        ),
    }
}

/// Where to go after a retry: `to`, with the counts.
fn after_retry(to: &str, pushes: usize, deliveries: usize, app: &str) -> Response {
    let mut url = url::form_urlencoded::Serializer::new(String::new());
    url.append_pair("requeued_pushes", &pushes.to_string());
    url.append_pair("requeued_deliveries", &deliveries.to_string());
    if !app.is_empty() {
        url.append_pair("app", app);
    }
    Redirect::to(&format!("{to}?{}", url.finish())).into_response()
}

async fn retry_push(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let visitor = match console.poster(&headers, &form.csrf) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    let store = &console.store;
    let retried = async {
        let Some(push) = store.push(PushId(id)).await? else {
            return Ok(None);
        };
        // By its exact key and app: this push, not others sharing a prefix.
        let key = push.dedup_key.as_str().to_owned();
        let retried = store
            .retry(key, Some(push.appid), console.targets())
            .await?;
        Ok::<_, crate::store::StoreError>(Some(retried))
    };
    let frame = visitor.frame(&console);
    match retried.await {
        Ok(Some(r)) => {
            tracing::info!(target: "wechat_push::console", push = id, pushes = r.pushes, deliveries = r.deliveries, "console: retried a push");
            after_retry(&format!("/console/pushes/{id}"), r.pushes, r.deliveries, "")
        }
        Ok(None) => visitor.page(
            StatusCode::NOT_FOUND,
            pages::not_found(&frame, &format!("No push {id} is stored.")),
        ),
        Err(e) => visitor.page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(&frame, &store_error(&e)),
        ),
    }
}

/// A delivery's retry form: its token and the page it was on.
#[derive(Deserialize)]
struct RetryDeliveryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: String,
}

/// `back` if it is one of the console's pages that show deliveries, else
/// the dead letters: never a redirect elsewhere.
fn back_to(back: &str) -> String {
    let push_page = back
        .strip_prefix("/console/pushes/")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if push_page {
        back.to_owned()
    } else {
        "/console/dead".to_owned()
    }
}

async fn retry_delivery(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<RetryDeliveryForm>,
) -> Response {
    let visitor = match console.poster(&headers, &form.csrf) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    let frame = visitor.frame(&console);
    match console
        .store
        .retry_delivery(DeliveryId(id), console.targets())
        .await
    {
        Ok(retried) => {
            tracing::info!(target: "wechat_push::console", delivery = id, retried, "console: retried a delivery");
            after_retry(&back_to(&form.back), 0, usize::from(retried), "")
        }
        Err(e) => visitor.page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(&frame, &store_error(&e)),
        ),
    }
}

async fn dead(
    State(console): State<Arc<Console>>,
    visitor: Visitor,
    Query(query): Query<Requeued>,
) -> Response {
    let frame = visitor.frame(&console);
    let app = non_empty(&query.app);
    let store = &console.store;
    let read = async {
        let pushes = store
            .list(ListFilter {
                appid: app.clone(),
                status: Some(Status::Dead),
                limit: DEAD_SHOWN,
                ..ListFilter::default()
            })
            .await?;
        let deliveries = store.dead_deliveries(app.clone(), DEAD_SHOWN).await?;
        Ok::<_, crate::store::StoreError>((pushes, deliveries))
    };
    match read.await {
        Ok((pushes, deliveries)) => {
            let page = pages::dead(
                &frame,
                app.as_deref().unwrap_or(""),
                &console.apps().appids,
                &pushes,
                &deliveries,
                query.counts(),
            );
            visitor.page(StatusCode::OK, page)
        }
        Err(e) => visitor.page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(&frame, &store_error(&e)),
        ),
    }
}

#[derive(Deserialize)]
struct RetryAllForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    app: String,
}

async fn retry_dead(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<RetryAllForm>,
) -> Response {
    let visitor = match console.poster(&headers, &form.csrf) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    let frame = visitor.frame(&console);
    let app = non_empty(&form.app);
    match console
        .store
        .retry_dead(app.clone(), console.targets())
        .await
    {
        Ok(r) => {
            tracing::info!(target: "wechat_push::console", app = app.as_deref().unwrap_or("all"), pushes = r.pushes, deliveries = r.deliveries, "console: retried every dead push and delivery");
            after_retry("/console/dead", r.pushes, r.deliveries, &form.app)
        }
        Err(e) => visitor.page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(&frame, &store_error(&e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_utc_in_the_forms_the_form_sends() {
        assert_eq!(parse_time(""), Ok(None));
        assert_eq!(parse_time("1970-01-01T00:01"), Ok(Some(Millis(60_000))));
        assert_eq!(parse_time("1970-01-01T00:01:02"), Ok(Some(Millis(62_000))));
        assert_eq!(parse_time("1970-01-01T00:01:02Z"), Ok(Some(Millis(62_000))));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; wp_console=abc; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, SIGN_IN_COOKIE), None);
    }
}
