//! Auto-reply rules from the config: the first rule that matches a push
//! answers it.
//!
//! ```toml
//! [[apps.rules]]
//! keyword = "hello"                 # text content contains it (case-insensitive)
//! reply = { text = "Hi! How can we help?" }
//!
//! [[apps.rules]]
//! regex = "^订单\\s*(\\d+)$"        # captures usable as {1}, {2} in the reply
//! reply = { text = "Looking up order {1}" }
//!
//! [[apps.rules]]                    # no condition: the default, last
//! reply = { transfer_customer_service = true }
//! ```
//!
//! Every condition of a rule must hold (`keyword`, `regex`, `event`,
//! `msg_type`); a rule without any matches every push and must come last.

use std::collections::HashMap;

use regex::Regex;
use serde::Deserialize;

use crate::api::CsMessage;
use crate::config::{AppKind, Config, ConfigError};
use crate::handler::{Handler, HandlerError, Push};
use crate::message::{Body, Message};
use crate::outbox::{Outbox, HANDLER_SOURCE};
use crate::reply::{MiniProgramReply, OfficialAccountReply, PassiveReply};
use crate::store::BoxFuture;

/// One rule as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Text content contains this, ignoring case.
    #[serde(default)]
    pub keyword: Option<String>,
    /// Text content matches this regex.
    #[serde(default)]
    pub regex: Option<String>,
    /// The event is this one (`user_enter_tempsession`, `subscribe`, …).
    #[serde(default)]
    pub event: Option<String>,
    /// The MsgType is this one (`text`, `image`, …).
    #[serde(default)]
    pub msg_type: Option<String>,
    /// The answer.
    pub reply: ReplyConfig,
}

/// A rule's answer: `{ transfer_customer_service = true }`, or a
/// customer-service message as [`CsMessage`] reads it (`{ text = "…" }`,
/// `{ image = "MEDIA_ID" }`, `{ link = { … } }`, `{ miniprogrampage = { … } }`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ReplyConfig {
    /// Hand the conversation to human customer service (a passive reply).
    Transfer {
        /// Must be `true`.
        transfer_customer_service: bool,
    },
    /// A message through the customer-service API.
    Send(CsMessage),
}

/// What a matching rule says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this through the customer-service API.
    Send(CsMessage),
    /// Answer the push itself with `transfer_customer_service`.
    Transfer,
}

/// One checked rule.
#[derive(Debug, Clone)]
struct Rule {
    keyword: Option<String>,
    regex: Option<Regex>,
    event: Option<String>,
    msg_type: Option<String>,
    reply: ReplyConfig,
}

/// An app's rules, checked, in order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Check the rules of app number `app` (for error messages).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the rule: a bad regex, a default rule
    /// before others, a transfer that could answer an event WeChat does not
    /// allow it for, or a reply of `TransferCustomerService(false)`.
    pub fn new(app: usize, configs: &[RuleConfig]) -> Result<Rules, ConfigError> {
        let mut rules = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let key = |name: &str| format!("apps[{app}].rules[{i}].{name}");
            let regex = c
                .regex
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| ConfigError::Invalid {
                    key: key("regex"),
                    reason: e.to_string(),
                })?;
            let unconditional = c.keyword.is_none()
                && c.regex.is_none()
                && c.event.is_none()
                && c.msg_type.is_none();
            if unconditional && i + 1 < configs.len() {
                return Err(ConfigError::Invalid {
                    key: format!("apps[{app}].rules[{i}]"),
                    reason: "has no condition, so it matches every push and the rules after it never apply; put it last".into(),
                });
            }
            match &c.reply {
                ReplyConfig::Transfer {
                    transfer_customer_service: false,
                } => {
                    return Err(ConfigError::Invalid {
                        key: key("reply"),
                        reason:
                            "transfer_customer_service = false answers nothing; remove the rule"
                                .into(),
                    })
                }
                ReplyConfig::Transfer {
                    transfer_customer_service: true,
                } => {
                    // A passive reply only a user's message or session entry can take.
                    let messages_only = c.keyword.is_some()
                        || c.regex.is_some()
                        || c.msg_type.as_deref().is_some_and(|t| t != "event");
                    let session = c.event.as_deref() == Some("user_enter_tempsession");
                    if !(messages_only || session) {
                        return Err(ConfigError::Invalid {
                            key: key("reply"),
                            reason: "transfer_customer_service answers only a user's message or user_enter_tempsession; add keyword, regex, msg_type or event = \"user_enter_tempsession\"".into(),
                        });
                    }
                }
                _ => {}
            }
            rules.push(Rule {
                keyword: c.keyword.as_ref().map(|k| k.to_lowercase()),
                regex,
                event: c.event.clone(),
                msg_type: c.msg_type.clone(),
                reply: c.reply.clone(),
            });
        }
        Ok(Rules { rules })
    }

    /// Whether any rule answers through the customer-service API (then the
    /// app needs a secret).
    pub fn uses_api(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.reply, ReplyConfig::Send(_)))
    }

    /// The answer of the first rule that matches `message`, if any.
    pub fn answer(&self, message: &Message) -> Option<Answer> {
        let text = match &message.body {
            Body::Text(t) => Some(t.content.as_str()),
            _ => None,
        };
        let fields = message.fields();
        let msg_type = fields.get("MsgType").and_then(|v| v.as_str());
        let event = fields.get("Event").and_then(|v| v.as_str());
        self.rules.iter().find_map(|rule| {
            if rule
                .msg_type
                .as_deref()
                .is_some_and(|t| Some(t) != msg_type)
            {
                return None;
            }
            if rule.event.as_deref().is_some_and(|e| Some(e) != event) {
                return None;
            }
            if let Some(k) = &rule.keyword {
                if !text?.to_lowercase().contains(k.as_str()) {
                    return None;
                }
            }
            let captures = match &rule.regex {
                Some(re) => Some(re.captures(text?)?),
                None => None,
            };
            let fill = |template: &str| match &captures {
                None => template.to_owned(),
                Some(caps) => {
                    let mut out = template.to_owned();
                    for n in 0..caps.len() {
                        let value = caps.get(n).map_or("", |m| m.as_str());
                        out = out.replace(&format!("{{{n}}}"), value);
                    }
                    out
                }
            };
            Some(match &rule.reply {
                ReplyConfig::Transfer { .. } => Answer::Transfer,
                ReplyConfig::Send(message) => Answer::Send(fill_message(message, &fill)),
            })
        })
    }
}

/// `message` with `{n}` replaced by capture `n` in its texts.
fn fill_message(message: &CsMessage, fill: &dyn Fn(&str) -> String) -> CsMessage {
    match message {
        CsMessage::Text(t) => CsMessage::Text(fill(t)),
        CsMessage::Link {
            title,
            description,
            url,
            thumb_url,
        } => CsMessage::Link {
            title: fill(title),
            description: fill(description),
            url: fill(url),
            thumb_url: thumb_url.clone(),
        },
        CsMessage::Miniprogrampage {
            title,
            pagepath,
            thumb_media_id,
        } => CsMessage::Miniprogrampage {
            title: fill(title),
            pagepath: fill(pagepath),
            thumb_media_id: thumb_media_id.clone(),
        },
        CsMessage::News {
            title,
            description,
            url,
            picurl,
        } => CsMessage::News {
            title: fill(title),
            description: fill(description),
            url: fill(url),
            picurl: picurl.clone(),
        },
        other => other.clone(),
    }
}

/// The handler `wechat-push serve` runs: each app's rules answer its pushes,
/// through the outbox, or with a passive `transfer_customer_service`.
#[derive(Debug)]
pub struct RulesHandler {
    rules: HashMap<String, Rules>,
    outbox: Option<Outbox>,
}

impl RulesHandler {
    /// The rules of every app in `config`; `outbox` sends the answers.
    ///
    /// # Errors
    /// [`ConfigError`] for invalid rules.
    pub fn new(config: &Config, outbox: Option<Outbox>) -> Result<Self, ConfigError> {
        let mut rules = HashMap::new();
        for (i, app) in config.apps.iter().enumerate() {
            rules.insert(app.appid.clone(), Rules::new(i, &app.rules)?);
        }
        Ok(RulesHandler { rules, outbox })
    }

    fn answer(&self, appid: &str, message: &Message) -> Option<Answer> {
        self.rules.get(appid)?.answer(message)
    }
}

impl Handler for RulesHandler {
    fn handle<'a>(
        &'a self,
        push: &'a Push,
    ) -> BoxFuture<'a, Result<Option<PassiveReply>, HandlerError>> {
        Box::pin(async move {
            match self.answer(&push.appid, &push.message) {
                None => {
                    tracing::debug!(appid = %push.appid, kind = %push.message.kind(), "no rule matches");
                    Ok(None)
                }
                Some(Answer::Transfer) => Ok(Some(match push.app_kind {
                    AppKind::MiniProgram => {
                        PassiveReply::MiniProgram(MiniProgramReply::TransferCustomerService)
                    }
                    AppKind::OfficialAccount => PassiveReply::OfficialAccount(
                        OfficialAccountReply::TransferCustomerService { kf_account: None },
                    ),
                })),
                Some(Answer::Send(message)) => {
                    let outbox = self.outbox.as_ref().ok_or_else(|| {
                        HandlerError::new("a rule answers through the customer-service API, but no API client is set up")
                            .permanent()
                    })?;
                    outbox
                        .deliver(
                            &push.appid,
                            push.id,
                            HANDLER_SOURCE,
                            &push.message.from_user,
                            std::slice::from_ref(&message),
                        )
                        .await?;
                    Ok(None)
                }
            }
        })
    }

    fn may_reply_passively(&self, appid: &str, message: &Message) -> bool {
        matches!(self.answer(appid, message), Some(Answer::Transfer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{parse_json, Limits};

    fn rules(toml_text: &str) -> Result<Rules, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            rules: Vec<RuleConfig>,
        }
        let doc: Doc = toml::from_str(toml_text).unwrap();
        Rules::new(0, &doc.rules)
    }

    fn push(json: &str) -> Message {
        Message::from_fields(parse_json(json.as_bytes(), &Limits::default()).unwrap()).unwrap()
    }

    fn text(content: &str) -> Message {
        push(&format!(
            r#"{{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"text","Content":"{content}","MsgId":1}}"#
        ))
    }

    #[test]
    fn first_match_answers_with_captures() {
        let r = rules(
            r#"
[[rules]]
keyword = "HELLO"
reply = { text = "Hi! How can we help?" }
[[rules]]
regex = '^订单\s*(\d+)$'
reply = { text = "Looking up order {1} ({0})" }
[[rules]]
event = "user_enter_tempsession"
reply = { transfer_customer_service = true }
[[rules]]
msg_type = "image"
reply = { image = "MEDIA" }
[[rules]]
reply = { text = "Sorry, I did not understand." }
"#,
        )
        .unwrap();
        assert!(r.uses_api());
        assert_eq!(
            r.answer(&text("oh hello there")),
            Some(Answer::Send(CsMessage::Text("Hi! How can we help?".into())))
        );
        assert_eq!(
            r.answer(&text("订单 42")),
            Some(Answer::Send(CsMessage::Text(
                "Looking up order 42 (订单 42)".into()
            )))
        );
        let enter = push(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"event","Event":"user_enter_tempsession"}"#,
        );
        assert_eq!(r.answer(&enter), Some(Answer::Transfer));
        let image = push(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"image","PicUrl":"u","MediaId":"m","MsgId":2}"#,
        );
        assert_eq!(
            r.answer(&image),
            Some(Answer::Send(CsMessage::Image("MEDIA".into())))
        );
        assert_eq!(
            r.answer(&text("???")),
            Some(Answer::Send(CsMessage::Text(
                "Sorry, I did not understand.".into()
            )))
        );
    }

    #[test]
    fn no_rule_no_answer() {
        let r = rules("rules = []").unwrap();
        assert_eq!(r.answer(&text("hello")), None);
        assert!(!r.uses_api());
    }

    #[test]
    fn invalid_rules_are_named() {
        let e = rules("[[rules]]\nregex = '(unclosed'\nreply = { text = 'x' }")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("apps[0].rules[0].regex: "), "{e}");
        let e = rules(
            "[[rules]]\nreply = { text = 'x' }\n[[rules]]\nkeyword = 'a'\nreply = { text = 'y' }",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("apps[0].rules[0]: has no condition"), "{e}");
        let e = rules("[[rules]]\nevent = 'subscribe_msg_popup_event'\nreply = { transfer_customer_service = true }")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("apps[0].rules[0].reply: transfer_customer_service answers only"),
            "{e}"
        );
        assert!(rules(
            "[[rules]]\nkeyword = 'human'\nreply = { transfer_customer_service = true }"
        )
        .is_ok());
    }
}
