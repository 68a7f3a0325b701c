//! Lenient readers for fields WeChat sends in more than one shape: an
//! integer as a number or a decimal string, a string as a bare number, a
//! list as an array or a single object.

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use super::int_of;

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

/// An optional string, also from a bare number.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string(d).map(Some)
}
