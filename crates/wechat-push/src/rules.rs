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
//! via = "auto"                      # passive | api | auto
//!
//! [[apps.rules]]                    # no condition: the default, last
//! reply = { transfer_customer_service = true }
//! ```
//!
//! Every condition of a rule must hold (`keyword`, `regex`, `event`,
//! `msg_type`); a rule without any matches every push and must come last.
//!
//! How the answer travels (`via`): an Official Account answers in the
//! push's HTTP answer (a passive reply) by default, the only way open to
//! unverified subscription accounts; `via = "api"` uses the
//! customer-service API instead, `via = "auto"` the API when the passive
//! reply is not ready within `server.reply_budget`. A Mini Program accepts
//! only `transfer_customer_service` passively: its other answers go
//! through the API.

use std::collections::HashMap;

use regex::{Captures, Regex};

use crate::api::{CsMessage, WechatApi};
pub use crate::config::RuleConfig;
use crate::config::{AppKind, Config, ConfigError};
use crate::handler::{Handler, HandlerError, Push};
use crate::outbox::{Outbox, HANDLER_SOURCE};
use crate::protocol::message::{Body, KindPattern, Message};
use crate::reply::{PassiveReply, ReplySpec, Via, MAX_NEWS_ARTICLES};

/// What a matching rule says to do: its reply (captures filled in) and how
/// it travels, `via` decided for the app's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The reply.
    pub reply: ReplySpec,
    /// How it travels.
    pub via: Via,
    /// Most news articles it may carry passively (1 for a user's message).
    pub max_articles: usize,
}

/// One checked rule.
#[derive(Debug, Clone)]
struct Rule {
    keyword: Option<String>,
    regex: Option<Regex>,
    event: Option<KindPattern>,
    msg_type: Option<KindPattern>,
    reply: ReplySpec,
    via: Via,
}

/// An app's rules, checked, in order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// The message types a user sends (a passive news reply to them holds one article).
const USER_MESSAGES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "shortvideo",
    "location",
    "link",
];

impl Rules {
    /// Check the rules of app number `app` (for error messages), of `kind`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the rule: a bad regex, a default rule
    /// before others, a transfer that could answer an event WeChat does not
    /// allow it for, `transfer_customer_service = false`, a passive reply a
    /// Mini Program does not accept, a type the chosen `via` cannot carry,
    /// news with no article or too many, a media file that cannot be read.
    pub fn new(app: usize, kind: AppKind, configs: &[RuleConfig]) -> Result<Rules, ConfigError> {
        let mut rules = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let key = |name: &str| format!("apps[{app}].rules[{i}].{name}");
            let invalid = |name: &str, reason: String| ConfigError::Invalid {
                key: key(name),
                reason,
            };
            let regex = c
                .regex
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| invalid("regex", e.to_string()))?;
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
            // Only a user's message can be answered by these conditions.
            let user_message = c.keyword.is_some()
                || c.regex.is_some()
                || c.msg_type.as_deref().is_some_and(|t| t != "event");
            let via = match (&c.reply, kind, c.via) {
                (ReplySpec::TransferCustomerService(false), ..) => {
                    return Err(invalid(
                        "reply",
                        "transfer_customer_service = false answers nothing; remove the rule".into(),
                    ))
                }
                (ReplySpec::TransferCustomerService(true), _, Some(Via::Api)) => {
                    return Err(invalid(
                        "via",
                        "transfer_customer_service is a passive reply: the customer-service API cannot send it".into(),
                    ))
                }
                (ReplySpec::TransferCustomerService(true), ..) => {
                    let session = c.event.as_deref() == Some("user_enter_tempsession");
                    if !(user_message || session) {
                        return Err(invalid(
                            "reply",
                            "transfer_customer_service answers only a user's message or user_enter_tempsession; add keyword, regex, msg_type or event = \"user_enter_tempsession\"".into(),
                        ));
                    }
                    Via::Passive
                }
                (reply, AppKind::MiniProgram, Some(Via::Passive | Via::Auto)) => {
                    return Err(invalid(
                        "via",
                        format!("a Mini Program accepts no passive reply but transfer_customer_service; its {} reply goes through the customer-service API (via = \"api\")", reply.msg_type()),
                    ))
                }
                (reply, AppKind::MiniProgram, _) => {
                    // The customer-service API of a Mini Program sends these only.
                    if !matches!(reply.msg_type(), "text" | "image" | "link" | "miniprogrampage") {
                        return Err(invalid(
                            "reply",
                            format!("a Mini Program's customer-service API sends text, image, link and miniprogrampage, not {}", reply.msg_type()),
                        ));
                    }
                    Via::Api
                }
                (reply, AppKind::OfficialAccount, Some(Via::Passive | Via::Auto))
                    if !reply.is_passive_type() =>
                {
                    return Err(invalid(
                        "via",
                        format!("{} is not a passive reply (passive: text, image, voice, video, music, news, transfer_customer_service); use via = \"api\"", reply.msg_type()),
                    ))
                }
                (reply, AppKind::OfficialAccount, None) if !reply.is_passive_type() => Via::Api,
                (_, AppKind::OfficialAccount, via) => via.unwrap_or(Via::Passive),
            };
            c.reply.check().map_err(|e| invalid("reply", e))?;
            if let ReplySpec::News(news) = &c.reply {
                let n = news.articles().len();
                // The API sends one article; so does a passive reply to a
                // user's message since 2018-10-12 (errcode 45008 beyond).
                let max = if via == Via::Api || user_message {
                    1
                } else {
                    MAX_NEWS_ARTICLES
                };
                if n == 0 || n > max {
                    return Err(invalid(
                        "reply",
                        format!("news holds 1 to {max} article(s) here, got {n} (WeChat allows 8 only in a passive reply to an event, and 1 otherwise)"),
                    ));
                }
            }
            if let Some((_, file)) = c.reply.file() {
                match std::fs::metadata(file) {
                    Ok(meta) if meta.is_file() => {}
                    Ok(_) => {
                        return Err(invalid(
                            "reply",
                            format!("media file {} is not a file", file.display()),
                        ))
                    }
                    Err(e) => {
                        return Err(invalid(
                            "reply",
                            format!("cannot read media file {}: {e}", file.display()),
                        ))
                    }
                }
            }
            rules.push(Rule {
                keyword: c.keyword.as_ref().map(|k| k.to_lowercase()),
                regex,
                event: c.event.clone().map(KindPattern::Event),
                msg_type: c.msg_type.clone().map(KindPattern::MsgType),
                reply: c.reply.clone(),
                via,
            });
        }
        Ok(Rules { rules })
    }

    /// Whether any rule answers passively (then pushes must be handled while
    /// their answer is held).
    pub fn passive(&self) -> bool {
        self.rules.iter().any(|r| r.via != Via::Api)
    }

    /// Whether any rule answers through the customer-service API (then the
    /// app needs a secret).
    pub fn uses_api(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.via != Via::Passive || r.reply.file().is_some())
    }

    /// The first rule that matches `message`, with its regex's captures.
    fn first_match<'m>(&self, message: &'m Message) -> Option<(&Rule, Option<Captures<'m>>)> {
        let text = match &message.body {
            Body::Text(t) => Some(t.content.as_str()),
            _ => None,
        };
        // Lowercased once a message, not once a keyword rule: this runs on
        // the request path (`handles`, `may_reply_passively`).
        let mut lowered: Option<String> = None;
        self.rules.iter().find_map(|rule| {
            let kinds = [&rule.msg_type, &rule.event];
            if !kinds.into_iter().flatten().all(|k| k.matches(message)) {
                return None;
            }
            if let Some(k) = &rule.keyword {
                let text = text?;
                if !lowered
                    .get_or_insert_with(|| text.to_lowercase())
                    .contains(k.as_str())
                {
                    return None;
                }
            }
            let captures = match &rule.regex {
                Some(re) => Some(re.captures(text?)?),
                None => None,
            };
            Some((rule, captures))
        })
    }

    /// How the first rule that matches `message` answers, if any rule
    /// does: [`Rules::answer`]'s `via`, without filling in its reply.
    pub fn via(&self, message: &Message) -> Option<Via> {
        self.first_match(message).map(|(rule, _)| rule.via)
    }

    /// The answer of the first rule that matches `message`, if any.
    pub fn answer(&self, message: &Message) -> Option<Matched> {
        let (rule, captures) = self.first_match(message)?;
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
        let max_articles = if USER_MESSAGES.contains(&message.msg_type()) {
            1
        } else {
            MAX_NEWS_ARTICLES
        };
        Some(Matched {
            reply: rule.reply.filled(&fill),
            via: rule.via,
            max_articles,
        })
    }
}

/// The handler `wechat-push serve` runs: each app's rules answer its pushes,
/// passively or through the outbox.
#[derive(Debug)]
pub struct RulesHandler {
    rules: HashMap<String, Rules>,
    outbox: Option<Outbox>,
}

impl RulesHandler {
    /// The rules of every app in `config`; `outbox` sends the answers that
    /// go through the customer-service API (and uploads media files).
    ///
    /// # Errors
    /// [`ConfigError`] for invalid rules (see [`Rules::new`]), rules that
    /// answer passively in a process without workers, or through the API
    /// for an app without `secret`.
    pub fn new(config: &Config, outbox: Option<Outbox>) -> Result<Self, ConfigError> {
        let mut all = HashMap::new();
        for (i, app) in config.apps.iter().enumerate() {
            let rules = Rules::new(i, app.kind, &app.rules)?;
            if rules.passive() && config.inbox.workers == 0 {
                return Err(ConfigError::Invalid {
                    key: "inbox.workers".into(),
                    reason: format!("is 0, so no push is handled while its answer is held, and the passive replies of app {}'s rules would never reach a user; give this process workers, or answer through the customer-service API (via = \"api\")", app.appid),
                });
            }
            if rules.uses_api() && app.secret.is_none() {
                return Err(ConfigError::Invalid {
                    key: format!("apps[{i}].secret"),
                    reason: "required: rules answer through the customer-service API, which needs the AppSecret".into(),
                });
            }
            all.insert(app.appid.clone(), rules);
        }
        Ok(RulesHandler { rules: all, outbox })
    }

    /// Check every app's rules as [`RulesHandler::new`] does, building
    /// nothing: the CLI runs it when it loads the config, before anything is
    /// opened.
    ///
    /// # Errors
    /// As [`RulesHandler::new`].
    pub fn check(config: &Config) -> Result<(), ConfigError> {
        RulesHandler::new(config, None).map(drop)
    }

    fn answer(&self, appid: &str, message: &Message) -> Option<Matched> {
        self.rules.get(appid)?.answer(message)
    }

    fn via(&self, appid: &str, message: &Message) -> Option<Via> {
        self.rules.get(appid)?.via(message)
    }

    fn outbox(&self) -> Result<&Outbox, HandlerError> {
        self.outbox.as_ref().ok_or_else(|| {
            HandlerError::new(
                "a rule answers through the customer-service API, but no API client is set up",
            )
            .permanent()
        })
    }

    /// Matched `push` with `message` through the outbox.
    async fn send(&self, push: &Push, message: &CsMessage) -> Result<(), HandlerError> {
        self.outbox()?
            .deliver(
                &push.appid,
                push.id,
                HANDLER_SOURCE,
                &push.message.from_user,
                std::slice::from_ref(message),
            )
            .await
    }

    /// The media id of the answer's file, uploaded (once) if it names one.
    async fn media_id(
        &self,
        appid: &str,
        answer: &Matched,
    ) -> Result<Option<String>, HandlerError> {
        let Some((kind, file)) = answer.reply.file() else {
            return Ok(None);
        };
        let api: &WechatApi = self.outbox()?.api();
        match api.media_id(appid, kind, file).await {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.is_retryable() => {
                Err(HandlerError::caused_by("cannot upload the media file", e))
            }
            Err(e) => Err(HandlerError::caused_by("cannot upload the media file", e).permanent()),
        }
    }
}

impl Handler for RulesHandler {
    async fn handle(&self, push: &Push) -> Result<Option<PassiveReply>, HandlerError> {
        let Some(answer) = self.answer(&push.appid, &push.message) else {
            tracing::debug!(appid = %push.appid, kind = %push.message.kind(), "no rule matches");
            return Ok(None);
        };
        let media_id = self.media_id(&push.appid, &answer).await?;
        if let ReplySpec::News(news) = &answer.reply {
            if news.articles().len() > answer.max_articles {
                tracing::warn!(
                    appid = %push.appid,
                    articles = news.articles().len(),
                    kept = answer.max_articles,
                    "news answering a user's message holds one article: the rest are left out"
                );
            }
        }
        if answer.via != Via::Api {
            let reply = match (&answer.reply, push.app_kind) {
                (ReplySpec::TransferCustomerService(_), kind) => PassiveReply::transfer(kind),
                (reply, AppKind::OfficialAccount) => reply
                    .to_passive(media_id.as_deref(), answer.max_articles)
                    .map(PassiveReply::OfficialAccount)
                    .ok_or_else(|| {
                        HandlerError::new(format!("{} cannot be a passive reply", reply.msg_type()))
                            .permanent()
                    })?,
                (reply, AppKind::MiniProgram) => {
                    return Err(HandlerError::new(format!(
                        "a Mini Program accepts no passive {} reply",
                        reply.msg_type()
                    ))
                    .permanent())
                }
            };
            return Ok(Some(reply));
        }
        let message = answer
            .reply
            .to_cs_message(media_id.as_deref())
            .ok_or_else(|| {
                HandlerError::new(format!(
                    "{} cannot go through the customer-service API",
                    answer.reply.msg_type()
                ))
                .permanent()
            })?;
        self.send(push, &message).await?;
        Ok(None)
    }

    fn may_reply_passively(&self, appid: &str, message: &Message) -> bool {
        self.via(appid, message).is_some_and(|via| via != Via::Api)
    }

    /// `handle` only logs a push no rule matches (at debug).
    fn handles(&self, appid: &str, message: &Message) -> bool {
        self.via(appid, message).is_some()
    }

    async fn reply_missed(
        &self,
        push: &Push,
        reply: &PassiveReply,
    ) -> Result<String, HandlerError> {
        let via = self.via(&push.appid, &push.message).unwrap_or(Via::Passive);
        match (via, reply.to_cs_message()) {
            (Via::Auto, Some(message)) => {
                self.send(push, &message).await?;
                Ok("sent through the customer-service API instead (via = \"auto\")".into())
            }
            (_, None) | (Via::Api, _) => Ok(format!(
                "not sent: {} can only ride on the push's answer",
                reply.msg_type()
            )),
            (Via::Passive, Some(_)) => Ok(
                "not sent: via = \"passive\" (set via = \"auto\" to fall back to the customer-service API)".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CsMessage;
    use crate::protocol::wire::{parse_json, Limits};
    use crate::reply::{Media, OfficialAccountReply};

    fn rules_for(kind: AppKind, toml_text: &str) -> Result<Rules, ConfigError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            rules: Vec<RuleConfig>,
        }
        let doc: Doc = toml::from_str(toml_text).unwrap();
        Rules::new(0, kind, &doc.rules)
    }

    fn rules(toml_text: &str) -> Result<Rules, ConfigError> {
        rules_for(AppKind::MiniProgram, toml_text)
    }

    fn push(json: &str) -> Message {
        Message::from_fields(parse_json(json.as_bytes(), &Limits::default()).unwrap()).unwrap()
    }

    fn text(content: &str) -> Message {
        push(&format!(
            r#"{{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"text","Content":"{content}","MsgId":1}}"#
        ))
    }

    fn api(reply: ReplySpec) -> Option<Matched> {
        Some(Matched {
            reply,
            via: Via::Api,
            max_articles: 1,
        })
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
            api(ReplySpec::Text("Hi! How can we help?".into()))
        );
        assert_eq!(
            r.answer(&text("订单 42")),
            api(ReplySpec::Text("Looking up order 42 (订单 42)".into()))
        );
        let enter = push(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"event","Event":"user_enter_tempsession"}"#,
        );
        let transfer = r.answer(&enter).unwrap();
        assert_eq!(transfer.reply, ReplySpec::TransferCustomerService(true));
        assert_eq!(transfer.via, Via::Passive);
        let image = push(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"image","PicUrl":"u","MediaId":"m","MsgId":2}"#,
        );
        assert_eq!(
            r.answer(&image),
            api(ReplySpec::Image(Media::Id("MEDIA".into())))
        );
        assert_eq!(
            r.answer(&text("???")),
            api(ReplySpec::Text("Sorry, I did not understand.".into()))
        );
    }

    #[test]
    fn an_official_account_answers_passively_unless_told_otherwise() {
        let r = rules_for(
            AppKind::OfficialAccount,
            r#"
[[rules]]
regex = "^(hi)$"
reply = { text = "Hi {1}" }
[[rules]]
keyword = "api"
reply = { text = "by API" }
via = "api"
[[rules]]
keyword = "auto"
reply = { image = { media_id = "M1" } }
via = "auto"
[[rules]]
keyword = "link"
reply = { link = { title = "t", url = "https://example.com" } }
[[rules]]
event = "subscribe"
reply = { news = { articles = [{ title = "a", url = "u" }, { title = "b", url = "v" }] } }
"#,
        )
        .unwrap();
        let hi = r.answer(&text("hi")).unwrap();
        assert_eq!(hi.via, Via::Passive);
        assert_eq!(
            hi.reply.to_passive(None, hi.max_articles),
            Some(OfficialAccountReply::Text {
                content: "Hi hi".into()
            })
        );
        assert_eq!(r.answer(&text("api")).unwrap().via, Via::Api);
        let auto = r.answer(&text("auto")).unwrap();
        assert_eq!(auto.via, Via::Auto);
        assert_eq!(
            auto.reply.to_cs_message(None),
            Some(CsMessage::Image("M1".into()))
        );
        // A type only the API sends goes through it.
        assert_eq!(r.answer(&text("link")).unwrap().via, Via::Api);
        let subscribe = push(
            r#"{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"event","Event":"subscribe"}"#,
        );
        let news = r.answer(&subscribe).unwrap();
        assert_eq!(news.max_articles, MAX_NEWS_ARTICLES);
        assert!(matches!(
            news.reply.to_passive(None, news.max_articles),
            Some(OfficialAccountReply::News { articles }) if articles.len() == 2
        ));
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

    #[test]
    fn a_mini_program_rule_asking_for_a_passive_text_is_refused() {
        let e = rules("[[rules]]\nkeyword = 'hi'\nreply = { text = 'x' }\nvia = 'passive'")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("apps[0].rules[0].via: a Mini Program accepts no passive reply but transfer_customer_service"),
            "{e}"
        );
        let oa = |t: &str| {
            rules_for(AppKind::OfficialAccount, t)
                .unwrap_err()
                .to_string()
        };
        let e = oa("[[rules]]\nkeyword = 'a'\nreply = { mpnews = 'M' }\nvia = 'passive'");
        assert!(
            e.starts_with("apps[0].rules[0].via: mpnews is not a passive reply"),
            "{e}"
        );
        let e = oa("[[rules]]\nkeyword = 'a'\nreply = { news = { articles = [{ title = 'a', url = 'u' }, { title = 'b', url = 'v' }] } }");
        assert!(
            e.contains("news holds 1 to 1 article(s) here, got 2"),
            "{e}"
        );
        let e = oa("[[rules]]\nkeyword = 'a'\nreply = { image = { file = '/no/such/file.png' } }");
        assert!(
            e.starts_with("apps[0].rules[0].reply: cannot read media file /no/such/file.png"),
            "{e}"
        );
        let e = rules("[[rules]]\nevent = 'x'\nreply = { news = { title = 't', url = 'u' } }");
        assert!(e.unwrap_err().to_string().contains(
            "a Mini Program's customer-service API sends text, image, link and miniprogrampage, not news"
        ));
        let e = oa("[[rules]]\nkeyword = 'a'\nreply = { image = { file = '/tmp' } }");
        assert!(e.contains("media file /tmp is not a file"), "{e}");
        let e = oa("[[rules]]\nkeyword = 'a'\nreply = { text = '' }");
        assert!(e.contains("text reply with an empty text"), "{e}");
        let e = oa(
            "[[rules]]\nkeyword = 'a'\nreply = { transfer_customer_service = true }\nvia = 'api'",
        );
        assert!(
            e.starts_with("apps[0].rules[0].via: transfer_customer_service is a passive reply"),
            "{e}"
        );
    }

    #[test]
    fn passive_rules_need_workers() {
        let oa = "[[apps]]\nappid = \"wx1\"\nkind = \"official_account\"\ntoken = \"tok\"\n[[apps.rules]]\nkeyword = \"hi\"\nreply = { text = \"hello\" }\n";
        let without_workers = Config::from_toml(&format!("[inbox]\nworkers = 0\n{oa}")).unwrap();
        let e = RulesHandler::new(&without_workers, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("inbox.workers: is 0, so no push is handled"),
            "{e}"
        );
        assert!(RulesHandler::new(&Config::from_toml(oa).unwrap(), None).is_ok());
    }

    #[test]
    fn a_push_no_rule_matches_is_not_taken() {
        let app = "[[apps]]\nappid = \"wx1\"\nkind = \"official_account\"\ntoken = \"tok\"\n";
        let config = format!(
            "{app}[[apps.rules]]\nkeyword = \"hi\"\nreply = {{ text = \"hello\" }}\n{}",
            app.replace("wx1", "wx2")
        );
        let handler = RulesHandler::new(&Config::from_toml(&config).unwrap(), None).unwrap();
        assert!(handler.handles("wx1", &text("hi there")));
        assert!(!handler.handles("wx1", &text("weather?")));
        // An app without rules, and one not configured.
        assert!(!handler.handles("wx2", &text("hi there")));
        assert!(!handler.handles("wx3", &text("hi there")));
    }

    #[test]
    fn via_is_the_first_matching_rules_as_answer_gives_it() {
        let r = rules_for(
            AppKind::OfficialAccount,
            r#"
[[rules]]
regex = '^order (\d+)$'
reply = { text = "order {1}" }
via = "api"
[[rules]]
keyword = "order"
reply = { text = "which order?" }
"#,
        )
        .unwrap();
        // "order 7" matches both rules: the first one answers.
        for (content, via) in [
            ("order 7", Some(Via::Api)),
            ("order x", Some(Via::Passive)),
            ("hi there", None),
        ] {
            let message = text(content);
            assert_eq!(r.via(&message), via, "{content}");
            assert_eq!(r.answer(&message).map(|a| a.via), via, "{content}");
        }
    }
}
