//! Push identity: the key under which WeChat's retries of one push collapse
//! into one stored push, and under which two different pushes never do.
//!
//! WeChat's own advice (messages by `MsgId`, events by `FromUserName` +
//! `CreateTime`) merges different pushes in real traffic: two users'
//! messages with one `MsgId` (WxJava#333), several card or subscribe events
//! from one user in one second (WeiXinMPSDK#2605 for `MsgID`), and every
//! virtual-payment push, which comes from one fixed official `FromUserName`
//! with the paying user in `OpenId`. A push answered `success` and then
//! dropped as a "duplicate" is never sent again, so the key has to tell
//! them apart whatever their kind.
//!
//! What a retry has in common with the first delivery is the decrypted
//! message itself: WeChat sends the same fields again (re-encrypted with a
//! new random prefix, under a new `nonce` and `timestamp` in the query). So
//! the key ends in a digest of every field of the decrypted message, in a
//! canonical form, and two pushes that differ in any field differ there.
//! The readable part before it (sender, `MsgId` or time and event) is for
//! people reading `inbox list`; it adds nothing to uniqueness.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Message;
use crate::protocol::canonical::canonical_digest;

/// The key that makes WeChat's retries of one push collapse into one, and
/// keeps different pushes apart.
///
/// Shapes (stored per app; the store's unique index is `(appid, key)`):
/// - a message with an id: `m:<FromUserName>:<MsgId>:<digest>`;
/// - anything else (events, kinds without an id):
///   `e:<FromUserName>:<CreateTime>:<Event or MsgType>:<digest>`;
///
/// where `<digest>` is 32 lower-case hex digits: the first 128 bits of
/// SHA-256 over the canonical form of every field of the decrypted message
/// (see [`canonical_digest`]). `MsgID`, as `TEMPLATESENDJOBFINISH` spells
/// it, counts as `MsgId`. Since the digest covers `CreateTime`, one key
/// never comes with two times: the SQLite store's unique index is led by
/// `create_time` and relies on it.
///
/// Keys written before version 0.2 (`msg:<MsgId>`, `evt:<user>:<time>:<event>`)
/// are still read and shown; new pushes never get one, since the prefixes
/// differ (`m:`/`e:` against `msg:`/`evt:`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DedupKey(String);

impl DedupKey {
    /// The key of a push.
    pub(super) fn of(message: &Message) -> DedupKey {
        let digest = canonical_digest(message.fields());
        let mut key = String::with_capacity(96);
        let from = message.from_user.as_str();
        // Writing to a String cannot fail.
        let _ = match message.msg_id().filter(|_| message.event().is_none()) {
            Some(id) => fmt::Write::write_fmt(&mut key, format_args!("m:{from}:{id}:")),
            None => {
                let what = message.event().unwrap_or_else(|| message.msg_type());
                let time = message.create_time;
                fmt::Write::write_fmt(&mut key, format_args!("e:{from}:{time}:{what}:"))
            }
        };
        for byte in &digest {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        DedupKey(key)
    }

    /// The key as text, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wrap a key read back from a store.
    pub fn from_stored(key: impl Into<String>) -> Self {
        DedupKey(key.into())
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{parse_json, parse_xml, Limits};

    fn json(body: &str) -> Message {
        Message::from_fields(parse_json(body.as_bytes(), &Limits::default()).unwrap()).unwrap()
    }

    fn xml(body: &str) -> Message {
        Message::from_fields(parse_xml(body.as_bytes(), &Limits::default()).unwrap()).unwrap()
    }

    #[test]
    fn message_keys_name_the_sender_and_the_msg_id() {
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u1","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":"6054768590064713728"}"#,
        );
        let key = m.dedup_key();
        assert!(
            key.as_str().starts_with("m:u1:6054768590064713728:"),
            "{key}"
        );
        assert_eq!(key.as_str().len(), "m:u1:6054768590064713728:".len() + 32);
    }

    #[test]
    fn event_keys_name_the_sender_time_and_event() {
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"debug_demo"}"#,
        );
        assert!(m.dedup_key().as_str().starts_with("e:u:5:debug_demo:"));
        // An event with an id (TEMPLATESENDJOBFINISH's MsgID) is still an event.
        let m = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"TEMPLATESENDJOBFINISH","MsgID":200163836,"Status":"success"}"#,
        );
        assert!(m
            .dedup_key()
            .as_str()
            .starts_with("e:u:5:TEMPLATESENDJOBFINISH:"));
    }

    #[test]
    fn msg_id_shared_across_users_gives_two_keys() {
        let a = json(
            r#"{"ToUserName":"t","FromUserName":"u1","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":7}"#,
        );
        let b = json(
            r#"{"ToUserName":"t","FromUserName":"u2","CreateTime":1,"MsgType":"text","Content":"hi","MsgId":7}"#,
        );
        assert_ne!(a.dedup_key(), b.dedup_key());
    }

    #[test]
    fn xpay_pushes_from_the_official_sender_in_one_second_give_two_keys() {
        let a = json(
            r#"{"ToUserName":"gh_0a1b2c3d4e5f","FromUserName":"oOFFICIAL0000000000000000000","CreateTime":1796000000,"MsgType":"event","Event":"xpay_goods_deliver_notify","OpenId":"oPlayer1aaaaaaaaaaaaaaaaaaaa","OutTradeNo":"ORD1","GoodsInfo":{"ProductId":"gem_100","Quantity":1}}"#,
        );
        let b = json(
            r#"{"ToUserName":"gh_0a1b2c3d4e5f","FromUserName":"oOFFICIAL0000000000000000000","CreateTime":1796000000,"MsgType":"event","Event":"xpay_goods_deliver_notify","OpenId":"oPlayer2aaaaaaaaaaaaaaaaaaaa","OutTradeNo":"ORD2","GoodsInfo":{"ProductId":"gem_100","Quantity":1}}"#,
        );
        assert_ne!(a.dedup_key(), b.dedup_key());
    }

    #[test]
    fn field_order_whitespace_and_format_do_not_change_the_key() {
        let a = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"user_get_card","CardId":"c","UserCardCode":"1","IsGiveByFriend":0}"#,
        );
        let b = json(
            r#"{"UserCardCode":"1","IsGiveByFriend":"0","Event":"user_get_card","CardId":"c","MsgType":"event","CreateTime":"5","FromUserName":"u","ToUserName":"t"}"#,
        );
        let c = xml(
            "<xml>\n  <ToUserName><![CDATA[t]]></ToUserName>\n  <FromUserName><![CDATA[u]]></FromUserName>\n  <CreateTime>5</CreateTime>\n  <MsgType><![CDATA[event]]></MsgType>\n  <Event><![CDATA[user_get_card]]></Event>\n  <CardId><![CDATA[c]]></CardId>\n  <IsGiveByFriend>0</IsGiveByFriend>\n  <UserCardCode><![CDATA[1]]></UserCardCode>\n</xml>",
        );
        assert_eq!(a.dedup_key(), b.dedup_key());
        assert_eq!(a.dedup_key(), c.dedup_key());
    }

    #[test]
    fn a_one_item_list_is_the_item() {
        let a = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"e","List":{"A":"1"}}"#,
        );
        let b = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"e","List":[{"A":"1"}]}"#,
        );
        assert_eq!(a.dedup_key(), b.dedup_key());
    }

    #[test]
    fn texts_that_would_run_together_stay_apart() {
        let a = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"e","A":"xy","B":""}"#,
        );
        let b = json(
            r#"{"ToUserName":"t","FromUserName":"u","CreateTime":5,"MsgType":"event","Event":"e","A":"x","B":"y"}"#,
        );
        assert_ne!(a.dedup_key(), b.dedup_key());
    }
}
