//! The payloads of events (`MsgType` `event`): what each `Event` carries.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{lenient, FromFields, MsgId};

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
    /// `TemplateId`: the template the pop-up offered.
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
    /// `TemplateId`: the template whose subscription changed.
    #[serde(rename = "TemplateId")]
    pub template_id: String,
    /// `SubscribeStatusString`: the subscription as it is now.
    #[serde(rename = "SubscribeStatusString")]
    pub status: SubscribeStatus,
}

/// One message in a `subscribe_msg_sent_event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentItem {
    /// `TemplateId`: the template the message was sent with.
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
    /// Which check gave it, as WeChat names it (`content_model`, …).
    #[serde(default)]
    pub strategy: String,
    /// 0 when the strategy ran.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub errcode: Option<i64>,
    /// `pass`, `review` or `risky`.
    #[serde(default)]
    pub suggest: String,
    /// The label of its verdict (100 is normal).
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
    /// `msg`: the reminder, as WeChat words it for people.
    #[serde(default)]
    pub msg: String,
}

/// `trade_manage_remind_shipping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeManageRemindShipping {
    /// WeChat Pay transaction id.
    #[serde(deserialize_with = "lenient::string")]
    pub transaction_id: String,
    /// The WeChat Pay merchant id (mchid) that took the payment.
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
    /// `msg`: the reminder, as WeChat words it for people.
    #[serde(default)]
    pub msg: String,
}

/// `trade_manage_order_settlement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeManageOrderSettlement {
    /// WeChat Pay transaction id.
    #[serde(deserialize_with = "lenient::string")]
    pub transaction_id: String,
    /// The WeChat Pay merchant id (mchid) that took the payment.
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
    /// `ActionMsg`: what happened at this step, as text for people.
    #[serde(rename = "ActionMsg", default)]
    pub action_msg: String,
}

/// `add_express_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddExpressPath {
    /// The carrier's id.
    #[serde(rename = "DeliveryID")]
    pub delivery_id: String,
    /// `WayBillId`: the carrier's waybill (tracking) number.
    #[serde(rename = "WayBillId", deserialize_with = "lenient::string")]
    pub waybill_id: String,
    /// `OrderId`: the order the waybill was created for.
    #[serde(rename = "OrderId", deserialize_with = "lenient::string")]
    pub order_id: String,
    /// Version of the path.
    #[serde(rename = "Version", deserialize_with = "lenient::int")]
    pub version: i64,
    /// Number of steps.
    #[serde(rename = "Count", deserialize_with = "lenient::int")]
    pub count: i64,
    /// `Actions`: the path's steps (`Count` of them).
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
    /// `Quantity`: how many of the item were bought.
    #[serde(rename = "Quantity", deserialize_with = "lenient::int")]
    pub quantity: i64,
    /// List price, in fen.
    #[serde(rename = "OrigPrice", deserialize_with = "lenient::int")]
    pub orig_price: i64,
    /// Price paid, in fen.
    #[serde(rename = "ActualPrice", deserialize_with = "lenient::int")]
    pub actual_price: i64,
    /// `Attach`: the data the payment was requested with, returned as given.
    #[serde(rename = "Attach", default)]
    pub attach: String,
}

/// Coins of a virtual payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoinInfo {
    /// `Quantity`: how many coins were bought.
    #[serde(rename = "Quantity", deserialize_with = "lenient::int")]
    pub quantity: i64,
    /// List price, in fen.
    #[serde(rename = "OrigPrice", deserialize_with = "lenient::int")]
    pub orig_price: i64,
    /// Price paid, in fen.
    #[serde(rename = "ActualPrice", deserialize_with = "lenient::int")]
    pub actual_price: i64,
    /// `Attach`: the data the payment was requested with, returned as given.
    #[serde(rename = "Attach", default)]
    pub attach: String,
}

/// `xpay_goods_deliver_notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XpayGoodsDeliverNotify {
    /// `OpenId`: the paying user's openid (`FromUserName` is WeChat's own).
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
    /// `GoodsInfo`: the item bought, how many, and its prices.
    #[serde(rename = "GoodsInfo", skip_serializing)]
    pub goods_info: GoodsInfo,
}

/// `xpay_coin_pay_notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XpayCoinPayNotify {
    /// `OpenId`: the paying user's openid (`FromUserName` is WeChat's own).
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
    /// `CoinInfo`: how many coins were bought, and their prices.
    #[serde(rename = "CoinInfo", skip_serializing)]
    pub coin_info: CoinInfo,
}

/// `user_info_modified` and `user_authorization_revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAuthorization {
    /// `OpenID`: the openid of the user whose authorisation changed.
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
    /// The nickname that was submitted for review.
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
    /// `result_info`: the interface, when it was applied for and reviewed, and the
    /// verdict.
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
    /// `debug_str`: the text of the console's test push.
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
    /// `EventKey`: the scene the QR code was created with (no `qrscene_` prefix, unlike
    /// [`Subscribe::event_key`]).
    #[serde(rename = "EventKey", deserialize_with = "lenient::string")]
    pub event_key: String,
    /// The QR code's ticket.
    #[serde(rename = "Ticket", default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// `LOCATION`: a reported position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationReport {
    /// `Latitude`: in decimal degrees.
    #[serde(rename = "Latitude", deserialize_with = "lenient::float")]
    pub latitude: f64,
    /// `Longitude`: in decimal degrees.
    #[serde(rename = "Longitude", deserialize_with = "lenient::float")]
    pub longitude: f64,
    /// `Precision`: how precise the position is, as WeChat reports it (no unit is
    /// documented).
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
    /// `EventKey`: the URL the menu link opened.
    #[serde(rename = "EventKey")]
    pub url: String,
    /// The menu's id, for personalised menus.
    #[serde(
        rename = "MenuId",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_string"
    )]
    pub menu_id: Option<String>,
}
