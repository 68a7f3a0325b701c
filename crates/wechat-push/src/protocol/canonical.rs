//! The canonical form of a push's fields, for telling pushes apart.
//!
//! See [`crate::message::DedupKey`] for why a push's identity is a digest of
//! everything it says.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::wire::Fields;

/// The first 128 bits of SHA-256 over the canonical form of `fields`.
///
/// The canonical form makes equal what is the same push however it was
/// written, and nothing else:
/// - object members in byte order of their names (field order does not count);
/// - numbers, strings and booleans by their text, so `"CreateTime": 1` and
///   `"CreateTime": "1"` (and XML's bare `1`) are one value;
/// - `null` as the empty text (XML has no null: an empty element is `""`);
/// - an array of one item as that item: WeChat sends a one-item `List` as an
///   object, and XML cannot tell one repeated element from one element;
/// - white space between XML elements is not a value at all (the wire
///   reader drops it); white space inside a value is kept.
///
/// Every text and container is written with its length, so the encoding is
/// prefix-free: two different canonical trees never hash the same bytes.
/// Two different pushes share a digest only by a 128-bit SHA-256 collision.
pub fn canonical_digest(fields: &Fields) -> [u8; 16] {
    let mut hash = Sha256::new();
    write_object(&mut hash, fields);
    let full = hash.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn write_object(hash: &mut Sha256, fields: &Fields) {
    let mut names: Vec<(&String, &Value)> = fields.iter().collect();
    names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    hash.update(b"{");
    hash.update((names.len() as u64).to_be_bytes());
    for (name, value) in names {
        write_text(hash, name);
        write_value(hash, value);
    }
}

fn write_value(hash: &mut Sha256, value: &Value) {
    match value {
        Value::Object(fields) => write_object(hash, fields),
        Value::Array(items) if items.len() == 1 => write_value(hash, &items[0]),
        Value::Array(items) => {
            hash.update(b"[");
            hash.update((items.len() as u64).to_be_bytes());
            for item in items {
                write_value(hash, item);
            }
        }
        Value::String(text) => write_text(hash, text),
        Value::Number(number) => write_text(hash, &number.to_string()),
        Value::Bool(true) => write_text(hash, "true"),
        Value::Bool(false) => write_text(hash, "false"),
        Value::Null => write_text(hash, ""),
    }
}

fn write_text(hash: &mut Sha256, text: &str) {
    hash.update(b"\"");
    hash.update((text.len() as u64).to_be_bytes());
    hash.update(text.as_bytes());
}
