//! Envelopes: the outer body and query of a push, in every mode and format.
//!
//! [`AppCrypto::open`] is the inbound path: **verify** the signature that
//! covers what will be read (`msg_signature` over `Encrypt`, or the URL
//! `signature`), **check the timestamp** against the replay window, only then
//! **decrypt**, then **parse** the inner body into a
//! typed [`Message`]. In compatible mode the plaintext fields beside
//! `Encrypt` are ignored: the encrypted copy is the authenticated one.
//!
//! [`AppCrypto::seal`] is the outbound path for passive replies, and
//! [`AppCrypto::seal_push`] builds a push exactly as WeChat does (for the
//! simulator and for tests).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{self, CryptoError, KeyRing, KeySlot};
use super::signature::{self, SignatureError};
use super::wire::{self, Fields, Limits, WireError};
use super::{Format, Mode, Token};
use crate::protocol::message::{Message, MessageError};

/// The query string WeChat puts on a push (and, in part, on the handshake).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct PushQuery {
    /// URL signature over token, timestamp and nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Seconds since the epoch, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Random text chosen by WeChat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The user's openid, on user-triggered pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// `aes` in compatible and safe mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_type: Option<String>,
    /// Signature over token, timestamp, nonce and `Encrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_signature: Option<String>,
    /// The handshake's challenge, answered verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echostr: Option<String>,
}

impl PushQuery {
    /// Read a raw query string (`a=1&b=2`, percent-encoded as URLs are).
    /// Unknown parameters are ignored; a repeated one keeps its last value.
    ///
    /// # Errors
    /// A message naming the parameter whose value is not valid UTF-8 once decoded.
    pub fn parse(query: &str) -> Result<PushQuery, String> {
        let mut q = PushQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "signature" => &mut q.signature,
                "timestamp" => &mut q.timestamp,
                "nonce" => &mut q.nonce,
                "openid" => &mut q.openid,
                "encrypt_type" => &mut q.encrypt_type,
                "msg_signature" => &mut q.msg_signature,
                "echostr" => &mut q.echostr,
                _ => continue,
            };
            *slot =
                Some(percent_decode(value).ok_or_else(|| format!("{name} is not valid UTF-8"))?);
        }
        Ok(q)
    }
}

/// Decode `%XX` escapes and `+` (a space in forms); `None` if the result is not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    if !value.contains(['%', '+']) {
        return Some(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                Some(hex) => {
                    let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(digit(hex[0]) << 4 | digit(hex[1]));
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Whether `body` is WeChat Cloud Run's probe of the push path, sent when
/// the path is saved in its console: `{"action":"CheckContainerPath"}`, or
/// `<xml><action>CheckContainerPath</action></xml>` for XML. It is
/// unsigned and carries no user data; `success` (or an empty body) with
/// status 200 lets the path be saved.
/// Source: <https://developers.weixin.qq.com/miniprogram/dev/wxcloudservice/wxcloudrun/src/guide/weixin/push.html>
pub fn is_container_path_check(body: &[u8]) -> bool {
    // Only a short body can be the probe: pushes are never parsed twice here.
    if body.len() > 256 || memchr::memmem::find(body, b"CheckContainerPath").is_none() {
        return false;
    }
    let Some(format) = wire::sniff(body) else {
        return false;
    };
    wire::parse(format, body, &Limits::default()).is_ok_and(|fields| {
        fields.len() == 1
            && fields.get("action").and_then(Value::as_str) == Some("CheckContainerPath")
    })
}

/// Why a push (or handshake) was refused. Each variant names the check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A query parameter the check needs is absent.
    #[error("query parameter {0} is missing")]
    MissingParameter(&'static str),
    /// A signature did not match.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A plaintext push reached an app that requires encryption.
    #[error("plaintext push refused: this app requires encryption")]
    PlaintextRefused,
    /// An encrypted push reached an app without an EncodingAESKey.
    #[error("encrypted push, but no EncodingAESKey is configured for this app")]
    NoKey,
    /// The body is neither XML nor JSON.
    #[error("body is neither XML nor JSON")]
    UnknownFormat,
    /// The outer body could not be read.
    #[error("malformed envelope")]
    Envelope(#[source] WireError),
    /// `Encrypt` could not be decrypted.
    #[error("decryption failed")]
    Decrypt(#[source] CryptoError),
    /// The decrypted body could not be read.
    #[error("malformed message")]
    Body(#[source] WireError),
    /// The fields do not make a message.
    #[error("invalid message")]
    Message(#[source] MessageError),
    /// An `Encrypt` arrived without `msg_signature` (Cloud Run's gateway
    /// delivers plaintext only).
    #[error("encrypted push without msg_signature")]
    EncryptedUnsigned,
    /// The timestamp is not a number.
    #[error("timestamp {0:?} is not a number of seconds")]
    BadTimestamp(String),
    /// The timestamp is outside the accepted window: a replay, or a bad clock.
    #[error("timestamp {timestamp} is {skew} s away from now, outside the {window} s window")]
    Stale {
        /// The query's `timestamp`, in seconds since the epoch.
        timestamp: i64,
        /// How far from now, in seconds: positive for a timestamp in the future.
        skew: i64,
        /// The window either side of now, in seconds (`server.timestamp_window`).
        window: u64,
    },
}

impl OpenError {
    /// Whether the push failed authentication (signature, policy), as
    /// opposed to being malformed. Servers answer 401 for these and 400 for
    /// the rest.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            OpenError::MissingParameter(_)
                | OpenError::EncryptedUnsigned
                | OpenError::Signature(_)
                | OpenError::PlaintextRefused
                | OpenError::Stale { .. }
                | OpenError::BadTimestamp(_)
        )
    }

    /// A short, stable name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::MissingParameter(_) | OpenError::EncryptedUnsigned => "missing_parameter",
            OpenError::Signature(SignatureError::SignatureMismatch) => "signature_mismatch",
            OpenError::Signature(SignatureError::MsgSignatureMismatch) => "msg_signature_mismatch",
            OpenError::PlaintextRefused => "plaintext_refused",
            OpenError::NoKey => "no_key",
            OpenError::UnknownFormat | OpenError::Envelope(_) => "malformed_envelope",
            OpenError::Decrypt(_) => "decrypt_failed",
            OpenError::Body(_) | OpenError::Message(_) => "malformed_message",
            OpenError::BadTimestamp(_) | OpenError::Stale { .. } => "stale_timestamp",
        }
    }
}

/// Why a reply or push could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Encryption needs an EncodingAESKey and the app has none.
    #[error("no EncodingAESKey is configured for this app")]
    NoKey,
    /// Encryption failed: the [`CryptoError`], in practice a message over 4 GiB.
    #[error("encryption failed")]
    Crypto(#[from] CryptoError),
}

/// A push that passed every check.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The push's typed message, read from the decrypted (or plaintext) body.
    pub message: Message,
    /// The inner (decrypted) body, byte for byte.
    pub plaintext: Vec<u8>,
    /// The format the push came in; replies use the same.
    pub format: Format,
    /// The key that decrypted it, or `None` for a plaintext push.
    pub key: Option<KeySlot>,
}

/// A push as WeChat sends it: its query and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPush {
    /// The query string's parameters.
    pub query: PushQuery,
    /// The body to POST: the message itself in plaintext mode, else an envelope
    /// with `Encrypt` (beside the plaintext fields in compatible mode).
    pub body: String,
}

/// Everything needed to open and seal one app's pushes.
#[derive(Debug, Clone)]
pub struct AppCrypto {
    appid: String,
    token: Token,
    keys: Option<KeyRing>,
    require_encryption: bool,
    limits: Limits,
}

impl AppCrypto {
    /// An app with its appid, token and (for encrypted modes) keys.
    ///
    /// Plaintext pushes are accepted until [`AppCrypto::require_encryption`].
    pub fn new(appid: impl Into<String>, token: Token, keys: Option<KeyRing>) -> Self {
        AppCrypto {
            appid: appid.into(),
            token,
            keys,
            require_encryption: false,
            limits: Limits::default(),
        }
    }

    /// Refuse plaintext pushes (for apps in safe mode: a plaintext push can
    /// only come from someone who knows the token, not the key).
    pub fn require_encryption(mut self, required: bool) -> Self {
        self.require_encryption = required;
        self
    }

    /// Replace the default body limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The appid, which every encrypted payload must end with.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// The Token from WeChat's console, which signatures are made with.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The limits applied to bodies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Verify the URL handshake (GET) and return the `echostr` to answer.
    ///
    /// # Errors
    /// [`OpenError::MissingParameter`] or a signature mismatch.
    pub fn verify_handshake<'q>(&self, query: &'q PushQuery) -> Result<&'q str, OpenError> {
        let echostr = param(&query.echostr, "echostr")?;
        self.verify_url_signature(query)?;
        Ok(echostr)
    }

    fn verify_url_signature(&self, query: &PushQuery) -> Result<(), OpenError> {
        let given = param(&query.signature, "signature")?;
        let timestamp = param(&query.timestamp, "timestamp")?;
        let nonce = param(&query.nonce, "nonce")?;
        signature::verify_url(&self.token, timestamp, nonce, given)?;
        Ok(())
    }

    /// Verify, check for replay, decrypt and parse one push, in that order:
    /// a stale push costs no decryption.
    ///
    /// `now` is the current Unix time in seconds, and `window` the accepted
    /// distance between it and the push's `timestamp` (either side;
    /// `server.timestamp_window`, 300 s by default). WeChat's documentation
    /// gives no window: the check only bounds replays of captured pushes.
    ///
    /// The format is read from the body itself (`<` or `{`), so a change of
    /// format in WeChat's console takes effect without a restart.
    ///
    /// # Errors
    /// An [`OpenError`] naming the first check that failed;
    /// [`OpenError::Stale`] or [`OpenError::BadTimestamp`] for the replay check.
    ///
    /// # Example
    /// ```
    /// use wechat_push::protocol::envelope::{AppCrypto, PushQuery};
    /// use wechat_push::protocol::Token;
    /// use std::time::Duration;
    ///
    /// let app = AppCrypto::new("wxba5fad812f8e6fb9", Token::new("AAAAA"), None);
    /// let query = PushQuery {
    ///     signature: Some("899cf89e464efb63f54ddac96b0a0a235f53aa78".into()),
    ///     timestamp: Some("1714037059".into()),
    ///     nonce: Some("486452656".into()),
    ///     ..PushQuery::default()
    /// };
    /// let body = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
    ///   "CreateTime":1714037059,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;
    /// let window = Duration::from_secs(300);
    /// let opened = app.open(&query, body.as_bytes(), 1714037060, window).unwrap();
    /// assert_eq!(opened.message.kind(), "event:debug_demo");
    /// // A day later, the same push is a replay.
    /// assert!(app.open(&query, body.as_bytes(), 1714037060 + 86400, window).is_err());
    /// ```
    pub fn open(
        &self,
        query: &PushQuery,
        body: &[u8],
        now: i64,
        window: Duration,
    ) -> Result<Opened, OpenError> {
        let format = wire::sniff(body).ok_or(OpenError::UnknownFormat)?;
        // An encrypted push is read for `Encrypt` alone: its other fields
        // (compatible mode) are not authenticated and are ignored.
        let encrypt = wire::encrypt_of(format, body, &self.limits).map_err(OpenError::Envelope)?;
        match encrypt {
            Some(encrypt) => self.open_encrypted(query, &encrypt, now, window),
            None if self.require_encryption => Err(OpenError::PlaintextRefused),
            None => {
                self.verify_url_signature(query)?;
                check_timestamp(param(&query.timestamp, "timestamp")?, now, window.as_secs())?;
                let fields =
                    wire::parse(format, body, &self.limits).map_err(OpenError::Envelope)?;
                let message = Message::from_fields(fields).map_err(OpenError::Message)?;
                Ok(Opened {
                    message,
                    plaintext: body.to_vec(),
                    format,
                    key: None,
                })
            }
        }
    }

    /// Parse a push that WeChat Cloud Run's gateway delivered: plaintext,
    /// with no signature to check (the gateway is what vouches for it; the
    /// caller decides whether to trust it, see `trust = "cloud_run"`).
    ///
    /// # Errors
    /// [`OpenError::UnknownFormat`], [`OpenError::Envelope`] or
    /// [`OpenError::Message`] for a body that is not a push;
    /// [`OpenError::EncryptedUnsigned`] for an `Encrypt` without its signature.
    pub fn open_unsigned(&self, body: &[u8]) -> Result<Opened, OpenError> {
        let format = wire::sniff(body).ok_or(OpenError::UnknownFormat)?;
        let fields = wire::parse(format, body, &self.limits).map_err(OpenError::Envelope)?;
        if fields.contains_key("Encrypt") {
            return Err(OpenError::EncryptedUnsigned);
        }
        let message = Message::from_fields(fields).map_err(OpenError::Message)?;
        Ok(Opened {
            message,
            plaintext: body.to_vec(),
            format,
            key: None,
        })
    }

    fn open_encrypted(
        &self,
        query: &PushQuery,
        encrypt: &str,
        now: i64,
        window: Duration,
    ) -> Result<Opened, OpenError> {
        let given = param(&query.msg_signature, "msg_signature")?;
        let timestamp = param(&query.timestamp, "timestamp")?;
        let nonce = param(&query.nonce, "nonce")?;
        signature::verify_msg(&self.token, timestamp, nonce, encrypt, given)?;
        check_timestamp(timestamp, now, window.as_secs())?;
        let keys = self.keys.as_ref().ok_or(OpenError::NoKey)?;
        let (plaintext, slot) = keys
            .decrypt(&self.appid, encrypt)
            .map_err(OpenError::Decrypt)?;
        let format = wire::sniff(&plaintext).ok_or(OpenError::Body(WireError::XmlShape(
            "decrypted body is neither XML nor JSON",
        )))?;
        let fields = wire::parse(format, &plaintext, &self.limits).map_err(OpenError::Body)?;
        let message = Message::from_fields(fields).map_err(OpenError::Message)?;
        Ok(Opened {
            message,
            plaintext,
            format,
            key: Some(slot),
        })
    }

    /// Encrypt a passive reply: `Encrypt`, `MsgSignature`, `TimeStamp` (in
    /// seconds) and `Nonce` (the request's nonce), in `format`.
    ///
    /// `slot` is the key that opened the push ([`Opened::key`]): during a
    /// key rotation WeChat expects the reply under the same key.
    ///
    /// # Errors
    /// [`SealError::NoKey`] without an EncodingAESKey.
    pub fn seal(
        &self,
        reply: &[u8],
        format: Format,
        timestamp: i64,
        nonce: &str,
        random: &[u8; 16],
        slot: KeySlot,
    ) -> Result<String, SealError> {
        let keys = self.keys.as_ref().ok_or(SealError::NoKey)?;
        let encrypt = crypto::encrypt(keys.key(slot), &self.appid, reply, random)?;
        let ts = timestamp.to_string();
        let msg_signature = signature::msg_signature(&self.token, &ts, nonce, &encrypt);
        let mut fields = Fields::new();
        fields.insert("Encrypt".into(), Value::String(encrypt));
        fields.insert("MsgSignature".into(), Value::String(msg_signature));
        fields.insert("TimeStamp".into(), Value::from(timestamp));
        fields.insert("Nonce".into(), Value::String(nonce.to_owned()));
        Ok(render(format, &fields))
    }

    /// Open an encrypted passive reply, as WeChat does: verify
    /// `MsgSignature` over its own `TimeStamp` and `Nonce`, then decrypt.
    ///
    /// # Errors
    /// An [`OpenError`] naming the check that failed.
    pub fn open_reply(&self, body: &[u8]) -> Result<(Fields, Vec<u8>), OpenError> {
        let format = wire::sniff(body).ok_or(OpenError::UnknownFormat)?;
        let fields = wire::parse(format, body, &self.limits).map_err(OpenError::Envelope)?;
        let text = |name: &'static str| match fields.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(OpenError::MissingParameter(name)),
        };
        let encrypt = text("Encrypt")?;
        let given = text("MsgSignature")?;
        let timestamp = text("TimeStamp")?;
        let nonce = text("Nonce")?;
        signature::verify_msg(&self.token, &timestamp, &nonce, &encrypt, &given)?;
        let keys = self.keys.as_ref().ok_or(OpenError::NoKey)?;
        let (plaintext, _) = keys
            .decrypt(&self.appid, &encrypt)
            .map_err(OpenError::Decrypt)?;
        Ok((fields, plaintext))
    }

    /// Build a push as WeChat sends it, for the simulator and for tests.
    ///
    /// `inner` is the message; `openid` goes on the query as WeChat puts it
    /// on user-triggered pushes.
    ///
    /// # Errors
    /// [`SealError::NoKey`] for an encrypted mode without a key.
    #[allow(clippy::too_many_arguments)]
    pub fn seal_push(
        &self,
        inner: &Fields,
        mode: Mode,
        format: Format,
        timestamp: &str,
        nonce: &str,
        random: &[u8; 16],
        openid: Option<&str>,
    ) -> Result<SealedPush, SealError> {
        let plaintext = render(format, inner);
        let mut query = PushQuery {
            signature: Some(signature::url_signature(&self.token, timestamp, nonce)),
            timestamp: Some(timestamp.to_owned()),
            nonce: Some(nonce.to_owned()),
            openid: openid.map(str::to_owned),
            ..PushQuery::default()
        };
        if !mode.is_encrypted() {
            return Ok(SealedPush {
                query,
                body: plaintext,
            });
        }
        let keys = self.keys.as_ref().ok_or(SealError::NoKey)?;
        let encrypt = crypto::encrypt(
            keys.key(KeySlot::Current),
            &self.appid,
            plaintext.as_bytes(),
            random,
        )?;
        query.encrypt_type = Some("aes".into());
        query.msg_signature = Some(signature::msg_signature(
            &self.token,
            timestamp,
            nonce,
            &encrypt,
        ));
        let mut outer = match mode {
            Mode::Compatible => inner.clone(),
            _ => {
                let mut only_to = Fields::new();
                if let Some(to) = inner.get("ToUserName") {
                    only_to.insert("ToUserName".into(), to.clone());
                }
                only_to
            }
        };
        outer.insert("Encrypt".into(), Value::String(encrypt));
        Ok(SealedPush {
            query,
            body: render(format, &outer),
        })
    }
}

/// Fields as a body in `format`.
pub fn render(format: Format, fields: &Fields) -> String {
    match format {
        Format::Xml => wire::write_xml(fields),
        // A map of JSON values always serialises.
        Format::Json => serde_json::to_string(fields).unwrap_or_default(),
    }
}

/// Check a push's timestamp against `now`, both in seconds, allowing
/// `window` seconds either side.
///
/// # Errors
/// [`OpenError::BadTimestamp`] or [`OpenError::Stale`].
pub fn check_timestamp(timestamp: &str, now: i64, window: u64) -> Result<i64, OpenError> {
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| OpenError::BadTimestamp(timestamp.to_owned()))?;
    let skew = ts.saturating_sub(now);
    if skew.unsigned_abs() > window {
        return Err(OpenError::Stale {
            timestamp: ts,
            skew,
            window,
        });
    }
    Ok(ts)
}

fn param<'q>(value: &'q Option<String>, name: &'static str) -> Result<&'q str, OpenError> {
    value.as_deref().ok_or(OpenError::MissingParameter(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::AesKey;

    const APPID: &str = "wxba5fad812f8e6fb9";
    const WINDOW: Duration = Duration::from_secs(300);

    /// The time a push says it was sent, so that it is opened as of then.
    fn sent_at(query: &PushQuery) -> i64 {
        query
            .timestamp
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }

    fn app() -> AppCrypto {
        let key = AesKey::from_encoding_aes_key(&format!("{}B", "x".repeat(42))).unwrap();
        AppCrypto::new(APPID, Token::new("tok3n"), Some(KeyRing::new(key, None)))
    }

    fn inner() -> Fields {
        serde_json::from_str(
            r#"{"ToUserName":"gh_1","FromUserName":"oU1","CreateTime":1700000000,"MsgType":"text","Content":"你好 👋","MsgId":6054768590064713728}"#,
        )
        .unwrap()
    }

    #[test]
    fn every_mode_and_format_round_trips() {
        let app = app();
        for mode in [Mode::Plaintext, Mode::Compatible, Mode::Safe] {
            for format in [Format::Xml, Format::Json] {
                let push = app
                    .seal_push(
                        &inner(),
                        mode,
                        format,
                        "1700000000",
                        "n1",
                        &[9; 16],
                        Some("oU1"),
                    )
                    .unwrap();
                let opened = app
                    .open(
                        &push.query,
                        push.body.as_bytes(),
                        sent_at(&push.query),
                        WINDOW,
                    )
                    .unwrap();
                assert_eq!(opened.format, format);
                assert_eq!(opened.key.is_some(), mode.is_encrypted(), "{mode} {format}");
                assert_eq!(opened.message.kind(), "text");
                assert!(opened
                    .message
                    .dedup_key()
                    .as_str()
                    .starts_with("m:oU1:6054768590064713728:"));
            }
        }
    }

    #[test]
    fn compatible_mode_trusts_the_encrypted_copy() {
        let app = app();
        let push = app
            .seal_push(
                &inner(),
                Mode::Compatible,
                Format::Xml,
                "1",
                "n",
                &[0; 16],
                None,
            )
            .unwrap();
        let forged = push.body.replace("你好 👋", "forged");
        assert_ne!(forged, push.body);
        let opened = app
            .open(&push.query, forged.as_bytes(), sent_at(&push.query), WINDOW)
            .unwrap();
        assert_eq!(opened.message.fields()["Content"], "你好 👋");
    }

    #[test]
    fn verification_comes_before_decryption() {
        let app = app();
        let push = app
            .seal_push(&inner(), Mode::Safe, Format::Json, "1", "n", &[0; 16], None)
            .unwrap();
        // Garbage Encrypt with a wrong signature: the signature is what fails.
        let body = r#"{"ToUserName":"gh_1","Encrypt":"garbage"}"#;
        let err = app
            .open(&push.query, body.as_bytes(), sent_at(&push.query), WINDOW)
            .unwrap_err();
        assert_eq!(err.to_string(), "msg_signature mismatch");
        let mut q = push.query.clone();
        q.msg_signature = None;
        assert!(matches!(
            app.open(&q, push.body.as_bytes(), sent_at(&q), WINDOW),
            Err(OpenError::MissingParameter("msg_signature"))
        ));
    }

    #[test]
    fn plaintext_is_refused_when_encryption_is_required() {
        let app = app().require_encryption(true);
        let push = app
            .seal_push(
                &inner(),
                Mode::Plaintext,
                Format::Xml,
                "1",
                "n",
                &[0; 16],
                None,
            )
            .unwrap();
        assert!(matches!(
            app.open(
                &push.query,
                push.body.as_bytes(),
                sent_at(&push.query),
                WINDOW
            ),
            Err(OpenError::PlaintextRefused)
        ));
    }

    #[test]
    fn plaintext_signature_is_checked() {
        let app = app();
        let mut push = app
            .seal_push(
                &inner(),
                Mode::Plaintext,
                Format::Json,
                "1",
                "n",
                &[0; 16],
                None,
            )
            .unwrap();
        push.query.nonce = Some("other".into());
        let err = app
            .open(
                &push.query,
                push.body.as_bytes(),
                sent_at(&push.query),
                WINDOW,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "signature mismatch");
        assert!(err.is_unauthorized());
    }

    #[test]
    fn sealed_reply_opens_with_seconds_and_the_request_nonce() {
        let app = app();
        let body = app
            .seal(
                b"<xml><MsgType><![CDATA[transfer_customer_service]]></MsgType></xml>",
                Format::Xml,
                1_700_000_000,
                "nonce-1",
                &[3; 16],
                KeySlot::Current,
            )
            .unwrap();
        assert!(body.contains("<TimeStamp>1700000000</TimeStamp>"), "{body}");
        assert!(
            body.contains("<Nonce><![CDATA[nonce-1]]></Nonce>"),
            "{body}"
        );
        let (_, plain) = app.open_reply(body.as_bytes()).unwrap();
        assert!(plain.starts_with(b"<xml><MsgType>"));
        let json = app
            .seal(
                b"{}",
                Format::Json,
                1_700_000_000,
                "n",
                &[3; 16],
                KeySlot::Current,
            )
            .unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["TimeStamp"], Value::from(1_700_000_000i64));
        assert_eq!(v["Nonce"], "n");
    }

    #[test]
    fn a_stale_push_is_refused_before_decrypting() {
        let app = app();
        // Signed right, but its Encrypt is no ciphertext: decrypting it
        // would fail, so a Stale error shows that the replay check ran first.
        let encrypt = "bm90IGEgY2lwaGVydGV4dA==";
        let query = PushQuery {
            timestamp: Some("1700000000".into()),
            nonce: Some("n".into()),
            msg_signature: Some(signature::msg_signature(
                &Token::new("tok3n"),
                "1700000000",
                "n",
                encrypt,
            )),
            ..PushQuery::default()
        };
        let body = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
        let late = app.open(&query, body.as_bytes(), 1_700_000_000 + 301, WINDOW);
        assert!(
            matches!(late, Err(OpenError::Stale { skew: -301, .. })),
            "{late:?}"
        );
        let early = app.open(&query, body.as_bytes(), 1_700_000_000 - 301, WINDOW);
        assert!(
            matches!(early, Err(OpenError::Stale { skew: 301, .. })),
            "{early:?}"
        );
        let on_time = app.open(&query, body.as_bytes(), 1_700_000_000 + 300, WINDOW);
        assert!(matches!(on_time, Err(OpenError::Decrypt(_))), "{on_time:?}");
    }

    #[test]
    fn query_strings_parse_like_urls() {
        let q = PushQuery::parse("signature=ab&timestamp=1&nonce=n%20x&openid=o-1_2&encrypt_type=aes&msg_signature=cd&x=y&echostr=a+b%2B%zz%")
            .unwrap();
        assert_eq!(q.signature.as_deref(), Some("ab"));
        assert_eq!(q.nonce.as_deref(), Some("n x"));
        assert_eq!(q.openid.as_deref(), Some("o-1_2"));
        assert_eq!(q.echostr.as_deref(), Some("a b+%zz%"));
        assert_eq!(PushQuery::parse("").unwrap(), PushQuery::default());
        assert!(PushQuery::parse("nonce=%ff").unwrap_err().contains("nonce"));
        assert_eq!(
            PushQuery::parse("nonce=%e4%bd%a0")
                .unwrap()
                .nonce
                .as_deref(),
            Some("你")
        );
    }

    #[test]
    fn timestamp_window() {
        assert_eq!(check_timestamp("1000", 1100, 300).unwrap(), 1000);
        assert!(matches!(
            check_timestamp("1000", 1301, 300),
            Err(OpenError::Stale { skew: -301, .. })
        ));
        assert!(matches!(
            check_timestamp("1700000000000", 1_700_000_000, 300),
            Err(OpenError::Stale { .. })
        ));
        assert!(matches!(
            check_timestamp("x", 0, 300),
            Err(OpenError::BadTimestamp(_))
        ));
    }
}
