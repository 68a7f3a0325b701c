//! The canonical form of a push's fields, for telling pushes apart.
//!
//! See [`crate::protocol::message::DedupKey`] for why a push's identity is a digest of
//! everything it says.

use std::io::Write;

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
/// - an array of one item (not itself an array) as that item: WeChat sends
///   a one-item `List` as an object, and XML cannot tell one repeated
///   element from one element;
/// - white space between XML elements is not a value at all (the wire
///   reader drops it), nor around bare XML text (`<A> 1 </A>` is `1`);
///   inside CDATA and JSON strings it is kept.
///
/// What the wire reader itself does not keep cannot tell pushes apart
/// either: text beside child elements (mixed content, which WeChat never
/// sends), all but the last of a JSON name given twice (as every JSON
/// reader does), and float spellings of one binary64 value
/// (`0.1` and `0.10000000000000001`).
///
/// Every text and container is written with its length (LEB128), so the
/// encoding is prefix-free: two different canonical trees never hash the
/// same bytes.
/// Two different pushes share a digest only by a 128-bit SHA-256 collision.
pub fn canonical_digest(fields: &Fields) -> [u8; 16] {
    // Written out whole and hashed once: one SHA-256 call beats a call per
    // name and value, and a push's canonical form is a few hundred bytes.
    let mut out = Vec::with_capacity(512);
    write_object(&mut out, fields);
    let full = Sha256::digest(&out);
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

fn write_object(out: &mut Vec<u8>, fields: &Fields) {
    out.push(b'{');
    write_len(out, fields.len());
    // A push has a handful of fields: sorted on the stack, not in a Vec.
    let mut small: [(&str, &Value); 16] = [("", &Value::Null); 16];
    let mut large: Vec<(&str, &Value)>;
    let members: &mut [(&str, &Value)] = if fields.len() <= small.len() {
        for (slot, (name, value)) in small.iter_mut().zip(fields) {
            *slot = (name.as_str(), value);
        }
        &mut small[..fields.len()]
    } else {
        large = fields.iter().map(|(n, v)| (n.as_str(), v)).collect();
        &mut large
    };
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, value) in members.iter() {
        write_text(out, name.as_bytes());
        write_value(out, value);
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(fields) => write_object(out, fields),
        // One level only: `[["v"]]` is a list holding a list, not `"v"`.
        Value::Array(items) if items.len() == 1 && !items[0].is_array() => {
            write_value(out, &items[0])
        }
        Value::Array(items) => {
            out.push(b'[');
            write_len(out, items.len());
            for item in items {
                write_value(out, item);
            }
        }
        Value::String(text) => write_text(out, text.as_bytes()),
        Value::Number(number) => {
            // The number's text, formatted on the stack: integers (nearly
            // every number of a push) by hand, the rest by `Display`.
            let mut text = [0u8; 64];
            let len = match (number.as_u64(), number.as_i64()) {
                (Some(u), _) => decimal(u, false, &mut text),
                (None, Some(i)) => decimal(i.unsigned_abs(), true, &mut text),
                _ => {
                    let mut cursor = std::io::Cursor::new(&mut text[..]);
                    let _ = write!(cursor, "{number}");
                    usize::try_from(cursor.position()).unwrap_or(0)
                }
            };
            write_text(out, &text[..len]);
        }
        Value::Bool(true) => write_text(out, b"true"),
        Value::Bool(false) => write_text(out, b"false"),
        Value::Null => write_text(out, b""),
    }
}

/// `n` in decimal (after a `-` when `negative`) at the start of `out`; its length.
fn decimal(mut n: u64, negative: bool, out: &mut [u8; 64]) -> usize {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let sign = usize::from(negative);
    out[0] = b'-';
    let len = digits.len() - at;
    out[sign..sign + len].copy_from_slice(&digits[at..]);
    sign + len
}

fn write_text(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    write_len(out, text.len());
    out.extend_from_slice(text);
}

/// A length as LEB128 (seven bits a byte, the high bit set on all but the
/// last): prefix-free like a fixed width, and one byte for most fields,
/// which makes fewer bytes to hash.
fn write_len(out: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        out.push((len & 0x7f) as u8 | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_as_their_display_text() {
        for n in [0i64, 7, -7, 10, 1714112445, i64::MIN, i64::MAX] {
            let mut out = [0u8; 64];
            let len = decimal(n.unsigned_abs(), n < 0, &mut out);
            assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), n.to_string());
        }
        let mut out = [0u8; 64];
        let len = decimal(u64::MAX, false, &mut out);
        assert_eq!(
            std::str::from_utf8(&out[..len]).unwrap(),
            u64::MAX.to_string()
        );
    }

    #[test]
    fn numbers_and_their_text_are_one_value() {
        let a: Fields = serde_json::from_str(r#"{"A":1714112445,"B":-3,"C":1.5}"#).unwrap();
        let b: Fields = serde_json::from_str(r#"{"A":"1714112445","B":"-3","C":"1.5"}"#).unwrap();
        assert_eq!(canonical_digest(&a), canonical_digest(&b));
    }
}
