//! A local stand-in for WeChat's API: access tokens, the customer-service
//! message and typing calls, answered like WeChat, faults included.
//!
//! It checks appid and secret, hands out tokens with WeChat's lifetimes
//! (`stable_token` returns the same token until it expires; `token` issues a
//! new one each time and keeps the previous valid for five more minutes),
//! checks the token of every call (`41001`, `40001`, `42001`), and enforces the
//! reply windows: five messages within 48 hours after a user's message, two
//! within a minute after the user enters the session (`45015` when the window
//! is closed, `45047` when its quota is used).
//!
//! For tests and demos it also serves, under `/_mock/`:
//! - `GET sent`: the customer-service messages it accepted, in order;
//! - `GET media`: the temporary media it accepted (`media/upload`, checked
//!   for WeChat's types and sizes), without their bytes;
//! - `GET calls`: every API call it received (token fetches included);
//! - `POST faults` `{"path"?, "errcode"?, "errmsg"?, "delay_ms"?, "times"?}`:
//!   answer the next `times` matching calls with that errcode, after that delay
//!   (with `"late": true`, `custom/send` takes the message first and answers
//!   after the delay, as a slow WeChat does);
//! - `POST user_action` `{"appid", "openid", "action": "message" | "enter_session"}`:
//!   open a reply window, as a user's message or session entry does;
//! - `POST advance` `{"seconds"}`: move its clock forward (token expiry, windows).
//!
//! A user with no recorded action gets a message window on first contact
//! unless implicit windows are turned off, so a demo needs no set-up.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::clock::now_ms;

/// A token's lifetime, as WeChat gives it.
const TOKEN_LIFETIME_MS: i64 = 7200 * 1000;
/// How long a replaced token stays valid.
const OVERLAP_MS: i64 = 5 * 60 * 1000;
/// The least time between two forced refreshes of a stable token.
const FORCE_REFRESH_GAP_MS: i64 = 30 * 1000;
/// The customer-service message types WeChat accepts.
const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "link",
    "miniprogrampage",
    "voice",
    "video",
    "music",
    "news",
    "mpnews",
    "msgmenu",
    "wxcard",
];

/// A reply window opened by a user's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAction {
    /// A message: 5 answers within 48 hours.
    Message,
    /// Entering the customer-service session: 2 answers within a minute.
    EnterSession,
}

impl UserAction {
    fn limits(self) -> (i64, u32) {
        match self {
            UserAction::Message => (48 * 3600 * 1000, 5),
            UserAction::EnterSession => (60 * 1000, 2),
        }
    }
}

#[derive(Debug, Clone)]
struct Window {
    action: UserAction,
    at: i64,
    used: u32,
}

#[derive(Debug, Clone)]
struct IssuedToken {
    appid: String,
    expires_at: i64,
}

/// An injected fault.
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// Only calls to this path (e.g. `/cgi-bin/message/custom/send`); any API call if absent.
    #[serde(default)]
    pub path: Option<String>,
    /// Answer with this errcode.
    #[serde(default)]
    pub errcode: Option<i64>,
    /// With this errmsg.
    #[serde(default)]
    pub errmsg: Option<String>,
    /// After this delay.
    #[serde(default)]
    pub delay_ms: u64,
    /// With `delay_ms`: do the work first and answer late (the call takes
    /// effect; its answer comes after the delay), as a slow WeChat does.
    /// Only `custom/send` does work worth telling apart.
    #[serde(default)]
    pub late: bool,
    /// For this many calls.
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default)]
struct Inner {
    apps: HashMap<String, String>,
    tokens: HashMap<String, IssuedToken>,
    stable: HashMap<String, String>,
    last_forced: HashMap<String, i64>,
    windows: HashMap<(String, String), Window>,
    faults: VecDeque<Fault>,
    calls: Vec<Value>,
    sent: Vec<Value>,
    media: Vec<Value>,
    /// Answers to hold back after the work is done, by path.
    late: Vec<(String, u64)>,
    issued: u64,
    offset_ms: i64,
    implicit_windows: bool,
}

impl Inner {
    fn now(&self) -> i64 {
        now_ms().0 + self.offset_ms
    }

    fn issue(&mut self, appid: &str) -> (String, i64) {
        self.issued += 1;
        let mut random = [0u8; 12];
        let _ = getrandom::fill(&mut random);
        let tail: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let token = format!("MOCK_{}_{}_{tail}", self.issued, appid);
        let expires_at = self.now() + TOKEN_LIFETIME_MS;
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                appid: appid.to_owned(),
                expires_at,
            },
        );
        (token, expires_at)
    }

    /// Cut the life of every other token of `appid` to the overlap.
    fn retire_others(&mut self, appid: &str, keep: &str) {
        let cut = self.now() + OVERLAP_MS;
        for (token, t) in self.tokens.iter_mut() {
            if t.appid == appid && token != keep {
                t.expires_at = t.expires_at.min(cut);
            }
        }
    }

    /// The checks both token endpoints make, in WeChat's order.
    fn check_request(&self, grant_type: &str, appid: &str, secret: &str) -> Result<(), Value> {
        if grant_type != "client_credential" {
            return Err(error(40002, "invalid grant_type"));
        }
        match self.apps.get(appid) {
            None => Err(error(40013, "invalid appid")),
            Some(s) if s != secret => Err(error(40125, "invalid appsecret")),
            Some(_) => Ok(()),
        }
    }

    fn check_token(&self, token: Option<&str>) -> Result<String, Value> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| error(41001, "access_token missing"))?;
        let issued = self.tokens.get(token).ok_or_else(|| {
            error(
                40001,
                "invalid credential, access_token is invalid or not latest",
            )
        })?;
        if issued.expires_at <= self.now() {
            return Err(error(42001, "access_token expired"));
        }
        Ok(issued.appid.clone())
    }

    fn take_fault(&mut self, path: &str) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|f| f.times > 0 && f.path.as_deref().is_none_or(|p| p == path))?;
        let fault = self.faults[i].clone();
        self.faults[i].times -= 1;
        if self.faults[i].times == 0 {
            self.faults.remove(i);
        }
        Some(fault)
    }
}

fn error(errcode: i64, errmsg: &str) -> Value {
    json!({ "errcode": errcode, "errmsg": errmsg })
}

fn ok() -> Value {
    json!({ "errcode": 0, "errmsg": "ok" })
}

type Shared = Arc<Mutex<Inner>>;

/// The stand-in, bound and ready to run.
pub struct MockWechat {
    listener: TcpListener,
    inner: Shared,
}

impl MockWechat {
    /// Bind `addr` (port 0 for a free one) and know these apps (`appid → secret`).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr, apps: HashMap<String, String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let inner = Inner {
            apps,
            implicit_windows: true,
            ..Inner::default()
        };
        Ok(MockWechat {
            listener,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Turn implicit windows off: users get no reply window until a
    /// `/_mock/user_action` opens one, as on the real service.
    pub fn strict_windows(self) -> Self {
        if let Ok(mut inner) = self.inner.lock() {
            inner.implicit_windows = false;
        }
        self
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serve until `shutdown` completes.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = Router::new()
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/token", get(token))
            .route("/cgi-bin/message/custom/send", post(custom_send))
            .route("/cgi-bin/message/custom/typing", post(custom_typing))
            .route("/cgi-bin/media/upload", post(media_upload))
            .route("/_mock/sent", get(sent))
            .route("/_mock/media", get(media))
            .route("/_mock/calls", get(calls))
            .route("/_mock/faults", post(faults))
            .route("/_mock/user_action", post(user_action))
            .route("/_mock/advance", post(advance))
            // Above WeChat's largest media (10 MB), so that oversized
            // uploads get WeChat's errcode rather than a 413.
            .layer(axum::extract::DefaultBodyLimit::max(32 << 20))
            .with_state(self.inner);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Record the call, then apply an injected fault if one matches.
async fn enter(state: &Shared, path: &str, appid: Option<&str>, body: &Value) -> Option<Value> {
    let fault = {
        let Ok(mut inner) = state.lock() else {
            return Some(error(-1, "system error"));
        };
        let at = inner.now();
        inner
            .calls
            .push(json!({ "path": path, "appid": appid, "body": body, "at": at }));
        inner.take_fault(path)
    }?;
    if fault.late {
        if let Ok(mut inner) = state.lock() {
            inner.late.push((path.to_owned(), fault.delay_ms));
        }
        return None;
    }
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    fault.errcode.map(|code| {
        let msg = fault.errmsg.unwrap_or_else(|| match code {
            -1 => "system error".into(),
            40001 => "invalid credential, access_token is invalid or not latest".into(),
            45047 => "out of response count limit".into(),
            45015 => "response out of time limit or subscription is canceled".into(),
            _ => "injected fault".into(),
        });
        error(code, &msg)
    })
}

#[derive(Debug, Deserialize)]
struct StableTokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    force_refresh: bool,
}

async fn stable_token(
    State(state): State<Shared>,
    Json(req): Json<StableTokenRequest>,
) -> Json<Value> {
    let logged = json!({ "grant_type": req.grant_type, "appid": req.appid, "force_refresh": req.force_refresh });
    if let Some(fault) = enter(&state, "/cgi-bin/stable_token", Some(&req.appid), &logged).await {
        return Json(fault);
    }
    let Ok(mut inner) = state.lock() else {
        return Json(error(-1, "system error"));
    };
    if let Err(e) = inner.check_request(&req.grant_type, &req.appid, &req.secret) {
        return Json(e);
    }
    let now = inner.now();
    let current = inner
        .stable
        .get(&req.appid)
        .and_then(|t| inner.tokens.get(t).map(|i| (t.clone(), i.expires_at)))
        .filter(|(_, expires_at)| *expires_at > now);
    let (token, expires_at) = match (current, req.force_refresh) {
        (Some(current), false) => current,
        (_, force) => {
            if force {
                let last = inner
                    .last_forced
                    .get(&req.appid)
                    .copied()
                    .unwrap_or(i64::MIN / 2);
                if now - last < FORCE_REFRESH_GAP_MS {
                    return Json(error(
                        45009,
                        "reach max api daily quota limit: force_refresh at most every 30 s",
                    ));
                }
                inner.last_forced.insert(req.appid.clone(), now);
            }
            let (token, expires_at) = inner.issue(&req.appid);
            inner.retire_others(&req.appid, &token);
            inner.stable.insert(req.appid.clone(), token.clone());
            (token, expires_at)
        }
    };
    Json(json!({ "access_token": token, "expires_in": (expires_at - now) / 1000 }))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
}

async fn token(State(state): State<Shared>, Query(q): Query<TokenQuery>) -> Json<Value> {
    let logged = json!({ "grant_type": q.grant_type, "appid": q.appid });
    if let Some(fault) = enter(&state, "/cgi-bin/token", Some(&q.appid), &logged).await {
        return Json(fault);
    }
    let Ok(mut inner) = state.lock() else {
        return Json(error(-1, "system error"));
    };
    if let Err(e) = inner.check_request(&q.grant_type, &q.appid, &q.secret) {
        return Json(e);
    }
    let (token, _) = inner.issue(&q.appid);
    inner.retire_others(&q.appid, &token);
    Json(json!({ "access_token": token, "expires_in": TOKEN_LIFETIME_MS / 1000 }))
}

/// Record a token-authorized call, apply a fault, then check its token:
/// the appid it belongs to, or the answer to give instead.
async fn authorize(
    state: &Shared,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<String, Value> {
    let appid = state.lock().ok().and_then(|i| i.check_token(token).ok());
    if let Some(fault) = enter(state, path, appid.as_deref(), body).await {
        return Err(fault);
    }
    state
        .lock()
        .map_err(|_| error(-1, "system error"))?
        .check_token(token)
}

#[derive(Debug, Deserialize)]
struct TokenParam {
    access_token: Option<String>,
}

async fn custom_send(
    State(state): State<Shared>,
    Query(q): Query<TokenParam>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let appid = match authorize(
        &state,
        "/cgi-bin/message/custom/send",
        q.access_token.as_deref(),
        &body,
    )
    .await
    {
        Ok(appid) => appid,
        Err(answer) => return Json(answer),
    };
    let (answer, late) = take_message(&state, appid, &body);
    if let Some(ms) = late {
        // Done; the answer comes late (a client that gave up never sees it).
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Json(answer)
}

/// Take a customer-service message (or refuse it): the answer, and how long
/// to hold it back when a `late` fault says so.
fn take_message(state: &Shared, appid: String, body: &Value) -> (Value, Option<u64>) {
    let Ok(mut inner) = state.lock() else {
        return (error(-1, "system error"), None);
    };
    let late = inner
        .late
        .iter()
        .position(|(path, _)| path == "/cgi-bin/message/custom/send")
        .map(|i| inner.late.remove(i).1);
    let answer = |a: Value| (a, late);
    let touser = body["touser"].as_str().unwrap_or_default().to_owned();
    if touser.is_empty() {
        return answer(error(40003, "invalid openid"));
    }
    let msgtype = body["msgtype"].as_str().unwrap_or_default();
    if !MSG_TYPES.contains(&msgtype) || !body[msgtype].is_object() {
        return answer(error(
            47001,
            "data format error: msgtype and its object are required",
        ));
    }
    let now = inner.now();
    let implicit = inner.implicit_windows;
    let window = match inner.windows.get_mut(&(appid.clone(), touser.clone())) {
        Some(w) => w,
        None if implicit => inner
            .windows
            .entry((appid.clone(), touser.clone()))
            .or_insert(Window {
                action: UserAction::Message,
                at: now,
                used: 0,
            }),
        None => {
            return answer(error(
                45015,
                "response out of time limit or subscription is canceled",
            ))
        }
    };
    let (span, quota) = window.action.limits();
    if now - window.at > span {
        return answer(error(
            45015,
            "response out of time limit or subscription is canceled",
        ));
    }
    if window.used >= quota {
        return answer(error(45047, "out of response count limit"));
    }
    window.used += 1;
    inner.sent.push(
        json!({ "appid": appid, "touser": touser, "msgtype": msgtype, "body": body, "at": now }),
    );
    answer(ok())
}

#[derive(Debug, Deserialize)]
struct UploadParams {
    access_token: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// The formats and largest sizes of temporary media, by type, as WeChat
/// takes them (<https://developers.weixin.qq.com/doc/offiaccount/Asset_Management/New_temporary_materials.html>).
fn media_rules(kind: &str) -> Option<(&'static [&'static str], usize)> {
    Some(match kind {
        "image" => (&["png", "jpg", "jpeg", "gif"], 10 << 20),
        "voice" => (&["amr", "mp3"], 2 << 20),
        "video" => (&["mp4"], 10 << 20),
        "thumb" => (&["jpg", "jpeg"], 64 << 10),
        _ => return None,
    })
}

async fn media_upload(
    State(state): State<Shared>,
    Query(q): Query<UploadParams>,
    mut form: axum::extract::Multipart,
) -> Json<Value> {
    let mut file: Option<(String, usize)> = None;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("media") {
            let name = field.file_name().unwrap_or_default().to_owned();
            match field.bytes().await {
                Ok(bytes) => file = Some((name, bytes.len())),
                Err(_) => return Json(error(41005, "media data missing")),
            }
        }
    }
    let kind = q.kind.unwrap_or_default();
    let body = json!({ "type": kind, "file": file.as_ref().map(|f| &f.0), "size": file.as_ref().map(|f| f.1) });
    let appid = match authorize(
        &state,
        "/cgi-bin/media/upload",
        q.access_token.as_deref(),
        &body,
    )
    .await
    {
        Ok(appid) => appid,
        Err(answer) => return Json(answer),
    };
    let Some((formats, max)) = media_rules(&kind) else {
        return Json(error(40004, "invalid media type"));
    };
    let Some((name, size)) = file else {
        return Json(error(41005, "media data missing"));
    };
    let extension = name
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !name.contains('.') || !formats.contains(&extension.as_str()) {
        return Json(error(40005, "invalid file type"));
    }
    if size > max {
        return Json(error(40006, "invalid meida size"));
    }
    let Ok(mut inner) = state.lock() else {
        return Json(error(-1, "system error"));
    };
    let media_id = format!("MOCK_MEDIA_{}_{}", inner.media.len() + 1, kind);
    let created_at = inner.now() / 1000;
    inner.media.push(
        json!({ "appid": appid, "type": kind, "file": name, "size": size, "media_id": media_id }),
    );
    Json(json!({ "type": kind, "media_id": media_id, "created_at": created_at }))
}

async fn media(State(state): State<Shared>) -> Json<Value> {
    Json(
        state
            .lock()
            .map_or(Value::Null, |i| Value::Array(i.media.clone())),
    )
}

async fn custom_typing(
    State(state): State<Shared>,
    Query(q): Query<TokenParam>,
    Json(body): Json<Value>,
) -> Json<Value> {
    if let Err(answer) = authorize(
        &state,
        "/cgi-bin/message/custom/typing",
        q.access_token.as_deref(),
        &body,
    )
    .await
    {
        return Json(answer);
    }
    if body["touser"].as_str().unwrap_or_default().is_empty() {
        return Json(error(40003, "invalid openid"));
    }
    match body["command"].as_str() {
        Some("Typing" | "CancelTyping") => Json(ok()),
        _ => Json(error(40001, "invalid command: Typing or CancelTyping")),
    }
}

async fn sent(State(state): State<Shared>) -> Json<Value> {
    Json(Value::Array(
        state.lock().map(|i| i.sent.clone()).unwrap_or_default(),
    ))
}

async fn calls(State(state): State<Shared>) -> Json<Value> {
    Json(Value::Array(
        state.lock().map(|i| i.calls.clone()).unwrap_or_default(),
    ))
}

async fn faults(State(state): State<Shared>, Json(fault): Json<Fault>) -> Json<Value> {
    if let Ok(mut inner) = state.lock() {
        inner.faults.push_back(fault);
    }
    Json(ok())
}

#[derive(Debug, Deserialize)]
struct UserActionRequest {
    appid: String,
    openid: String,
    action: UserAction,
}

async fn user_action(
    State(state): State<Shared>,
    Json(req): Json<UserActionRequest>,
) -> Json<Value> {
    if let Ok(mut inner) = state.lock() {
        let at = inner.now();
        inner.windows.insert(
            (req.appid, req.openid),
            Window {
                action: req.action,
                at,
                used: 0,
            },
        );
    }
    Json(ok())
}

#[derive(Debug, Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance(State(state): State<Shared>, Json(req): Json<Advance>) -> Json<Value> {
    if let Ok(mut inner) = state.lock() {
        inner.offset_ms += req.seconds.max(0) * 1000;
    }
    Json(ok())
}
