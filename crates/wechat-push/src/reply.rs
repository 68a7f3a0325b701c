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

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::protocol::envelope::render;
use crate::protocol::message::{Message, OpenId};
use crate::protocol::wire::Fields;
use crate::protocol::{AppKind, Format};

/// The only passive reply a Mini Program accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiniProgramReply {
    /// Hand the conversation to the web customer-service tool.
    TransferCustomerService,
}

/// A news article of an Official Account reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    /// `Title`: the article's headline.
    pub title: String,
    /// `Description`: the summary shown with it.
    pub description: String,
    /// `PicUrl`: the cover picture's URL (JPG or PNG).
    pub pic_url: String,
    /// `Url`: where tapping the article leads.
    pub url: String,
}

/// The passive replies an Official Account accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfficialAccountReply {
    /// A text message.
    Text {
        /// `Content`: the text the user gets.
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
        /// `Title`: the video's title.
        title: String,
        /// `Description`: the video's description.
        description: String,
        /// The thumbnail's media id: not part of the passive reply, kept for
        /// the customer-service API, which needs it when the reply goes
        /// that way instead ([`PassiveReply::to_cs_message`]).
        thumb_media_id: String,
    },
    /// A track the user can play.
    Music {
        /// `Title`: the track's title.
        title: String,
        /// `Description`: the track's description.
        description: String,
        /// `MusicUrl`: URL of the track.
        music_url: String,
        /// High-quality music URL (preferred on Wi-Fi).
        hq_music_url: String,
        /// `ThumbMediaId`: media id of the thumbnail.
        thumb_media_id: String,
    },
    /// News: one to eight articles.
    News {
        /// `Articles`: the articles, in order (at most [`MAX_NEWS_ARTICLES`]).
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
                ..
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

/// How an answer reaches the user, `via` in a rule.
///
/// Source: Official Accounts' passive reply
/// (<https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Passive_user_reply_message.html>)
/// and customer-service messages
/// (<https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Service_Center_messages.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// In the push's HTTP answer (sealed in encrypted modes); when it is not
    /// ready within `server.reply_budget`, it is recorded as missed.
    Passive,
    /// Through the customer-service API, after the push is answered.
    Api,
    /// Passive when ready within the budget, else through the API.
    Auto,
}

/// A media file for a reply: `"MEDIA_ID"`, `{ media_id = "…" }` as WeChat
/// has it, or `{ file = "path/to/picture.png" }`, uploaded once as
/// temporary media and its media id shared through the store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Media {
    /// `"MEDIA_ID"`: a media id, as a bare string.
    Id(String),
    /// `{ media_id = "…" }`.
    MediaId {
        /// The id of media already uploaded to WeChat.
        media_id: String,
    },
    /// `{ file = "…" }`: a file to upload (relative paths from the working
    /// directory).
    File {
        /// The file to upload: an image (PNG, JPEG, GIF) or a voice clip (AMR, MP3).
        file: PathBuf,
    },
}

impl Media {
    /// The media id, when it is given rather than a file.
    pub fn id(&self) -> Option<&str> {
        match self {
            Media::Id(id) | Media::MediaId { media_id: id } => Some(id),
            Media::File { .. } => None,
        }
    }
}

/// A news article as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArticleSpec {
    /// The article's headline.
    pub title: String,
    /// The summary shown with it; empty by default.
    #[serde(default)]
    pub description: String,
    /// Where it leads.
    pub url: String,
    /// Picture URL (JPG or PNG; 360×200 for the first, 200×200 for others).
    #[serde(default)]
    pub picurl: String,
}

/// News as configured: one article's fields, or `articles = [ … ]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum NewsSpec {
    /// `articles = [ … ]`: the articles, in order.
    Articles {
        /// The articles, in order.
        articles: Vec<ArticleSpec>,
    },
    /// One article's fields, written inline.
    One(ArticleSpec),
}

impl NewsSpec {
    /// The articles, in order.
    pub fn articles(&self) -> &[ArticleSpec] {
        match self {
            NewsSpec::Articles { articles } => articles,
            NewsSpec::One(one) => std::slice::from_ref(one),
        }
    }
}

/// Most articles of one passive news reply: 8 answering an event; since
/// 2018-10-12 only 1 answering a user's message (more gets errcode 45008).
pub const MAX_NEWS_ARTICLES: usize = 8;

/// An answer as a rule or a backend writes it: `{ text = "…" }`,
/// `{ image = … }` ([`Media`]), `{ voice = … }`, `{ video = { media_id,
/// title, description, thumb_media_id } }`, `{ music = { … } }`,
/// `{ news = { … } }`, `{ transfer_customer_service = true }`, and the
/// customer-service-only `link`, `miniprogrampage` and `mpnews`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplySpec {
    /// `{ text = "…" }`: a text message.
    Text(String),
    /// `{ image = … }`: an image, by media id or file ([`Media`]).
    Image(Media),
    /// `{ voice = … }`: a voice clip, by media id or file ([`Media`]).
    Voice(Media),
    /// `{ video = { … } }`: an uploaded video.
    Video {
        /// Its media id.
        media_id: String,
        /// The video's title; empty by default.
        #[serde(default)]
        title: String,
        /// The video's description; empty by default.
        #[serde(default)]
        description: String,
        /// Thumbnail media id (the customer-service API wants it).
        #[serde(default)]
        thumb_media_id: String,
    },
    /// `{ music = { … } }`: a track the user can play.
    Music {
        /// The track's title; empty by default.
        #[serde(default)]
        title: String,
        /// The track's description; empty by default.
        #[serde(default)]
        description: String,
        /// URL of the track.
        musicurl: String,
        /// High-quality music URL (played on Wi-Fi).
        #[serde(default)]
        hqmusicurl: String,
        /// Media id of the thumbnail.
        thumb_media_id: String,
    },
    /// `{ news = { … } }`: news articles ([`NewsSpec`]).
    News(NewsSpec),
    /// Hand the conversation to human customer service (passive only).
    TransferCustomerService(bool),
    /// A link card (customer-service API only, Mini Programs).
    Link(LinkCard),
    /// A mini-program card (customer-service API only).
    Miniprogrampage(MiniProgramCard),
    /// A published article by media id (customer-service API only).
    Mpnews(String),
}

impl ReplySpec {
    /// WeChat's `MsgType` / `msgtype` for it.
    pub fn msg_type(&self) -> &'static str {
        match self {
            ReplySpec::Text(_) => "text",
            ReplySpec::Image(_) => "image",
            ReplySpec::Voice(_) => "voice",
            ReplySpec::Video { .. } => "video",
            ReplySpec::Music { .. } => "music",
            ReplySpec::News(_) => "news",
            ReplySpec::TransferCustomerService(_) => "transfer_customer_service",
            ReplySpec::Link(_) => "link",
            ReplySpec::Miniprogrampage(_) => "miniprogrampage",
            ReplySpec::Mpnews(_) => "mpnews",
        }
    }

    /// Whether it can be a passive reply of an Official Account.
    pub fn is_passive_type(&self) -> bool {
        !matches!(
            self,
            ReplySpec::Link(_) | ReplySpec::Miniprogrampage(_) | ReplySpec::Mpnews(_)
        )
    }

    /// Whether the customer-service API can send it.
    pub fn is_api_type(&self) -> bool {
        !matches!(self, ReplySpec::TransferCustomerService(_))
    }

    /// What WeChat would refuse in it, if anything: an empty text, media
    /// without an id, news without articles or with more than
    /// [`MAX_NEWS_ARTICLES`], music without a thumbnail.
    ///
    /// # Errors
    /// A sentence naming the missing or wrong part.
    pub fn check(&self) -> Result<(), String> {
        let empty = |what: &str| Err(format!("{} reply with an empty {what}", self.msg_type()));
        match self {
            ReplySpec::Text(t) if t.is_empty() => empty("text"),
            ReplySpec::Image(m) | ReplySpec::Voice(m) if m.id() == Some("") => empty("media_id"),
            ReplySpec::Video { media_id, .. } if media_id.is_empty() => empty("media_id"),
            ReplySpec::Music { thumb_media_id, .. } if thumb_media_id.is_empty() => {
                empty("thumb_media_id")
            }
            ReplySpec::News(news)
                if news.articles().is_empty() || news.articles().len() > MAX_NEWS_ARTICLES =>
            {
                Err(format!(
                    "news reply with {} articles: WeChat takes 1 to {MAX_NEWS_ARTICLES}",
                    news.articles().len()
                ))
            }
            _ => Ok(()),
        }
    }

    /// The media file to upload first, if it names one.
    pub fn file(&self) -> Option<(&'static str, &std::path::Path)> {
        match self {
            ReplySpec::Image(Media::File { file }) => Some(("image", file)),
            ReplySpec::Voice(Media::File { file }) => Some(("voice", file)),
            _ => None,
        }
    }

    /// `self` with `fill` applied to every text a user reads or follows
    /// (rule captures, `{1}`).
    pub fn filled(&self, fill: &dyn Fn(&str) -> String) -> ReplySpec {
        let article = |a: &ArticleSpec| ArticleSpec {
            title: fill(&a.title),
            description: fill(&a.description),
            url: fill(&a.url),
            picurl: fill(&a.picurl),
        };
        match self {
            ReplySpec::Text(t) => ReplySpec::Text(fill(t)),
            ReplySpec::Video {
                media_id,
                title,
                description,
                thumb_media_id,
            } => ReplySpec::Video {
                media_id: media_id.clone(),
                title: fill(title),
                description: fill(description),
                thumb_media_id: thumb_media_id.clone(),
            },
            ReplySpec::Music {
                title,
                description,
                musicurl,
                hqmusicurl,
                thumb_media_id,
            } => ReplySpec::Music {
                title: fill(title),
                description: fill(description),
                musicurl: fill(musicurl),
                hqmusicurl: fill(hqmusicurl),
                thumb_media_id: thumb_media_id.clone(),
            },
            ReplySpec::News(NewsSpec::One(a)) => ReplySpec::News(NewsSpec::One(article(a))),
            ReplySpec::News(NewsSpec::Articles { articles }) => {
                ReplySpec::News(NewsSpec::Articles {
                    articles: articles.iter().map(article).collect(),
                })
            }
            ReplySpec::Link(card) => ReplySpec::Link(LinkCard {
                title: fill(&card.title),
                description: fill(&card.description),
                url: fill(&card.url),
                thumb_url: fill(&card.thumb_url),
            }),
            ReplySpec::Miniprogrampage(card) => ReplySpec::Miniprogrampage(MiniProgramCard {
                title: fill(&card.title),
                pagepath: fill(&card.pagepath),
                thumb_media_id: card.thumb_media_id.clone(),
            }),
            other => other.clone(),
        }
    }

    /// The passive reply of an Official Account, with `media_id` for an
    /// uploaded file; `None` for a type only the API sends, or a media file
    /// not uploaded. `max_articles` bounds news (1 answering a user's
    /// message, [`MAX_NEWS_ARTICLES`] answering an event).
    pub fn to_passive(
        &self,
        media_id: Option<&str>,
        max_articles: usize,
    ) -> Option<OfficialAccountReply> {
        let media = |m: &Media| m.id().or(media_id).map(str::to_owned);
        Some(match self {
            ReplySpec::Text(content) => OfficialAccountReply::Text {
                content: content.clone(),
            },
            ReplySpec::Image(m) => OfficialAccountReply::Image {
                media_id: media(m)?,
            },
            ReplySpec::Voice(m) => OfficialAccountReply::Voice {
                media_id: media(m)?,
            },
            ReplySpec::Video {
                media_id,
                title,
                description,
                thumb_media_id,
            } => OfficialAccountReply::Video {
                media_id: media_id.clone(),
                title: title.clone(),
                description: description.clone(),
                thumb_media_id: thumb_media_id.clone(),
            },
            ReplySpec::Music {
                title,
                description,
                musicurl,
                hqmusicurl,
                thumb_media_id,
            } => OfficialAccountReply::Music {
                title: title.clone(),
                description: description.clone(),
                music_url: musicurl.clone(),
                hq_music_url: hqmusicurl.clone(),
                thumb_media_id: thumb_media_id.clone(),
            },
            ReplySpec::News(news) => OfficialAccountReply::News {
                articles: news
                    .articles()
                    .iter()
                    .take(max_articles)
                    .map(|a| Article {
                        title: a.title.clone(),
                        description: a.description.clone(),
                        pic_url: a.picurl.clone(),
                        url: a.url.clone(),
                    })
                    .collect(),
            },
            ReplySpec::TransferCustomerService(_) => {
                OfficialAccountReply::TransferCustomerService { kf_account: None }
            }
            ReplySpec::Link(_) | ReplySpec::Miniprogrampage(_) | ReplySpec::Mpnews(_) => {
                return None
            }
        })
    }

    /// The customer-service message, with `media_id` for an uploaded file;
    /// `None` for `transfer_customer_service` (passive only) or a media
    /// file not uploaded. News goes as its first article, all the API takes.
    pub fn to_cs_message(&self, media_id: Option<&str>) -> Option<CsMessage> {
        Some(match self {
            ReplySpec::Link(card) => CsMessage::Link(card.clone()),
            ReplySpec::Miniprogrampage(card) => CsMessage::Miniprogrampage(card.clone()),
            ReplySpec::Mpnews(id) => CsMessage::Mpnews(id.clone()),
            // The rest are passive types: one conversion serves both ways.
            passive => {
                let reply = passive.to_passive(media_id, 1)?;
                return PassiveReply::OfficialAccount(reply).to_cs_message();
            }
        })
    }
}

impl PassiveReply {
    /// `transfer_customer_service` for an app of `kind`.
    pub fn transfer(kind: AppKind) -> PassiveReply {
        match kind {
            AppKind::MiniProgram => {
                PassiveReply::MiniProgram(MiniProgramReply::TransferCustomerService)
            }
            AppKind::OfficialAccount => {
                PassiveReply::OfficialAccount(OfficialAccountReply::TransferCustomerService {
                    kf_account: None,
                })
            }
        }
    }

    /// The same answer as a customer-service message, for a reply that
    /// could not ride on the push's answer; `None` for
    /// `transfer_customer_service`, which only a passive reply can carry.
    pub fn to_cs_message(&self) -> Option<CsMessage> {
        let PassiveReply::OfficialAccount(reply) = self else {
            return None;
        };
        Some(match reply {
            OfficialAccountReply::Text { content } => CsMessage::Text(content.clone()),
            OfficialAccountReply::Image { media_id } => CsMessage::Image(media_id.clone()),
            OfficialAccountReply::Voice { media_id } => CsMessage::Voice(media_id.clone()),
            OfficialAccountReply::Video {
                media_id,
                title,
                description,
                thumb_media_id,
            } => CsMessage::Video {
                media_id: media_id.clone(),
                thumb_media_id: thumb_media_id.clone(),
                title: title.clone(),
                description: description.clone(),
            },
            OfficialAccountReply::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => CsMessage::Music {
                title: title.clone(),
                description: description.clone(),
                musicurl: music_url.clone(),
                hqmusicurl: hq_music_url.clone(),
                thumb_media_id: thumb_media_id.clone(),
            },
            OfficialAccountReply::News { articles } => {
                let a = articles.first()?;
                CsMessage::News {
                    title: a.title.clone(),
                    description: a.description.clone(),
                    url: a.url.clone(),
                    picurl: a.pic_url.clone(),
                }
            }
            OfficialAccountReply::TransferCustomerService { .. } => return None,
        })
    }
}

/// What a handler registered with a [`crate::router::Router`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// No answer: the push is marked done.
    Nothing,
    /// These messages, through the customer-service API (recorded in the outbox first).
    Send(Vec<CsMessage>),
    /// Hand the conversation to human customer service (a passive reply;
    /// only from a route registered with [`Router::on_passive`](crate::router::Router::on_passive)).
    TransferCustomerService,
}

impl Reply {
    /// One text message.
    pub fn text(content: impl Into<String>) -> Self {
        Reply::Send(vec![CsMessage::Text(content.into())])
    }
}

/// A link card, as a rule or backend writes it (`{ link = { … } }`) and as
/// the customer-service API sends it (`msgtype` `link`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct LinkCard {
    /// The card's title.
    pub title: String,
    /// The card's description; empty by default.
    #[serde(default)]
    pub description: String,
    /// Where it leads.
    pub url: String,
    /// URL of the card's picture; empty by default.
    #[serde(default)]
    pub thumb_url: String,
}

/// A mini-program card (`{ miniprogrampage = { … } }`; `msgtype`
/// `miniprogrampage`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct MiniProgramCard {
    /// The card's title.
    pub title: String,
    /// The mini program page the card opens.
    pub pagepath: String,
    /// Media id of the card's cover picture.
    pub thumb_media_id: String,
}

/// A customer-service message (`/cgi-bin/message/custom/send`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CsMessage {
    /// A text message.
    Text(String),
    /// An uploaded image, by media id.
    Image(String),
    /// A link card.
    Link(LinkCard),
    /// A mini-program card.
    Miniprogrampage(MiniProgramCard),
    /// A voice message, by media id (Official Accounts).
    Voice(String),
    /// A video (Official Accounts).
    Video {
        /// The uploaded video's media id.
        media_id: String,
        /// Media id of the video's thumbnail.
        thumb_media_id: String,
        /// The video's title; empty by default.
        #[serde(default)]
        title: String,
        /// The video's description; empty by default.
        #[serde(default)]
        description: String,
    },
    /// Music (Official Accounts).
    Music {
        /// The track's title.
        title: String,
        /// The track's description; empty by default.
        #[serde(default)]
        description: String,
        /// URL of the track.
        musicurl: String,
        /// URL of a high-quality version, preferred on Wi-Fi.
        hqmusicurl: String,
        /// Media id of the thumbnail.
        thumb_media_id: String,
    },
    /// One news article with an external link (Official Accounts).
    News {
        /// The article's headline.
        title: String,
        /// The summary shown with it; empty by default.
        #[serde(default)]
        description: String,
        /// Where it leads.
        url: String,
        /// URL of the article's cover picture.
        picurl: String,
    },
    /// A published article, by media id (Official Accounts).
    Mpnews(String),
}

impl CsMessage {
    /// WeChat's `msgtype`.
    pub fn msg_type(&self) -> &'static str {
        match self {
            CsMessage::Text(_) => "text",
            CsMessage::Image(_) => "image",
            CsMessage::Link(_) => "link",
            CsMessage::Miniprogrampage(_) => "miniprogrampage",
            CsMessage::Voice(_) => "voice",
            CsMessage::Video { .. } => "video",
            CsMessage::Music { .. } => "music",
            CsMessage::News { .. } => "news",
            CsMessage::Mpnews(_) => "mpnews",
        }
    }

    /// The request body for `touser`.
    pub fn body(&self, touser: &OpenId) -> Value {
        let payload = match self {
            CsMessage::Text(content) => json!({ "content": content }),
            CsMessage::Image(media_id) => json!({ "media_id": media_id }),
            // The cards' fields are WeChat's names: serialised as they are.
            CsMessage::Link(card) => json!(card),
            CsMessage::Miniprogrampage(card) => json!(card),
            CsMessage::Voice(media_id) | CsMessage::Mpnews(media_id) => {
                json!({ "media_id": media_id })
            }
            CsMessage::Video {
                media_id,
                thumb_media_id,
                title,
                description,
            } => json!({
                "media_id": media_id, "thumb_media_id": thumb_media_id, "title": title, "description": description,
            }),
            CsMessage::Music {
                title,
                description,
                musicurl,
                hqmusicurl,
                thumb_media_id,
            } => json!({
                "title": title, "description": description, "musicurl": musicurl,
                "hqmusicurl": hqmusicurl, "thumb_media_id": thumb_media_id,
            }),
            CsMessage::News {
                title,
                description,
                url,
                picurl,
            } => json!({
                "articles": [{ "title": title, "description": description, "url": url, "picurl": picurl }],
            }),
        };
        let msg_type = self.msg_type();
        json!({ "touser": touser.as_str(), "msgtype": msg_type, msg_type: payload })
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
    fn a_video_sent_through_the_api_instead_keeps_its_thumbnail() {
        let spec = ReplySpec::Video {
            media_id: "V".into(),
            title: "t".into(),
            description: "d".into(),
            thumb_media_id: "TH".into(),
        };
        let passive = PassiveReply::OfficialAccount(spec.to_passive(None, 1).unwrap());
        assert_eq!(passive.to_cs_message(), spec.to_cs_message(None));
        // The passive reply itself has no thumbnail field.
        let f = passive.to_fields(&OpenId::new("o"), "gh", 1);
        assert!(f["Video"].get("ThumbMediaId").is_none());
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
