//! The payloads of users' messages (`MsgType` other than `event`), as
//! documented for Mini Programs' and Official Accounts' customer service.
//! Source: <https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/customer-message/receive.html>,
//! <https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_standard_messages.html>

use serde::{Deserialize, Serialize};

use super::{lenient, MsgId};

/// A text message (`MsgType` `text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// `Content`: the text the user sent.
    #[serde(rename = "Content", deserialize_with = "lenient::string")]
    pub content: String,
    /// `MsgId`: the message's id, a 64-bit integer (see [`MsgId`]).
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// An image message (`MsgType` `image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `PicUrl`: where the image can be downloaded (a URL WeChat generates).
    #[serde(rename = "PicUrl")]
    pub pic_url: String,
    /// `MediaId`: the image's media id, to fetch it with the temporary-media API.
    #[serde(rename = "MediaId")]
    pub media_id: String,
    /// `MsgId`: the message's id, a 64-bit integer (see [`MsgId`]).
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A voice message (`MsgType` `voice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voice {
    /// `MediaId`: the audio's media id, to fetch it with the temporary-media API.
    #[serde(rename = "MediaId")]
    pub media_id: String,
    /// `Format`: the audio format (`amr`, `speex`, …).
    #[serde(rename = "Format")]
    pub format: String,
    /// `Recognition`: the speech recognised in it, when the account has recognition on.
    #[serde(
        rename = "Recognition",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recognition: Option<String>,
    /// `MsgId`: the message's id, a 64-bit integer (see [`MsgId`]).
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A video or short-video message (`MsgType` `video` or `shortvideo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    /// `MediaId`: the video's media id, to fetch it with the temporary-media API.
    #[serde(rename = "MediaId")]
    pub media_id: String,
    /// `ThumbMediaId`: the media id of the video's thumbnail.
    #[serde(rename = "ThumbMediaId")]
    pub thumb_media_id: String,
    /// `MsgId`: the message's id, a 64-bit integer (see [`MsgId`]).
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A location the user sent (`MsgType` `location`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// `Location_X`: the latitude, in decimal degrees.
    #[serde(rename = "Location_X", deserialize_with = "lenient::float")]
    pub latitude: f64,
    /// `Location_Y`: the longitude, in decimal degrees.
    #[serde(rename = "Location_Y", deserialize_with = "lenient::float")]
    pub longitude: f64,
    /// `Scale`: the map's zoom level.
    #[serde(rename = "Scale", deserialize_with = "lenient::int")]
    pub scale: i64,
    /// `Label`: the place as text (an address or a name); empty when absent.
    #[serde(rename = "Label", default)]
    pub label: String,
    /// `MsgId`: the message's id, a 64-bit integer (see [`MsgId`]).
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A link the user shared (`MsgType` `link`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// `Title`: the link's title.
    #[serde(rename = "Title")]
    pub title: String,
    /// `Description`: the link's description; empty when absent.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// `Url`: the address it leads to.
    #[serde(rename = "Url")]
    pub url: String,
    /// `MsgId`: the message's id, a 64-bit integer (see [`MsgId`]).
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}

/// A mini-program card (`MsgType` `miniprogrampage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiniProgramPage {
    /// `Title`: the card's title.
    #[serde(rename = "Title")]
    pub title: String,
    /// `AppId`: the appid of the mini program the card opens.
    #[serde(rename = "AppId")]
    pub app_id: String,
    /// `PagePath`: the page of that mini program the card opens.
    #[serde(rename = "PagePath")]
    pub page_path: String,
    /// `ThumbUrl`: a temporary URL of the cover picture (WeChat may leave it empty).
    #[serde(rename = "ThumbUrl", default)]
    pub thumb_url: String,
    /// `ThumbMediaId`: temporary media id of the cover picture (WeChat may leave it empty).
    #[serde(rename = "ThumbMediaId", default)]
    pub thumb_media_id: String,
    /// `MsgId`: the message's id, a 64-bit integer (see [`MsgId`]).
    #[serde(rename = "MsgId")]
    pub msg_id: MsgId,
}
