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
//! (`ForwardingHandler`); the [`Forwarder`] claims due deliveries, target
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

mod delivery;
mod handler;
pub mod webhook;

pub use delivery::{DeliveryError, InvalidReply};
pub(crate) use handler::ForwardingHandler;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::now_ms;
pub use crate::config::{display_url, ForwardConfig};
use crate::config::{AppKind, Config, ConfigError};
use crate::handler::{HandlerError, Push};
use crate::lease::{Filled, Slots, Stop};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::message::{KindPattern, Message};
use crate::reply::PassiveReply;
use crate::store::DeliveryLog;
use webhook::SigningKey;

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

    /// The kinds of push this target takes (`only`, read once when the
    /// forwarder is built); `None`: every push.
    pub fn kinds(&self) -> Option<Vec<KindPattern>> {
        self.only
            .as_ref()
            .map(|kinds| kinds.iter().map(|k| KindPattern::parse(k)).collect())
    }
}

/// Whether `message` goes to a target taking `kinds` ([`ForwardConfig::kinds`]).
fn wanted(kinds: Option<&[KindPattern]>, message: &Message) -> bool {
    kinds.is_none_or(|kinds| kinds.iter().any(|k| k.matches(message)))
}

/// One app's settings for one target.
#[derive(Debug)]
struct Route {
    config: ForwardConfig,
    /// `config.only`, parsed.
    kinds: Option<Vec<KindPattern>>,
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
    slots: Slots,
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
    store: Arc<dyn DeliveryLog>,
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
    /// Check every forward target of `config` as [`Forwarder::new`] does,
    /// building nothing: the CLI runs it when it loads the config, before
    /// anything is opened.
    ///
    /// # Errors
    /// [`ConfigError`] naming the target's key.
    pub fn check(config: &Config) -> Result<(), ConfigError> {
        for (i, app) in config.apps.iter().enumerate() {
            for j in 0..app.forward.len() {
                check_target(config, i, j)?;
            }
        }
        Ok(())
    }

    /// The forwarder of `config`'s targets, or `None` when no app forwards.
    /// `outbox` sends the targets' replies.
    ///
    /// # Errors
    /// [`ConfigError`] for an unusable target.
    pub fn new(
        config: &Config,
        store: Arc<dyn DeliveryLog>,
        metrics: Arc<Metrics>,
        outbox: Option<Outbox>,
    ) -> Result<Option<Arc<Forwarder>>, ConfigError> {
        let mut targets: Vec<Target> = Vec::new();
        for (i, app) in config.apps.iter().enumerate() {
            for (j, f) in app.forward.iter().enumerate() {
                let key = check_target(config, i, j)?;
                let route = Route {
                    config: f.clone(),
                    kinds: f.kinds(),
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
                        slots: Slots::new(f.max_in_flight),
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
            let wanted = wanted(route.kinds.as_deref(), message);
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

    /// Whether a target of `appid` wants `message`.
    pub fn forwards(&self, appid: &str, message: &Message) -> bool {
        self.routes_for(appid, message).next().is_some()
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
        let held_until = |target: &Target| now + target.lease;
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
            let Some(_slot) = target.slots.acquire().await else {
                continue;
            };
            // Claimed at the time it is held until: no one else takes it
            // before. (A push handled again finds its delivery as it was.)
            let at = held_until(target);
            let claimed = self
                .store
                .claim_deliveries(target.url.clone(), Some(push.id), at, at + target.lease, 1)
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

    /// Deliver due deliveries until `stop` gives a deadline, then let
    /// in-flight ones run until it (the rest come back when their lease
    /// runs out).
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: Stop) {
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
            if shutdown.borrow().is_some() {
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
            let deadline = shutdown.borrow().unwrap_or_else(tokio::time::Instant::now);
            if !target.slots.drain(deadline).await {
                tracing::warn!(target = %target.label, "deliveries still running at shutdown; they are retried when their lease runs out");
            }
        }
    }

    /// Claim as many due deliveries to `target` as it has free slots, and
    /// start them.
    async fn claim(self: &Arc<Self>, target: &Arc<Target>) {
        let now = now_ms();
        let lease_until = now + target.lease;
        let filled = target
            .slots
            .fill(
                None,
                |limit| {
                    self.store
                        .claim_deliveries(target.url.clone(), None, now, lease_until, limit)
                },
                |(delivery, push), permit| {
                    let this = self.clone();
                    let target = target.clone();
                    tokio::spawn(async move {
                        this.attempt(&target, delivery, push, None).await;
                        drop(permit);
                        if target.backlog.load(Ordering::Relaxed) {
                            this.notify.notify_one();
                        }
                    });
                },
            )
            .await;
        match filled {
            // No slot free, or all filled: claim again as soon as one frees up.
            Ok(filled) => target
                .backlog
                .store(filled != Filled::Partly, Ordering::Relaxed),
            Err(e) => {
                tracing::error!(target = %target.label, error = %e, "cannot claim deliveries");
            }
        }
    }
}

/// Check target `j` of app `i` of `config`: its own keys, and that a target
/// with `passive_reply` has workers to hold the answer for.
fn check_target(config: &Config, i: usize, j: usize) -> Result<SigningKey, ConfigError> {
    let app = &config.apps[i];
    let target = &app.forward[j];
    let key = target.check(i, j)?;
    if target.passive_reply && config.inbox.workers == 0 {
        return Err(ConfigError::Invalid {
            key: "inbox.workers".into(),
            reason: format!("is 0, so no push is handled while its answer is held, and the passive replies of app {} (a target with passive_reply) would never reach a user; give this process workers, or turn passive_reply off", app.appid),
        });
    }
    Ok(key)
}

/// Whether `message` may be answered with `transfer_customer_service`: a
/// user's message, or a Mini Program user entering the chat.
fn can_transfer(message: &Message) -> bool {
    match message.msg_type() {
        "event" => message.event() == Some("user_enter_tempsession"),
        "" => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{self, Limits};

    fn message(json: &str) -> Message {
        let fields = wire::parse_json(json.as_bytes(), &Limits::default()).unwrap();
        Message::from_fields(fields).unwrap()
    }

    fn wants(c: &ForwardConfig, m: &Message) -> bool {
        wanted(c.kinds().as_deref(), m)
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
        assert!([&text, &image, &enter, &novel].iter().all(|m| wants(&c, m)));
        assert_eq!(c.retry_schedule, crate::config::default_schedule());
        c.only = Some(vec!["text".into(), "event".into()]);
        assert!(wants(&c, &text) && wants(&c, &enter) && wants(&c, &novel) && !wants(&c, &image));
        c.only = Some(vec!["event:user_enter_tempsession".into()]);
        assert!(wants(&c, &enter) && !wants(&c, &novel) && !wants(&c, &text));
        c.only = Some(vec!["event:brand_new_event".into()]);
        assert!(wants(&c, &novel) && !wants(&c, &enter));
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
