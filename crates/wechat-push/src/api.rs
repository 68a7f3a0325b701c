//! WeChat's API: access tokens shared through the store, customer-service
//! messages and the typing indicator, with WeChat's errcodes as typed errors.
//!
//! Tokens live in the store ([`TokenCache`]), so every process and instance sharing it
//! uses one token: WeChat's classic `token` call invalidates the previous
//! token (after five minutes), so servers that fetch their own break each
//! other. A refresh is leased in the store: one process fetches, the others
//! wait for it. Tokens are refreshed five minutes ahead of expiry.
//!
//! Errors: `-1` (busy) and network failures are retried with backoff;
//! `40001`, `40014`, `42001` (token refused) invalidate the token, only if it
//! is still the one that failed, and retry once with a fresh one; `45015`
//! (reply window closed) and `45047` (quota used) are final; any other
//! errcode is final and carried in the error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clock::{now_ms, Millis};
pub use crate::config::TokenKind;
use crate::config::{Config, Secret};
use crate::metrics::{self, Metrics};
use crate::protocol::message::OpenId;
pub use crate::reply::CsMessage;
use crate::store::{CachedToken, StoreError, TokenCache};

/// Refresh a token this long before it expires.
const REFRESH_AHEAD_MS: i64 = 5 * 60 * 1000;
/// Temporary media lives three days.
const MEDIA_LIFETIME: Duration = Duration::from_secs(3 * 24 * 3600);
/// Upload a file again this long before its media id expires.
const MEDIA_REFRESH_AHEAD_MS: i64 = 3600 * 1000;
/// The customer-service message call: the one whose requests must not be
/// repeated blindly.
const SEND_PATH: &str = "/cgi-bin/message/custom/send";
/// How long a call to WeChat's API may take. WeChat documents no latency
/// for its API; it answers in well under a second when healthy, and a
/// message whose answer does not come is recorded as uncertain rather than
/// sent again. Long enough for a slow but successful answer to be seen (so
/// few are uncertain), short enough that a handler (`inbox.handler_timeout`,
/// 30 s) can wait out a retry of a busy answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting (DNS, TCP, TLS) may take within a call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Media ids are cached beside tokens, under `media:<appid>:<kind>:<digest>`
/// (never an appid).
const MEDIA_KEY: &str = "media:";
/// How long a refresh lease holds (the fetch should take well under a second).
const LEASE: Duration = Duration::from_secs(30);
/// How long a caller waits for another process's refresh.
const REFRESH_WAIT: Duration = Duration::from_secs(10);
/// Backoff before each retry of a busy (`-1`) answer or a network failure.
const BACKOFF: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// What went wrong with a call to WeChat's API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The app has no `secret` configured.
    #[error("no secret is configured for app {0}")]
    NoSecret(String),
    /// `45015`: the user's reply window is closed. Final.
    #[error("reply window closed (45015): {0}")]
    WindowClosed(String),
    /// `45047`: the window's message quota is used up. Final.
    #[error("reply quota used up (45047): {0}")]
    QuotaUsed(String),
    /// Any other errcode. Final. Its message says what to do where the
    /// errcode is a common one ([`advice`]).
    #[error("WeChat answered errcode {errcode}: {errmsg}{}", advice(*errcode).map(|a| format!(" ({a})")).unwrap_or_default())]
    Wechat {
        /// WeChat's `errcode`; -2 when its answer carried none.
        errcode: i64,
        /// WeChat's `errmsg`, as sent (`no errmsg` when absent).
        errmsg: String,
    },
    /// WeChat could not be reached, or answered something that is not its JSON.
    #[error("cannot reach WeChat's API")]
    Network(#[source] reqwest::Error),
    /// A message was sent and no answer came back (a timeout or a broken
    /// connection after the request was written): WeChat may have
    /// delivered it. Not retried: retrying could answer the user twice.
    #[error("sent, but WeChat's answer never came: it may or may not have reached the user")]
    Uncertain(#[source] reqwest::Error),
    /// The token store failed.
    #[error("token store unavailable")]
    Store(#[from] StoreError),
    /// A media file to upload cannot be read.
    #[error("cannot read media file {path}")]
    File {
        /// The media file's path, as configured.
        path: String,
        /// The I/O error from reading the file.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the refresh and did not finish in time.
    #[error("another process is fetching the access token or uploading the media file, and did not finish in {0:?}")]
    RefreshTimedOut(Duration),
}

impl ApiError {
    /// WeChat's errcode, when WeChat answered with one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::WindowClosed(_) => Some(45015),
            ApiError::QuotaUsed(_) => Some(45047),
            ApiError::Wechat { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Network(_) | ApiError::Store(_) | ApiError::RefreshTimedOut(_)
        ) || self.errcode() == Some(-1)
    }
}

/// A client of WeChat's API for the configured apps.
#[derive(Clone)]
pub struct WechatApi {
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    base: String,
    store: Arc<dyn TokenCache>,
    secrets: Arc<HashMap<String, Secret>>,
    kind: TokenKind,
    holder: String,
    /// One refresh at a time per app within this process; the store's lease
    /// does the same across processes.
    refreshing: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for WechatApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatApi")
            .field("base", &self.base)
            .field("apps", &self.secrets.keys().collect::<Vec<_>>())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl WechatApi {
    /// A client of the API at `base` (`https://api.weixin.qq.com`), with
    /// each app's secret, sharing tokens through `store`.
    pub fn new(
        base: impl Into<String>,
        store: Arc<dyn TokenCache>,
        secrets: HashMap<String, Secret>,
        kind: TokenKind,
    ) -> Self {
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        WechatApi {
            metrics: Arc::default(),
            http: client(DEFAULT_TIMEOUT),
            base: base.into().trim_end_matches('/').to_owned(),
            store,
            secrets: Arc::new(secrets),
            kind,
            holder: format!("{}-{}", std::process::id(), u64::from_le_bytes(id)),
            refreshing: Arc::default(),
        }
    }

    /// The client `config` describes (`[wechat]`: API base, token kind,
    /// timeout; each app's secret), sharing tokens through `store`.
    pub fn for_config(config: &Config, store: Arc<dyn TokenCache>) -> Self {
        WechatApi::new(
            config.wechat.api_base.clone(),
            store,
            config.secrets(),
            config.wechat.token_kind,
        )
        .with_timeout(config.wechat.timeout)
    }

    /// Wait at most `timeout` for each call ([`DEFAULT_TIMEOUT`] otherwise).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = client(timeout);
        self
    }

    /// Count WeChat's error answers in `metrics`
    /// (`wechat_push_api_errors_total{appid, errcode}`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A valid access token for `appid`: the shared one, or a fresh one when
    /// it is missing or near expiry (fetched by one process at a time).
    ///
    /// # Errors
    /// [`ApiError`] when no token can be had.
    pub async fn access_token(&self, appid: &str) -> Result<String, ApiError> {
        self.shared(appid, REFRESH_AHEAD_MS, |force| {
            self.fetch_token(appid, force)
        })
        .await
    }

    /// The value cached in the store under `key` while it has more than
    /// `ahead_ms` to live; else a fresh one from `fetch`, fetched by one
    /// process at a time (a lease in the store across processes, a lock
    /// within one) while the others wait for it. `fetch` is told whether a
    /// live value is being replaced.
    async fn shared<F, Fut>(&self, key: &str, ahead_ms: i64, fetch: F) -> Result<String, ApiError>
    where
        F: FnOnce(bool) -> Fut,
        Fut: std::future::Future<Output = Result<CachedToken, ApiError>>,
    {
        if let Some(t) = self.store.token(key.to_owned()).await? {
            if t.expires_at - now_ms() > ahead_ms {
                return Ok(t.token);
            }
        }
        let gate = self
            .refreshing
            .lock()
            .map(|mut m| m.entry(key.to_owned()).or_default().clone())
            .unwrap_or_default();
        let _one_at_a_time = gate.lock().await;
        let waited_from = Instant::now();
        loop {
            let now = now_ms();
            let cached = self.store.token(key.to_owned()).await?;
            if let Some(t) = cached.as_ref().filter(|t| t.expires_at - now > ahead_ms) {
                return Ok(t.token.clone());
            }
            let leased = self
                .store
                .lease_token_refresh(key.to_owned(), self.holder.clone(), now + LEASE, now)
                .await?;
            if leased {
                // Another process may have refreshed between the read and the lease.
                if let Some(t) = self.store.token(key.to_owned()).await? {
                    if t.expires_at - now_ms() > ahead_ms {
                        self.store.put_token(t.clone(), self.holder.clone()).await?;
                        return Ok(t.token);
                    }
                }
                // A live stable token is only replaced when forced.
                let force = cached.as_ref().is_some_and(|t| t.expires_at > now);
                return match fetch(force).await {
                    Ok(mut fresh) => {
                        fresh.appid = key.to_owned();
                        let value = fresh.token.clone();
                        self.store.put_token(fresh, self.holder.clone()).await?;
                        Ok(value)
                    }
                    Err(e) => {
                        // Let others try at once rather than wait out the lease.
                        let _ = self
                            .store
                            .lease_token_refresh(
                                key.to_owned(),
                                self.holder.clone(),
                                Millis(0),
                                now,
                            )
                            .await;
                        Err(e)
                    }
                };
            }
            if waited_from.elapsed() > REFRESH_WAIT {
                return Err(ApiError::RefreshTimedOut(REFRESH_WAIT));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The media id of `file` uploaded as temporary media of `kind`
    /// (`image`, `voice`) for `appid`: uploaded once and shared through the
    /// store by every process (keyed by the file's content, so an edited
    /// file is uploaded anew), uploaded again an hour before its three days
    /// run out, or after WeChat refused it ([`WechatApi::forget_media`]).
    ///
    /// Source: <https://developers.weixin.qq.com/doc/offiaccount/Asset_Management/New_temporary_materials.html>
    ///
    /// # Errors
    /// [`ApiError::File`] when the file cannot be read; otherwise as
    /// [`WechatApi::send`] (`40004`, `40005`, `40006`: wrong type or size).
    pub async fn media_id(
        &self,
        appid: &str,
        kind: &str,
        file: &std::path::Path,
    ) -> Result<String, ApiError> {
        use sha2::Digest;
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|source| ApiError::File {
                path: file.display().to_string(),
                source,
            })?;
        let digest = sha2::Sha256::digest(&bytes);
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let key = format!("{MEDIA_KEY}{appid}:{kind}:{hex}");
        let name = file
            .file_name()
            .map_or_else(|| "media".to_owned(), |n| n.to_string_lossy().into_owned());
        self.shared(&key, MEDIA_REFRESH_AHEAD_MS, |_| {
            self.upload(appid, kind, &name, &bytes)
        })
        .await
    }

    /// Drop a media id WeChat refused (`40007`) from the shared cache, so
    /// that its file is uploaded again the next time it is used.
    ///
    /// # Errors
    /// [`ApiError::Store`].
    pub async fn forget_media(&self, appid: &str, media_id: &str) -> Result<bool, ApiError> {
        Ok(self
            .store
            .invalidate_token_value(format!("{MEDIA_KEY}{appid}:"), media_id.to_owned())
            .await?)
    }

    async fn upload(
        &self,
        appid: &str,
        kind: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<CachedToken, ApiError> {
        let mime = match name
            .rsplit('.')
            .next()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => "image/png",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("gif") => "image/gif",
            Some("amr") => "audio/amr",
            Some("mp3") => "audio/mpeg",
            Some("mp4") => "video/mp4",
            _ => "application/octet-stream",
        };
        let url = format!("{}/cgi-bin/media/upload", self.base);
        let uploaded_at = now_ms();
        let answer = self
            .call(appid, "/cgi-bin/media/upload", |token| {
                let part = reqwest::multipart::Part::bytes(bytes.to_vec())
                    .file_name(name.to_owned())
                    .mime_str(mime)
                    .unwrap_or_else(|_| reqwest::multipart::Part::bytes(bytes.to_vec()));
                self.http
                    .post(&url)
                    .query(&[("access_token", token), ("type", kind)])
                    .multipart(reqwest::multipart::Form::new().part("media", part))
            })
            .await?;
        let media_id = answer["media_id"].as_str().unwrap_or_default();
        if media_id.is_empty() {
            return Err(wechat_error(&answer));
        }
        let created_at = answer["created_at"]
            .as_i64()
            .map_or(uploaded_at, |s| Millis(s.saturating_mul(1000)));
        tracing::info!(%appid, kind, file = name, "uploaded temporary media");
        Ok(CachedToken {
            appid: String::new(),
            token: media_id.to_owned(),
            expires_at: created_at + MEDIA_LIFETIME,
            fetched_at: uploaded_at,
        })
    }

    async fn fetch_token(&self, appid: &str, force: bool) -> Result<CachedToken, ApiError> {
        let secret = self
            .secrets
            .get(appid)
            .ok_or_else(|| ApiError::NoSecret(appid.to_owned()))?;
        let request = match self.kind {
            TokenKind::Stable => self
                .http
                .post(format!("{}/cgi-bin/stable_token", self.base))
                .json(&json!({
                    "grant_type": "client_credential",
                    "appid": appid,
                    "secret": secret.expose(),
                    "force_refresh": force,
                })),
            TokenKind::Classic => self
                .http
                .get(format!("{}/cgi-bin/token", self.base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", appid),
                    ("secret", secret.expose()),
                ]),
        };
        let fetched_at = now_ms();
        let refreshed = |outcome: &str| {
            self.metrics.inc(
                metrics::TOKEN_REFRESHES,
                &[("appid", appid), ("outcome", outcome)],
            );
        };
        let answer = self
            .answer(request, false)
            .await
            .inspect_err(|_| refreshed("failed"))?;
        let token = answer["access_token"].as_str().unwrap_or_default();
        let expires_in = answer["expires_in"].as_i64().unwrap_or(0);
        if token.is_empty() || expires_in <= 0 {
            refreshed("failed");
            return Err(wechat_error(&answer));
        }
        refreshed("fetched");
        tracing::info!(%appid, expires_in, "fetched a new access token");
        Ok(CachedToken {
            appid: appid.to_owned(),
            token: token.to_owned(),
            expires_at: fetched_at + Duration::from_secs(expires_in.unsigned_abs()),
            fetched_at,
        })
    }

    /// Send a customer-service message to `touser`.
    ///
    /// # Errors
    /// [`ApiError`]: final for `45015`, `45047` and unknown errcodes.
    pub async fn send(
        &self,
        appid: &str,
        touser: &OpenId,
        message: &CsMessage,
    ) -> Result<(), ApiError> {
        self.post_json(appid, SEND_PATH, &message.body(touser))
            .await
    }

    /// Send a customer-service message body as recorded in the outbox.
    ///
    /// # Errors
    /// As [`WechatApi::send`].
    pub async fn send_body(&self, appid: &str, body: &Value) -> Result<(), ApiError> {
        self.post_json(appid, SEND_PATH, body).await
    }

    /// Show (`true`) or hide the typing indicator to `touser`.
    ///
    /// # Errors
    /// As [`WechatApi::send`].
    pub async fn typing(&self, appid: &str, touser: &OpenId, typing: bool) -> Result<(), ApiError> {
        let command = if typing { "Typing" } else { "CancelTyping" };
        self.post_json(
            appid,
            "/cgi-bin/message/custom/typing",
            &json!({ "touser": touser.as_str(), "command": command }),
        )
        .await
    }

    async fn post_json(
        &self,
        appid: &str,
        path: &'static str,
        body: &Value,
    ) -> Result<(), ApiError> {
        let url = format!("{}{path}", self.base);
        // A message (unlike a token or an upload) must not go out twice.
        let once = path == SEND_PATH;
        self.call_once(appid, path, once, |token| {
            self.http
                .post(&url)
                .query(&[("access_token", token)])
                .json(body)
        })
        .await
        .map(drop)
    }

    /// Call WeChat with the app's access token (`request` builds the
    /// request for a token), retrying busy answers and network failures
    /// with backoff and a refused token once with a fresh one; WeChat's
    /// answer when its errcode is 0 or absent.
    async fn call(
        &self,
        appid: &str,
        endpoint: &'static str,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Value, ApiError> {
        self.call_once(appid, endpoint, false, request).await
    }

    /// [`WechatApi::call`]; with `once`, a request that may have reached
    /// WeChat (no answer after it was written) is not sent again but
    /// reported as [`ApiError::Uncertain`].
    async fn call_once(
        &self,
        appid: &str,
        endpoint: &'static str,
        once: bool,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Value, ApiError> {
        let mut busy = 0;
        let mut refreshed = false;
        loop {
            let token = self.access_token(appid).await?;
            let answer = self.answer(request(&token), once).await;
            // Every call, by its answer: `0`, WeChat's errcode, or `none`
            // (no answer: network, timeout, not JSON).
            let errcode = match &answer {
                Ok(answer) => answer["errcode"].as_i64().unwrap_or(0).to_string(),
                Err(_) => "none".to_owned(),
            };
            self.metrics.inc(
                metrics::API_CALLS,
                &[
                    ("appid", appid),
                    ("endpoint", endpoint),
                    ("errcode", &errcode),
                ],
            );
            let error = match answer {
                Ok(answer) if answer["errcode"].as_i64().unwrap_or(0) == 0 => return Ok(answer),
                Ok(answer) => wechat_error(&answer),
                Err(e) => e,
            };
            if let Some(code) = error.errcode() {
                let code = code.to_string();
                self.metrics
                    .inc(metrics::API_ERRORS, &[("appid", appid), ("errcode", &code)]);
            }
            match error.errcode() {
                Some(40001 | 40014 | 42001) if !refreshed => {
                    refreshed = true;
                    let dropped = self.store.invalidate_token(appid.to_owned(), token).await?;
                    tracing::warn!(%appid, errcode = error.errcode(), dropped, "access token refused; retrying once with a fresh one");
                }
                _ if error.is_retryable() && busy < BACKOFF.len() => {
                    tracing::warn!(%appid, error = %crate::display_chain(&error), "WeChat busy or unreachable; retrying");
                    tokio::time::sleep(BACKOFF[busy]).await;
                    busy += 1;
                }
                _ => return Err(error),
            }
        }
    }

    /// Send a request and read WeChat's JSON answer. URLs (which carry the
    /// token) never reach errors or logs. With `once`, a failure after the
    /// connection was made (the request may have been written) is
    /// [`ApiError::Uncertain`]; one before it, [`ApiError::Network`].
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        once: bool,
    ) -> Result<Value, ApiError> {
        let failed = |e: reqwest::Error| {
            let e = e.without_url();
            if once && !e.is_connect() {
                self.metrics.inc(metrics::API_UNCERTAIN, &[]);
                ApiError::Uncertain(e)
            } else {
                ApiError::Network(e)
            }
        };
        let response = request.send().await.map_err(failed)?;
        response.json::<Value>().await.map_err(failed)
    }
}

/// The HTTP client: `timeout` for a whole call, and a shorter bound on
/// connecting, so that a connection never made is a connect error (retried)
/// rather than a timeout of a request that may have been sent (uncertain).
fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// What an errcode means and what to do about it, for the common final
/// ones. Source: WeChat's global return codes,
/// <https://developers.weixin.qq.com/doc/offiaccount/Getting_Started/Global_Return_Code.html>.
pub fn advice(errcode: i64) -> Option<&'static str> {
    Some(match errcode {
        48001 => "this account has no permission for this API: unverified subscription accounts have no customer-service API; answer with a passive reply (via = \"passive\")",
        48002 => "the user has turned off messages from this account",
        48004 => "this API is banned for this account; see the notice in WeChat's console",
        40003 => "the openid is not a user of this app",
        40007 => "the media_id is invalid or expired; an uploaded file is uploaded again next time",
        45009 => "the API's daily quota is used up",
        45011 => "API calls are too frequent; slow down",
        40004 | 40005 => "WeChat does not take this type of media file",
        40006 => "the media file is too large for its type",
        _ => return None,
    })
}

fn wechat_error(answer: &Value) -> ApiError {
    let errcode = answer["errcode"].as_i64().unwrap_or(-2);
    let errmsg = answer["errmsg"].as_str().unwrap_or("no errmsg").to_owned();
    match errcode {
        45015 => ApiError::WindowClosed(errmsg),
        45047 => ApiError::QuotaUsed(errmsg),
        _ => ApiError::Wechat { errcode, errmsg },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_wechats_shapes() {
        let to = OpenId::new("oU");
        let b = CsMessage::Text("hi".into()).body(&to);
        assert_eq!(
            b,
            json!({"touser": "oU", "msgtype": "text", "text": {"content": "hi"}})
        );
        let news = CsMessage::News {
            title: "t".into(),
            description: "d".into(),
            url: "u".into(),
            picurl: "p".into(),
        };
        assert_eq!(news.body(&to)["news"]["articles"][0]["picurl"], "p");
        assert_eq!(
            CsMessage::Mpnews("M".into()).body(&to)["mpnews"]["media_id"],
            "M"
        );
        let page = CsMessage::Miniprogrampage(crate::reply::MiniProgramCard {
            title: "t".into(),
            pagepath: "pages/i".into(),
            thumb_media_id: "m".into(),
        });
        assert_eq!(page.body(&to)["miniprogrampage"]["pagepath"], "pages/i");
    }
}
