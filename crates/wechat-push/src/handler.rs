//! Handlers: what happens to a push once it is stored and acknowledged.
//!
//! [`Handler`] is the seam between the inbox and the application. The worker
//! pool calls it for each stored push, retrying with backoff when it fails. A
//! handler may return a passive reply; it only reaches the user when it is
//! ready within the reply budget of the push's HTTP answer, which the server
//! waits for only when [`Handler::may_reply_passively`] says so.

use std::fmt;

use crate::config::AppKind;
use crate::protocol::message::Message;
use crate::reply::PassiveReply;
use crate::store::{BoxFuture, PushId};

/// A stored push, handed to a handler.
#[derive(Debug, Clone)]
pub struct Push {
    /// The app it was sent to.
    pub appid: String,
    /// Mini Program or Official Account.
    pub app_kind: AppKind,
    /// Its row in the store.
    pub id: PushId,
    /// The typed message.
    pub message: Message,
    /// Which attempt this is, from 1.
    pub attempt: u32,
}

/// A handler failed. Retried with backoff unless [`HandlerError::permanent`].
#[derive(Debug)]
pub struct HandlerError {
    message: String,
    retry: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry: true,
            source: None,
        }
    }

    /// A failure worth retrying, caused by `source`.
    pub fn caused_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        HandlerError {
            message: message.into(),
            retry: true,
            source: Some(Box::new(source)),
        }
    }

    /// Make it final: the push is marked dead at once, without retries.
    pub fn permanent(mut self) -> Self {
        self.retry = false;
        self
    }

    /// Whether the push should be retried.
    pub fn is_retryable(&self) -> bool {
        self.retry
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Handles stored pushes.
pub trait Handler: Send + Sync + 'static {
    /// Handle one push. `Ok(Some(reply))` is a passive reply.
    fn handle<'a>(
        &'a self,
        push: &'a Push,
    ) -> BoxFuture<'a, Result<Option<PassiveReply>, HandlerError>>;

    /// Whether handling `message` may produce a passive reply, so that the
    /// server should wait (within the reply budget) before answering. The
    /// default, `false`, answers as soon as the push is stored.
    fn may_reply_passively(&self, _appid: &str, _message: &Message) -> bool {
        false
    }

    /// The passive `reply` this handler gave `push` could not ride on the
    /// push's answer: it was not ready within the reply budget, or the push
    /// was handled when no answer was held open for it (a retry). Answer
    /// some other way, or not; the returned sentence says which, and is
    /// recorded on the reply. An error is retried like a failed handling.
    /// The default sends nothing.
    fn reply_missed<'a>(
        &'a self,
        _push: &'a Push,
        _reply: &'a PassiveReply,
    ) -> BoxFuture<'a, Result<String, HandlerError>> {
        Box::pin(async { Ok("not sent".to_owned()) })
    }
}

/// Logs each push and does nothing else: the handler when none is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogHandler;

impl Handler for LogHandler {
    fn handle<'a>(
        &'a self,
        push: &'a Push,
    ) -> BoxFuture<'a, Result<Option<PassiveReply>, HandlerError>> {
        Box::pin(async move {
            // Debug: at info a line per push costs more than the push itself.
            tracing::debug!(
                appid = %push.appid,
                kind = %push.message.kind(),
                from = %push.message.from_user,
                "push handled (no handler configured: logged only)"
            );
            Ok(None)
        })
    }
}
