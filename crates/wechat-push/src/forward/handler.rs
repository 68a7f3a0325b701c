//! The handler wrapper: forwarding rides on handling, so that a push's
//! deliveries are recorded whatever the app's own handler does.

use std::sync::Arc;

use super::Forwarder;
use crate::handler::{Handler, HandlerError, Push, SharedHandler};
use crate::protocol::message::Message;
use crate::reply::PassiveReply;

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

    fn handles(&self, appid: &str, message: &Message) -> bool {
        self.inner.handles(appid, message) || self.forwarder.forwards(appid, message)
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
