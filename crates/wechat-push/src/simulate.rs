//! WeChat's push server, simulated: build pushes exactly as WeChat does, send
//! them to any endpoint, and judge the answers as WeChat would.
//!
//! The judging is sans-IO ([`judge_echostr`], [`judge_answer`]) so that every
//! diagnosis is unit-tested; [`Simulator`] adds the HTTP side: WeChat's
//! 5-second deadline, its three retries of the same push, and load runs.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::AppKind;
use crate::protocol::answer::{self, DocumentedAnswers};
use crate::protocol::envelope::{AppCrypto, PushQuery, SealError, SealedPush};
use crate::protocol::wire::{self, Fields, Limits};
use crate::protocol::{Format, Mode};

/// WeChat's deadline for an answer.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// WeChat's retries after the first delivery: one push arrives up to four times.
pub const RETRIES: u32 = 3;

/// What an endpoint that answered rightly said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledgement {
    /// `success`.
    Success,
    /// An empty body.
    Empty,
    /// The answer the push's documentation specifies (virtual payment's
    /// `{"ErrCode":0,…}`); `plaintext` is decrypted when it came encrypted.
    Documented {
        /// Whether it came encrypted.
        encrypted: bool,
        /// The answer, decrypted.
        plaintext: Vec<u8>,
    },
    /// A passive reply; `plaintext` is decrypted when it came encrypted.
    Reply {
        /// The reply's MsgType.
        msg_type: String,
        /// Whether it came encrypted.
        encrypted: bool,
        /// The reply body, decrypted.
        plaintext: Vec<u8>,
    },
}

/// Judge a handshake answer: WeChat wants `echostr` back byte for byte.
///
/// # Errors
/// A sentence saying what came back instead, naming the usual mistakes.
pub fn judge_echostr(echostr: &str, status: u16, body: &[u8]) -> Result<(), String> {
    if status != 200 {
        return Err(format!(
            "answered HTTP {status}{}; WeChat needs 200 with echostr as the body",
            snippet(body)
        ));
    }
    if body == echostr.as_bytes() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    Err(if body.is_empty() {
        "answered an empty body; WeChat needs echostr back verbatim".to_owned()
    } else if trimmed == echostr {
        format!(
            "answered echostr with surrounding white space ({:?}): a trailing newline? WeChat compares exact bytes",
            text
        )
    } else if trimmed == format!("\"{echostr}\"") {
        "answered echostr in quotes (JSON-encoded?): WeChat compares exact bytes; send it as text/plain".to_owned()
    } else if looks_like_html(trimmed) {
        format!("answered an HTML page instead of echostr{}", snippet(body))
    } else if trimmed.contains(echostr) {
        format!(
            "answered echostr wrapped in other text{}; WeChat needs echostr alone",
            snippet(body)
        )
    } else {
        format!("answered something else than echostr{}", snippet(body))
    })
}

/// What WeChat knows of the push it sent, to judge the answer by.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent<'a> {
    /// The push's fields: a passive reply swaps its `ToUserName` and
    /// `FromUserName`. `None`: not checked.
    pub push: Option<&'a Fields>,
    /// The answer the push's documentation specifies, if any
    /// ([`crate::protocol::answer`]): then `success` is wrong, and WeChat
    /// delivers the push again.
    pub documented: Option<&'a Fields>,
}

/// The passive reply types an Official Account may answer with.
/// Source: <https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Passive_user_reply_message.html>
pub const OFFICIAL_ACCOUNT_REPLIES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "music",
    "news",
    "transfer_customer_service",
];

/// Judge the answer to a push as WeChat would.
///
/// `app` must hold the app's token and (for encrypted modes) key.
///
/// # Errors
/// A sentence saying what is wrong, in the terms of WeChat's rules.
pub fn judge_answer(
    app: &AppCrypto,
    kind: AppKind,
    mode: Mode,
    sent: Sent<'_>,
    status: u16,
    body: &[u8],
) -> Result<Acknowledgement, String> {
    let expected = sent.documented;
    if status != 200 {
        return Err(format!("answered HTTP {status}{}", snippet(body)));
    }
    if let (Some(expected), true) = (expected, body.is_empty() || body == b"success") {
        return Err(format!(
            "answered {} where the push's documentation specifies the answer {}; WeChat delivers it again",
            if body.is_empty() { "an empty body" } else { "success" },
            Value::Object(expected.clone())
        ));
    }
    if body.is_empty() {
        return Ok(Acknowledgement::Empty);
    }
    if body == b"success" {
        return Ok(Acknowledgement::Success);
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed == "success" {
        return Err(format!(
            "answered {text:?}: white space around success (a trailing newline?); WeChat needs exactly `success` or an empty body"
        ));
    }
    if trimmed == "\"success\"" {
        return Err(
            "answered \"success\" in quotes (JSON-encoded?); WeChat needs the bare word success"
                .into(),
        );
    }
    if looks_like_html(trimmed) {
        return Err(format!("answered an HTML page{}", snippet(body)));
    }
    let Some(format) = wire::sniff(body) else {
        return Err(format!(
            "answered neither success, empty, XML nor JSON{}",
            snippet(body)
        ));
    };
    let fields = wire::parse(format, body, &Limits::default())
        .map_err(|e| format!("answered malformed {format}: {e}"))?;
    let (plaintext, encrypted) = if fields.contains_key("Encrypt") {
        check_reply_timestamp(&fields)?;
        let (_, plain) = app.open_reply(body).map_err(|e| {
            format!(
                "encrypted reply does not verify: {}",
                crate::display_chain(&e)
            )
        })?;
        (plain, true)
    } else {
        if mode == Mode::Safe {
            return Err(
                "unencrypted reply in safe mode: WeChat drops it; a reply must be sealed as Encrypt, MsgSignature, TimeStamp and Nonce"
                    .into(),
            );
        }
        (body.to_vec(), false)
    };
    let inner_format = wire::sniff(&plaintext).unwrap_or(format);
    let inner = wire::parse(inner_format, &plaintext, &Limits::default())
        .map_err(|e| format!("reply body is malformed {inner_format}: {e}"))?;
    if let Some(expected) = expected {
        if !answer::matches(&inner, expected) {
            return Err(format!(
                "answered {}{} where the push's documentation specifies {}",
                String::from_utf8_lossy(&plaintext),
                if encrypted { " (decrypted)" } else { "" },
                Value::Object(expected.clone())
            ));
        }
        return Ok(Acknowledgement::Documented {
            encrypted,
            plaintext,
        });
    }
    let msg_type = inner
        .get("MsgType")
        .and_then(Value::as_str)
        .ok_or("reply has no MsgType")?
        .to_owned();
    if kind == AppKind::MiniProgram && msg_type != "transfer_customer_service" {
        return Err(format!(
            "passive reply of type {msg_type} to a Mini Program: the only passive reply a Mini Program accepts is transfer_customer_service; answer through the customer-service API instead"
        ));
    }
    if !OFFICIAL_ACCOUNT_REPLIES.contains(&msg_type.as_str()) {
        return Err(format!(
            "passive reply of type {msg_type}: an Official Account accepts {}",
            OFFICIAL_ACCOUNT_REPLIES.join(", ")
        ));
    }
    check_reply_fields(&inner, &msg_type, sent.push)?;
    Ok(Acknowledgement::Reply {
        msg_type,
        encrypted,
        plaintext,
    })
}

/// The checks WeChat makes of a passive reply's own fields: To and From
/// swapped relative to the push, `CreateTime` in seconds, and what its type
/// needs.
fn check_reply_fields(reply: &Fields, msg_type: &str, push: Option<&Fields>) -> Result<(), String> {
    let text = |name: &str| match reply.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(push) = push {
        let of_push = |name: &str| push.get(name).and_then(Value::as_str).unwrap_or_default();
        for (field, want, what) in [
            (
                "ToUserName",
                of_push("FromUserName"),
                "the user's openid (the push's FromUserName)",
            ),
            (
                "FromUserName",
                of_push("ToUserName"),
                "the app's original id (the push's ToUserName)",
            ),
        ] {
            let got = text(field).unwrap_or_default();
            if got != want {
                return Err(format!(
                    "reply's {field} is {got:?}; it must be {what}, {want:?}: To and From are swapped in a reply"
                ));
            }
        }
    }
    let created: i64 = text("CreateTime")
        .and_then(|t| t.parse().ok())
        .ok_or("reply lacks a numeric CreateTime")?;
    if created > 100_000_000_000 {
        return Err(format!(
            "reply CreateTime {created} is in milliseconds; WeChat needs seconds"
        ));
    }
    let nested = |outer: &str, inner: &str| {
        reply
            .get(outer)
            .and_then(|o| o.get(inner))
            .is_some_and(|v| !v.is_null())
    };
    let missing = match msg_type {
        "text" => text("Content").is_none().then_some("Content"),
        "image" => (!nested("Image", "MediaId")).then_some("Image.MediaId"),
        "voice" => (!nested("Voice", "MediaId")).then_some("Voice.MediaId"),
        "video" => (!nested("Video", "MediaId")).then_some("Video.MediaId"),
        "music" => (!nested("Music", "ThumbMediaId")).then_some("Music.ThumbMediaId"),
        "news" => {
            let items = match reply.get("Articles").and_then(|a| a.get("item")) {
                Some(Value::Array(items)) => items.len(),
                Some(Value::Object(_)) => 1,
                _ => 0,
            };
            let count: usize = text("ArticleCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            // One article answering a user's message (since 2018-10-12), 8 an event.
            let max = match push.and_then(|p| p.get("MsgType")).and_then(Value::as_str) {
                Some("event") | None => crate::reply::MAX_NEWS_ARTICLES,
                Some(_) => 1,
            };
            if items == 0 || count != items || items > max {
                return Err(format!(
                    "news reply with ArticleCount {count} and {items} article(s): WeChat needs 1 to {max} articles here, counted right"
                ));
            }
            None
        }
        _ => None,
    };
    match missing {
        Some(field) => Err(format!("{msg_type} reply lacks {field}")),
        None => Ok(()),
    }
}

fn check_reply_timestamp(fields: &Fields) -> Result<(), String> {
    let ts = match fields.get("TimeStamp") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or("encrypted reply lacks a numeric TimeStamp")?;
    if ts > 100_000_000_000 {
        return Err(format!(
            "reply TimeStamp {ts} is in milliseconds; WeChat needs seconds and does not deliver this reply"
        ));
    }
    Ok(())
}

fn looks_like_html(text: &str) -> bool {
    let lower = text
        .get(..text.len().min(64))
        .unwrap_or("")
        .to_ascii_lowercase();
    lower.starts_with("<!doctype html") || lower.starts_with("<html") || lower.starts_with("<head")
}

fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    let more = if body.len() > 80 { "…" } else { "" };
    format!(": {text:?}{more}")
}

/// The message to push.
#[derive(Debug, Clone)]
pub enum Content {
    /// A text message.
    Text(String),
    /// An image message with this media id.
    Image(String),
    /// An event with extra fields.
    Event {
        /// The event's name.
        name: String,
        /// Extra fields, `K=V` (values that are integers become numbers).
        fields: Vec<(String, String)>,
    },
}

/// Who a simulated push is from and to.
#[derive(Debug, Clone)]
pub struct Parties {
    /// `ToUserName`: the app's original id.
    pub to: String,
    /// `FromUserName`: the user's openid.
    pub from: String,
}

impl Default for Parties {
    fn default() -> Self {
        Parties {
            to: "gh_0123456789ab".into(),
            from: "o_simulated_user_000000000000".into(),
        }
    }
}

/// The fields of a push of `content`, sent at `now` (seconds), with `msg_id`
/// for messages.
pub fn message_fields(content: &Content, parties: &Parties, now: i64, msg_id: u64) -> Fields {
    let mut f = Fields::new();
    f.insert("ToUserName".into(), parties.to.clone().into());
    f.insert("FromUserName".into(), parties.from.clone().into());
    f.insert("CreateTime".into(), Value::from(now));
    match content {
        Content::Text(text) => {
            f.insert("MsgType".into(), "text".into());
            f.insert("Content".into(), text.clone().into());
            f.insert("MsgId".into(), Value::from(msg_id));
        }
        Content::Image(media_id) => {
            f.insert("MsgType".into(), "image".into());
            f.insert(
                "PicUrl".into(),
                format!("http://mmbiz.qpic.cn/simulated/{media_id}").into(),
            );
            f.insert("MediaId".into(), media_id.clone().into());
            f.insert("MsgId".into(), Value::from(msg_id));
        }
        Content::Event { name, fields } => {
            f.insert("MsgType".into(), "event".into());
            f.insert("Event".into(), name.clone().into());
            for (k, v) in fields {
                let value = v
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(v.clone()));
                f.insert(k.clone(), value);
            }
        }
    }
    f
}

/// One delivery of a push and what came of it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1 for the first delivery, up to 4.
    pub number: u32,
    /// Time to the answer (or to giving up).
    pub elapsed: Duration,
    /// The answer as judged, or why there was none.
    pub outcome: Result<Acknowledgement, String>,
    /// Whether WeChat would deliver the push again after this attempt.
    pub retried: bool,
}

/// A certificate to trust ([`Simulator::trusting`]) that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("no usable PEM certificate")]
pub struct CertificateError(#[source] Option<reqwest::Error>);

impl From<reqwest::Error> for CertificateError {
    fn from(e: reqwest::Error) -> Self {
        CertificateError(Some(e))
    }
}

/// Sends pushes and handshakes to one endpoint as WeChat does.
#[derive(Debug, Clone)]
pub struct Simulator {
    client: reqwest::Client,
    /// The endpoint's URL (query parameters are added to it).
    pub url: String,
    /// Token, key and appid of the app.
    pub app: AppCrypto,
    /// Mini Program or Official Account.
    pub kind: AppKind,
    /// The encryption mode.
    pub mode: Mode,
    /// The data format.
    pub format: Format,
    /// The answer deadline ([`DEADLINE`], shorter in tests).
    pub deadline: Duration,
    /// The answers WeChat expects to pushes whose documentation specifies
    /// one (the built-in table, plus an app's `[apps.answers]`).
    pub answers: DocumentedAnswers,
    /// Deliver as WeChat Cloud Run's gateway does: plaintext, unsigned, no
    /// query, with `x-wx-source`, `x-wx-appid` and `x-wx-openid` headers.
    pub cloud_run: bool,
    /// `url` as given to [`Simulator::new`], parsed once: parsing it per
    /// push was a tenth of what a load run cost.
    parsed: Option<(String, reqwest::Url)>,
}

impl Simulator {
    /// A simulator for `url` with WeChat's deadline.
    pub fn new(
        url: impl Into<String>,
        app: AppCrypto,
        kind: AppKind,
        mode: Mode,
        format: Format,
    ) -> Self {
        let url: String = url.into();
        Simulator {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .unwrap_or_default(),
            parsed: reqwest::Url::parse(&url).ok().map(|u| (url.clone(), u)),
            url,
            app,
            kind,
            mode,
            format,
            deadline: DEADLINE,
            answers: DocumentedAnswers::new([]),
            cloud_run: false,
        }
    }

    /// Trust `pem` (one or more PEM certificates: a private CA's, or a
    /// self-signed server's) for `https://` URLs, beside the Web PKI's roots.
    ///
    /// # Errors
    /// `pem` holds no certificate that can be read.
    pub fn trusting(mut self, pem: &[u8]) -> Result<Self, CertificateError> {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)?;
        if certificates.is_empty() {
            return Err(CertificateError(None));
        }
        let mut builder = reqwest::Client::builder().pool_max_idle_per_host(1024);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
        self.client = builder.build()?;
        Ok(self)
    }

    /// The answer WeChat expects to a push of `fields`, when its
    /// documentation specifies one.
    pub fn documented(&self, fields: &Fields) -> Option<Fields> {
        let event = fields.get("Event").and_then(Value::as_str)?;
        self.answers.for_event(event).cloned()
    }

    /// Build a push of `fields` as WeChat would at `now`, with fresh nonce and
    /// random bytes.
    ///
    /// # Errors
    /// [`SealError::NoKey`] in an encrypted mode without a key.
    pub fn build(&self, fields: &Fields, now: i64) -> Result<SealedPush, SealError> {
        if self.cloud_run {
            // The gateway passes the plaintext push on; the openid rides
            // in a header, taken from here.
            let body = crate::protocol::envelope::render(self.format, fields);
            let openid = fields.get("FromUserName").and_then(Value::as_str);
            return Ok(SealedPush {
                query: PushQuery {
                    openid: openid.map(str::to_owned),
                    ..PushQuery::default()
                },
                body,
            });
        }
        let mut random = [0u8; 16];
        let _ = getrandom::fill(&mut random);
        let nonce = (u32::from_le_bytes([random[0], random[1], random[2], random[3]])
            % 1_000_000_000)
            .to_string();
        let openid = fields.get("FromUserName").and_then(Value::as_str);
        self.app.seal_push(
            fields,
            self.mode,
            self.format,
            &now.to_string(),
            &nonce,
            &random,
            openid,
        )
    }

    /// The GET handshake: returns the echostr sent and the judged answer.
    pub async fn verify_url(&self, now: i64) -> (String, Result<(), String>) {
        let mut random = [0u8; 8];
        let _ = getrandom::fill(&mut random);
        let echostr = (u64::from_le_bytes(random) % 10_000_000_000_000_000_000).to_string();
        let nonce = (u64::from_le_bytes(random) % 1_000_000_000).to_string();
        let timestamp = now.to_string();
        let signature =
            crate::protocol::signature::url_signature(self.app.token(), &timestamp, &nonce);
        let result = self
            .client
            .get(&self.url)
            .query(&[
                ("signature", signature.as_str()),
                ("timestamp", &timestamp),
                ("nonce", &nonce),
                ("echostr", &echostr),
            ])
            .timeout(self.deadline)
            .send()
            .await;
        let verdict = match result {
            Err(e) => Err(describe_transport(&e, self.deadline)),
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(body) => judge_echostr(&echostr, status, &body),
                    Err(e) => Err(describe_transport(&e, self.deadline)),
                }
            }
        };
        (echostr, verdict)
    }

    /// A POST to `url`, parsed once unless it was changed since (then, and
    /// for a URL that does not parse, reqwest parses it and says what is wrong).
    fn post(&self) -> reqwest::RequestBuilder {
        match &self.parsed {
            Some((given, parsed)) if *given == self.url => self.client.post(parsed.clone()),
            _ => self.client.post(&self.url),
        }
    }

    /// Deliver one push once and judge the answer by what was `sent`.
    pub async fn deliver(
        &self,
        push: &SealedPush,
        sent: Sent<'_>,
    ) -> (Duration, Result<Acknowledgement, String>, bool) {
        let started = Instant::now();
        let request = if self.cloud_run {
            let mut request = self
                .post()
                .header("x-wx-source", "wechat-push-simulate")
                .header("x-wx-appid", self.app.appid());
            if let Some(openid) = &push.query.openid {
                request = request.header("x-wx-openid", openid);
            }
            request
        } else {
            self.post().query(&query_pairs(&push.query))
        };
        let result = request
            .header(
                "content-type",
                match self.format {
                    Format::Xml => "text/xml",
                    Format::Json => "application/json",
                },
            )
            .body(push.body.clone())
            .timeout(self.deadline)
            .send()
            .await;
        let (outcome, retry) = match result {
            Err(e) => (Err(describe_transport(&e, self.deadline)), true),
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Err(e) => (Err(describe_transport(&e, self.deadline)), true),
                    Ok(body) => {
                        let verdict =
                            judge_answer(&self.app, self.kind, self.mode, sent, status, &body);
                        // WeChat delivers again when it got no 2xx answer.
                        (verdict, !(200..300).contains(&status))
                    }
                }
            }
        };
        (started.elapsed(), outcome, retry)
    }

    /// Deliver a push as WeChat does: again (the same push) after a timeout
    /// or failure, up to [`RETRIES`] times.
    pub async fn send(&self, push: &SealedPush, sent: Sent<'_>) -> Vec<Attempt> {
        let mut attempts = Vec::new();
        for number in 1..=RETRIES + 1 {
            let (elapsed, outcome, retry) = self.deliver(push, sent).await;
            let retried = retry && number <= RETRIES;
            attempts.push(Attempt {
                number,
                elapsed,
                outcome,
                retried,
            });
            if !retry {
                break;
            }
        }
        attempts
    }
}

/// The query of a push as pairs, for an HTTP client.
pub fn query_pairs(q: &PushQuery) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::with_capacity(7);
    let fields: [(&'static str, &Option<String>); 7] = [
        ("signature", &q.signature),
        ("timestamp", &q.timestamp),
        ("nonce", &q.nonce),
        ("openid", &q.openid),
        ("encrypt_type", &q.encrypt_type),
        ("msg_signature", &q.msg_signature),
        ("echostr", &q.echostr),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            pairs.push((name, v.clone()));
        }
    }
    pairs
}

fn describe_transport(e: &reqwest::Error, deadline: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {deadline:?}: WeChat drops the connection and delivers the push again")
    } else if e.is_connect() {
        format!("cannot connect: {}", crate::display_chain(e))
    } else {
        format!("request failed: {}", crate::display_chain(e))
    }
}

/// How a load run paces its pushes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// This many pushes in flight at all times (closed loop).
    Concurrency(usize),
    /// This many pushes started per second, whatever the answers (open
    /// loop, as WeChat sends): each push's latency counts from when it was
    /// due to be sent (less the timer's slack, at most 1.5 ms), so that a
    /// stalled server is not hidden by the pushes it kept from being sent
    /// (coordinated omission) once 4,096 are unanswered.
    Rate(f64),
}

/// Where a load run is, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Time since the start.
    pub elapsed: Duration,
    /// The run's length.
    pub duration: Duration,
    /// Right answers so far.
    pub ok: u64,
    /// Wrong or missing answers so far.
    pub errors: u64,
}

impl Simulator {
    /// Send distinct pushes (distinct MsgIds and users, the users spread
    /// like real openids) of `content` for
    /// `duration`, paced by `pacing`, each delivered once; report latencies.
    /// `progress` is called about four times a second.
    ///
    /// # Errors
    /// [`SealError::NoKey`] in an encrypted mode without a key.
    pub async fn load(
        &self,
        content: &Content,
        parties: &Parties,
        pacing: Pacing,
        duration: Duration,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> Result<LoadReport, SealError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};

        // Fail early rather than in every task.
        let sample = message_fields(content, parties, 0, 0);
        self.build(&sample, 0)?;
        // Every push of a run is of one kind: one expected answer for all.
        let expected = Arc::new(self.documented(&sample));
        let mut seed = [0u8; 4];
        let _ = getrandom::fill(&mut seed);
        let base_id = u64::from(u32::from_le_bytes(seed)) << 24;
        let counter = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::<u32>::with_capacity(1 << 16)));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let started = Instant::now();
        let until = started + duration;

        let one = {
            let sim = self.clone();
            let content = content.clone();
            let parties = parties.clone();
            let (counter, ok, failed) = (counter.clone(), ok.clone(), failed.clone());
            let (latencies, errors) = (latencies.clone(), errors.clone());
            let expected = expected.clone();
            move |due: Option<Instant>| {
                let sim = sim.clone();
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let who = Parties {
                    to: parties.to.clone(),
                    from: load_openid(&parties.from, n),
                };
                let fields = message_fields(&content, &who, crate::clock::now_secs(), base_id + n);
                let (ok, failed) = (ok.clone(), failed.clone());
                let (latencies, errors) = (latencies.clone(), errors.clone());
                let expected = expected.clone();
                async move {
                    let push = match sim.build(&fields, crate::clock::now_secs()) {
                        Ok(p) => p,
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut v) = errors.lock() {
                                v.push(e.to_string());
                            }
                            return;
                        }
                    };
                    let (elapsed, outcome, _) = sim
                        .deliver(
                            &push,
                            Sent {
                                push: Some(&fields),
                                documented: expected.as_ref().as_ref(),
                            },
                        )
                        .await;
                    // Open loop: from when it was due, waiting to be sent included.
                    let elapsed = due.map_or(elapsed, |due| due.elapsed());
                    match outcome {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
                            if let Ok(mut v) = latencies.lock() {
                                v.push(micros);
                            }
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut v) = errors.lock() {
                                v.push(e);
                            }
                        }
                    }
                }
            }
        };

        let ticker = {
            let (ok, failed) = (ok.clone(), failed.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    progress(Progress {
                        elapsed: started.elapsed().min(duration),
                        duration,
                        ok: ok.load(Ordering::Relaxed),
                        errors: failed.load(Ordering::Relaxed),
                    });
                }
            })
        };

        let mut tasks = tokio::task::JoinSet::new();
        match pacing {
            Pacing::Concurrency(c) => {
                for _ in 0..c.max(1) {
                    let one = one.clone();
                    tasks.spawn(async move {
                        while Instant::now() < until {
                            one(None).await;
                        }
                    });
                }
            }
            Pacing::Rate(rate) => {
                let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
                let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
                let mut next = Instant::now();
                while next < until {
                    tokio::time::sleep_until(next.into()).await;
                    // Tokio's timer wakes up to a millisecond late: that
                    // slack is the generator's, not the server's, and is not
                    // counted. Any later (the loop waited for a permit, with
                    // 4,096 pushes unanswered), the push counts from when it
                    // was due.
                    let woke = Instant::now();
                    let start = if woke.duration_since(next) <= TIMER_SLACK {
                        woke
                    } else {
                        next
                    };
                    let Ok(permit) = in_flight.clone().acquire_owned().await else {
                        break;
                    };
                    let fut = one(Some(start));
                    tasks.spawn(async move {
                        fut.await;
                        drop(permit);
                    });
                    next += interval;
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        ticker.abort();
        let seconds = started.elapsed().as_secs_f64();
        let latencies = latencies.lock().map(|v| v.clone()).unwrap_or_default();
        let errors = errors.lock().map(|v| v.clone()).unwrap_or_default();
        Ok(LoadReport::new(latencies, errors, seconds))
    }
}

/// How late Tokio's timer may wake (its resolution is a millisecond) before
/// the lateness is counted against the server in an open-loop run.
const TIMER_SLACK: Duration = Duration::from_micros(1500);

/// Latencies of a load run, in microseconds, and its errors.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadReport {
    /// Pushes answered rightly.
    pub ok: u64,
    /// Pushes answered wrongly or not at all.
    pub errors: u64,
    /// The first few distinct error messages, with counts.
    pub error_kinds: Vec<(String, u64)>,
    /// Seconds the run took.
    pub seconds: f64,
    /// Right answers per second.
    pub throughput: f64,
    /// Latency percentiles in milliseconds: p50, p90, p99, max.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest answer.
    pub max_ms: f64,
}

impl LoadReport {
    /// Summarise latencies (microseconds, any order) and errors.
    pub fn new(mut latencies: Vec<u32>, errors: Vec<String>, seconds: f64) -> Self {
        latencies.sort_unstable();
        let pct = |p: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            f64::from(latencies[i]) / 1000.0
        };
        let mut kinds: Vec<(String, u64)> = Vec::new();
        for e in &errors {
            if let Some((_, n)) = kinds.iter_mut().find(|(k, _)| k == e) {
                *n += 1;
            } else if kinds.len() < 10 {
                kinds.push((e.clone(), 1));
            }
        }
        let ok = latencies.len() as u64;
        LoadReport {
            ok,
            errors: errors.len() as u64,
            error_kinds: kinds,
            seconds,
            throughput: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
            p999_ms: pct(0.999),
            max_ms: latencies
                .last()
                .map(|l| f64::from(*l) / 1000.0)
                .unwrap_or(0.0),
        }
    }
}

/// The `n`th user of a load run: `from`'s first 12 characters (all of it
/// when shorter) and 16 hex digits, 28 characters for a `from` as long as a
/// real openid. The digits are `n` times an odd constant (a bijection, so
/// every user is distinct; consecutive users land far apart) rather than
/// `n` itself: real openids are random, so each push's dedup key lands at
/// its own place in the store's unique index, while users numbered in order
/// append to it, a best case (with the benchmark's pushes it wrote a fifth
/// of the bytes a push: ARCHITECTURE.md).
fn load_openid(from: &str, n: u64) -> String {
    let prefix = from.get(..12).unwrap_or(from);
    format!("{prefix}{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::{AesKey, KeyRing, KeySlot};
    use crate::protocol::Token;

    fn app() -> AppCrypto {
        let key = AesKey::from_encoding_aes_key(&"A".repeat(43)).unwrap();
        AppCrypto::new(
            "wxba5fad812f8e6fb9",
            Token::new("AAAAA"),
            Some(KeyRing::new(key, None)),
        )
    }

    #[test]
    fn echostr_diagnoses() {
        assert_eq!(judge_echostr("123", 200, b"123"), Ok(()));
        assert!(judge_echostr("123", 200, b"\"123\"")
            .unwrap_err()
            .contains("in quotes"));
        assert!(judge_echostr("123", 200, b"123\n")
            .unwrap_err()
            .contains("trailing newline"));
        assert!(judge_echostr("123", 200, b"<!DOCTYPE html><html>")
            .unwrap_err()
            .contains("HTML page"));
        assert!(judge_echostr("123", 403, b"no")
            .unwrap_err()
            .contains("HTTP 403"));
        assert!(judge_echostr("123", 200, b"")
            .unwrap_err()
            .contains("empty body"));
        assert!(judge_echostr("123", 200, b"echostr=123")
            .unwrap_err()
            .contains("wrapped"));
    }

    #[test]
    fn documented_answers_are_required_where_the_documentation_specifies_one() {
        let a = app();
        let mp = AppKind::MiniProgram;
        let answers = DocumentedAnswers::new([]);
        let expected = answers.for_event("xpay_goods_deliver_notify");
        let doc_sent = Sent {
            documented: expected,
            ..Sent::default()
        };
        let err = judge_answer(&a, mp, Mode::Safe, doc_sent, 200, b"success").unwrap_err();
        assert!(err.contains("specifies the answer"), "{err}");
        assert!(judge_answer(&a, mp, Mode::Safe, doc_sent, 200, b"").is_err());
        let doc = br#"{"ErrCode":0,"ErrMsg":"Success"}"#;
        // Unsealed in safe mode: dropped like any other unsealed answer.
        assert!(judge_answer(&a, mp, Mode::Safe, doc_sent, 200, doc)
            .unwrap_err()
            .contains("unencrypted"));
        assert!(matches!(
            judge_answer(&a, mp, Mode::Plaintext, doc_sent, 200, doc),
            Ok(Acknowledgement::Documented {
                encrypted: false,
                ..
            })
        ));
        let sealed = a
            .seal(
                doc,
                Format::Json,
                1_700_000_000,
                "n",
                &[3; 16],
                KeySlot::Current,
            )
            .unwrap();
        assert!(matches!(
            judge_answer(&a, mp, Mode::Safe, doc_sent, 200, sealed.as_bytes()),
            Ok(Acknowledgement::Documented {
                encrypted: true,
                ..
            })
        ));
        let wrong = br#"{"ErrCode":1,"ErrMsg":"no"}"#;
        assert!(judge_answer(&a, mp, Mode::Plaintext, doc_sent, 200, wrong)
            .unwrap_err()
            .contains("specifies"));
    }

    #[test]
    fn answer_diagnoses() {
        let a = app();
        let mp = AppKind::MiniProgram;
        assert_eq!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, b"success"),
            Ok(Acknowledgement::Success)
        );
        assert_eq!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, b""),
            Ok(Acknowledgement::Empty)
        );
        assert!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, b"success\n")
                .unwrap_err()
                .contains("trailing newline")
        );
        assert!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, b"\"success\"")
                .unwrap_err()
                .contains("quotes")
        );
        assert!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 500, b"oops")
                .unwrap_err()
                .contains("HTTP 500")
        );
        let reply = br#"{"ToUserName":"o","FromUserName":"gh","CreateTime":1,"MsgType":"transfer_customer_service"}"#;
        assert!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, reply)
                .unwrap_err()
                .contains("unencrypted reply in safe mode")
        );
        // Plaintext mode accepts it as is.
        assert!(matches!(
            judge_answer(&a, mp, Mode::Plaintext, Sent::default(), 200, reply),
            Ok(Acknowledgement::Reply {
                encrypted: false,
                ..
            })
        ));
        let sealed = a
            .seal(
                reply,
                Format::Json,
                1_700_000_000,
                "n",
                &[1; 16],
                KeySlot::Current,
            )
            .unwrap();
        assert!(matches!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, sealed.as_bytes()),
            Ok(Acknowledgement::Reply {
                encrypted: true,
                ..
            })
        ));
        let millis = a
            .seal(
                reply,
                Format::Json,
                1_700_000_000_000,
                "n",
                &[1; 16],
                KeySlot::Current,
            )
            .unwrap();
        assert!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, millis.as_bytes())
                .unwrap_err()
                .contains("milliseconds")
        );
        let text = br#"{"ToUserName":"o","FromUserName":"gh","CreateTime":1,"MsgType":"text","Content":"hi"}"#;
        let sealed = a
            .seal(
                text,
                Format::Json,
                1_700_000_000,
                "n",
                &[1; 16],
                KeySlot::Current,
            )
            .unwrap();
        assert!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, sealed.as_bytes())
                .unwrap_err()
                .contains("only passive reply")
        );
        assert!(judge_answer(
            &a,
            AppKind::OfficialAccount,
            Mode::Safe,
            Sent::default(),
            200,
            sealed.as_bytes()
        )
        .is_ok());
        // A reply sealed for another app does not verify.
        let other = AppCrypto::new(
            "wx0000000000000000",
            Token::new("AAAAA"),
            Some(KeyRing::new(
                AesKey::from_encoding_aes_key(&"A".repeat(43)).unwrap(),
                None,
            )),
        );
        let foreign = other
            .seal(
                reply,
                Format::Json,
                1_700_000_000,
                "n",
                &[1; 16],
                KeySlot::Current,
            )
            .unwrap();
        assert!(
            judge_answer(&a, mp, Mode::Safe, Sent::default(), 200, foreign.as_bytes())
                .unwrap_err()
                .contains("appid mismatch")
        );
        assert!(judge_answer(
            &a,
            mp,
            Mode::Safe,
            Sent::default(),
            200,
            b"<html><body>502</body></html>"
        )
        .unwrap_err()
        .contains("HTML"));
    }

    #[test]
    fn load_report_percentiles() {
        let r = LoadReport::new(
            (1..=100).map(|i| i * 1000).collect(),
            vec!["x".into(), "x".into()],
            2.0,
        );
        assert_eq!(
            (r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms),
            (50.0, 90.0, 99.0, 100.0, 100.0)
        );
        assert_eq!((r.ok, r.errors, r.throughput), (100, 2, 50.0));
        assert_eq!(r.error_kinds, vec![("x".to_owned(), 2)]);
    }

    #[test]
    fn load_users_are_spread_over_the_dedup_index_like_real_openids() {
        let users: Vec<String> = (0..64)
            .map(|n| load_openid("o9AgO5Kd5ggOC-bXrbNODIiE3bGY", n))
            .collect();
        assert!(users
            .iter()
            .all(|u| u.len() == 28 && u.starts_with("o9AgO5Kd5ggO")));
        let distinct: std::collections::HashSet<&String> = users.iter().collect();
        assert_eq!(distinct.len(), users.len());
        // In order of n they are not in sorted order: consecutive users
        // would append to the index, as real ones do not.
        let ascending = users.windows(2).filter(|w| w[0] < w[1]).count();
        assert!(
            (16..48).contains(&ascending),
            "{ascending} of 63 pairs ascending"
        );
    }
}
