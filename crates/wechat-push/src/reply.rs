//! Passive replies: the answer that rides on the HTTP response to a push.
//!
//! Mini Programs accept exactly one passive reply, `transfer_customer_service`;
//! every other answer to a Mini Program user goes through the customer-service
//! API. The types encode that: [`MiniProgramReply`] has that one variant, so a
//! text reply to a Mini Program cannot be built. Official Accounts accept the
//! types of [`OfficialAccountReply`].
//!
//! A reply is rendered with To and From swapped relative to the push. In safe
//! mode it must then be sealed with [`crate::protocol::envelope::AppCrypto::seal`].

use serde_json::{json, Value};

use crate::message::{Message, OpenId};
use crate::protocol::envelope::render;
use crate::protocol::wire::Fields;
use crate::protocol::Format;

/// The only passive reply a Mini Program accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiniProgramReply {
    /// Hand the conversation to the web customer-service tool.
    TransferCustomerService,
}

/// A news article of an Official Account reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Picture URL.
    pub pic_url: String,
    /// Link.
    pub url: String,
}

/// The passive replies an Official Account accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfficialAccountReply {
    /// Text.
    Text {
        /// The text.
        content: String,
    },
    /// An uploaded image.
    Image {
        /// Its media id.
        media_id: String,
    },
    /// An uploaded voice clip.
    Voice {
        /// Its media id.
        media_id: String,
    },
    /// An uploaded video.
    Video {
        /// Its media id.
        media_id: String,
        /// Title.
        title: String,
        /// Description.
        description: String,
    },
    /// Music.
    Music {
        /// Title.
        title: String,
        /// Description.
        description: String,
        /// Music URL.
        music_url: String,
        /// High-quality music URL (preferred on Wi-Fi).
        hq_music_url: String,
        /// Thumbnail media id.
        thumb_media_id: String,
    },
    /// News: one to eight articles.
    News {
        /// The articles.
        articles: Vec<Article>,
    },
    /// Hand the conversation to customer service, optionally to one agent.
    TransferCustomerService {
        /// The agent's account, `name@account`.
        kf_account: Option<String>,
    },
}

/// A passive reply for either kind of app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassiveReply {
    /// To a Mini Program user.
    MiniProgram(MiniProgramReply),
    /// To an Official Account follower.
    OfficialAccount(OfficialAccountReply),
}

impl From<MiniProgramReply> for PassiveReply {
    fn from(r: MiniProgramReply) -> Self {
        PassiveReply::MiniProgram(r)
    }
}

impl From<OfficialAccountReply> for PassiveReply {
    fn from(r: OfficialAccountReply) -> Self {
        PassiveReply::OfficialAccount(r)
    }
}

impl PassiveReply {
    /// WeChat's `MsgType` for this reply.
    pub fn msg_type(&self) -> &'static str {
        match self {
            PassiveReply::MiniProgram(MiniProgramReply::TransferCustomerService)
            | PassiveReply::OfficialAccount(OfficialAccountReply::TransferCustomerService {
                ..
            }) => "transfer_customer_service",
            PassiveReply::OfficialAccount(r) => match r {
                OfficialAccountReply::Text { .. } => "text",
                OfficialAccountReply::Image { .. } => "image",
                OfficialAccountReply::Voice { .. } => "voice",
                OfficialAccountReply::Video { .. } => "video",
                OfficialAccountReply::Music { .. } => "music",
                OfficialAccountReply::News { .. } => "news",
                OfficialAccountReply::TransferCustomerService { .. } => "transfer_customer_service",
            },
        }
    }

    /// The reply's fields: `ToUserName` is the user, `FromUserName` the app.
    pub fn to_fields(&self, to_user: &OpenId, from_app: &str, create_time: i64) -> Fields {
        let mut f = Fields::new();
        f.insert(
            "ToUserName".into(),
            Value::String(to_user.as_str().to_owned()),
        );
        f.insert("FromUserName".into(), Value::String(from_app.to_owned()));
        f.insert("CreateTime".into(), Value::from(create_time));
        f.insert("MsgType".into(), Value::String(self.msg_type().to_owned()));
        let PassiveReply::OfficialAccount(reply) = self else {
            return f;
        };
        match reply {
            OfficialAccountReply::Text { content } => {
                f.insert("Content".into(), Value::String(content.clone()));
            }
            OfficialAccountReply::Image { media_id } => {
                f.insert("Image".into(), json!({ "MediaId": media_id }));
            }
            OfficialAccountReply::Voice { media_id } => {
                f.insert("Voice".into(), json!({ "MediaId": media_id }));
            }
            OfficialAccountReply::Video {
                media_id,
                title,
                description,
            } => {
                f.insert(
                    "Video".into(),
                    json!({ "MediaId": media_id, "Title": title, "Description": description }),
                );
            }
            OfficialAccountReply::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => {
                f.insert(
                    "Music".into(),
                    json!({
                        "Title": title, "Description": description, "MusicUrl": music_url,
                        "HQMusicUrl": hq_music_url, "ThumbMediaId": thumb_media_id,
                    }),
                );
            }
            OfficialAccountReply::News { articles } => {
                f.insert("ArticleCount".into(), Value::from(articles.len()));
                let items: Vec<Value> = articles
                    .iter()
                    .map(|a| json!({ "Title": a.title, "Description": a.description, "PicUrl": a.pic_url, "Url": a.url }))
                    .collect();
                f.insert("Articles".into(), json!({ "item": items }));
            }
            OfficialAccountReply::TransferCustomerService { kf_account } => {
                if let Some(account) = kf_account {
                    f.insert("TransInfo".into(), json!({ "KfAccount": account }));
                }
            }
        }
        f
    }

    /// The reply to `push`, rendered in `format` (before any encryption).
    pub fn render_for(&self, push: &Message, create_time: i64, format: Format) -> String {
        render(
            format,
            &self.to_fields(&push.from_user, &push.to_user, create_time),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{parse_json, parse_xml, Limits};

    fn push() -> Message {
        let f = parse_json(
            br#"{"ToUserName":"gh_app","FromUserName":"oUser","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":1}"#,
            &Limits::default(),
        )
        .unwrap();
        Message::from_fields(f).unwrap()
    }

    #[test]
    fn transfer_swaps_to_and_from_in_both_formats() {
        let reply = PassiveReply::from(MiniProgramReply::TransferCustomerService);
        let xml = reply.render_for(&push(), 7, Format::Xml);
        assert_eq!(
            xml,
            "<xml><ToUserName><![CDATA[oUser]]></ToUserName><FromUserName><![CDATA[gh_app]]></FromUserName><CreateTime>7</CreateTime><MsgType><![CDATA[transfer_customer_service]]></MsgType></xml>"
        );
        let json = reply.render_for(&push(), 7, Format::Json);
        assert_eq!(
            json,
            r#"{"ToUserName":"oUser","FromUserName":"gh_app","CreateTime":7,"MsgType":"transfer_customer_service"}"#
        );
    }

    #[test]
    fn news_repeats_item_elements() {
        let a = Article {
            title: "t".into(),
            description: "d".into(),
            pic_url: "p".into(),
            url: "u".into(),
        };
        let reply = PassiveReply::from(OfficialAccountReply::News {
            articles: vec![a.clone(), a],
        });
        let xml = reply.render_for(&push(), 7, Format::Xml);
        let f = parse_xml(xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(f["ArticleCount"], Value::from(2));
        assert_eq!(f["Articles"]["item"].as_array().map(Vec::len), Some(2));
    }
}
