//! Typed messages and events: what a push says, beyond the wire.
//!
//! A [`Message`] is built from the [`Fields`] of an opened push. Its [`Body`]
//! is a typed variant for every message type and event this crate knows, and
//! [`Body::Unknown`] for the rest: a push of a type WeChat added yesterday
//! still opens, and [`Message::fields`] keeps every field it carried.
//!
//! Real pushes are not always what the documentation prints: `MsgId` is a
//! number or a string, `CreateTime` sometimes a string, a subscribe-message
//! `List` an object for one item and an array for several, and the XML
//! variants nest that list one level deeper. All of that is absorbed here.

use std::fmt;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::wire::{self, Fields, Limits};
use crate::protocol::Format;

mod identity;

pub use identity::DedupKey;

/// A user's openid within one app (`FromUserName`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpenId(String);

impl OpenId {
    /// Wrap an openid.
    pub fn new(openid: impl Into<String>) -> Self {
        OpenId(openid.into())
    }

    /// The openid as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OpenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message id: documented as a 64-bit integer, sometimes sent as a string
/// (cloud functions send e.g. `"49d72d…_1555684067"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum MsgId {
    /// A numeric id, exact above 2^53.
    Number(u64),
    /// A non-numeric id, kept as sent.
    Text(String),
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgId::Number(n) => write!(f, "{n}"),
            MsgId::Text(s) => f.write_str(s),
        }
    }
}

impl MsgId {
    /// The id a field holds, read without copying the field.
    fn from_value(value: &Value) -> Option<MsgId> {
        match value {
            Value::Number(n) => n.as_u64().map(MsgId::Number),
            Value::String(s) => Some(
                s.parse()
                    .map(MsgId::Number)
                    .unwrap_or_else(|_| MsgId::Text(s.clone())),
            ),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for MsgId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(MsgId::Number)
                .ok_or_else(|| serde::de::Error::custom(format!("MsgId {n} is not a u64"))),
            Value::String(s) => Ok(s.parse().map(MsgId::Number).unwrap_or(MsgId::Text(s))),
            other => Err(serde::de::Error::custom(format!(
                "MsgId {other} is neither number nor string"
            ))),
        }
    }
}

/// Why fields could not become a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A field every push carries is missing.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field every push carries has the wrong type.
    #[error("field {field} is not {expected}")]
    Type {
        /// The field's name.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

/// One push, typed: the fields every push carries, the typed body, and every
/// field as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `ToUserName`: the app's original id (`gh_…`).
    pub to_user: String,
    /// `FromUserName`: the user's openid.
    pub from_user: OpenId,
    /// `CreateTime`, in seconds since the epoch.
    pub create_time: i64,
    /// What the push is.
    pub body: Body,
    fields: Fields,
}

/// A push that this crate has no variant for, or whose fields do not fit the
/// variant it names. Nothing is lost: [`Message::fields`] has everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// `MsgType` as sent.
    pub msg_type: String,
    /// `Event` as sent, for events.
    pub event: Option<String>,
    /// Why a known type fell back here, if it did.
    pub reason: Option<String>,
}

/// Define an enum of wire kinds with its dispatch table, so that the wire name,
/// the variant and the payload type are written once.
macro_rules! wire_kinds {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $wire:literal => $variant:ident($ty:ty), )*
        }
        $( extra { $( $(#[$xmeta:meta])* $xvariant:ident($xty:ty), )* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant($ty), )*
            $( $( $(#[$xmeta])* $xvariant($xty), )* )?
        }

        impl $name {
            /// Build the variant named `wire` from the push's fields; `None`
            /// when the name is not one this crate knows.
            fn from_wire(wire: &str, fields: &Value) -> Option<Result<Self, serde_json::Error>> {
                match wire {
                    $( $wire => Some(<$ty as FromFields>::from_fields(fields).map($name::$variant)), )*
                    _ => None,
                }
            }

            /// WeChat's name for this variant, when it is a known one.
            #[allow(unreachable_patterns)]
            fn known_wire_name(&self) -> Option<&'static str> {
                match self {
                    $( $name::$variant(_) => Some($wire), )*
                    _ => None,
                }
            }

            /// The typed fields, under WeChat's names, for a known variant.
            #[allow(unreachable_patterns)]
            fn typed_fields(&self) -> Option<Value> {
                match self {
                    $( $name::$variant(v) => serde_json::to_value(v).ok(), )*
                    _ => None,
                }
            }
        }
    };
}

/// Payloads built from a push's fields. The default reads them with serde;
/// payloads whose XML and JSON shapes differ override it.
trait FromFields: Sized {
    fn from_fields(fields: &Value) -> Result<Self, serde_json::Error>;
}

macro_rules! serde_from_fields {
    ($($ty:ty),* $(,)?) => {
        $( impl FromFields for $ty {
            fn from_fields(fields: &Value) -> Result<Self, serde_json::Error> {
                <$ty>::deserialize(fields)
            }
        } )*
    };
}

wire_kinds! {
    /// What a push is: a message from a user, an event, or something new.
    pub enum Body {
        /// A text message.
        "text" => Text(Text),
        /// An image message.
        "image" => Image(Image),
        /// A voice message (Official Accounts).
        "voice" => Voice(Voice),
        /// A video message (Official Accounts).
        "video" => Video(Video),
        /// A short video message (Official Accounts).
        "shortvideo" => ShortVideo(Video),
        /// A location message (Official Accounts).
        "location" => Location(Location),
        /// A link message (Official Accounts).
        "link" => Link(Link),
        /// A mini-program card sent to customer service (Mini Programs).
        "miniprogrampage" => MiniProgramPage(MiniProgramPage),
    }
    extra {
        /// An event (`MsgType` `event`).
        Event(Event),
        /// A type or event this crate does not know (yet).
        Unknown(Unknown),
    }
}

wire_kinds! {
    /// An event: `MsgType` is `event` and `Event` names it.
    pub enum Event {
        /// The user opened the customer-service conversation (Mini Programs).
        "user_enter_tempsession" => UserEnterTempsession(UserEnterTempsession),
        /// The user answered a subscribe-message pop-up.
        "subscribe_msg_popup_event" => SubscribeMsgPopup(SubscribeMsgPopup),
        /// The user changed subscriptions in the settings page.
        "subscribe_msg_change_event" => SubscribeMsgChange(SubscribeMsgChange),
        /// A subscribe message was sent (or failed).
        "subscribe_msg_sent_event" => SubscribeMsgSent(SubscribeMsgSent),
        /// The result of an asynchronous media content check.
        "wxa_media_check" => WxaMediaCheck(WxaMediaCheck),
        /// Reminder to adopt the order-shipping API.
        "trade_manage_remind_access_api" => TradeManageRemindAccessApi(TradeManageRemindAccessApi),
        /// Reminder to upload shipping information.
        "trade_manage_remind_shipping" => TradeManageRemindShipping(TradeManageRemindShipping),
        /// An order shipped or settled.
        "trade_manage_order_settlement" => TradeManageOrderSettlement(TradeManageOrderSettlement),
        /// A waybill's tracking path was updated.
        "add_express_path" => AddExpressPath(AddExpressPath),
        /// Virtual payment: goods to deliver.
        "xpay_goods_deliver_notify" => XpayGoodsDeliverNotify(XpayGoodsDeliverNotify),
        /// Virtual payment: coins paid.
        "xpay_coin_pay_notify" => XpayCoinPayNotify(XpayCoinPayNotify),
        /// A user changed the information they had authorised.
        "user_info_modified" => UserInfoModified(UserAuthorization),
        /// A user revoked an authorisation.
        "user_authorization_revoke" => UserAuthorizationRevoke(UserAuthorization),
        /// Result of a nickname review.
        "wxa_nickname_audit" => WxaNicknameAudit(WxaNicknameAudit),
        /// Result of a privacy-interface application.
        "wxa_privacy_apply" => WxaPrivacyApply(WxaPrivacyApply),
        /// A code review passed.
        "weapp_audit_success" => WeappAuditSuccess(WeappAuditSuccess),
        /// A code review failed.
        "weapp_audit_fail" => WeappAuditFail(WeappAuditFail),
        /// A code review was delayed.
        "weapp_audit_delay" => WeappAuditDelay(WeappAuditDelay),
        /// The console's test push.
        "debug_demo" => DebugDemo(DebugDemo),
        /// A user followed the account (Official Accounts), perhaps by a QR code.
        "subscribe" => Subscribe(Subscribe),
        /// A user unfollowed the account (Official Accounts).
        "unsubscribe" => Unsubscribe(Unsubscribe),
        /// A follower scanned a parametric QR code (Official Accounts).
        "SCAN" => Scan(Scan),
        /// A follower reported their location (Official Accounts).
        "LOCATION" => Location(LocationReport),
        /// A click on a menu button (Official Accounts).
        "CLICK" => Click(Click),
        /// A menu link was followed (Official Accounts).
        "VIEW" => View(View),
    }
}

impl Body {
    /// The `"kind"` name: the MsgType for messages, `event:<Event>` for
    /// events, `unknown` otherwise.
    pub fn kind(&self) -> String {
        match self {
            Body::Event(event) => match event.known_wire_name() {
                Some(name) => format!("event:{name}"),
                None => "unknown".to_owned(),
            },
            other => other.known_wire_name().unwrap_or("unknown").to_owned(),
        }
    }
}

/// Which pushes a rule, a route or a forward filter takes, by kind: the
/// one matcher of the crate.
///
/// Written as the kinds of [`Message::kind`] are:
///
/// - `event:<Event>`: that event (`event:user_enter_tempsession`), typed by
///   this crate or not (`event:brand_new_event` matches by its wire name);
/// - any other text: that `MsgType` (`text`, `image`, …; `event` takes
///   every event), or that kind (`unknown` takes pushes of kinds this
///   crate does not type yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindPattern {
    /// A `MsgType` (or a kind of [`Message::kind`]).
    MsgType(String),
    /// An event, by its `Event`.
    Event(String),
}

impl KindPattern {
    /// Read a pattern as written in the config (`text`, `event`,
    /// `event:subscribe`, `unknown`).
    pub fn parse(text: &str) -> KindPattern {
        match text.strip_prefix("event:") {
            Some(event) => KindPattern::Event(event.to_owned()),
            None => KindPattern::MsgType(text.to_owned()),
        }
    }

    /// Whether `message` is of this kind.
    pub fn matches(&self, message: &Message) -> bool {
        match self {
            KindPattern::MsgType(t) => message.msg_type() == t || message.kind() == *t,
            KindPattern::Event(e) => {
                message.msg_type() == "event" && message.event() == Some(e.as_str())
            }
        }
    }
}

/// A stored body that no longer opens. Bodies were opened once before they
/// were stored, so only an edited database gets here; retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum UnreadableBody {
    /// Not XML or JSON of a push any more.
    #[error("stored body unreadable: {0}")]
    Wire(#[from] crate::protocol::wire::WireError),
    /// Fields, but not a push's.
    #[error("stored body unreadable: {0}")]
    Message(#[from] MessageError),
}

impl Message {
    /// The message of a push's decrypted body as the store keeps it: its
    /// format and bytes.
    ///
    /// # Errors
    /// [`UnreadableBody`] when the body no longer parses.
    pub fn from_stored(format: Format, body: &[u8]) -> Result<Message, UnreadableBody> {
        // Its size was bounded by `server.max_body` when it arrived, which
        // may exceed the default limit.
        let limits = Limits {
            max_body: usize::MAX,
            ..Limits::default()
        };
        let fields = wire::parse(format, body, &limits)?;
        Ok(Message::from_fields(fields)?)
    }

    /// Type the fields of an opened push.
    ///
    /// # Errors
    /// [`MessageError`] when `ToUserName`, `FromUserName`, `CreateTime` or
    /// `MsgType` is missing or mistyped. Anything else that does not fit a
    /// known variant becomes [`Body::Unknown`] rather than an error, so that no
    /// push WeChat sends is refused for a field this crate did not expect.
    pub fn from_fields(fields: Fields) -> Result<Self, MessageError> {
        let to_user = required_str(&fields, "ToUserName")?.to_owned();
        let from_user = OpenId::new(required_str(&fields, "FromUserName")?);
        let create_time = match field(&fields, "CreateTime") {
            None => return Err(MessageError::Missing("CreateTime")),
            Some(v) => int_of(v).ok_or(MessageError::Type {
                field: "CreateTime",
                expected: "an integer",
            })?,
        };
        let msg_type = required_str(&fields, "MsgType")?.to_owned();
        // The typed layer reads a `Value`; wrapping and unwrapping moves, not copies.
        let value = Value::Object(fields);
        let body = type_body(&msg_type, &value);
        let fields = match value {
            Value::Object(fields) => fields,
            _ => Fields::new(),
        };
        Ok(Message {
            to_user,
            from_user,
            create_time,
            body,
            fields,
        })
    }

    /// Every field of the push as received, under WeChat's names.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The `"kind"` name, see [`Body::kind`].
    pub fn kind(&self) -> String {
        self.body.kind()
    }

    /// `MsgId`, when the push has one; `MsgID` as some events spell it
    /// (`TEMPLATESENDJOBFINISH`, WeiXinMPSDK#2605).
    pub fn msg_id(&self) -> Option<MsgId> {
        field(self.fields(), "MsgId")
            .or_else(|| field(self.fields(), "MsgID"))
            .and_then(MsgId::from_value)
    }

    /// `MsgType` as sent (`text`, `event`, …).
    pub fn msg_type(&self) -> &str {
        field(self.fields(), "MsgType")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `Event`, for events.
    pub fn event(&self) -> Option<&str> {
        field(self.fields(), "Event").and_then(Value::as_str)
    }

    /// The key that identifies this push across WeChat's retries, and only
    /// across them: see [`DedupKey`].
    pub fn dedup_key(&self) -> DedupKey {
        DedupKey::of(self)
    }

    /// Every field under WeChat's names, with the typed ones normalised
    /// (`CreateTime` a number, a numeric `MsgId` a number, typed payload
    /// fields as parsed), plus `"kind"`.
    ///
    /// Safe for JavaScript's `JSON.parse`: next to every integer beyond
    /// ±(2^53 − 1), which JavaScript would round (`MsgId`
    /// 6438483274356786577 reads as …786000), stands `<Name>_str` with its
    /// exact digits (`"MsgId_str": "6438483274356786577"`), at any depth;
    /// for a list holding such integers, `<Name>_str` is the list with
    /// every number as a string. The number itself stays, for receivers
    /// that read it exactly.
    pub fn to_json(&self) -> Fields {
        let mut out = self.fields().clone();
        out.insert("CreateTime".into(), Value::from(self.create_time));
        let typed = match &self.body {
            Body::Event(event) => event.typed_fields(),
            other => other.typed_fields(),
        };
        if let Some(Value::Object(typed)) = typed {
            for (name, value) in typed {
                if !value.is_null() {
                    out.insert(name, value);
                }
            }
        }
        out.insert("kind".into(), Value::String(self.kind()));
        add_exact_strings(&mut out);
        out
    }
}

/// The largest integer JavaScript's numbers hold exactly (2^53 − 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Whether JavaScript would round this number.
fn unsafe_in_javascript(value: &Value) -> bool {
    match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u > MAX_SAFE_INTEGER,
            (None, Some(i)) => i.unsigned_abs() > MAX_SAFE_INTEGER,
            _ => false,
        },
        _ => false,
    }
}

/// Add `<Name>_str` next to every integer JavaScript would round (see
/// [`Message::to_json`]), at any depth, lists of lists included.
fn add_exact_strings(fields: &mut Fields) {
    let mut twins = Vec::new();
    for (name, value) in fields.iter_mut() {
        add_exact_strings_within(value);
        if let Some(twin) = exact_twin(value) {
            twins.push((format!("{name}_str"), twin));
        }
    }
    for (name, value) in twins {
        // A field WeChat itself named so is kept as sent.
        fields.entry(name).or_insert(value);
    }
}

/// Twins for the objects inside `value`, however deep in lists.
fn add_exact_strings_within(value: &mut Value) {
    match value {
        Value::Object(inner) => add_exact_strings(inner),
        Value::Array(items) => items.iter_mut().for_each(add_exact_strings_within),
        _ => {}
    }
}

/// The exact-digits twin of `value`: the digits of an integer JavaScript
/// would round; for a list holding one (at any depth of lists), the list
/// with every number as its digits; `None` otherwise.
fn exact_twin(value: &Value) -> Option<Value> {
    fn holds_unsafe(value: &Value) -> bool {
        match value {
            Value::Array(items) => items.iter().any(holds_unsafe),
            other => unsafe_in_javascript(other),
        }
    }
    fn as_strings(value: &Value) -> Value {
        match value {
            Value::Number(n) => Value::String(n.to_string()),
            Value::Array(items) => Value::Array(items.iter().map(as_strings).collect()),
            other => other.clone(),
        }
    }
    holds_unsafe(value).then(|| as_strings(value))
}

fn type_body(msg_type: &str, fields: &Value) -> Body {
    let unknown = |event: Option<String>, reason: Option<String>| {
        Body::Unknown(Unknown {
            msg_type: msg_type.to_owned(),
            event,
            reason,
        })
    };
    if msg_type == "event" {
        let Some(name) = fields.get("Event").and_then(Value::as_str) else {
            return unknown(None, Some("event without an Event field".into()));
        };
        return match Event::from_wire(name, fields) {
            Some(Ok(event)) => Body::Event(event),
            Some(Err(e)) => unknown(Some(name.to_owned()), Some(e.to_string())),
            None => unknown(Some(name.to_owned()), None),
        };
    }
    match Body::from_wire(msg_type, fields) {
        Some(Ok(body)) => body,
        Some(Err(e)) => unknown(None, Some(e.to_string())),
        None => unknown(None, None),
    }
}

/// The field `name`: a push has a handful of fields, for which comparing
/// names beats hashing them (the map hashes with SipHash).
fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a Value> {
    if fields.len() > 16 {
        return fields.get(name);
    }
    fields
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
}

fn required_str<'a>(fields: &'a Fields, name: &'static str) -> Result<&'a str, MessageError> {
    match field(fields, name) {
        None => Err(MessageError::Missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(MessageError::Type {
            field: name,
            expected: "a string",
        }),
    }
}

/// An integer given as a number or as a decimal string.
fn int_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Lenient readers for fields WeChat sends in more than one shape.
mod lenient {
    use super::*;

    /// An integer as a number or a decimal string.
    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let v = Value::deserialize(d)?;
        int_of(&v).ok_or_else(|| serde::de::Error::custom(format!("{v} is not an integer")))
    }

    /// An optional integer; an empty string counts as absent.
    pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) if s.is_empty() => Ok(None),
            v => int_of(&v)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{v} is not an integer"))),
        }
    }

    /// A float as a number or a decimal string.
    pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| serde::de::Error::custom("not a float")),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number"))),
            v => Err(serde::de::Error::custom(format!("{v} is not a number"))),
        }
    }

    /// A string, also from a bare number (XML writes some ids without CDATA).
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            v => Err(serde::de::Error::custom(format!("{v} is not a string"))),
        }
    }

    /// A list given as an array, or as a single object for one item.
    pub fn list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Vec::new()),
            Value::String(s) if s.is_empty() => Ok(Vec::new()),
            Value::Array(items) => items
                .into_iter()
                .map(|v| T::deserialize(v).map_err(serde::de::Error::custom))
                .collect(),
            one => T::deserialize(one)
                .map(|t| vec![t])
                .map_err(serde::de::Error::custom),
        }
    }
}

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

/// `user_enter_tempsession`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEnterTempsession {
    /// The `session-from` set on the customer-service button, if any.
    #[serde(rename = "SessionFrom", default)]
    pub session_from: String,
}

/// The user's answer to a subscribe message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum SubscribeStatus {
    /// `accept`.
    Accept,
    /// `reject`.
    Reject,
    /// Anything else, kept as sent.
    Other(String),
}

impl From<String> for SubscribeStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "accept" => SubscribeStatus::Accept,
            "reject" => SubscribeStatus::Reject,
            _ => SubscribeStatus::Other(s),
        }
    }
}

impl From<SubscribeStatus> for String {
    fn from(s: SubscribeStatus) -> String {
        match s {
            SubscribeStatus::Accept => "accept".into(),
            SubscribeStatus::Reject => "reject".into(),
            SubscribeStatus::Other(s) => s,
        }
    }
}

/// One template in a `subscribe_msg_popup_event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopupItem {
    /// The template id.
    #[serde(rename = "TemplateId")]
    pub template_id: String,
    /// Accepted or rejected.
    #[serde(rename = "SubscribeStatusString")]
    pub status: SubscribeStatus,
    /// Where the pop-up was shown (0 in the mini program, 2 in a payment).
    #[serde(rename = "PopupScene", default, deserialize_with = "lenient::opt_int")]
    pub popup_scene: Option<i64>,
}

/// One template in a `subscribe_msg_change_event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeItem {
    /// The template id.
    #[serde(rename = "TemplateId")]
    pub template_id: String,
    /// The new status.
    #[serde(rename = "SubscribeStatusString")]
    pub status: SubscribeStatus,
}

/// One message in a `subscribe_msg_sent_event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentItem {
    /// The template id.
    #[serde(rename = "TemplateId")]
    pub template_id: String,
    /// The sent message's id.
    #[serde(rename = "MsgID")]
    pub msg_id: MsgId,
    /// 0 on success.
    #[serde(rename = "ErrorCode", deserialize_with = "lenient::int")]
    pub error_code: i64,
    /// `success`, or why it failed.
    #[serde(rename = "ErrorStatus")]
    pub error_status: String,
}

/// Read a subscribe-message list: top-level `List` in JSON, or nested under a
/// wrapper element (`<SubscribeMsgPopupEvent><List>…`) in XML.
fn subscribe_list<T: DeserializeOwned>(
    fields: &Value,
    wrapper: &str,
) -> Result<Vec<T>, serde_json::Error> {
    let list = fields
        .get("List")
        .or_else(|| fields.get(wrapper).and_then(|w| w.get("List")))
        .unwrap_or(&Value::Null);
    lenient::list(list)
}

/// `subscribe_msg_popup_event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscribeMsgPopup {
    /// One entry per template shown.
    #[serde(skip)]
    pub items: Vec<PopupItem>,
}

/// `subscribe_msg_change_event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscribeMsgChange {
    /// One entry per template changed.
    #[serde(skip)]
    pub items: Vec<ChangeItem>,
}

/// `subscribe_msg_sent_event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscribeMsgSent {
    /// One entry per message sent.
    #[serde(skip)]
    pub items: Vec<SentItem>,
}

impl FromFields for SubscribeMsgPopup {
    fn from_fields(fields: &Value) -> Result<Self, serde_json::Error> {
        Ok(SubscribeMsgPopup {
            items: subscribe_list(fields, "SubscribeMsgPopupEvent")?,
        })
    }
}

impl FromFields for SubscribeMsgChange {
    fn from_fields(fields: &Value) -> Result<Self, serde_json::Error> {
        Ok(SubscribeMsgChange {
            items: subscribe_list(fields, "SubscribeMsgChangeEvent")?,
        })
    }
}

impl FromFields for SubscribeMsgSent {
    fn from_fields(fields: &Value) -> Result<Self, serde_json::Error> {
        Ok(SubscribeMsgSent {
            items: subscribe_list(fields, "SubscribeMsgSentEvent")?,
        })
    }
}

/// The overall verdict of a media check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCheckResult {
    /// `pass`, `review` or `risky`.
    pub suggest: String,
    /// The label of the verdict (100 is normal).
    #[serde(deserialize_with = "lenient::int")]
    pub label: i64,
}

/// One strategy's verdict in a media check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCheckDetail {
    /// The strategy.
    #[serde(default)]
    pub strategy: String,
    /// 0 when the strategy ran.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub errcode: Option<i64>,
    /// `pass`, `review` or `risky`.
    #[serde(default)]
    pub suggest: String,
    /// The label.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub label: Option<i64>,
    /// Confidence, 0–100.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub prob: Option<i64>,
}

/// `wxa_media_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WxaMediaCheck {
    /// The mini program's appid.
    pub appid: String,
    /// The id returned when the check was requested.
    pub trace_id: String,
    /// The API version (2 for the current one).
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub version: Option<i64>,
    /// The verdict (version 2).
    #[serde(default)]
    pub result: Option<MediaCheckResult>,
    /// Each strategy's verdict (version 2).
    #[serde(default, deserialize_with = "lenient::list", skip_serializing)]
    pub detail: Vec<MediaCheckDetail>,
    /// Version 1's verdict: 1 when risky.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub isrisky: Option<i64>,
}

/// `trade_manage_remind_access_api`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeManageRemindAccessApi {
    /// The reminder text.
    #[serde(default)]
    pub msg: String,
}

/// `trade_manage_remind_shipping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeManageRemindShipping {
    /// WeChat Pay transaction id.
    #[serde(deserialize_with = "lenient::string")]
    pub transaction_id: String,
    /// Merchant id.
    #[serde(deserialize_with = "lenient::string")]
    pub merchant_id: String,
    /// Sub-merchant id, for service providers.
    #[serde(default, deserialize_with = "lenient::string")]
    pub sub_merchant_id: String,
    /// The merchant's order number.
    #[serde(deserialize_with = "lenient::string")]
    pub merchant_trade_no: String,
    /// When it was paid, in seconds.
    #[serde(deserialize_with = "lenient::int")]
    pub pay_time: i64,
    /// The reminder text.
    #[serde(default)]
    pub msg: String,
}

/// `trade_manage_order_settlement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeManageOrderSettlement {
    /// WeChat Pay transaction id.
    #[serde(deserialize_with = "lenient::string")]
    pub transaction_id: String,
    /// Merchant id.
    #[serde(deserialize_with = "lenient::string")]
    pub merchant_id: String,
    /// Sub-merchant id, for service providers.
    #[serde(default, deserialize_with = "lenient::string")]
    pub sub_merchant_id: String,
    /// The merchant's order number.
    #[serde(deserialize_with = "lenient::string")]
    pub merchant_trade_no: String,
    /// When it was paid, in seconds.
    #[serde(deserialize_with = "lenient::int")]
    pub pay_time: i64,
    /// When it shipped, in seconds.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub shipped_time: Option<i64>,
    /// Expected settlement (pushed on shipping).
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub estimated_settlement_time: Option<i64>,
    /// 1 automatic, 2 manual confirmation (pushed on settlement).
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub confirm_receive_method: Option<i64>,
    /// When receipt was confirmed (pushed on settlement).
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub confirm_receive_time: Option<i64>,
    /// When it settled (pushed on settlement).
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub settlement_time: Option<i64>,
}

/// One step of a waybill's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpressAction {
    /// When, in seconds.
    #[serde(rename = "ActionTime", deserialize_with = "lenient::int")]
    pub action_time: i64,
    /// The kind of step (100001 picked up, …).
    #[serde(rename = "ActionType", deserialize_with = "lenient::int")]
    pub action_type: i64,
    /// Description.
    #[serde(rename = "ActionMsg", default)]
    pub action_msg: String,
}

/// `add_express_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddExpressPath {
    /// The carrier's id.
    #[serde(rename = "DeliveryID")]
    pub delivery_id: String,
    /// The waybill id.
    #[serde(rename = "WayBillId", deserialize_with = "lenient::string")]
    pub waybill_id: String,
    /// The order id.
    #[serde(rename = "OrderId", deserialize_with = "lenient::string")]
    pub order_id: String,
    /// Version of the path.
    #[serde(rename = "Version", deserialize_with = "lenient::int")]
    pub version: i64,
    /// Number of steps.
    #[serde(rename = "Count", deserialize_with = "lenient::int")]
    pub count: i64,
    /// The steps.
    #[serde(
        rename = "Actions",
        default,
        deserialize_with = "lenient::list",
        skip_serializing
    )]
    pub actions: Vec<ExpressAction>,
}

/// WeChat Pay details of a virtual payment (absent for other channels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeChatPayInfo {
    /// WeChat Pay merchant order number.
    #[serde(rename = "MchOrderNo", default, deserialize_with = "lenient::string")]
    pub mch_order_no: String,
    /// WeChat Pay transaction id.
    #[serde(
        rename = "TransactionId",
        default,
        deserialize_with = "lenient::string"
    )]
    pub transaction_id: String,
    /// When it was paid, in seconds.
    #[serde(rename = "PaidTime", default, deserialize_with = "lenient::opt_int")]
    pub paid_time: Option<i64>,
}

/// Goods of a virtual payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodsInfo {
    /// The item's id.
    #[serde(rename = "ProductId", deserialize_with = "lenient::string")]
    pub product_id: String,
    /// How many.
    #[serde(rename = "Quantity", deserialize_with = "lenient::int")]
    pub quantity: i64,
    /// List price, in fen.
    #[serde(rename = "OrigPrice", deserialize_with = "lenient::int")]
    pub orig_price: i64,
    /// Price paid, in fen.
    #[serde(rename = "ActualPrice", deserialize_with = "lenient::int")]
    pub actual_price: i64,
    /// Pass-through data.
    #[serde(rename = "Attach", default)]
    pub attach: String,
}

/// Coins of a virtual payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoinInfo {
    /// How many.
    #[serde(rename = "Quantity", deserialize_with = "lenient::int")]
    pub quantity: i64,
    /// List price, in fen.
    #[serde(rename = "OrigPrice", deserialize_with = "lenient::int")]
    pub orig_price: i64,
    /// Price paid, in fen.
    #[serde(rename = "ActualPrice", deserialize_with = "lenient::int")]
    pub actual_price: i64,
    /// Pass-through data.
    #[serde(rename = "Attach", default)]
    pub attach: String,
}

/// `xpay_goods_deliver_notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XpayGoodsDeliverNotify {
    /// The paying user.
    #[serde(rename = "OpenId")]
    pub open_id: String,
    /// The business order number.
    #[serde(rename = "OutTradeNo", deserialize_with = "lenient::string")]
    pub out_trade_no: String,
    /// 0 production, 1 sandbox.
    #[serde(rename = "Env", deserialize_with = "lenient::int")]
    pub env: i64,
    /// WeChat Pay details.
    #[serde(rename = "WeChatPayInfo", default, skip_serializing)]
    pub wechat_pay_info: Option<WeChatPayInfo>,
    /// The goods.
    #[serde(rename = "GoodsInfo", skip_serializing)]
    pub goods_info: GoodsInfo,
}

/// `xpay_coin_pay_notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XpayCoinPayNotify {
    /// The paying user.
    #[serde(rename = "OpenId")]
    pub open_id: String,
    /// The business order number.
    #[serde(rename = "OutTradeNo", deserialize_with = "lenient::string")]
    pub out_trade_no: String,
    /// 0 production, 1 sandbox.
    #[serde(rename = "Env", deserialize_with = "lenient::int")]
    pub env: i64,
    /// WeChat Pay details.
    #[serde(rename = "WeChatPayInfo", default, skip_serializing)]
    pub wechat_pay_info: Option<WeChatPayInfo>,
    /// The coins.
    #[serde(rename = "CoinInfo", skip_serializing)]
    pub coin_info: CoinInfo,
}

/// `user_info_modified` and `user_authorization_revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAuthorization {
    /// The user.
    #[serde(rename = "OpenID")]
    pub open_id: String,
    /// The mini program's appid.
    #[serde(rename = "AppID")]
    pub app_id: String,
    /// Which authorisation, as WeChat numbers them (e.g. `"8"`, phone number).
    #[serde(rename = "RevokeInfo", default, deserialize_with = "lenient::string")]
    pub revoke_info: String,
    /// The plugin's appid, in plugin scenes.
    #[serde(rename = "PluginID", default, skip_serializing_if = "Option::is_none")]
    pub plugin_id: Option<String>,
    /// The user's OpenPID, in plugin scenes.
    #[serde(rename = "OpenPID", default, skip_serializing_if = "Option::is_none")]
    pub open_pid: Option<String>,
}

/// `wxa_nickname_audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WxaNicknameAudit {
    /// 2 rejected, 3 approved.
    #[serde(deserialize_with = "lenient::int")]
    pub ret: i64,
    /// The nickname reviewed.
    pub nickname: String,
    /// Why it was rejected.
    #[serde(default)]
    pub reason: String,
}

/// The outcome of a privacy-interface application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyApplyResult {
    /// The interface applied for.
    pub api_name: String,
    /// When it was applied for, in seconds.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub apply_time: Option<i64>,
    /// The review's id.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub audit_id: Option<i64>,
    /// When it was reviewed, in seconds.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub audit_time: Option<i64>,
    /// 2 rejected, 3 approved.
    #[serde(deserialize_with = "lenient::int")]
    pub status: i64,
    /// Why it was rejected.
    #[serde(default)]
    pub reason: String,
}

/// `wxa_privacy_apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WxaPrivacyApply {
    /// The outcome.
    #[serde(skip_serializing)]
    pub result_info: PrivacyApplyResult,
}

/// `weapp_audit_success`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeappAuditSuccess {
    /// When it passed, in seconds.
    #[serde(rename = "SuccTime", deserialize_with = "lenient::int")]
    pub succ_time: i64,
}

/// `weapp_audit_fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeappAuditFail {
    /// Why it failed.
    #[serde(rename = "Reason")]
    pub reason: String,
    /// When it failed, in seconds.
    #[serde(rename = "FailTime", deserialize_with = "lenient::int")]
    pub fail_time: i64,
    /// `|`-separated media ids of example screenshots.
    #[serde(rename = "ScreenShot", default)]
    pub screenshot: String,
}

/// `weapp_audit_delay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeappAuditDelay {
    /// Why it was delayed.
    #[serde(rename = "Reason")]
    pub reason: String,
    /// When it was delayed, in seconds.
    #[serde(rename = "DelayTime", deserialize_with = "lenient::int")]
    pub delay_time: i64,
}

/// `debug_demo`: the console's test push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugDemo {
    /// The test text.
    #[serde(default)]
    pub debug_str: String,
}

/// `subscribe` (follow), perhaps by scanning a parametric QR code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// `qrscene_<scene>` when followed by a QR code.
    #[serde(rename = "EventKey", default, skip_serializing_if = "Option::is_none")]
    pub event_key: Option<String>,
    /// The QR code's ticket.
    #[serde(rename = "Ticket", default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// `unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {}

/// `SCAN`: a follower scanned a parametric QR code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    /// The scene value.
    #[serde(rename = "EventKey", deserialize_with = "lenient::string")]
    pub event_key: String,
    /// The QR code's ticket.
    #[serde(rename = "Ticket", default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// `LOCATION`: a reported position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationReport {
    /// Latitude.
    #[serde(rename = "Latitude", deserialize_with = "lenient::float")]
    pub latitude: f64,
    /// Longitude.
    #[serde(rename = "Longitude", deserialize_with = "lenient::float")]
    pub longitude: f64,
    /// Precision.
    #[serde(rename = "Precision", deserialize_with = "lenient::float")]
    pub precision: f64,
}

/// `CLICK`: a menu button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    /// The button's key.
    #[serde(rename = "EventKey")]
    pub event_key: String,
}

/// `VIEW`: a menu link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The URL followed.
    #[serde(rename = "EventKey")]
    pub url: String,
    /// The menu's id, for personalised menus.
    #[serde(
        rename = "MenuId",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_string"
    )]
    pub menu_id: Option<String>,
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    lenient::string(d).map(Some)
}

serde_from_fields!(
    Text,
    Image,
    Voice,
    Video,
    Location,
    Link,
    MiniProgramPage,
    UserEnterTempsession,
    WxaMediaCheck,
    TradeManageRemindAccessApi,
    TradeManageRemindShipping,
    TradeManageOrderSettlement,
    AddExpressPath,
    XpayGoodsDeliverNotify,
    XpayCoinPayNotify,
    UserAuthorization,
    WxaNicknameAudit,
    WxaPrivacyApply,
    WeappAuditSuccess,
    WeappAuditFail,
    WeappAuditDelay,
    DebugDemo,
    Subscribe,
    Unsubscribe,
    Scan,
    LocationReport,
    Click,
    View,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{parse_json, parse_xml, Limits};

    fn json(s: &str) -> Message {
        Message::from_fields(parse_json(s.as_bytes(), &Limits::default()).unwrap()).unwrap()
    }

    #[test]
    fn kind_patterns_match_msg_types_events_and_kinds() {
        let text = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":1}"#,
        );
        let enter = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"event","Event":"user_enter_tempsession","SessionFrom":"x"}"#,
        );
        let novel = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"event","Event":"brand_new_event"}"#,
        );
        let strange =
            json(r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"hologram"}"#);
        let p = KindPattern::parse;
        assert!(p("text").matches(&text) && !p("text").matches(&enter));
        assert!(
            p("event").matches(&enter) && p("event").matches(&novel) && !p("event").matches(&text)
        );
        assert!(p("event:user_enter_tempsession").matches(&enter));
        assert!(!p("event:user_enter_tempsession").matches(&novel));
        assert!(p("event:brand_new_event").matches(&novel));
        assert!(p("unknown").matches(&strange) && p("hologram").matches(&strange));
        assert!(!p("unknown").matches(&text));
        // An `Event` field on a non-event is no event.
        let odd = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"text","Event":"subscribe"}"#,
        );
        assert!(!p("event:subscribe").matches(&odd));
    }

    #[test]
    fn integers_javascript_would_round_get_an_exact_string_beside_them() {
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"event","Event":"e","MsgID":6438483274356786577,"Small":9007199254740991,"Neg":-9007199254740993,"Nested":{"OrderId":18446744073709551615},"Ids":[1,9007199254740993],"Wide":123456789012345678901234}"#,
        );
        let j = m.to_json();
        assert_eq!(j["MsgID"], 6438483274356786577u64);
        assert_eq!(j["MsgID_str"], "6438483274356786577");
        assert!(!j.contains_key("Small_str"));
        assert!(!j.contains_key("CreateTime_str"));
        assert_eq!(j["Neg_str"], "-9007199254740993");
        assert_eq!(j["Nested"]["OrderId_str"], "18446744073709551615");
        assert_eq!(j["Ids_str"], serde_json::json!(["1", "9007199254740993"]));
        // Lists of lists, and objects inside them.
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"event","Event":"e","A":[[9007199254740993]],"B":[[{"Id":9007199254740993}]]}"#,
        );
        let lists = m.to_json();
        assert_eq!(lists["A_str"], serde_json::json!([["9007199254740993"]]));
        assert_eq!(lists["B"][0][0]["Id_str"], "9007199254740993");
        assert!(!lists.contains_key("B_str"));
        // Wider than 64 bits: kept as its exact text by the wire reader.
        assert_eq!(j["Wide"], "123456789012345678901234");
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":"6054768590064713728"}"#,
        );
        assert_eq!(m.to_json()["MsgId_str"], "6054768590064713728");
    }

    #[test]
    fn msg_id_number_string_and_large() {
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":"1","MsgType":"text","Content":"hi","MsgId":"6054768590064713728"}"#,
        );
        assert_eq!(m.create_time, 1);
        assert_eq!(m.msg_id(), Some(MsgId::Number(6054768590064713728)));
        assert_eq!(m.to_json()["MsgId"], Value::from(6054768590064713728u64));
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":"abc_1"}"#,
        );
        assert_eq!(m.msg_id(), Some(MsgId::Text("abc_1".into())));
    }

    #[test]
    fn wxa_media_check_pushes_differing_only_in_trace_id_have_two_keys() {
        let m = |trace: &str| {
            json(&format!(
                r#"{{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"wxa_media_check","appid":"wx1","trace_id":"{trace}","version":2,"result":{{"suggest":"pass","label":100}}}}"#
            ))
        };
        assert_ne!(m("tr-1").dedup_key(), m("tr-2").dedup_key());
        assert_eq!(m("tr-1").dedup_key(), m("tr-1").dedup_key());
    }

    #[test]
    fn unknown_types_and_events_keep_every_field() {
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"brand_new","Extra":{"a":[1,2]}}"#,
        );
        assert_eq!(m.kind(), "unknown");
        assert_eq!(
            m.body,
            Body::Unknown(Unknown {
                msg_type: "event".into(),
                event: Some("brand_new".into()),
                reason: None
            })
        );
        assert_eq!(m.fields()["Extra"]["a"][1], Value::from(2));
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"hologram","Z":"z"}"#,
        );
        assert_eq!(m.kind(), "unknown");
        assert_eq!(m.to_json()["Z"], "z");
    }

    #[test]
    fn a_known_type_missing_its_fields_falls_back_to_unknown_with_a_reason() {
        let m = json(r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"text"}"#);
        let Body::Unknown(u) = &m.body else {
            panic!("{:?}", m.body)
        };
        assert!(
            u.reason.as_deref().unwrap_or("").contains("Content"),
            "{u:?}"
        );
    }

    #[test]
    fn missing_common_fields_are_errors() {
        let f = parse_json(
            br#"{"ToUserName":"t","CreateTime":5,"MsgType":"text"}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            Message::from_fields(f),
            Err(MessageError::Missing("FromUserName"))
        );
        let f = parse_json(
            br#"{"ToUserName":"t","FromUserName":"u","CreateTime":"x","MsgType":"text"}"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(matches!(
            Message::from_fields(f),
            Err(MessageError::Type {
                field: "CreateTime",
                ..
            })
        ));
    }

    #[test]
    fn xml_list_nested_under_wrapper_and_single_json_object() {
        let f = parse_xml(
            b"<xml><ToUserName>t</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>subscribe_msg_sent_event</Event><SubscribeMsgSentEvent><List><TemplateId>x</TemplateId><MsgID>1700827132819554304</MsgID><ErrorCode>0</ErrorCode><ErrorStatus>success</ErrorStatus></List></SubscribeMsgSentEvent></xml>",
            &Limits::default(),
        )
        .unwrap();
        let m = Message::from_fields(f).unwrap();
        let Body::Event(Event::SubscribeMsgSent(sent)) = &m.body else {
            panic!("{:?}", m.body)
        };
        assert_eq!(sent.items[0].msg_id, MsgId::Number(1700827132819554304));
    }
}
