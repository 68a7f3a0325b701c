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
    let mut sorted: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part);
    }
    to_hex(&hasher.finalize())
}

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
    if equal(&url_signature(token, timestamp, nonce), given) {
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
    if equal(&msg_signature(token, timestamp, nonce, encrypt), given) {
        Ok(())
    } else {
        Err(SignatureError::MsgSignatureMismatch)
    }
}

/// Constant-time equality of an expected lower-case hex digest and a given
/// one, which may be in either case. Only the length may leak, and it is
/// public (40).
fn equal(expected: &str, given: &str) -> bool {
    let given = given.as_bytes();
    if given.len() != expected.len() {
        return false;
    }
    let mut lowered = [0u8; 40];
    let lowered = &mut lowered[..given.len().min(40)];
    for (dst, src) in lowered.iter_mut().zip(given) {
        *dst = src.to_ascii_lowercase();
    }
    expected.as_bytes().ct_eq(lowered).into()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
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
        let concatenated = {
            let mut h = Sha1::new();
            h.update(b"109");
            to_hex(&h.finalize())
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
