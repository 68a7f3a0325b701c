//! The payloads of users' messages (`MsgType` other than `event`), as
//! documented for Mini Programs' and Official Accounts' customer service.
//! Source: <https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/customer-message/receive.html>,
//! <https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_standard_messages.html>

use serde::{Deserialize, Serialize};

use super::{lenient, MsgId};

/// A text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// The text.
    #[serde(rename = "Content", deserialize_with = "lenient::string")]
    pub content: String,
    /// The message id.
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// An image message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Where the image can be downloaded.
    #[serde(rename = "PicUrl")]
    pub pic_url: String,
    /// The media id, for the media API.
    #[serde(rename = "MediaId")]
    pub media_id: String,
    /// The message id.
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A voice message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voice {
    /// The media id.
    #[serde(rename = "MediaId")]
    pub media_id: String,
    /// The audio format (amr, speex…).
    #[serde(rename = "Format")]
    pub format: String,
    /// Speech recognition result, when enabled.
    #[serde(
        rename = "Recognition",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recognition: Option<String>,
    /// The message id.
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A video or short-video message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    /// The media id.
    #[serde(rename = "MediaId")]
    pub media_id: String,
    /// The thumbnail's media id.
    #[serde(rename = "ThumbMediaId")]
    pub thumb_media_id: String,
    /// The message id.
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A location message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Latitude.
    #[serde(rename = "Location_X", deserialize_with = "lenient::float")]
    pub latitude: f64,
    /// Longitude.
    #[serde(rename = "Location_Y", deserialize_with = "lenient::float")]
    pub longitude: f64,
    /// Map zoom level.
    #[serde(rename = "Scale", deserialize_with = "lenient::int")]
    pub scale: i64,
    /// Place name.
    #[serde(rename = "Label", default)]
    pub label: String,
    /// The message id.
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A link message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Title.
    #[serde(rename = "Title")]
    pub title: String,
    /// Description.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// The link.
    #[serde(rename = "Url")]
    pub url: String,
    /// The message id.
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A mini-program card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiniProgramPage {
    /// Title.
    #[serde(rename = "Title")]
    pub title: String,
    /// The mini program's appid.
    #[serde(rename = "AppId")]
    pub app_id: String,
    /// The page path.
    #[serde(rename = "PagePath")]
    pub page_path: String,
    /// Thumbnail URL (WeChat may leave it empty).
    #[serde(rename = "ThumbUrl", default)]
    pub thumb_url: String,
    /// Thumbnail media id (WeChat may leave it empty).
    #[serde(rename = "ThumbMediaId", default)]
    pub thumb_media_id: String,
    /// The message id.
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}
