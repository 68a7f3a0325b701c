//! Handlers: what happens to a push once it is stored and acknowledged.
//!
//! [`Handler`] is the seam between the inbox and the application. The worker
//! pool calls it for each stored push it takes (every one but those
//! [`Handler::handles`] turns down), retrying with backoff when it fails. A
//! handler may return a passive reply; it only reaches the user when it is
//! ready within the reply budget of the push's HTTP answer, which the server
//! waits for only when [`Handler::may_reply_passively`] says so.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::protocol::message::Message;
use crate::protocol::AppKind;
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
    /// The push, typed: as parsed on arrival, or rebuilt from the stored body with
    /// [`Message::from_stored`].
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
///
/// Implement it with plain `async fn`s:
///
/// ```
/// use wechat_push::{Handler, HandlerError, PassiveReply, Push};
///
/// struct Log;
///
/// impl Handler for Log {
///     async fn handle(&self, push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
///         println!("{} from {}", push.message.kind(), push.message.from_user);
///         Ok(None)
///     }
/// }
/// ```
///
/// The futures must be `Send`: the worker pool runs them on any thread.
pub trait Handler: Send + Sync + 'static {
    /// Handle one push. `Ok(Some(reply))` is a passive reply.
    fn handle(
        &self,
        push: &Push,
    ) -> impl Future<Output = Result<Option<PassiveReply>, HandlerError>> + Send;

    /// Whether handling `message` may produce a passive reply, so that the
    /// server should wait (within the reply budget) before answering. The
    /// default, `false`, answers as soon as the push is stored.
    fn may_reply_passively(&self, _appid: &str, _message: &Message) -> bool {
        false
    }

    /// Whether handling `message` may do anything: `false` promises that
    /// [`Handler::handle`] would return `Ok(None)` at once and do nothing
    /// else, so the push is stored as handled (`done`, no attempt) and
    /// not run, unless [`Handler::may_reply_passively`] says it may reply.
    /// Asked when the push arrives, of the configuration in force then: a
    /// push turned down is not handled again after a reload. With
    /// `inbox.workers = 0` nothing is asked and every push is stored
    /// pending. The default, `true`, runs every push.
    fn handles(&self, _appid: &str, _message: &Message) -> bool {
        true
    }

    /// The passive `reply` this handler gave `push` could not ride on the
    /// push's answer: it was not ready within the reply budget, or the push
    /// was handled when no answer was held open for it (a retry). Answer
    /// some other way, or not; the returned sentence says which, and is
    /// recorded on the reply. An error is retried like a failed handling.
    /// The default sends nothing.
    fn reply_missed(
        &self,
        _push: &Push,
        _reply: &PassiveReply,
    ) -> impl Future<Output = Result<String, HandlerError>> + Send {
        async { Ok("not sent".to_owned()) }
    }
}

/// A shared handler is a handler.
impl<H: Handler> Handler for Arc<H> {
    fn handle(
        &self,
        push: &Push,
    ) -> impl Future<Output = Result<Option<PassiveReply>, HandlerError>> + Send {
        H::handle(self, push)
    }

    fn may_reply_passively(&self, appid: &str, message: &Message) -> bool {
        H::may_reply_passively(self, appid, message)
    }

    fn handles(&self, appid: &str, message: &Message) -> bool {
        H::handles(self, appid, message)
    }

    fn reply_missed(
        &self,
        push: &Push,
        reply: &PassiveReply,
    ) -> impl Future<Output = Result<String, HandlerError>> + Send {
        H::reply_missed(self, push, reply)
    }
}

/// [`Handler`] with its futures boxed, so that the worker pool can hold any
/// handler behind one pointer ([`SharedHandler`]). Implemented for every
/// `Handler`; handlers' futures are boxed here and nowhere else.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        push: &'a Push,
    ) -> BoxFuture<'a, Result<Option<PassiveReply>, HandlerError>>;
    fn may_reply_passively(&self, appid: &str, message: &Message) -> bool;
    fn handles(&self, appid: &str, message: &Message) -> bool;
    fn reply_missed<'a>(
        &'a self,
        push: &'a Push,
        reply: &'a PassiveReply,
    ) -> BoxFuture<'a, Result<String, HandlerError>>;
}

impl<H: Handler> ErasedHandler for H {
    fn handle<'a>(
        &'a self,
        push: &'a Push,
    ) -> BoxFuture<'a, Result<Option<PassiveReply>, HandlerError>> {
        Box::pin(Handler::handle(self, push))
    }

    fn may_reply_passively(&self, appid: &str, message: &Message) -> bool {
        Handler::may_reply_passively(self, appid, message)
    }

    fn handles(&self, appid: &str, message: &Message) -> bool {
        Handler::handles(self, appid, message)
    }

    fn reply_missed<'a>(
        &'a self,
        push: &'a Push,
        reply: &'a PassiveReply,
    ) -> BoxFuture<'a, Result<String, HandlerError>> {
        Box::pin(Handler::reply_missed(self, push, reply))
    }
}

/// Any handler, type-erased, as the worker pool holds it.
pub(crate) type SharedHandler = Arc<dyn ErasedHandler>;

/// Logs each push and does nothing else: the handler when none is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogHandler;

impl Handler for LogHandler {
    async fn handle(&self, push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        // Debug: at info a line per push costs more than the push itself.
        tracing::debug!(
            appid = %push.appid,
            kind = %push.message.kind(),
            from = %push.message.from_user,
            "push handled (no handler configured: logged only)"
        );
        Ok(None)
    }
}
