//! The identifiers a push carries: the user's openid and the message id.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

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
    pub(super) fn from_value(value: &Value) -> Option<MsgId> {
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
