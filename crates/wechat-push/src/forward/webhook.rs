//! Standard Webhooks, sans-IO: the payload of a forwarded push, its stable
//! id, and its signature.
//!
//! A delivery is a `POST` with three headers ([Standard Webhooks]):
//!
//! - `webhook-id`: the push's stable id ([`webhook_id`]), the same on every
//!   retry, so that the receiver can drop repeats;
//! - `webhook-timestamp`: seconds since the epoch, when this attempt was signed;
//! - `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
//!
//! The key is the secret's bytes: base64 after the `whsec_` prefix, or the
//! secret as written when it has no prefix.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::protocol::message::{DedupKey, Message};

/// The prefix of secrets given in Standard Webhooks' base64 form.
pub const SECRET_PREFIX: &str = "whsec_";

/// A forward target's secret is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Nothing to sign with.
    #[error("is empty")]
    Empty,
    /// The part after `whsec_` is not base64.
    #[error("the part after whsec_ is not base64: {0}")]
    Base64(String),
}

/// The key a delivery is signed with. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// The key of a secret as configured: base64 after `whsec_`, otherwise the
    /// secret's own bytes.
    ///
    /// # Errors
    /// [`SecretError`] for an empty secret or bad base64 after the prefix.
    ///
    /// # Example
    /// ```
    /// use wechat_push::webhook::SigningKey;
    /// assert!(SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    /// assert!(SigningKey::from_secret("whsec_not base64!").is_err());
    /// ```
    pub fn from_secret(secret: &str) -> Result<Self, SecretError> {
        let key = match secret.strip_prefix(SECRET_PREFIX) {
            Some(b64) => STANDARD
                .decode(b64)
                .map_err(|e| SecretError::Base64(e.to_string()))?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SigningKey(key))
    }

    /// The `webhook-signature` header value for `body` sent as `id` at
    /// `timestamp` (seconds).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `header` (space-separated `v1,…` signatures, as receivers get
    /// it) holds a valid signature of `body` sent as `id` at `timestamp`.
    /// Compared in constant time.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.sign(id, timestamp, body);
        header.split(' ').any(|candidate| {
            subtle::ConstantTimeEq::ct_eq(candidate.as_bytes(), expected.as_bytes()).into()
        })
    }
}

/// The stable id of a push: `wp_` and 32 hex digits of SHA-256 over its
/// appid and dedup key. The same for every delivery and retry of the push,
/// on every instance, and free of the characters a header cannot carry.
pub fn webhook_id(appid: &str, dedup_key: &DedupKey) -> String {
    let mut hash = Sha256::new();
    hash.update(appid.as_bytes());
    hash.update([0u8]);
    hash.update(dedup_key.as_str().as_bytes());
    let digest = hash.finalize();
    let mut id = String::with_capacity(35);
    id.push_str("wp_");
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The JSON body of a delivery:
/// `{"id", "appid", "kind", "dedup_key", "received_at", "message"}`, where
/// `message` holds every field of the push under WeChat's names, typed
/// ([`Message::to_json`]), and `received_at` is RFC 3339 UTC.
pub fn payload(
    id: &str,
    appid: &str,
    dedup_key: &DedupKey,
    received_at: Millis,
    message: &Message,
) -> Vec<u8> {
    let body = json!({
        "id": id,
        "appid": appid,
        "kind": message.kind(),
        "dedup_key": dedup_key.as_str(),
        "received_at": received_at.to_rfc3339(),
        "message": Value::Object(message.to_json()),
    });
    // Serialising a Value cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example in Standard Webhooks' reference libraries, checked
        // independently with Python's hmac module.
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(key.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bm9wZQ== {sig}")
        ));
        assert!(!key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &sig));
    }

    #[test]
    fn secrets_without_the_prefix_are_raw_bytes() {
        let raw = SigningKey::from_secret("plain-secret").unwrap();
        assert_eq!(raw.0, b"plain-secret");
        assert_eq!(SigningKey::from_secret(""), Err(SecretError::Empty));
        assert_eq!(SigningKey::from_secret("whsec_"), Err(SecretError::Empty));
        assert!(matches!(
            SigningKey::from_secret("whsec_***"),
            Err(SecretError::Base64(_))
        ));
        assert!(!format!("{raw:?}").contains("plain"));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = webhook_id("wx1", &DedupKey::from_stored("msg:1"));
        assert_eq!(a, webhook_id("wx1", &DedupKey::from_stored("msg:1")));
        assert_ne!(a, webhook_id("wx2", &DedupKey::from_stored("msg:1")));
        assert_ne!(a, webhook_id("wx1", &DedupKey::from_stored("msg:2")));
        assert_eq!(a.len(), 35);
        assert!(a.starts_with("wp_"));
    }
}
