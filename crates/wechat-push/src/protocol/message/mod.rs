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

use serde::Deserialize;
use serde_json::Value;

use crate::protocol::wire::{self, Fields, Limits};
use crate::protocol::Format;

mod bodies;
mod events;
mod identity;
mod ids;
mod lenient;

pub use bodies::*;
pub use events::*;
pub use identity::DedupKey;
pub use ids::{MsgId, OpenId};

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
    /// A field that names the push (its users, kind or id) holds a NUL
    /// character. No WeChat identifier has one, and PostgreSQL's `text`
    /// cannot store it: refused here, with a 400, rather than failing the
    /// store with a 503 that WeChat would retry forever.
    #[error("field {0} holds a NUL character, which no WeChat identifier has")]
    Nul(&'static str),
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
        /// A text message (Mini Programs and Official Accounts).
        "text" => Text(Text),
        /// An image message (Mini Programs and Official Accounts).
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
/// Written as the kinds of [`Message::kind`] are ([`KindPattern::parse`]):
///
/// - `event:<Event>`: that event (`event:user_enter_tempsession`), typed by
///   this crate or not (`event:brand_new_event` matches by its wire name);
/// - `unknown`: pushes of kinds this crate does not type yet;
/// - any other text: that `MsgType` (`text`, `image`, …; `event` takes
///   every event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindPattern {
    /// A `MsgType`, as sent.
    MsgType(String),
    /// An event, by its `Event`.
    Event(String),
    /// A kind this crate does not type yet ([`Message::kind`] `unknown`).
    Unknown,
}

impl KindPattern {
    /// Read a pattern as written in the config (`text`, `event`,
    /// `event:subscribe`, `unknown`).
    pub fn parse(text: &str) -> KindPattern {
        match text.strip_prefix("event:") {
            Some(event) => KindPattern::Event(event.to_owned()),
            None if text == "unknown" => KindPattern::Unknown,
            None => KindPattern::MsgType(text.to_owned()),
        }
    }

    /// Whether `message` is of this kind.
    pub fn matches(&self, message: &Message) -> bool {
        match self {
            KindPattern::MsgType(t) => message.msg_type() == t,
            KindPattern::Event(e) => {
                message.msg_type() == "event" && message.event() == Some(e.as_str())
            }
            KindPattern::Unknown => message.kind() == "unknown",
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
        for name in [
            "ToUserName",
            "FromUserName",
            "MsgType",
            "Event",
            "MsgId",
            "MsgID",
        ] {
            if field(&fields, name)
                .and_then(Value::as_str)
                .is_some_and(|v| v.contains('\0'))
            {
                return Err(MessageError::Nul(name));
            }
        }
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

    /// A NUL in an openid reached the PostgreSQL store, whose `text` cannot
    /// hold it: every delivery got 503, and WeChat retried it forever.
    #[test]
    fn a_nul_in_an_identifier_is_refused_when_the_push_is_typed() {
        let typed =
            |s: &str| Message::from_fields(parse_json(s.as_bytes(), &Limits::default()).unwrap());
        for (body, field) in [
            (
                r#"{"ToUserName":"t","FromUserName":"o\u0000x","CreateTime":1,"MsgType":"text","MsgId":1}"#,
                "FromUserName",
            ),
            (
                r#"{"ToUserName":"t\u0000","FromUserName":"o","CreateTime":1,"MsgType":"text","MsgId":1}"#,
                "ToUserName",
            ),
            (
                r#"{"ToUserName":"t","FromUserName":"o","CreateTime":1,"MsgType":"event","Event":"a\u0000b"}"#,
                "Event",
            ),
            (
                r#"{"ToUserName":"t","FromUserName":"o","CreateTime":1,"MsgType":"text","MsgId":"1\u0000"}"#,
                "MsgId",
            ),
        ] {
            let e = typed(body).unwrap_err();
            assert!(
                matches!(e, MessageError::Nul(f) if f == field),
                "{body}: {e}"
            );
            assert!(e.to_string().contains("NUL"), "{e}");
        }
        // Elsewhere (a message's text) a NUL is content, kept as sent.
        let text = r#"{"ToUserName":"t","FromUserName":"o","CreateTime":1,"MsgType":"text","Content":"a\u0000b","MsgId":1}"#;
        assert!(typed(text).is_ok());
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
        assert!(p("unknown").matches(&novel) && !p("unknown").matches(&enter));
        // A MsgType is a MsgType: the kind `event:…` is no MsgType.
        assert!(!KindPattern::MsgType("event:user_enter_tempsession".into()).matches(&enter));
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
