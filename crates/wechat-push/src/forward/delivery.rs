//! One delivery attempt: post the push to the target as a signed webhook
//! ([`super::webhook`]), read its answer (and the reply in it), and record
//! the outcome: delivered, retried on the target's schedule, or dead.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::webhook;
use super::{Forwarder, Route, Target};
use crate::clock::{now_ms, now_secs};
use crate::config::AppKind;
use crate::handler::HandlerError;
use crate::metrics;
use crate::protocol::message::{Message, UnreadableBody};
use crate::reply::{PassiveReply, ReplySpec};
use crate::store::{Delivery, DeliveryOutcome, StoredPush};

/// Why a delivery attempt failed. Its text, causes included, is the
/// delivery's `last_error` (`inbox show`).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The target did not answer within its `timeout`. Retried.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be sent or its answer read (connection
    /// refused, reset, TLS, DNS). Retried.
    #[error("cannot reach the target")]
    Unreachable(#[source] reqwest::Error),
    /// The target answered other than 2xx. Retried.
    #[error("HTTP {status}{}", if answer.is_empty() { String::new() } else { format!(": {answer}") })]
    Status {
        /// Its status.
        status: reqwest::StatusCode,
        /// The first 200 characters of its answer, trimmed.
        answer: String,
    },
    /// The target answered 2xx with a reply that could not be sent yet
    /// (WeChat busy or unreachable). The attempt is retried for the reply
    /// alone: the target is not posted to again.
    #[error("reply not sent yet")]
    ReplyNotSent(#[source] HandlerError),
    /// The push's app no longer forwards to this target (config changed).
    /// Dead at once.
    #[error("app {0} no longer forwards to this target")]
    NoRoute(String),
    /// The stored push no longer opens. Dead at once.
    #[error(transparent)]
    Unreadable(UnreadableBody),
}

/// A target's `"reply"` that is no reply; it is ignored, with this note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a reply (expected {{\"text\": \"…\"}}, image, voice, video, music, news, link, miniprogrampage, mpnews or transfer_customer_service)")]
pub struct InvalidReply(String);

impl Forwarder {
    /// One attempt of one delivery, its outcome recorded. With `passive`
    /// (the push's message and its app's kind, while its answer is still
    /// open), a `transfer_customer_service` reply is returned to ride on it.
    pub(super) async fn attempt(
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
            None => Err(DeliveryError::NoRoute(push.appid.clone())),
            Some(route) => parsed
                .map_or_else(|| Message::from_stored(push.format, &push.body), Ok)
                .map(|message| (route, message))
                .map_err(DeliveryError::Unreadable),
        };
        let (route, message) = match ready {
            Ok(ready) => ready,
            Err(error) => {
                let outcome = DeliveryOutcome::Dead {
                    error: crate::display_chain(&error),
                };
                self.finish(target, &push.appid, &delivery, outcome, Duration::ZERO)
                    .await;
                return None;
            }
        };
        // The attempt's time is the target's: its reply's sending (WeChat's
        // API) is not counted.
        let posted = Instant::now();
        let reply = if delivery.responded {
            // The target has answered already: only its reply is left to send.
            Ok(None)
        } else {
            self.post(target, route, &push, &message).await
        };
        let took = posted.elapsed();
        // A passive reply rides on the push's answer while it is still open.
        if let (Some(kind), Ok(Some(Ok(spec)))) = (app_kind, &reply) {
            if let Some(passive) = passive_reply(spec, kind, &message) {
                let outcome = DeliveryOutcome::Delivered { note: None };
                self.finish(target, &push.appid, &delivery, outcome, took)
                    .await;
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
        self.finish(target, &push.appid, &delivery, outcome, took)
            .await;
        None
    }

    /// Post the push; the target's reply, if its 2xx answer has one.
    async fn post(
        &self,
        target: &Target,
        route: &Route,
        push: &StoredPush,
        message: &Message,
    ) -> Result<Option<Result<ReplySpec, InvalidReply>>, DeliveryError> {
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
            Err(e) if e.is_timeout() => Err(DeliveryError::Timeout(route.config.timeout)),
            // Without the URL: reqwest's message quotes it whole, with any
            // credentials in it, and this error is stored and shown.
            Err(e) => Err(DeliveryError::Unreachable(e.without_url())),
            Ok(mut response) => {
                let status = response.status();
                let answer = read_bounded(&mut response).await;
                if status.is_success() {
                    Ok(answer.ok().and_then(|a| parse_reply(&a)))
                } else {
                    let text = answer.unwrap_or_default();
                    let text = String::from_utf8_lossy(&text);
                    Err(DeliveryError::Status {
                        status,
                        answer: text.trim().chars().take(200).collect(),
                    })
                }
            }
        };
        self.metrics.observe(
            metrics::FORWARD_SECONDS,
            &[("appid", &push.appid), ("target", &target.label)],
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
        reply: Option<Result<ReplySpec, InvalidReply>>,
    ) -> Result<Option<String>, DeliveryError> {
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
            Err(e) if e.is_retryable() => Err(DeliveryError::ReplyNotSent(e)),
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
        error: DeliveryError,
        responded: bool,
    ) -> DeliveryOutcome {
        let error = crate::display_chain(&error);
        let schedule = &route.config.retry_schedule;
        match schedule.get(delivery.attempts.saturating_sub(1) as usize) {
            Some(delay) => {
                let delay = delay.mul_f64(crate::worker::jitter());
                DeliveryOutcome::Retry {
                    at: now_ms() + delay,
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
        took: Duration,
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
                tracing::warn!(%appid, target = %name, attempts, %error, retry_in_ms = *at - now_ms(), "delivery failed; will retry");
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
        match self
            .store
            .finish_delivery(
                delivery.claim(),
                outcome,
                i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
                now_ms(),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%appid, target = %name, "the delivery's lease ran out and another forwarder has claimed it since: its outcome stands, this one is not recorded")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record the delivery's outcome; its lease brings it back")
            }
        }
    }
}

/// Most bytes of a target's answer that are read (for its reply or error).
const MAX_ANSWER: usize = 64 * 1024;

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
fn parse_reply(answer: &[u8]) -> Option<Result<ReplySpec, InvalidReply>> {
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
    Some(ReplySpec::deserialize(reply).map_err(|_| InvalidReply(reply.to_string())))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
