//! Signatures: `signature` on the URL handshake and plaintext pushes,
//! `msg_signature` on encrypted pushes and replies.
//!
//! Both are `hex(sha1(concat(sort_bytewise(parts))))`; only the parts differ.
//! Comparisons run in constant time so that a caller cannot learn a valid
//! signature one byte at a time from response timings.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::Token;

/// A signature did not match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The URL `signature` (handshake, plaintext push) does not match.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// The `msg_signature` of an encrypted push does not match.
    #[error("msg_signature mismatch")]
    MsgSignatureMismatch,
}

/// SHA-1 of the parts sorted byte-wise and concatenated, as 40 lower-case hex digits.
///
/// # Example
/// ```
/// use wechat_push::protocol::signature::sign;
/// // WeChat's documented handshake: sorted order "1514711492", "1714036504", "AAAAA".
/// assert_eq!(
///     sign(&["AAAAA", "1714036504", "1514711492"]),
///     "f464b24fc39322e44b38aa78f5edd27bd1441696"
/// );
/// ```
pub fn sign(parts: &[&str]) -> String {
    // Hex digits are ASCII.
    String::from_utf8_lossy(&sign_hex(parts)).into_owned()
}

/// [`sign`] into a buffer: verifying allocates nothing.
fn sign_hex(parts: &[&str]) -> [u8; 40] {
    let mut hasher = Sha1::new();
    // WeChat signs three or four parts: sorted on the stack.
    let mut few: [&[u8]; 4] = [&[]; 4];
    if let Some(sorted) = few.get_mut(..parts.len()) {
        for (slot, part) in sorted.iter_mut().zip(parts) {
            *slot = part.as_bytes();
        }
        sorted.sort_unstable();
        sorted.iter().for_each(|part| hasher.update(part));
    } else {
        let mut sorted: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        sorted.sort_unstable();
        sorted.iter().for_each(|part| hasher.update(part));
    }
    let mut hex = [0u8; 40];
    for (pair, b) in hex.chunks_exact_mut(2).zip(hasher.finalize()) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0xf)];
    }
    hex
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The URL `signature`: `sign([token, timestamp, nonce])`.
pub fn url_signature(token: &Token, timestamp: &str, nonce: &str) -> String {
    sign(&[token.expose(), timestamp, nonce])
}

/// The `msg_signature`: `sign([token, timestamp, nonce, encrypt])`.
pub fn msg_signature(token: &Token, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sign(&[token.expose(), timestamp, nonce, encrypt])
}

/// Check a URL `signature` in constant time.
///
/// # Errors
/// [`SignatureError::SignatureMismatch`] when it does not match.
pub fn verify_url(
    token: &Token,
    timestamp: &str,
    nonce: &str,
    given: &str,
) -> Result<(), SignatureError> {
    if equal(&sign_hex(&[token.expose(), timestamp, nonce]), given) {
        Ok(())
    } else {
        Err(SignatureError::SignatureMismatch)
    }
}

/// Check a `msg_signature` in constant time.
///
/// # Errors
/// [`SignatureError::MsgSignatureMismatch`] when it does not match.
pub fn verify_msg(
    token: &Token,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    given: &str,
) -> Result<(), SignatureError> {
    if equal(
        &sign_hex(&[token.expose(), timestamp, nonce, encrypt]),
        given,
    ) {
        Ok(())
    } else {
        Err(SignatureError::MsgSignatureMismatch)
    }
}

/// Constant-time equality of an expected lower-case hex digest and a given
/// one, which may be in either case. Only the length may leak, and it is
/// public (40).
fn equal(expected: &[u8; 40], given: &str) -> bool {
    let given = given.as_bytes();
    if given.len() != expected.len() {
        return false;
    }
    // Compared 8 bytes at a time: five constant-time steps, not forty.
    let words = |bytes: &[u8], lower: bool| -> [u64; 5] {
        let mut out = [0u64; 5];
        for (word, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            for (dst, src) in b.iter_mut().zip(chunk) {
                *dst = if lower {
                    src.to_ascii_lowercase()
                } else {
                    *src
                };
            }
            *word = u64::from_le_bytes(b);
        }
        out
    };
    words(expected, false)[..]
        .ct_eq(&words(given, true)[..])
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Token {
        Token::new(s)
    }

    #[test]
    fn sorting_is_bytewise_not_numeric() {
        // "9" sorts after "10" byte-wise.
        assert_eq!(sign(&["9", "10"]), sign(&["10", "9"]));
        let concatenated: String = {
            let mut h = Sha1::new();
            h.update(b"109");
            h.finalize().iter().map(|b| format!("{b:02x}")).collect()
        };
        assert_eq!(sign(&["9", "10"]), concatenated);
    }

    #[test]
    fn verify_accepts_upper_case_and_rejects_anything_else() {
        let t = token("AAAAA");
        let good = "f464b24fc39322e44b38aa78f5edd27bd1441696";
        assert!(verify_url(&t, "1714036504", "1514711492", good).is_ok());
        assert!(verify_url(&t, "1714036504", "1514711492", &good.to_uppercase()).is_ok());
        for bad in [
            "",
            "f464",
            &good[..39],
            &format!("{good}0"),
            &good.replace('f', "e"),
        ] {
            assert_eq!(
                verify_url(&t, "1714036504", "1514711492", bad),
                Err(SignatureError::SignatureMismatch)
            );
        }
        // Non-ASCII of the right byte length must not panic.
        let weird = "é".repeat(20);
        assert!(verify_url(&t, "1", "2", &weird).is_err());
    }
}
