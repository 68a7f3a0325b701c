//! Forwarding: every verified push, stored and acknowledged, delivered to the
//! team's own backend as a signed JSON webhook, at least once.
//!
//! ```toml
//! [[apps.forward]]
//! url = "http://127.0.0.1:9000/hooks/wechat"
//! secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
//! # only = ["text", "image", "event:user_enter_tempsession"]
//! # timeout = "10s"
//! # retry_schedule = ["5s", "30s", "2m", "10m", "1h", "6h"]
//! # max_in_flight = 16
//! ```
//!
//! Handling a push records one delivery per matching target in the store
//! ([`ForwardingHandler`]); the [`Forwarder`] claims due deliveries, target
//! by target with at most `max_in_flight` each, and posts them
//! ([`crate::webhook`] builds and signs the request). A 2xx ends a delivery;
//! anything else is retried on the target's schedule (with jitter), then the
//! delivery is dead until `inbox retry`. Deliveries live in the store, so
//! they survive restarts and are shared by every instance.
//!
//! A 2xx JSON body `{"reply": {...}}` answers the user through the
//! customer-service API, as a rule's reply would. `transfer_customer_service`
//! is a passive reply, which only the push's own HTTP answer can carry: a
//! target with `passive_reply = true` gets its first attempt while that
//! answer is held (within `server.reply_budget`), so its transfer rides on
//! it; otherwise the transfer comes too late and is recorded as ignored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{watch, Notify, Semaphore};

use crate::clock::{ms, now_ms, now_secs};
pub use crate::config::{display_url, ForwardConfig};
use crate::config::{AppKind, Config, ConfigError};
use crate::handler::{Handler, HandlerError, Push, SharedHandler};
use crate::metrics::{self, Metrics};
use crate::outbox::Outbox;
use crate::protocol::message::Message;
use crate::reply::PassiveReply;
use crate::reply::ReplySpec;
use crate::store::{Delivery, DeliveryOutcome, Store, StoredPush};
use crate::webhook::{self, SigningKey};

/// Most bytes of a target's answer that are read (for its reply or error).
const MAX_ANSWER: usize = 64 * 1024;

/// How long in-flight deliveries may run on after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl ForwardConfig {
    /// Check target `j` of app `i`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key: a URL that is not http(s), a
    /// secret that is empty or bad base64, an empty filter, no concurrency.
    pub fn check(&self, i: usize, j: usize) -> Result<SigningKey, ConfigError> {
        let invalid = |name: &str, reason: String| ConfigError::Invalid {
            key: format!("apps[{i}].forward[{j}].{name}"),
            reason,
        };
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => {
                return Err(invalid(
                    "url",
                    format!(
                        "must be http:// or https:// with a host, got {}:",
                        u.scheme()
                    ),
                ))
            }
            Err(e) => return Err(invalid("url", e.to_string())),
        }
        if self.only.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "only",
                "is empty, so nothing would be forwarded; remove it to forward everything".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1".into()));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be more than 0".into()));
        }
        SigningKey::from_secret(self.secret.expose()).map_err(|e| invalid("secret", e.to_string()))
    }

    /// Whether `message` goes to this target.
    pub fn wants(&self, message: &Message) -> bool {
        let Some(kinds) = &self.only else {
            return true;
        };
        let kind = message.kind();
        // Events this crate does not type yet have the kind `unknown`; their
        // wire name still matches `event:<Event>`.
        let event = message
            .fields()
            .get("Event")
            .and_then(|e| e.as_str())
            .filter(|_| message.fields().get("MsgType").and_then(|t| t.as_str()) == Some("event"));
        kinds.iter().any(|k| {
            *k == kind
                || (k == "event" && event.is_some())
                || k.strip_prefix("event:")
                    .is_some_and(|name| Some(name) == event)
        })
    }
}

/// One app's settings for one target.
#[derive(Debug)]
struct Route {
    config: ForwardConfig,
    key: SigningKey,
    /// The app's kind: an Official Account takes any passive reply.
    kind: AppKind,
}

/// One target URL, with every app that forwards to it.
#[derive(Debug)]
struct Target {
    url: String,
    label: String,
    routes: HashMap<String, Route>,
    slots: Arc<Semaphore>,
    /// How many slots there are.
    size: u32,
    /// The last claim was full: claim again as soon as a slot frees up.
    backlog: AtomicBool,
    /// New deliveries were recorded for it since its last claim.
    due: AtomicBool,
    /// Longest attempt of any route, for the claim's lease.
    lease: Duration,
}

/// Delivers pushes to forward targets. Built from the config by
/// [`Forwarder::new`]; run by the server.
pub struct Forwarder {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    targets: Vec<Arc<Target>>,
    outbox: Option<Outbox>,
    metrics: Arc<Metrics>,
    notify: Notify,
    poll_interval: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field(
                "targets",
                &self.targets.iter().map(|t| &t.label).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// The forwarder of `config`'s targets, or `None` when no app forwards.
    /// `outbox` sends the targets' replies.
    ///
    /// # Errors
    /// [`ConfigError`] for an unusable target.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        outbox: Option<Outbox>,
    ) -> Result<Option<Arc<Forwarder>>, ConfigError> {
        let mut targets: Vec<Target> = Vec::new();
        for (i, app) in config.apps.iter().enumerate() {
            for (j, f) in app.forward.iter().enumerate() {
                let key = f.check(i, j)?;
                if f.passive_reply && config.inbox.workers == 0 {
                    return Err(ConfigError::Invalid {
                        key: "inbox.workers".into(),
                        reason: format!("is 0, so no push is handled while its answer is held, and the passive replies of app {} (a target with passive_reply) would never reach a user; give this process workers, or turn passive_reply off", app.appid),
                    });
                }
                let route = Route {
                    config: f.clone(),
                    key,
                    kind: app.kind,
                };
                let lease = f.timeout + Duration::from_secs(5);
                match targets.iter_mut().find(|t| t.url == f.url) {
                    Some(t) => {
                        t.lease = t.lease.max(lease);
                        t.routes.insert(app.appid.clone(), route);
                    }
                    None => targets.push(Target {
                        url: f.url.clone(),
                        label: display_url(&f.url),
                        routes: HashMap::from([(app.appid.clone(), route)]),
                        // The first app's limit holds for the URL.
                        slots: Arc::new(Semaphore::new(f.max_in_flight)),
                        size: u32::try_from(f.max_in_flight).unwrap_or(u32::MAX),
                        backlog: AtomicBool::new(false),
                        due: AtomicBool::new(false),
                        lease,
                    }),
                }
            }
        }
        if targets.is_empty() {
            return Ok(None);
        }
        let http = reqwest::Client::builder()
            // A webhook goes where it is configured to, not where a 3xx says.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wechat-push/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid {
                key: "apps[].forward".into(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Some(Arc::new(Forwarder {
            store,
            http,
            targets: targets.into_iter().map(Arc::new).collect(),
            outbox,
            metrics,
            notify: Notify::new(),
            poll_interval: config.inbox.poll_interval,
        })))
    }

    /// The targets of `appid` that want `message`, each with whether its
    /// first attempt is made by the handler itself: the target has
    /// `passive_reply` and `message` is one a transfer can answer.
    fn routes_for<'a>(
        &'a self,
        appid: &'a str,
        message: &'a Message,
    ) -> impl Iterator<Item = (&'a Arc<Target>, bool)> + 'a {
        let transferable = can_transfer(message);
        self.targets.iter().filter_map(move |target| {
            let route = target.routes.get(appid)?;
            let wanted = route.config.wants(message);
            // An Official Account takes a passive reply to any push; a Mini
            // Program only a transfer, to a message or a session entry.
            let passive = transferable || route.kind == AppKind::OfficialAccount;
            wanted.then_some((target, passive && route.config.passive_reply))
        })
    }

    /// The URLs of the targets of `appid` that want `message`.
    pub fn targets_for(&self, appid: &str, message: &Message) -> Vec<String> {
        self.routes_for(appid, message)
            .map(|(target, _)| target.url.clone())
            .collect()
    }

    /// Whether handling `message` waits for a target that may answer with a
    /// passive reply.
    pub fn waits_for(&self, appid: &str, message: &Message) -> bool {
        self.routes_for(appid, message).any(|(_, held)| held)
    }

    /// Record the deliveries of `push` (idempotent) and wake the dispatcher.
    /// The first attempt to targets with `passive_reply` is made here, so
    /// that a `transfer_customer_service` they answer can be returned.
    ///
    /// # Errors
    /// A retryable [`HandlerError`] when the store fails.
    pub async fn enqueue(&self, push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        let routes: Vec<(&Arc<Target>, bool)> =
            self.routes_for(&push.appid, &push.message).collect();
        if routes.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        // A delivery whose first attempt is made here is held from the
        // dispatcher until then (or until the hold lapses, if this dies).
        let held_until = |target: &Target| now + ms(target.lease);
        let deliveries = routes
            .iter()
            .map(|(target, held)| {
                let due = if *held { held_until(target) } else { now };
                (target.url.clone(), due)
            })
            .collect();
        self.store
            .add_deliveries(push.id, deliveries, now)
            .await
            .map_err(|e| HandlerError::caused_by("cannot record the push's deliveries", e))?;
        for (target, held) in &routes {
            if !held {
                target.due.store(true, Ordering::Relaxed);
            }
        }
        let mut passive = None;
        for (target, _) in routes.iter().filter(|(_, held)| *held) {
            let Ok(_slot) = target.slots.clone().acquire_owned().await else {
                continue;
            };
            // Claimed at the time it is held until: no one else takes it
            // before. (A push handled again finds its delivery as it was.)
            let at = held_until(target);
            let claimed = self
                .store
                .claim_deliveries(
                    target.url.clone(),
                    Some(push.id),
                    at,
                    at + ms(target.lease),
                    1,
                )
                .await
                .map_err(|e| HandlerError::caused_by("cannot claim the push's delivery", e))?;
            for (delivery, stored) in claimed {
                let reply = self
                    .attempt(
                        target,
                        delivery,
                        stored,
                        Some((push.message.clone(), push.app_kind)),
                    )
                    .await;
                match (&passive, reply) {
                    // One passive reply per push: a second target's reply
                    // goes through the API instead.
                    (Some(_), Some(second)) => {
                        self.send_instead(push, &second, target).await?;
                    }
                    (None, reply) => passive = reply,
                    (Some(_), None) => {}
                }
            }
        }
        self.notify.notify_one();
        Ok(passive)
    }

    /// A target's passive reply to `push` came too late for its answer: send
    /// it through the customer-service API, as a reply past the budget is
    /// (recorded under the first holding target's source).
    async fn reply_missed(
        &self,
        push: &Push,
        reply: &PassiveReply,
    ) -> Result<String, HandlerError> {
        let Some((target, _)) = self
            .routes_for(&push.appid, &push.message)
            .find(|(_, held)| *held)
        else {
            return Ok("not sent: no target holds the answer any more".into());
        };
        self.send_instead(push, reply, target).await
    }

    /// Send `target`'s passive `reply` to `push` through the
    /// customer-service API, recorded under the target's source.
    async fn send_instead(
        &self,
        push: &Push,
        reply: &PassiveReply,
        target: &Target,
    ) -> Result<String, HandlerError> {
        let Some(message) = reply.to_cs_message() else {
            return Ok(format!(
                "not sent: {} can only ride on the push's answer",
                reply.msg_type()
            ));
        };
        let Some(outbox) = &self.outbox else {
            return Ok("not sent: no API client".into());
        };
        let source = format!("forward:{}", target.label);
        outbox
            .deliver(
                &push.appid,
                push.id,
                &source,
                &push.message.from_user,
                std::slice::from_ref(&message),
            )
            .await?;
        Ok("sent through the customer-service API instead".into())
    }

    /// Deliver due deliveries until `shutdown` turns true, then give
    /// in-flight ones a grace period (the rest come back when their lease
    /// runs out).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let known = self.targets.iter().map(|t| t.url.clone()).collect();
        match self.store.bury_unknown_targets(known, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                deliveries = n,
                "deliveries to targets no longer configured marked dead; `inbox retry` resends them once the target is back"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot check for deliveries to removed targets"),
        }
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Every target at start-up and on each tick (retries come due with
        // time); in between only those with new deliveries or a backlog.
        let mut all = true;
        loop {
            if *shutdown.borrow() {
                break;
            }
            for target in &self.targets {
                let due = target.due.swap(false, Ordering::Relaxed);
                if all || due || target.backlog.load(Ordering::Relaxed) {
                    self.claim(target).await;
                }
            }
            all = tokio::select! {
                _ = shutdown.changed() => false,
                _ = self.notify.notified() => false,
                _ = poll.tick() => true,
            };
        }
        for target in &self.targets {
            if tokio::time::timeout(SHUTDOWN_GRACE, target.slots.acquire_many(target.size))
                .await
                .is_err()
            {
                tracing::warn!(target = %target.label, "deliveries still running at shutdown; they are retried when their lease runs out");
            }
        }
    }

    /// Claim as many due deliveries to `target` as it has free slots, and
    /// start them.
    async fn claim(self: &Arc<Self>, target: &Arc<Target>) {
        let free = target.slots.available_permits();
        if free == 0 {
            target.backlog.store(true, Ordering::Relaxed);
            return;
        }
        let now = now_ms();
        let lease_until = now + ms(target.lease);
        let claimed = match self
            .store
            .claim_deliveries(target.url.clone(), None, now, lease_until, free)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(target = %target.label, error = %e, "cannot claim deliveries");
                return;
            }
        };
        target
            .backlog
            .store(claimed.len() == free, Ordering::Relaxed);
        for (delivery, push) in claimed {
            // Claimed no more than the free slots, and only this task takes them.
            let Ok(permit) = target.slots.clone().try_acquire_owned() else {
                break;
            };
            let this = self.clone();
            let target = target.clone();
            tokio::spawn(async move {
                this.attempt(&target, delivery, push, None).await;
                drop(permit);
                if target.backlog.load(Ordering::Relaxed) {
                    this.notify.notify_one();
                }
            });
        }
    }

    /// One attempt of one delivery, its outcome recorded. With `passive`
    /// (the push's message and its app's kind, while its answer is still
    /// open), a `transfer_customer_service` reply is returned to ride on it.
    async fn attempt(
        &self,
        target: &Target,
        delivery: Delivery,
        push: StoredPush,
        passive: Option<(Message, AppKind)>,
    ) -> Option<PassiveReply> {
        let (parsed, app_kind) = match passive {
            Some((message, kind)) => (Some(message), Some(kind)),
            None => (None, None),
        };
        // Neither can be fixed by trying again.
        let ready = match target.routes.get(&push.appid) {
            None => Err(format!(
                "app {} no longer forwards to this target",
                push.appid
            )),
            Some(route) => parsed
                .map_or_else(|| Message::from_stored(push.format, &push.body), Ok)
                .map(|message| (route, message))
                .map_err(|e| e.to_string()),
        };
        let (route, message) = match ready {
            Ok(ready) => ready,
            Err(error) => {
                let outcome = DeliveryOutcome::Dead { error };
                self.finish(target, &push.appid, &delivery, outcome).await;
                return None;
            }
        };
        let reply = if delivery.responded {
            // The target has answered already: only its reply is left to send.
            Ok(None)
        } else {
            self.post(target, route, &push, &message).await
        };
        // A passive reply rides on the push's answer while it is still open.
        if let (Some(kind), Ok(Some(Ok(spec)))) = (app_kind, &reply) {
            if let Some(passive) = passive_reply(spec, kind, &message) {
                let outcome = DeliveryOutcome::Delivered { note: None };
                self.finish(target, &push.appid, &delivery, outcome).await;
                return Some(passive);
            }
        }
        let outcome = match reply {
            Err(error) => self.failed(route, &delivery, error, false),
            Ok(reply) => match self.answer(target, &push, &message, reply).await {
                Ok(note) => DeliveryOutcome::Delivered { note },
                Err(error) => self.failed(route, &delivery, error, true),
            },
        };
        self.finish(target, &push.appid, &delivery, outcome).await;
        None
    }

    /// Post the push; the target's reply, if its 2xx answer has one.
    async fn post(
        &self,
        target: &Target,
        route: &Route,
        push: &StoredPush,
        message: &Message,
    ) -> Result<Option<Result<ReplySpec, String>>, String> {
        let id = webhook::webhook_id(&push.appid, &push.dedup_key);
        let body = webhook::payload(&id, &push.appid, &push.dedup_key, push.received_at, message);
        let timestamp = now_secs();
        let signature = route.key.sign(&id, timestamp, &body);
        let started = Instant::now();
        let sent = self
            .http
            .post(&target.url)
            .timeout(route.config.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let result = match sent {
            Err(e) if e.is_timeout() => Err(format!("no answer within {:?}", route.config.timeout)),
            Err(e) => Err(crate::display_chain(&e)),
            Ok(mut response) => {
                let status = response.status();
                let answer = read_bounded(&mut response).await;
                if status.is_success() {
                    Ok(answer.ok().and_then(|a| parse_reply(&a)))
                } else {
                    let text = answer.unwrap_or_default();
                    let text = String::from_utf8_lossy(&text);
                    let text: String = text.trim().chars().take(200).collect();
                    Err(if text.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {text}")
                    })
                }
            }
        };
        self.metrics.observe(
            metrics::FORWARD_SECONDS,
            &[("target", &target.label)],
            started.elapsed(),
        );
        result
    }

    /// Send the target's reply, if any. `Ok(note)` when done (the note says
    /// why a reply was ignored); `Err` when sending it should be retried.
    async fn answer(
        &self,
        target: &Target,
        push: &StoredPush,
        message: &Message,
        reply: Option<Result<ReplySpec, String>>,
    ) -> Result<Option<String>, String> {
        let source = format!("forward:{}", target.label);
        let messages = match reply {
            None => Vec::new(),
            Some(Err(e)) => return Ok(Some(format!("reply ignored: {e}"))),
            Some(Ok(ReplySpec::TransferCustomerService(_))) => {
                return Ok(Some(
                    "reply ignored: transfer_customer_service is a passive reply, and the push was answered already (set passive_reply = true on the target to hold the answer for it)".into(),
                ))
            }
            Some(Ok(spec)) if spec.check().is_err() => {
                let why = spec.check().err().unwrap_or_default();
                return Ok(Some(format!("reply ignored: {why}")));
            }
            Some(Ok(spec)) => match spec.to_cs_message(None) {
                Some(m) => vec![m],
                None => {
                    return Ok(Some(format!(
                        "reply ignored: a backend names its {} by media_id, not by file",
                        spec.msg_type()
                    )))
                }
            },
        };
        let Some(outbox) = &self.outbox else {
            return Ok((!messages.is_empty()).then(|| "reply ignored: no API client".into()));
        };
        // With no new messages this sends what an earlier attempt recorded.
        match outbox
            .deliver(&push.appid, push.id, &source, &message.from_user, &messages)
            .await
        {
            Ok(()) => Ok(None),
            Err(e) if e.is_retryable() => {
                Err(format!("reply not sent yet: {}", crate::display_chain(&e)))
            }
            Err(e) => Ok(Some(format!(
                "reply not sent: {}",
                crate::display_chain(&e)
            ))),
        }
    }

    /// The outcome of a failed attempt: a retry on the schedule, or dead.
    fn failed(
        &self,
        route: &Route,
        delivery: &Delivery,
        error: String,
        responded: bool,
    ) -> DeliveryOutcome {
        let schedule = &route.config.retry_schedule;
        match schedule.get(delivery.attempts.saturating_sub(1) as usize) {
            Some(delay) => {
                let delay = delay.mul_f64(crate::worker::jitter());
                DeliveryOutcome::Retry {
                    at: now_ms() + ms(delay),
                    error,
                    responded,
                }
            }
            None => DeliveryOutcome::Dead { error },
        }
    }

    async fn finish(
        &self,
        target: &Target,
        appid: &str,
        delivery: &Delivery,
        outcome: DeliveryOutcome,
    ) {
        let (name, attempts) = (&target.label, delivery.attempts);
        let kind = match &outcome {
            DeliveryOutcome::Delivered { note } => {
                match note {
                    Some(note) => tracing::warn!(%appid, target = %name, %note, "delivered"),
                    None => tracing::debug!(%appid, target = %name, attempts, "delivered"),
                }
                "delivered"
            }
            DeliveryOutcome::Retry { at, error, .. } => {
                tracing::warn!(%appid, target = %name, attempts, %error, retry_in_ms = at - now_ms(), "delivery failed; will retry");
                "retry"
            }
            DeliveryOutcome::Dead { error } => {
                tracing::error!(%appid, target = %name, attempts, %error, "delivery failed for good; `inbox retry` resends it");
                "dead"
            }
        };
        self.metrics.inc(
            metrics::FORWARDS,
            &[("appid", appid), ("target", name), ("outcome", kind)],
        );
        if let Err(e) = self
            .store
            .finish_delivery(delivery.id, outcome, now_ms())
            .await
        {
            tracing::error!(error = %e, "cannot record the delivery's outcome; its lease brings it back");
        }
    }
}

/// Read at most [`MAX_ANSWER`] bytes of a response.
async fn read_bounded(response: &mut reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER {
            break;
        }
    }
    Ok(out)
}

/// The reply in a target's 2xx answer: `None` for an empty answer or one
/// without `"reply"`; an error for a `"reply"` that is not one.
fn parse_reply(answer: &[u8]) -> Option<Result<ReplySpec, String>> {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let value: serde_json::Value = match serde_json::from_slice(answer) {
        Ok(v) => v,
        // A plain `ok` or `success` is an answer without a reply.
        Err(_) => return None,
    };
    let reply = value.get("reply")?;
    if reply.is_null() {
        return None;
    }
    Some(
        ReplySpec::deserialize(reply)
            .map_err(|_| format!("{reply} is not a reply (expected {{\"text\": \"…\"}}, image, voice, video, music, news, link, miniprogrampage, mpnews or transfer_customer_service)")),
    )
}

/// `spec` as a passive reply of an app of `kind` answering `message`, when
/// it can be one: `transfer_customer_service` for any app, the passive
/// types for an Official Account (news to a user's message holds one
/// article).
fn passive_reply(spec: &ReplySpec, kind: AppKind, message: &Message) -> Option<PassiveReply> {
    // One WeChat would refuse goes the API's way, which says why.
    spec.check().ok()?;
    match (spec, kind) {
        (ReplySpec::TransferCustomerService(true), kind) => Some(PassiveReply::transfer(kind)),
        (ReplySpec::TransferCustomerService(false), _) | (_, AppKind::MiniProgram) => None,
        (spec, AppKind::OfficialAccount) => {
            let articles = if message.msg_type() == "event" {
                crate::reply::MAX_NEWS_ARTICLES
            } else {
                1
            };
            if let ReplySpec::News(news) = spec {
                if news.articles().len() > articles {
                    tracing::warn!(
                        articles = news.articles().len(),
                        "a backend's news answering a user's message holds one article: the rest are left out"
                    );
                }
            }
            spec.to_passive(None, articles)
                .map(PassiveReply::OfficialAccount)
        }
    }
}

/// Whether `message` may be answered with `transfer_customer_service`: a
/// user's message, or a Mini Program user entering the chat.
fn can_transfer(message: &Message) -> bool {
    let fields = message.fields();
    match fields.get("MsgType").and_then(|t| t.as_str()) {
        Some("event") => {
            fields.get("Event").and_then(|e| e.as_str()) == Some("user_enter_tempsession")
        }
        Some(_) => true,
        None => false,
    }
}

/// Runs the app's handler and records each push's deliveries first, so that
/// forwarding does not depend on what the handler does.
pub(crate) struct ForwardingHandler {
    forwarder: Arc<Forwarder>,
    inner: SharedHandler,
}

impl ForwardingHandler {
    /// `inner`, with `forwarder`'s deliveries recorded before it runs.
    pub(crate) fn new(forwarder: Arc<Forwarder>, inner: SharedHandler) -> Self {
        ForwardingHandler { forwarder, inner }
    }
}

impl Handler for ForwardingHandler {
    async fn handle(&self, push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        let forwarded = self.forwarder.enqueue(push).await?;
        let handled = self.inner.handle(push).await?;
        // One passive reply per push: the app's handler has the last
        // word, and a target's reply goes through the API instead.
        match (handled, forwarded) {
            (Some(handled), Some(forwarded)) => {
                let instead = self.forwarder.reply_missed(push, &forwarded).await?;
                tracing::info!(appid = %push.appid, %instead, "a target's passive reply gave way to the app's handler's");
                Ok(Some(handled))
            }
            (handled, forwarded) => Ok(handled.or(forwarded)),
        }
    }

    fn may_reply_passively(&self, appid: &str, message: &Message) -> bool {
        self.inner.may_reply_passively(appid, message) || self.forwarder.waits_for(appid, message)
    }

    async fn reply_missed(
        &self,
        push: &Push,
        reply: &PassiveReply,
    ) -> Result<String, HandlerError> {
        // The app's handler has the last word on the reply, so a reply
        // it may give is its own.
        if self.inner.may_reply_passively(&push.appid, &push.message) {
            return self.inner.reply_missed(push, reply).await;
        }
        self.forwarder.reply_missed(push, reply).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{self, Limits};

    #[test]
    fn replies_are_read_from_2xx_answers() {
        assert_eq!(parse_reply(b""), None);
        assert_eq!(parse_reply(b"  \n"), None);
        assert_eq!(parse_reply(b"success"), None);
        assert_eq!(parse_reply(br#"{"ok":true}"#), None);
        assert_eq!(parse_reply(br#"{"reply":null}"#), None);
        assert_eq!(
            parse_reply(br#"{"reply":{"text":"hi"}}"#),
            Some(Ok(ReplySpec::Text("hi".into())))
        );
        assert_eq!(
            parse_reply(br#"{"reply":{"transfer_customer_service":true}}"#),
            Some(Ok(ReplySpec::TransferCustomerService(true)))
        );
        assert!(matches!(
            parse_reply(br#"{"reply":{"txet":"hi"}}"#),
            Some(Err(_))
        ));
    }

    fn message(json: &str) -> Message {
        let fields = wire::parse_json(json.as_bytes(), &Limits::default()).unwrap();
        Message::from_fields(fields).unwrap()
    }

    #[test]
    fn filters_match_kinds_and_events() {
        let text = message(
            r#"{"ToUserName":"g","FromUserName":"o","CreateTime":1,"MsgType":"text","Content":"x","MsgId":1}"#,
        );
        let image = message(
            r#"{"ToUserName":"g","FromUserName":"o","CreateTime":1,"MsgType":"image","PicUrl":"u","MediaId":"m","MsgId":2}"#,
        );
        let enter = message(
            r#"{"ToUserName":"g","FromUserName":"o","CreateTime":1,"MsgType":"event","Event":"user_enter_tempsession","SessionFrom":""}"#,
        );
        let novel = message(
            r#"{"ToUserName":"g","FromUserName":"o","CreateTime":1,"MsgType":"event","Event":"brand_new_event"}"#,
        );
        assert_eq!(novel.kind(), "unknown");
        let mut c: ForwardConfig = toml::from_str("url = \"http://a/b\"\nsecret = \"s\"").unwrap();
        assert!([&text, &image, &enter, &novel].iter().all(|m| c.wants(m)));
        assert_eq!(c.retry_schedule, crate::config::default_schedule());
        c.only = Some(vec!["text".into(), "event".into()]);
        assert!(c.wants(&text) && c.wants(&enter) && c.wants(&novel) && !c.wants(&image));
        c.only = Some(vec!["event:user_enter_tempsession".into()]);
        assert!(c.wants(&enter) && !c.wants(&novel) && !c.wants(&text));
        c.only = Some(vec!["event:brand_new_event".into()]);
        assert!(c.wants(&novel) && !c.wants(&enter));
    }

    #[test]
    fn bad_targets_are_named() {
        let check = |extra: &str| {
            let c: ForwardConfig =
                toml::from_str(&format!("secret = \"whsec_c2VjcmV0\"\n{extra}")).unwrap();
            c.check(1, 2).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(check("url = \"https://example.com/hook?k=1\"").is_ok());
        assert!(check("url = \"ftp://example.com/\"")
            .unwrap_err()
            .starts_with("apps[1].forward[2].url: must be http"));
        assert!(check("url = \"not a url\"")
            .unwrap_err()
            .starts_with("apps[1].forward[2].url: "));
        assert!(check("url = \"http://a/\"\nonly = []")
            .unwrap_err()
            .starts_with("apps[1].forward[2].only: is empty"));
        let c: ForwardConfig =
            toml::from_str("url = \"http://a/\"\nsecret = \"whsec_!!\"").unwrap();
        assert!(c
            .check(0, 0)
            .unwrap_err()
            .to_string()
            .starts_with("apps[0].forward[0].secret: the part after whsec_ is not base64"));
    }

    #[test]
    fn labels_drop_queries() {
        assert_eq!(display_url("http://h/p?token=abc"), "http://h/p");
        assert_eq!(display_url("http://h/p#x"), "http://h/p");
        assert_eq!(display_url("http://h/p"), "http://h/p");
    }
}
