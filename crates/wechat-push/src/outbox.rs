//! The outbox: answers are recorded before they are sent and marked sent or
//! failed after, so that a crash between handling and sending neither loses
//! nor silently repeats an answer.
//!
//! A push handled again (a retry, or after a crash) finds its answers
//! already recorded and sends only those still pending. An answer on its way
//! is recorded `uncertain` first: a process that stops or dies mid-send
//! leaves it so, and it is sent again only by hand (`inbox retry`), never
//! twice by itself.

use std::sync::Arc;

use crate::api::{ApiError, CsMessage, WechatApi};
use crate::clock::now_ms;
use crate::handler::HandlerError;
use crate::protocol::message::OpenId;
use crate::store::{AnswerId, AnswerLog, AnswerRecord, AnswerStatus, PushId};

/// The source of answers given by the app's handler (rules or a router).
pub const HANDLER_SOURCE: &str = "handler";

/// The reason an answer carries while it is on its way (status
/// `uncertain`): if it stays so, the process stopped mid-send.
pub const SENDING: &str =
    "on its way to WeChat (if it stays so, the process stopped while sending): WeChat may have it";

/// The source of passive replies, recorded with the push's other answers:
/// sent when one rode on the push's HTTP answer, failed (missed) when it
/// was not ready in time.
pub const PASSIVE_SOURCE: &str = "passive";

/// Records and sends the answers of pushes.
#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn AnswerLog>,
    api: WechatApi,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox recording in `store` and sending through `api`.
    pub fn new(store: Arc<dyn AnswerLog>, api: WechatApi) -> Self {
        Outbox { store, api }
    }

    /// The API client it sends through.
    pub fn api(&self) -> &WechatApi {
        &self.api
    }

    /// Answer push `push` of `appid` with `messages` to `touser`, on behalf
    /// of `source` (`handler`, or `forward:<url>`): each source's answers are
    /// recorded once and sent once, whatever the others do.
    ///
    /// Final refusals (window closed, quota used, other errcodes) are
    /// recorded on the answer and not retried; the push is done.
    ///
    /// # Errors
    /// A retryable [`HandlerError`] when the store or WeChat is unavailable:
    /// the push is retried later and sends what is still pending.
    pub async fn deliver(
        &self,
        appid: &str,
        push: PushId,
        source: &str,
        touser: &OpenId,
        messages: &[CsMessage],
    ) -> Result<(), HandlerError> {
        let bodies = messages
            .iter()
            .map(|m| (m.msg_type().to_owned(), m.body(touser).to_string()))
            .collect();
        let records = self
            .store
            .record_answers(push, source.to_owned(), bodies, now_ms())
            .await
            .map_err(|e| HandlerError::caused_by("cannot record the answer", e))?;
        for record in records.iter().filter(|r| r.status == AnswerStatus::Pending) {
            self.send(appid, record, AnswerStatus::Pending).await?;
        }
        Ok(())
    }

    /// Send an uncertain answer again, by hand (`inbox retry`): WeChat may
    /// have delivered it already, which only the person asking can judge.
    /// Returns what became of it.
    ///
    /// # Errors
    /// A retryable [`HandlerError`] when the store or WeChat is unavailable
    /// (the answer stays uncertain).
    pub async fn resend(
        &self,
        appid: &str,
        record: &AnswerRecord,
    ) -> Result<AnswerStatus, HandlerError> {
        self.send(appid, record, AnswerStatus::Uncertain).await
    }

    /// Send one recorded answer, if it is still `from` (no other worker
    /// has taken it), and record what became of it.
    async fn send(
        &self,
        appid: &str,
        record: &AnswerRecord,
        from: AnswerStatus,
    ) -> Result<AnswerStatus, HandlerError> {
        let body: serde_json::Value = serde_json::from_str(&record.body)
            .map_err(|e| HandlerError::caused_by("recorded answer is not JSON", e).permanent())?;
        // Uncertain while on its way: a process stopped or killed mid-send
        // leaves it so, not pending, and it is not sent again by itself.
        let taken = self
            .store
            .take_answer(record.id, from, SENDING.into(), now_ms())
            .await
            .map_err(|e| HandlerError::caused_by("cannot record the answer's outcome", e))?;
        if !taken {
            // Another worker (this push's lease ran out and it was taken
            // over) is sending it, or has: not a second time.
            tracing::info!(%appid, answer = %record.id, "answer taken by another worker; not sent again");
            return Ok(AnswerStatus::Uncertain);
        }
        match self.api.send_body(appid, &body).await {
            Ok(()) => {
                self.mark(record.id, AnswerStatus::Sent, None).await?;
                Ok(AnswerStatus::Sent)
            }
            // Sent, with no word back: sending it again could answer the
            // user twice, so it is recorded as it is and left to a person.
            Err(e @ ApiError::Uncertain(_)) => {
                tracing::warn!(%appid, error = %crate::display_chain(&e), "answer's fate unknown; recorded as uncertain, not resent (inbox retry resends it)");
                self.mark(
                    record.id,
                    AnswerStatus::Uncertain,
                    Some(crate::display_chain(&e)),
                )
                .await?;
                Ok(AnswerStatus::Uncertain)
            }
            Err(e) if e.is_retryable() => {
                // Never reached WeChat: pending again, sent when the push is retried.
                self.mark(record.id, AnswerStatus::Pending, None).await?;
                Err(HandlerError::caused_by("answer not sent yet", e))
            }
            Err(e) => {
                tracing::warn!(%appid, errcode = e.errcode(), error = %e, "answer refused by WeChat; recorded, not retried");
                if e.errcode() == Some(40007) {
                    // A cached upload WeChat no longer knows: upload it again next time.
                    if let Some(media_id) = body[record.msgtype.as_str()]["media_id"].as_str() {
                        let _ = self.api.forget_media(appid, media_id).await;
                    }
                }
                self.mark(record.id, AnswerStatus::Failed, Some(e.to_string()))
                    .await?;
                Ok(AnswerStatus::Failed)
            }
        }
    }

    async fn mark(
        &self,
        id: AnswerId,
        status: AnswerStatus,
        error: Option<String>,
    ) -> Result<(), HandlerError> {
        self.store
            .mark_answer(id, status, error, now_ms())
            .await
            .map_err(|e| HandlerError::caused_by("cannot record the answer's outcome", e))
    }
}
