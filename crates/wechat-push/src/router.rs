//! Rust handlers for library users: register async functions by message
//! type or event; what they return is sent through the outbox.
//!
//! ```no_run
//! use wechat_push::router::{Reply, Router};
//!
//! let router = Router::new()
//!     .on_msg_type("text", |ctx| async move {
//!         Ok(Reply::text(format!("you said: {}", ctx.text().unwrap_or_default())))
//!     })
//!     .on_event("user_enter_tempsession", |_ctx| async move { Ok(Reply::text("Welcome!")) });
//! ```
//!
//! A handler's error retries the push (with backoff) unless it is
//! [`HandlerError::permanent`]. A handler still running after
//! [`Router::typing_after`] (default one second) shows the user the typing
//! indicator until its answer goes out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{ApiError, WechatApi};
use crate::handler::{Handler, HandlerError, Push};
use crate::outbox::{Outbox, HANDLER_SOURCE};
use crate::protocol::message::{Body, KindPattern, Message};
use crate::reply::PassiveReply;
pub use crate::reply::Reply;
use crate::store::{AnswerLog, BoxFuture};

/// What a handler gets: the push, and the API for the typing indicator.
#[derive(Debug, Clone)]
pub struct Context {
    /// The push being handled: its app, row id, attempt and typed message.
    pub push: Push,
    api: Option<WechatApi>,
}

impl Context {
    /// The push's typed message, as [`Push::message`].
    pub fn message(&self) -> &Message {
        &self.push.message
    }

    /// The text of a text message.
    pub fn text(&self) -> Option<&str> {
        match &self.push.message.body {
            Body::Text(t) => Some(&t.content),
            _ => None,
        }
    }

    /// Show (`true`) or hide the typing indicator now.
    ///
    /// # Errors
    /// [`ApiError`]; `NoSecret` without an API client.
    pub async fn typing(&self, on: bool) -> Result<(), ApiError> {
        match &self.api {
            Some(api) => {
                api.typing(&self.push.appid, &self.push.message.from_user, on)
                    .await
            }
            None => Err(ApiError::NoSecret(self.push.appid.clone())),
        }
    }
}

type Route = Arc<dyn Fn(Context) -> BoxFuture<'static, Result<Reply, HandlerError>> + Send + Sync>;

/// Which pushes a route takes: those its pattern matches, or all.
fn route_matches(pattern: &Option<KindPattern>, message: &Message) -> bool {
    pattern.as_ref().is_none_or(|p| p.matches(message))
}

/// Handlers by message type and event; the first registered match runs.
#[derive(Clone)]
pub struct Router {
    routes: Vec<(Option<KindPattern>, bool, Route)>,
    api: Option<WechatApi>,
    outbox: Option<Outbox>,
    typing_after: Duration,
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|(m, p, _)| (m, p))
                    .collect::<Vec<_>>(),
            )
            .field("typing_after", &self.typing_after)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with no routes and no API client.
    pub fn new() -> Self {
        Router {
            routes: Vec::new(),
            api: None,
            outbox: None,
            typing_after: Duration::from_secs(1),
        }
    }

    /// Send answers through `api`, recording them in `store`'s outbox first.
    pub fn with_api(mut self, api: WechatApi, store: Arc<dyn AnswerLog>) -> Self {
        self.outbox = Some(Outbox::new(store, api.clone()));
        self.api = Some(api);
        self
    }

    /// Show the typing indicator when a handler runs longer than this.
    pub fn typing_after(mut self, delay: Duration) -> Self {
        self.typing_after = delay;
        self
    }

    fn route<F, Fut>(mut self, matcher: Option<KindPattern>, passive: bool, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        let route: Route = Arc::new(move |ctx| Box::pin(f(ctx)));
        self.routes.push((matcher, passive, route));
        self
    }

    /// Handle messages of this MsgType (`text`, `image`, …).
    pub fn on_msg_type<F, Fut>(self, msg_type: &str, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        self.route(Some(KindPattern::MsgType(msg_type.to_owned())), false, f)
    }

    /// Handle this event (`user_enter_tempsession`, `subscribe`, …).
    pub fn on_event<F, Fut>(self, event: &str, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        self.route(Some(KindPattern::Event(event.to_owned())), false, f)
    }

    /// Handle messages of this MsgType with a handler that may answer
    /// [`Reply::TransferCustomerService`]: the server waits for it (within
    /// the reply budget) before answering WeChat.
    pub fn on_passive<F, Fut>(self, msg_type: &str, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        self.route(Some(KindPattern::MsgType(msg_type.to_owned())), true, f)
    }

    /// Handle everything no other route takes.
    pub fn fallback<F, Fut>(self, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        self.route(None, false, f)
    }

    fn find(&self, message: &Message) -> Option<&(Option<KindPattern>, bool, Route)> {
        self.routes
            .iter()
            .find(|(pattern, _, _)| route_matches(pattern, message))
    }
}

impl Handler for Router {
    async fn handle(&self, push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        let Some((_, passive, route)) = self.find(&push.message) else {
            return Ok(None);
        };
        let ctx = Context {
            push: push.clone(),
            api: self.api.clone(),
        };
        let running = route(ctx.clone());
        tokio::pin!(running);
        let reply = tokio::select! {
            reply = &mut running => reply?,
            _ = tokio::time::sleep(self.typing_after), if self.api.is_some() => {
                if let Err(e) = ctx.typing(true).await {
                    tracing::debug!(error = %e, "cannot show the typing indicator");
                }
                running.await?
            }
        };
        match reply {
            Reply::Nothing => Ok(None),
            Reply::TransferCustomerService if *passive => {
                Ok(Some(PassiveReply::transfer(push.app_kind)))
            }
            Reply::TransferCustomerService => Err(HandlerError::new(
                "a handler answered TransferCustomerService from a route not registered with on_passive",
            )
            .permanent()),
            Reply::Send(messages) => {
                let outbox = self.outbox.as_ref().ok_or_else(|| {
                    HandlerError::new("a handler answered through the API, but the router has none (Router::with_api)")
                        .permanent()
                })?;
                outbox.deliver(&push.appid, push.id, HANDLER_SOURCE, &push.message.from_user, &messages).await?;
                Ok(None)
            }
        }
    }

    fn may_reply_passively(&self, _appid: &str, message: &Message) -> bool {
        self.find(message).is_some_and(|(_, passive, _)| *passive)
    }

    fn handles(&self, _appid: &str, message: &Message) -> bool {
        self.find(message).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{parse_json, Limits};

    fn message(json: &str) -> Message {
        Message::from_fields(parse_json(json.as_bytes(), &Limits::default()).unwrap()).unwrap()
    }

    #[test]
    fn routes_match_by_type_event_and_fallback() {
        let router = Router::new()
            .on_msg_type("text", |_| async { Ok(Reply::Nothing) })
            .on_event("subscribe", |_| async { Ok(Reply::Nothing) })
            .on_passive("image", |_| async { Ok(Reply::TransferCustomerService) });
        let text = message(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"text","Content":"x","MsgId":1}"#,
        );
        let sub = message(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"event","Event":"subscribe"}"#,
        );
        let image = message(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"image","PicUrl":"u","MediaId":"m","MsgId":2}"#,
        );
        let other = message(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"voice","MediaId":"m","Format":"amr","MsgId":3}"#,
        );
        assert_eq!(
            router.find(&text).map(|r| r.0.clone()),
            Some(Some(KindPattern::MsgType("text".into())))
        );
        assert_eq!(
            router.find(&sub).map(|r| r.0.clone()),
            Some(Some(KindPattern::Event("subscribe".into())))
        );
        assert!(router.find(&other).is_none());
        assert!(router.may_reply_passively("wx", &image));
        assert!(!router.may_reply_passively("wx", &text));
        // What no route takes is stored done, not run.
        assert!(router.handles("wx", &text) && router.handles("wx", &image));
        assert!(!router.handles("wx", &other));
        let router = router.fallback(|_| async { Ok(Reply::Nothing) });
        assert_eq!(router.find(&other).map(|r| r.0.clone()), Some(None));
        assert!(router.handles("wx", &other));
    }
}
