//! Typed configuration: built-in defaults, then a TOML file, then
//! `WECHAT_PUSH_*` environment variables; validated before anything starts
//! ([`Config::validate`]; rules and forward targets by
//! `rules::RulesHandler::check` and `forward::Forwarder::check`, which the
//! command line runs on load).
//!
//! Environment variables name a key by its section and name in upper case:
//! `WECHAT_PUSH_SERVER_LISTEN`, `WECHAT_PUSH_STORE_URL`,
//! `WECHAT_PUSH_WECHAT_API_BASE`, `WECHAT_PUSH_INBOX_WORKERS`, and for apps
//! their index: `WECHAT_PUSH_APPS_0_TOKEN`, `WECHAT_PUSH_APPS_0_SECRET`, and
//! for forward targets theirs too: `WECHAT_PUSH_APPS_0_FORWARD_0_SECRET`.
//!
//! Secrets (tokens, keys, app secrets) are held in [`Secret`], whose `Debug`
//! never shows them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::{Table, Value};

use crate::protocol::crypto::{AesKey, KeyRing};
use crate::protocol::envelope::AppCrypto;
pub use crate::protocol::{AppKind, Secret};
use crate::protocol::{Format, Mode, Token};
use crate::reply::{ReplySpec, Via};

/// The built-in defaults, every key commented.
pub const DEFAULTS: &str = include_str!("config.default.toml");

/// The prefix of environment variables that override keys.
pub const ENV_PREFIX: &str = "WECHAT_PUSH_";

/// A configuration that cannot be used. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The config file's path, as given.
        path: String,
        /// The I/O error from reading it (not found, permission denied, …).
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML. Only the place and the reason are
    /// kept: TOML's own message quotes the offending line, which may hold a
    /// secret.
    #[error("{path}:{line}:{column} is not valid TOML: {reason}")]
    Toml {
        /// The config file's path; `built-in defaults` or `config` for TOML not read
        /// from a file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// The column, from 1.
        column: usize,
        /// What is wrong, without the line's text.
        reason: String,
    },
    /// An environment variable does not name a key or has the wrong type.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable's whole name, e.g. `WECHAT_PUSH_APPS_0_TOKEN`.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// A key has the wrong type or an unknown name.
    #[error("{key}: {message}")]
    Key {
        /// The key, e.g. `server` or `apps[0]`.
        key: String,
        /// serde's message, naming the field.
        message: String,
    },
    /// A value is well-typed but unusable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, e.g. `apps[0].encoding_aes_key`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A [`ConfigError::Key`] or [`ConfigError::Invalid`] whose key is
    /// written in the config file: where.
    #[error("{path}:{line}:{column}: {error}")]
    InFile {
        /// The config file's path, as given.
        path: String,
        /// The line of the key (or of the nearest enclosing key the file
        /// has), from 1.
        line: usize,
        /// Its column, from 1.
        column: usize,
        /// The error, naming the key. Not a `#[source]`: the message
        /// already says it, and a chain would say it twice.
        error: Box<ConfigError>,
    },
}

impl ConfigError {
    /// The key at fault, when the error names one.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::InFile { error, .. } => error.key(),
            ConfigError::Read { .. } | ConfigError::Toml { .. } | ConfigError::Env { .. } => None,
        }
    }
}

/// The whole configuration, as [`Config::load`] builds it: defaults, then the file,
/// then the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[wechat]`.
    pub wechat: WechatConfig,
    /// `[inbox]`.
    pub inbox: InboxConfig,
    /// `[[apps]]`.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// `[console]`: the web console, served when the section is present.
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
}

/// `[console]`: the web console, at `/console` on `server.admin_listen`
/// (and nowhere else). Present: served; absent: not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The password that signs in (`WECHAT_PUSH_CONSOLE_PASSWORD` in
    /// production). Unset: no sign-in, allowed only with
    /// `server.admin_listen` on a loopback address.
    #[serde(default)]
    pub password: Option<Secret>,
    /// How long a sign-in lasts, from the sign-in. Default 12 hours.
    #[serde(default = "console_session_ttl", deserialize_with = "duration")]
    pub session_ttl: Duration,
}

impl PartialEq for ConsoleConfig {
    fn eq(&self, other: &Self) -> bool {
        self.password.as_ref().map(Secret::expose) == other.password.as_ref().map(Secret::expose)
            && self.session_ttl == other.session_ttl
    }
}

fn console_session_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// `[server]`: the HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where `/metrics` and `/readyz` are served (and `/healthz` as well),
    /// e.g. `127.0.0.1:9090`, and not on `listen`, which then serves only
    /// the push endpoints and `/healthz`. Unset (the default): all on `listen`.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// HTTPS on `listen`: the certificate chain, PEM, leaf first (with
    /// `tls_key`). Read again when it changes, without a restart.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Accepted distance between a push's timestamp and now.
    #[serde(deserialize_with = "duration")]
    pub timestamp_window: Duration,
    /// Largest accepted body, in bytes.
    pub max_body: usize,
    /// Time a handler has to produce a passive reply.
    #[serde(deserialize_with = "duration")]
    pub reply_budget: Duration,
    /// How log lines are written: `pretty` (the default) or `json`.
    pub log_format: LogFormat,
    /// Whether each request gets an access-log line (at `info`, target
    /// `wechat_push::access`).
    pub access_log: bool,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR
    /// ranges); empty: the header is never believed.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A connection must send a request's whole header within this time
    /// (waiting for the next request on a kept-alive connection counts).
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// A request's body must arrive within this time once its header has.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Most connections open at once; 0: the process's descriptor limit
    /// less a reserve for the store, logs and WeChat's API.
    pub max_connections: usize,
    /// On SIGTERM, how long open connections, running handlers and forward
    /// deliveries may finish before they are dropped.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// On SIGTERM, how long pushes are still taken, with `/readyz` already
    /// answering 503, before the port closes and the grace begins: time for
    /// a load balancer checking `/readyz` to stop sending here. 0 (the
    /// default): the port closes at once.
    #[serde(deserialize_with = "duration")]
    pub drain_delay: Duration,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text lines, for people to read.
    Pretty,
    /// One JSON object per line, for machines.
    Json,
}

/// `[store]`: where pushes are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (the embedded default) or `postgres://…`; see
    /// [`StoreConfig::location`].
    pub url: String,
}

/// The store `store.url` names, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `sqlite://PATH`: the embedded SQLite file at `PATH` (relative to the
    /// working directory, or absolute: `sqlite:///var/lib/wechat-push/inbox.db`).
    Sqlite(PathBuf),
    /// `postgres://user:password@host:5432/db` (or `postgresql://…`, with
    /// libpq's parameters): a PostgreSQL database shared by every instance.
    Postgres(String),
}

impl StoreConfig {
    /// Where the store is.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for `store.url` when it names no store this
    /// build has (`sqlite://` and `postgres://` or `postgresql://`) or an
    /// empty path.
    pub fn location(&self) -> Result<StoreLocation, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: "store.url".into(),
            reason: reason.to_owned(),
        };
        if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(self.url.clone()));
        }
        match self.url.strip_prefix("sqlite://") {
            Some("") => Err(invalid(
                "sqlite:// needs a file path: sqlite://data/inbox.db",
            )),
            Some(path) => Ok(StoreLocation::Sqlite(PathBuf::from(path))),
            None => Err(invalid(
                "expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            )),
        }
    }
}

/// `[wechat]`: WeChat's API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatConfig {
    /// Base URL of WeChat's API.
    pub api_base: String,
    /// How access tokens are fetched.
    pub token_kind: TokenKind,
    /// How long one call to WeChat's API may take (see
    /// `api::DEFAULT_TIMEOUT` for why 15 s).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

/// `[inbox]`: handling stored pushes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxConfig {
    /// Pushes handled at once by this process; 0 stores without handling.
    pub workers: usize,
    /// Attempts before a push is dead.
    pub max_attempts: u32,
    /// First retry delay.
    #[serde(deserialize_with = "duration")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(deserialize_with = "duration")]
    pub backoff_max: Duration,
    /// Longest a handler may run.
    #[serde(deserialize_with = "duration")]
    pub handler_timeout: Duration,
    /// How long a claim holds before another instance may take the push.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// How often the store is polled for due work.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// How long handled pushes are kept.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
}

/// Which call fetches access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// `POST /cgi-bin/stable_token`: the same token until near expiry; the default.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: a new token each time, the previous one dying in five minutes.
    Classic,
}

/// What a stored push is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// The body `success`.
    #[default]
    Success,
    /// An empty body (zero bytes), which WeChat accepts as well.
    Empty,
}

/// `[[apps]]`: one Mini Program or Official Account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The appid; the endpoint is `/wechat/{appid}`.
    pub appid: String,
    /// Mini Program or Official Account.
    pub kind: AppKind,
    /// The Token from WeChat's console.
    pub token: Secret,
    /// The EncodingAESKey (required unless the mode is plaintext).
    #[serde(default)]
    pub encoding_aes_key: Option<Secret>,
    /// The previous EncodingAESKey, during a key rotation.
    #[serde(default)]
    pub previous_encoding_aes_key: Option<Secret>,
    /// The AppSecret, for WeChat's API.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The encryption mode chosen in the console.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// The data format chosen in the console.
    #[serde(default = "default_format")]
    pub format: Format,
    /// What a stored push is answered with.
    #[serde(default)]
    pub ack: Ack,
    /// Auto-reply rules, in order: the first that matches answers.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Where pushes are forwarded, as signed JSON webhooks.
    #[serde(default)]
    pub forward: Vec<ForwardConfig>,
    /// The answer to pushes of these events (`Event` → the answer's
    /// fields), for kinds whose documentation specifies an answer other
    /// than `success`; on top of, and overriding, the built-in table
    /// ([`crate::protocol::answer::DOCUMENTED`]). Written in the push's
    /// format, sealed in encrypted modes.
    #[serde(default)]
    pub answers: std::collections::BTreeMap<String, crate::protocol::wire::Fields>,
    /// What makes a push authentic: WeChat's signature (the default), or
    /// also WeChat Cloud Run's gateway (see [`Trust`]).
    #[serde(default)]
    pub trust: Trust,
}

/// One rule as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Text content contains this, ignoring case.
    #[serde(default)]
    pub keyword: Option<String>,
    /// Text content matches this regex.
    #[serde(default)]
    pub regex: Option<String>,
    /// The event is this one (`user_enter_tempsession`, `subscribe`, …).
    #[serde(default)]
    pub event: Option<String>,
    /// The MsgType is this one (`text`, `image`, …).
    #[serde(default)]
    pub msg_type: Option<String>,
    /// The answer sent when the rule matches ([`ReplySpec`]).
    pub reply: ReplySpec,
    /// How it travels; the default is `passive` for an Official Account's
    /// passive types, `api` otherwise ([`Via`]).
    #[serde(default)]
    pub via: Option<Via>,
}

/// `[[apps.forward]]`: one target, as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Where deliveries are posted (`http://` or `https://`).
    pub url: String,
    /// What deliveries are signed with: `whsec_` and base64, or any other
    /// string used as it is.
    pub secret: Secret,
    /// Only pushes of these kinds (`text`, `image`, `event:subscribe`, or
    /// `event` for every event); every push when absent.
    #[serde(default)]
    pub only: Option<Vec<String>>,
    /// How long one attempt may take.
    #[serde(default = "default_forward_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The delay before each retry; after the last, the delivery is dead.
    #[serde(default = "default_schedule", deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Most deliveries to this target at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Hold the push's answer for this target's first attempt (within
    /// `server.reply_budget`), so that the target can reply
    /// `transfer_customer_service`, which only that answer can carry.
    #[serde(default)]
    pub passive_reply: bool,
}

fn default_forward_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The default retry schedule: about 5 s, 30 s, 2 min, 10 min, 1 h, 6 h.
pub fn default_schedule() -> Vec<Duration> {
    [5, 30, 120, 600, 3600, 6 * 3600]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

fn default_max_in_flight() -> usize {
    16
}

/// The forward targets of `apps` (`[[apps.forward]]`'s `url`s), sorted,
/// each once.
pub fn forward_targets<'a>(apps: impl IntoIterator<Item = &'a AppConfig>) -> Vec<String> {
    let mut targets: Vec<String> = apps
        .into_iter()
        .flat_map(|app| app.forward.iter().map(|f| f.url.clone()))
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

/// A URL fit to show in logs, metric labels, errors and `inbox show`:
/// without its query and fragment, and with the password of its userinfo
/// replaced by `***` (both may carry credentials:
/// `http://user:pass@host/hook?key=k` shows as `http://user:***@host/hook`).
pub fn display_url(url: &str) -> String {
    let without_query = |s: &str| s.split(['?', '#']).next().unwrap_or("").to_owned();
    let Some((scheme, rest)) = url.split_once("://") else {
        return without_query(url);
    };
    // The userinfo runs to the first `@` (as the PostgreSQL driver reads a
    // URL); a password may hold `/`, `?` or `#`. What precedes an `@` is
    // taken for a userinfo unless it is plainly a host and path (no `:`
    // with a `/`, `?` or `#` before the `@`): at worst a port is masked,
    // never a password shown.
    let userinfo = rest.find('@').and_then(|at| {
        let before = &rest[..at];
        let plain_path = before.contains(['/', '?', '#']) && !before.contains(':');
        (!plain_path).then(|| (before, &rest[at + 1..]))
    });
    match userinfo {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{}", without_query(host)),
            // A user name alone may be the credential (`https://KEY@host`).
            None => format!("{scheme}://***@{}", without_query(host)),
        },
        None => format!("{scheme}://{}", without_query(rest)),
    }
}

/// What makes a push authentic, `trust` in `[[apps]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// `signature`: every push carries WeChat's signature, checked in
    /// constant time; unsigned pushes get 401.
    #[default]
    Signature,
    /// `cloud_run`: WeChat Cloud Run (云托管) delivers pushes through its
    /// gateway unsigned and unencrypted, marked by the `x-wx-source`
    /// header. Such pushes are accepted for this app as they are, so anyone
    /// who can reach the server directly and sets that header can push for
    /// this app: use it only where the gateway is the server's only way in
    /// (Cloud Run with public access off). Signed pushes are still checked.
    /// Source: <https://developers.weixin.qq.com/miniprogram/dev/wxcloudservice/wxcloudrun/src/guide/weixin/push.html>
    CloudRun,
}

fn default_mode() -> Mode {
    Mode::Plaintext
}

fn default_format() -> Format {
    Format::Xml
}

impl AppConfig {
    /// The protocol object that opens and seals this app's pushes. In safe
    /// mode plaintext pushes are refused.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an unusable key.
    pub fn crypto(&self, index: usize) -> Result<AppCrypto, ConfigError> {
        let key = |name: &str, secret: &Option<Secret>| -> Result<Option<AesKey>, ConfigError> {
            secret
                .as_ref()
                .map(|s| AesKey::from_encoding_aes_key(s.expose()))
                .transpose()
                .map_err(|e| ConfigError::Invalid {
                    key: format!("apps[{index}].{name}"),
                    reason: e.to_string(),
                })
        };
        let current = key("encoding_aes_key", &self.encoding_aes_key)?;
        let previous = key("previous_encoding_aes_key", &self.previous_encoding_aes_key)?;
        let keys = match (current, previous) {
            (Some(current), previous) => Some(KeyRing::new(current, previous)),
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: format!("apps[{index}].previous_encoding_aes_key"),
                    reason: "set without encoding_aes_key".into(),
                })
            }
            (None, None) => None,
        };
        Ok(
            AppCrypto::new(self.appid.clone(), Token::new(self.token.expose()), keys)
                .require_encryption(self.mode == Mode::Safe),
        )
    }
}

/// Line and column (from 1, in characters) of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A TOML syntax error in `text`, by line and column, without quoting it.
fn toml_error(path: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = line_column(text, e.span().map_or(0, |span| span.start));
    ConfigError::Toml {
        path: path.to_owned(),
        line,
        column,
        reason: e.message().trim().to_owned(),
    }
}

impl Config {
    /// The secret of each app that has one, for WeChat's API.
    pub fn secrets(&self) -> std::collections::HashMap<String, Secret> {
        self.apps
            .iter()
            .filter_map(|a| a.secret.clone().map(|s| (a.appid.clone(), s)))
            .collect()
    }

    /// Load the defaults, then `file` (if given), then the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, variable or key at fault.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::load_showing(file, env).map(|(config, _)| config)
    }

    /// As [`Config::load`], with the effective settings (defaults, file
    /// and environment merged) as TOML, secrets redacted and URLs shown
    /// without credentials ([`display_url`]), for `wechat-push config check`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_showing(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, String), ConfigError> {
        Self::load_checked(file, env, &|_| Ok(()))
    }

    /// As [`Config::load_showing`], with `check` run after
    /// [`Config::validate`]: the checks of the layers that build from the
    /// configuration (`rules::RulesHandler::check`,
    /// `forward::Forwarder::check`), so that their errors too name the
    /// variable, or the file's line, that set the key at fault.
    ///
    /// # Errors
    /// As [`Config::load`]; a key's error is [`ConfigError::Env`] when a
    /// variable set the key, [`ConfigError::InFile`] when the file did.
    pub fn load_checked(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        check: &dyn Fn(&Config) -> Result<(), ConfigError>,
    ) -> Result<(Config, String), ConfigError> {
        let mut table: Table = DEFAULTS
            .parse()
            .map_err(|e| toml_error("built-in defaults", DEFAULTS, &e))?;
        let mut source = None;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let overrides: Table = text
                .parse()
                .map_err(|e| toml_error(&path.display().to_string(), &text, &e))?;
            merge(&mut table, overrides);
            source = Some((path.display().to_string(), text));
        }
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(var, _)| var.starts_with(ENV_PREFIX))
            .collect();
        // In a fixed order, whatever the environment's: `APPS_<i>_APPID`
        // before the `APP_<APPID>_…` that may look that app up, and a key
        // set both ways taking the value by appid.
        vars.sort_by_key(|(var, _)| {
            let rest = &var[ENV_PREFIX.len()..];
            (
                !rest.to_ascii_uppercase().starts_with("APPS_"),
                rest.to_ascii_uppercase().starts_with("APP_"),
                var.clone(),
            )
        });
        let file_only = table.clone();
        for (var, value) in &vars {
            apply_env(&mut table, var, &var[ENV_PREFIX.len()..], value)?;
        }
        let mut shown = table.clone();
        redact(&mut shown);
        // What `[console]` leaves out is shown with its default, as every
        // other section's is (its defaults are not in DEFAULTS: the
        // section's presence turns the console on).
        if let Some(Value::Table(console)) = shown.get_mut("console") {
            console
                .entry("session_ttl")
                .or_insert_with(|| Value::String("12h".into()));
            if !console.contains_key("password") {
                console.insert(
                    "password".into(),
                    Value::String("[none: loopback admin_listen only]".into()),
                );
            }
        }

        let checked = |table: Table| {
            let config = Self::from_table(table)?;
            config.validate()?;
            check(&config)?;
            Ok(config)
        };
        checked(table)
            .map(|config| (config, shown.to_string()))
            .map_err(|e| match blame_variable(e, file_only, &vars, &checked) {
                e @ ConfigError::Env { .. } => e,
                e => match &source {
                    Some((path, text)) => in_file(e, path, text),
                    None => e,
                },
            })
    }

    /// Parse a complete TOML document, without defaults or environment
    /// (for tests and the example config).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut table: Table = DEFAULTS
            .parse()
            .map_err(|e| toml_error("built-in defaults", DEFAULTS, &e))?;
        let overrides: Table = text.parse().map_err(|e| toml_error("config", text, &e))?;
        merge(&mut table, overrides);
        let config = Self::from_table(table)?;
        config.validate()?;
        Ok(config)
    }

    /// Deserialize section by section so that errors name the section.
    fn from_table(mut table: Table) -> Result<Config, ConfigError> {
        let mut section = |name: &str| table.remove(name).unwrap_or(Value::Table(Table::new()));
        // The path inside the section is followed down to the key at
        // fault (`apps[0].rules[1].via`, not `apps[0]`).
        fn typed<T: serde::de::DeserializeOwned>(key: &str, v: Value) -> Result<T, ConfigError> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                ConfigError::Key {
                    key: if path == "." || path.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{key}.{path}")
                    },
                    message: inner.message().trim().to_owned(),
                }
            })
        }
        let server = typed("server", section("server"))?;
        let store = typed("store", section("store"))?;
        let wechat = typed("wechat", section("wechat"))?;
        let inbox = typed("inbox", section("inbox"))?;
        let console = match table.remove("console") {
            Some(console) => Some(typed("console", console)?),
            None => None,
        };
        let apps = match table.remove("apps") {
            None => Vec::new(),
            Some(Value::Array(apps)) => apps
                .into_iter()
                .enumerate()
                .map(|(i, app)| typed(&format!("apps[{i}]"), app))
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    key: "apps".into(),
                    reason: "must be an array of tables ([[apps]])".into(),
                })
            }
        };
        if let Some(unknown) = table.keys().next() {
            return Err(ConfigError::Key {
                key: unknown.clone(),
                message: "unknown section; expected server, store, wechat, inbox, apps or console"
                    .into(),
            });
        }
        Ok(Config {
            server,
            store,
            wechat,
            inbox,
            apps,
            console,
        })
    }

    /// Check what types cannot: keys decode, tokens have WeChat's length,
    /// encrypted modes have a key, appids are unique. Rules and forward
    /// targets are checked where they are built, once
    /// (`rules::RulesHandler::new`, `forward::Forwarder::new`), when the
    /// application starts.
    ///
    /// # Errors
    /// The first [`ConfigError::Invalid`], naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        self.store.location()?;
        for (key, value) in [
            ("server.header_timeout", self.server.header_timeout),
            ("server.body_timeout", self.server.body_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.shutdown_grace", self.server.shutdown_grace),
            ("wechat.timeout", self.wechat.timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key.into(), "must be more than 0"));
            }
        }
        // WeChat drops the connection at 5 s: a reply held longer reaches no one.
        if self.server.reply_budget >= Duration::from_secs(5) {
            return Err(invalid(
                "server.reply_budget".into(),
                "must be under 5s: WeChat gives up on the answer at 5 s (and retries the push)",
            ));
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key".into(),
                    "is needed with server.tls_cert (the certificate's private key, PEM)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert".into(),
                    "is needed with server.tls_key (the certificate chain, PEM)",
                ))
            }
            _ => {}
        }
        if self
            .server
            .admin_listen
            .is_some_and(|admin| admin == self.server.listen && admin.port() != 0)
        {
            return Err(invalid(
                "server.admin_listen".into(),
                "must differ from server.listen: the admin endpoints are kept off the push port",
            ));
        }
        if let Some(console) = &self.console {
            let Some(admin) = self.server.admin_listen else {
                return Err(invalid(
                    "console".into(),
                    "needs server.admin_listen: the console is served there, never on the push port",
                ));
            };
            match &console.password {
                None if !admin.ip().is_loopback() => {
                    return Err(invalid(
                        "console.password".into(),
                        "is needed unless server.admin_listen is a loopback address \
                         (set WECHAT_PUSH_CONSOLE_PASSWORD)",
                    ))
                }
                Some(password) if password.expose().trim().chars().count() < 8 => {
                    return Err(invalid(
                        "console.password".into(),
                        "must be at least 8 characters, not counting spaces around it",
                    ))
                }
                _ => {}
            }
            if console.session_ttl.is_zero() {
                return Err(invalid("console.session_ttl".into(), "must be more than 0"));
            }
        }
        if self.inbox.max_attempts == 0 {
            return Err(invalid("inbox.max_attempts".into(), "must be at least 1"));
        }
        if self.inbox.handler_timeout >= self.inbox.lease {
            return Err(invalid(
                "inbox.lease".into(),
                "must be longer than inbox.handler_timeout, or a slow handler's push would be taken up twice",
            ));
        }
        let mut seen = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let key = |name: &str| format!("apps[{i}].{name}");
            if app.appid.trim().is_empty() {
                return Err(invalid(key("appid"), "must not be empty"));
            }
            if !seen.insert(app.appid.as_str()) {
                return Err(invalid(
                    key("appid"),
                    &format!("{} is configured twice", app.appid),
                ));
            }
            let token_len = app.token.expose().chars().count();
            if !(3..=32).contains(&token_len) {
                return Err(invalid(
                    key("token"),
                    &format!("must be 3 to 32 characters, got {token_len}"),
                ));
            }
            if app.mode.is_encrypted() && app.encoding_aes_key.is_none() {
                return Err(invalid(
                    key("encoding_aes_key"),
                    &format!("required in {} mode", app.mode),
                ));
            }
            if app.kind == AppKind::OfficialAccount && app.format == Format::Json {
                return Err(invalid(key("format"), "Official Accounts push XML only"));
            }
            app.crypto(i)?;
        }
        Ok(())
    }
}

/// `error`, a key's, as the variable's that set the key when one did:
/// `WECHAT_PUSH_SERVER_LISTEN=bad` is the variable's mistake, not the
/// file's. The variables are applied one by one to the file's settings
/// until the same error appears.
fn blame_variable(
    error: ConfigError,
    file_only: Table,
    vars: &[(String, String)],
    checked: &dyn Fn(Table) -> Result<Config, ConfigError>,
) -> ConfigError {
    if !matches!(error, ConfigError::Key { .. } | ConfigError::Invalid { .. }) || vars.is_empty() {
        return error;
    }
    let message = error.to_string();
    let fails_so = |table: &Table| {
        checked(table.clone())
            .err()
            .is_some_and(|e| e.to_string() == message)
    };
    if fails_so(&file_only) {
        return error;
    }
    let mut table = file_only;
    for (var, value) in vars {
        if apply_env(&mut table, var, &var[ENV_PREFIX.len()..], value).is_err() {
            break;
        }
        if fails_so(&table) {
            return ConfigError::Env {
                var: var.clone(),
                reason: message,
            };
        }
    }
    error
}

/// Where the key an error names (`apps[0].rules[1].via`, `server`) is
/// written in the config file `text`: the line and column of the key itself,
/// or of the deepest enclosing key the file has (a missing field is the
/// table's mistake). `None` when the file has none of it (the value came
/// from the defaults).
fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let document = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = document.get_ref();
    let mut found: Option<usize> = None;
    'segments: for segment in key.split('.') {
        let mut parts = segment.split('[');
        let name = parts.next().unwrap_or_default();
        let Some((k, mut value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        found = Some(k.span().start);
        for index in parts {
            let Some(item) = index
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|i| value.get_ref().as_array()?.get(i))
            else {
                break 'segments;
            };
            // An `[[apps]]` entry's span starts at its header.
            found = Some(item.span().start);
            value = item;
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|at| line_column(text, at))
}

/// `error` with the place in `path`'s `text` of the key it names, when
/// the file has the key.
fn in_file(error: ConfigError, path: &str, text: &str) -> ConfigError {
    if !matches!(error, ConfigError::Key { .. } | ConfigError::Invalid { .. }) {
        return error;
    }
    match error.key().and_then(|key| key_position(text, key)) {
        Some((line, column)) => ConfigError::InFile {
            path: path.to_owned(),
            line,
            column,
            error: Box::new(error),
        },
        None => error,
    }
}

/// The keys whose values are secrets, wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "token",
    "encoding_aes_key",
    "previous_encoding_aes_key",
    "secret",
    "password",
];

/// Replace secrets by `[redacted]` and show URLs without credentials.
fn redact(table: &mut Table) {
    for (key, value) in table.iter_mut() {
        match value {
            Value::Table(t) => redact(t),
            Value::Array(items) => items.iter_mut().for_each(|item| {
                if let Value::Table(t) = item {
                    redact(t);
                }
            }),
            Value::String(s) if SECRET_KEYS.contains(&key.as_str()) => {
                *s = "[redacted]".to_owned();
            }
            Value::String(s) if key == "url" || key.ends_with("_url") || key == "api_base" => {
                *s = display_url(s);
            }
            _ => {}
        }
    }
}

/// Deep-merge `overrides` into `base`: tables merge, anything else replaces.
fn merge(base: &mut Table, overrides: Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

const SECTIONS: &[&str] = &["server", "store", "wechat", "inbox", "console"];

fn apply_env(table: &mut Table, var: &str, rest: &str, value: &str) -> Result<(), ConfigError> {
    let err = |reason: String| ConfigError::Env {
        var: var.to_owned(),
        reason,
    };
    let lower = rest.to_ascii_lowercase();
    // A secret mounted as a file (Docker and Kubernetes secrets, systemd
    // credentials): the key's value is the file's text, less its final
    // line break. Secrets only: `SERVER_TLS_KEY_FILE` would put a private
    // key where a path belongs (and into errors that quote the path).
    if let Some(key) = lower.strip_suffix("_file") {
        let secret = SECRET_KEYS
            .iter()
            .chain(&["store_url"])
            .any(|k| key.ends_with(k));
        if !secret {
            return Err(err(format!(
                "_FILE is for secrets only ({}, store_url); set the key itself",
                SECRET_KEYS.join(", ")
            )));
        }
        let text =
            std::fs::read_to_string(value).map_err(|e| err(format!("cannot read {value}: {e}")))?;
        let text = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        return apply_env(table, var, key, text);
    }
    // An app by its appid: reordering [[apps]] cannot hand one app's
    // secrets to another, as an index would.
    if let Some(app_rest) = lower.strip_prefix("app_") {
        let (appid, key) = app_rest
            .split_once('_')
            .ok_or_else(|| err("expected WECHAT_PUSH_APP_<APPID>_<key>".into()))?;
        let index = match table.get("apps") {
            Some(Value::Array(apps)) => apps.iter().position(|app| {
                app.get("appid")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.eq_ignore_ascii_case(appid))
            }),
            _ => None,
        }
        .ok_or_else(|| err(format!("no [[apps]] has appid {appid}")))?;
        return apply_env(table, var, &format!("apps_{index}_{key}"), value);
    }
    let (target, key) = if let Some(app_rest) = lower.strip_prefix("apps_") {
        let (index, key) = app_rest
            .split_once('_')
            .ok_or_else(|| err("expected WECHAT_PUSH_APPS_<index>_<key>".into()))?;
        let index: usize = index
            .parse()
            .map_err(|_| err(format!("{index:?} is not an app index")))?;
        let apps = table
            .entry("apps")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(apps) = apps else {
            return Err(err("apps is not an array".into()));
        };
        while apps.len() <= index {
            apps.push(Value::Table(Table::new()));
        }
        let Value::Table(app) = &mut apps[index] else {
            return Err(err(format!("apps[{index}] is not a table")));
        };
        // A forward target's key: WECHAT_PUSH_APPS_<i>_FORWARD_<j>_<KEY>.
        match key
            .strip_prefix("forward_")
            .and_then(|r| r.split_once('_'))
            .and_then(|(j, k)| Some((j.parse::<usize>().ok()?, k)))
        {
            Some((j, key)) => {
                let targets = app
                    .entry("forward")
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(targets) = targets else {
                    return Err(err(format!("apps[{index}].forward is not an array")));
                };
                while targets.len() <= j {
                    targets.push(Value::Table(Table::new()));
                }
                let Value::Table(target) = &mut targets[j] else {
                    return Err(err(format!("apps[{index}].forward[{j}] is not a table")));
                };
                (target, key.to_owned())
            }
            None => (app, key.to_owned()),
        }
    } else {
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            lower
                .strip_prefix(s)
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*s, k))
        }) else {
            return Err(err(format!(
                "does not name a key; expected {ENV_PREFIX}<SECTION>_<KEY> with a section of {}",
                SECTIONS.join(", ")
            )));
        };
        let Some(Value::Table(section)) = table.get_mut(section) else {
            // Only `[console]` has no defaults: it is on when the file has it.
            return Err(err(format!(
                "the config file has no [{section}]; add it (it may be empty) to turn the {section} on"
            )));
        };
        (section, key.to_owned())
    };
    // Keep the type the key already has: "8" stays a number where the default is one.
    let typed = match target.get(&key) {
        Some(Value::Integer(_)) => Value::Integer(
            value
                .parse()
                .map_err(|_| err(format!("{value:?} is not an integer")))?,
        ),
        Some(Value::Boolean(_)) => Value::Boolean(
            value
                .parse()
                .map_err(|_| err(format!("{value:?} is not true or false")))?,
        ),
        _ => Value::String(value.to_owned()),
    };
    target.insert(key, typed);
    Ok(())
}

/// A duration as written in the config: text (`"3s"`, `"1h30m"`, see
/// [`parse_duration`]) or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl RawDuration {
    fn parse<E: serde::de::Error>(self) -> Result<Duration, E> {
        match self {
            RawDuration::Seconds(s) => Ok(Duration::from_secs(s)),
            RawDuration::Text(t) => parse_duration(&t).map_err(E::custom),
        }
    }
}

/// Read a duration key (see [`parse_duration`]).
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    RawDuration::deserialize(d)?.parse()
}

/// Read a list of durations (a retry schedule).
pub(crate) fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<RawDuration>::deserialize(d)?
        .into_iter()
        .map(RawDuration::parse)
        .collect()
}

/// Addresses (`10.0.0.1`, a network of one) or CIDR ranges (`10.0.0.0/8`).
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{text:?} is neither an IP address nor a CIDR range (10.0.0.0/8)"
                    ))
                })
        })
        .collect()
}

/// Parse a duration: a number of seconds (`10`), or `humantime`'s spans
/// (`500ms`, `1.5s`, `5m`, `2h`, `1h30m`, `7d`, `1h 30m`; units `ns`,
/// `us`, `ms`, `s`, `m`, `h`, `d`, `w` and their long names).
///
/// # Errors
/// A message naming the text when it is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(seconds) = t.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 1.5s, 5m, 1h30m or 7d: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `inbox show` and `/metrics` showed a forward URL's `user:pass@`.
    #[test]
    fn urls_are_shown_without_passwords_or_queries() {
        for (url, shown) in [
            (
                "http://user:pass@host/hook?key=k",
                "http://user:***@host/hook",
            ),
            (
                "postgres://wp:s3cret@db:5432/inbox",
                "postgres://wp:***@db:5432/inbox",
            ),
            // A user name alone may be the credential: it was shown.
            ("http://token@host/hook", "http://***@host/hook"),
            ("https://host:8443/hook#frag", "https://host:8443/hook"),
            ("http://host/a@b", "http://host/a@b"),
            ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:pa?ss@h/db", "postgres://u:***@h/db"),
            ("sqlite://data/inbox.db", "sqlite://data/inbox.db"),
        ] {
            assert_eq!(display_url(url), shown, "{url}");
        }
    }

    #[test]
    fn store_urls_name_their_backend() {
        let at = |url: &str| {
            StoreConfig {
                url: url.to_owned(),
            }
            .location()
        };
        assert_eq!(
            at("sqlite://data/inbox.db").unwrap(),
            StoreLocation::Sqlite("data/inbox.db".into())
        );
        for url in [
            "postgres://u:p@h:5432/db",
            "postgresql://h/db?sslmode=disable",
        ] {
            assert_eq!(at(url).unwrap(), StoreLocation::Postgres(url.to_owned()));
        }
        for url in ["sqlite://", "mysql://h/db", "inbox.db"] {
            let e = at(url).unwrap_err().to_string();
            assert!(e.contains("store.url"), "{url}: {e}");
        }
    }

    const APP: &str = r#"
[[apps]]
appid = "wxba5fad812f8e6fb9"
kind = "mini_program"
token = "AAAAA"
encoding_aes_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"
mode = "safe"
format = "json"
[[apps.forward]]
url = "http://127.0.0.1:9000/hooks"
secret = "whsec_c2VjcmV0"
"#;

    #[test]
    fn defaults_then_file_then_environment() {
        let dir = std::env::temp_dir().join(format!("wp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            format!("[server]\nlisten = \"127.0.0.1:9000\"\n{APP}"),
        )
        .unwrap();
        let env = [
            ("WECHAT_PUSH_INBOX_WORKERS".to_owned(), "3".to_owned()),
            (
                "WECHAT_PUSH_WECHAT_API_BASE".to_owned(),
                "http://127.0.0.1:1".to_owned(),
            ),
            ("WECHAT_PUSH_APPS_0_TOKEN".to_owned(), "12345".to_owned()),
            (
                "WECHAT_PUSH_APPS_0_FORWARD_0_SECRET".to_owned(),
                "whsec_b3RoZXI=".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let c = Config::load(Some(&path), env).unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.server.reply_budget, Duration::from_secs(3));
        assert_eq!(c.inbox.workers, 3);
        assert_eq!(c.inbox.retention, Duration::from_secs(7 * 86400));
        assert_eq!(c.wechat.api_base, "http://127.0.0.1:1");
        // A numeric-looking token stays a string.
        assert_eq!(c.apps[0].token.expose(), "12345");
        assert_eq!(c.apps[0].mode, Mode::Safe);
        assert_eq!(c.apps[0].forward[0].secret.expose(), "whsec_b3RoZXI=");
        assert_eq!(c.apps[0].forward[0].url, "http://127.0.0.1:9000/hooks");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Variables by index handed an app's secrets to another when
    /// `[[apps]]` were reordered; by appid they follow the app. Secrets
    /// mounted as files are read from the file a `_FILE` variable names.
    #[test]
    fn variables_by_appid_and_from_files() {
        let dir = std::env::temp_dir().join(format!("wp-config-appid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        let second = APP.replace("wxba5fad812f8e6fb9", "wx0000000000000002");
        std::fs::write(&path, format!("{second}{APP}")).unwrap();
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, "from-a-file\n").unwrap();
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let c = Config::load(
            Some(&path),
            env(&[
                ("WECHAT_PUSH_APP_WXBA5FAD812F8E6FB9_TOKEN", "by-appid"),
                (
                    "WECHAT_PUSH_APP_wx0000000000000002_SECRET_FILE",
                    secret_file.to_str().unwrap(),
                ),
                (
                    "WECHAT_PUSH_APP_WXBA5FAD812F8E6FB9_FORWARD_0_SECRET",
                    "whsec_b3RoZXI=",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.apps[1].appid, "wxba5fad812f8e6fb9");
        assert_eq!(c.apps[1].token.expose(), "by-appid");
        assert_ne!(c.apps[0].token.expose(), "by-appid");
        assert_eq!(c.apps[1].forward[0].secret.expose(), "whsec_b3RoZXI=");
        assert_eq!(
            c.apps[0].secret.as_ref().map(|s| s.expose().to_owned()),
            Some("from-a-file".to_owned())
        );
        assert!(c.apps[1].secret.is_none());
        // An appid no app has, and a file that is not there, are named.
        let e = Config::load(Some(&path), env(&[("WECHAT_PUSH_APP_WXNOPE_TOKEN", "x")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "environment variable WECHAT_PUSH_APP_WXNOPE_TOKEN: no [[apps]] has appid wxnope"
        );
        let e = Config::load(
            Some(&path),
            env(&[("WECHAT_PUSH_APPS_0_TOKEN_FILE", "/nonexistent/token")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("environment variable WECHAT_PUSH_APPS_0_TOKEN_FILE: cannot read /nonexistent/token"),
            "{e}"
        );
        // A path's key is no secret: its _FILE would put the file's text
        // (a private key) where the path belongs, and into errors.
        let e = Config::load(
            Some(&path),
            env(&[(
                "WECHAT_PUSH_SERVER_TLS_KEY_FILE",
                secret_file.to_str().unwrap(),
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("_FILE is for secrets only"), "{e}");
        assert!(!e.contains("from-a-file"), "{e}");
        // By appid wins over by index, whatever the environment's order.
        for order in [[0, 1], [1, 0]] {
            let pairs = [
                ("WECHAT_PUSH_APP_WXBA5FAD812F8E6FB9_TOKEN", "by-appid"),
                ("WECHAT_PUSH_APPS_1_TOKEN", "by-index"),
            ];
            let c = Config::load(Some(&path), env(&[pairs[order[0]], pairs[order[1]]])).unwrap();
            assert_eq!(c.apps[1].token.expose(), "by-appid");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_effective_config_shows_no_secret() {
        let file = APP.replace(
            "format = \"json\"\n",
            "format = \"json\"\nsecret = \"s3cr3t-app-secret\"\n",
        );
        let dir = std::env::temp_dir().join(format!("wp-config-shown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            format!("[store]\nurl = \"postgres://wp:pgpass@db/wp?sslmode=require\"\n{file}"),
        )
        .unwrap();
        let env = vec![("WECHAT_PUSH_INBOX_WORKERS".to_owned(), "5".to_owned())];
        let (config, shown) = Config::load_showing(Some(&path), env).unwrap();
        assert_eq!(config.inbox.workers, 5);
        for secret in ["AAAAA\"", "s3cr3t", "whsec_c2VjcmV0", "pgpass", "sslmode"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        // The effective values, from defaults, file and environment.
        let reparsed: Table = shown.parse().unwrap();
        assert_eq!(reparsed["inbox"]["workers"].as_integer(), Some(5));
        assert_eq!(
            reparsed["store"]["url"].as_str(),
            Some("postgres://wp:***@db/wp")
        );
        assert_eq!(reparsed["server"]["reply_budget"].as_str(), Some("3s"));
        assert_eq!(reparsed["apps"][0]["token"].as_str(), Some("[redacted]"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn toml_syntax_errors_give_the_place_not_the_line() {
        let e = Config::from_toml("[[apps]]\nappid = \"wx1\"\ntoken = \"s3cr3t-t0ken\nkind = 1\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(e.starts_with("config:3:"), "{e}");
    }

    #[test]
    fn passive_replies_need_a_budget_under_wechats_deadline() {
        let oa = "[[apps]]\nappid = \"wx1\"\nkind = \"official_account\"\ntoken = \"tok\"\n[[apps.rules]]\nkeyword = \"hi\"\nreply = { text = \"hello\" }\n";
        let e = Config::from_toml(&format!("[server]\nreply_budget = \"5s\"\n{oa}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("server.reply_budget: must be under 5s"),
            "{e}"
        );
        assert!(Config::from_toml(oa).is_ok());
    }

    #[test]
    fn the_admin_listener_must_not_be_the_push_port() {
        let e = Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("server.admin_listen: must differ"), "{e}");
        let c = Config::from_toml("[server]\nadmin_listen = \"127.0.0.1:9090\"\n").unwrap();
        assert_eq!(
            c.server.admin_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert_eq!(Config::from_toml("").unwrap().server.admin_listen, None);
    }

    #[test]
    fn a_typo_deep_in_an_app_names_its_own_key() {
        let e = Config::from_toml(
            "[[apps]]\nappid = \"wx1\"\nkind = \"official_account\"\ntoken = \"tok\"\n[[apps.rules]]\nkeyword = \"a\"\nreply = { text = \"b\" }\nvia = \"pasive\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("apps[0].rules[0].via: unknown variant `pasive`"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("[server]\nlisne = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("server.lisne: unknown field `lisne`"), "{e}");
        let e = Config::from_toml("[inbox]\nlease = \"5 parsecs\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("inbox.lease: ") && e.contains("parsecs"),
            "{e}"
        );
        let e = Config::from_toml(&APP.replace("AAAAB\"", "AAB\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "apps[0].encoding_aes_key: EncodingAESKey must be 43 characters, got 41"
        );
        let e = Config::from_toml(&APP.replace("token = \"AAAAA\"", "token = \"A\"")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "apps[0].token: must be 3 to 32 characters, got 1"
        );
        let e = Config::from_toml(&format!("{APP}{APP}"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "apps[1].appid: wxba5fad812f8e6fb9 is configured twice");
        let e = Config::from_toml(&APP.replace(
            "encoding_aes_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB\"\n",
            "",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(e, "apps[0].encoding_aes_key: required in safe mode");
        let e = Config::load(
            None,
            [("WECHAT_PUSH_SERVE_LISTEN".to_owned(), "x".to_owned())],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("environment variable WECHAT_PUSH_SERVE_LISTEN: does not name a key"),
            "{e}"
        );
        let e = Config::load(
            None,
            [("WECHAT_PUSH_INBOX_WORKERS".to_owned(), "many".to_owned())],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable WECHAT_PUSH_INBOX_WORKERS: \"many\" is not an integer"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let app = APP.replace(
            "format = \"json\"\n",
            "format = \"json\"\nsecret = \"s3cr3t-app-secret\"\n",
        );
        let c = Config::from_toml(&app).unwrap();
        assert!(!format!("{c:?}").contains("c2VjcmV0"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("AAAAA\""), "{shown}");
        assert!(
            !shown.contains("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"),
            "{shown}"
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    /// `WECHAT_PUSH_SERVER_LISTEN=bad` was reported as a mistake in the
    /// config file, naming the section, not the variable.
    #[test]
    fn a_bad_variable_is_named_as_the_mistake() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let e = Config::load(None, env(&[("WECHAT_PUSH_SERVER_LISTEN", "bad")])).unwrap_err();
        match &e {
            ConfigError::Env { var, reason } => {
                assert_eq!(var, "WECHAT_PUSH_SERVER_LISTEN");
                assert!(reason.contains("server.listen"), "{reason}");
            }
            other => panic!("not the variable's: {other}"),
        }
        let e = Config::load(
            None,
            env(&[
                ("WECHAT_PUSH_SERVER_LISTEN", "127.0.0.1:8080"),
                ("WECHAT_PUSH_INBOX_LEASE", "forever"),
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Env { var, .. } if var == "WECHAT_PUSH_INBOX_LEASE"),
            "{e}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604800)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        // Refused before the parser was humantime's (issue 17).
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h 37min"), Ok(Duration::from_secs(9420)));
    }

    #[test]
    fn key_position_follows_tables_arrays_and_dotted_keys_to_the_key() {
        let text = "[server]\nlisten = \"x\"\n\n[[apps]]\nappid = \"a\"\n\n[[apps]]\nappid = \"b\"\n  forward = [{ url = \"u\" }, { url = \"v\" }]\nstore.url = \"s\"\n";
        assert_eq!(key_position(text, "server.listen"), Some((2, 1)));
        assert_eq!(key_position(text, "server"), Some((1, 2)));
        assert_eq!(key_position(text, "apps[1].appid"), Some((8, 1)));
        assert_eq!(key_position(text, "apps[1].forward[1].url"), Some((9, 31)));
        // Missing below: the nearest enclosing entry the file has.
        assert_eq!(key_position(text, "apps[1].token"), Some((7, 1)));
        assert_eq!(key_position(text, "apps[7].token"), Some((4, 3)));
        // Not in the file at all (a default): no place.
        assert_eq!(key_position(text, "inbox.workers"), None);
        // Not TOML: no place rather than a wrong one.
        assert_eq!(key_position("[server", "server"), None);
    }

    #[test]
    fn a_file_error_names_its_line_and_a_variable_error_does_not() {
        let dir = std::env::temp_dir().join(format!("wp-config-line-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wp.toml");
        std::fs::write(&path, "[inbox]\n\nmax_attempts = 0\n").unwrap();
        let e = Config::load(Some(&path), Vec::new()).unwrap_err();
        assert!(
            matches!(&e, ConfigError::InFile { line: 3, column: 1, error, .. }
                if matches!(**error, ConfigError::Invalid { .. })),
            "{e:?}"
        );
        assert_eq!(e.key(), Some("inbox.max_attempts"));
        std::fs::write(&path, "[inbox]\nworkers = 2\n").unwrap();
        let e = Config::load(
            Some(&path),
            vec![("WECHAT_PUSH_INBOX_MAX_ATTEMPTS".to_owned(), "0".to_owned())],
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Env { .. }), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
