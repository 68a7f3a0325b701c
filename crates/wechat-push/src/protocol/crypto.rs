//! AES encryption of pushes and replies (safe and compatible modes).
//!
//! The layout WeChat encrypts is `16 random bytes ‖ u32 BE msg_len ‖ msg ‖ appid`,
//! padded PKCS#7-style to a multiple of **32** bytes (not AES's 16), then
//! AES-256-CBC with the IV taken from the key's first 16 bytes, then base64.
//! Random bytes are a parameter of [`encrypt`], so tests are reproducible.

use aes::cipher::{
    block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit, KeyIvInit,
};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256Dec>;

/// The block size of WeChat's padding, twice AES's.
const PAD_BLOCK: usize = 32;

/// Decodes like Java, Python, Go and PHP do: non-zero trailing bits and
/// missing padding are accepted. About three EncodingAESKeys in four end in a
/// character with non-zero low bits and would be refused by a strict decoder.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes canonically, with padding, as WeChat does.
const STANDARD: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An EncodingAESKey that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 43 characters long.
    #[error("EncodingAESKey must be 43 characters, got {0}")]
    Length(usize),
    /// A character outside the base64 alphabet.
    #[error("EncodingAESKey has {found:?} at position {position}: only A-Z, a-z, 0-9, + and / are allowed")]
    Character {
        /// Zero-based position of the character.
        position: usize,
        /// The character.
        found: char,
    },
}

/// Why an `Encrypt` value could not be decrypted or a message encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The `Encrypt` value is not base64.
    #[error("Encrypt is not valid base64")]
    Base64(#[source] base64::DecodeError),
    /// The ciphertext is empty or not whole AES blocks.
    #[error("ciphertext length {0} is not a positive multiple of 16")]
    CiphertextLength(usize),
    /// The last byte is not a valid pad length.
    #[error("padding byte {0} out of range 1..=32")]
    Padding(u8),
    /// The pad bytes do not all equal the pad length: wrong key, or tampering.
    #[error("padding bytes are inconsistent (wrong key or tampered ciphertext)")]
    PaddingInconsistent,
    /// Fewer bytes than the 16-byte random prefix and 4-byte length.
    #[error("decrypted payload is {0} bytes, shorter than its 20-byte header")]
    TooShort(usize),
    /// The declared message length runs past the end of the payload.
    #[error("declared message length {declared} exceeds the {available} bytes available")]
    MessageLength {
        /// msg_len as declared in the payload.
        declared: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// The trailing appid is not the app's own.
    #[error("appid mismatch: got {got}, expected {expected}")]
    AppIdMismatch {
        /// What the payload carries (lossy UTF-8, at most 64 bytes).
        got: String,
        /// The app's own appid.
        expected: String,
    },
    /// A message too large for the 32-bit length field.
    #[error("message of {0} bytes is too large to encrypt")]
    MessageTooLarge(usize),
}

/// A 32-byte AES key decoded from an EncodingAESKey. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey([redacted])")
    }
}

impl AesKey {
    /// Decode a 43-character EncodingAESKey (`base64(key + "=")`), leniently.
    ///
    /// # Errors
    /// [`KeyError`] when the key is not 43 base64 characters.
    ///
    /// # Example
    /// ```
    /// use wechat_push::protocol::crypto::AesKey;
    /// // Non-canonical: 'B' has non-zero low bits. Accepted, as WeChat does.
    /// let key = format!("{}B", "A".repeat(42));
    /// assert!(AesKey::from_encoding_aes_key(&key).is_ok());
    /// assert!(AesKey::from_encoding_aes_key("too-short").is_err());
    /// ```
    pub fn from_encoding_aes_key(encoding_aes_key: &str) -> Result<Self, KeyError> {
        let chars = encoding_aes_key.chars().count();
        if chars != 43 {
            return Err(KeyError::Length(chars));
        }
        if let Some((position, found)) = encoding_aes_key
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
        {
            return Err(KeyError::Character { position, found });
        }
        let mut key = [0u8; 32];
        // 43 base64 characters are 258 bits: 32 bytes and 2 spare bits, which
        // the lenient engine ignores. It cannot fail on 43 checked characters.
        let written = LENIENT
            .decode_slice(encoding_aes_key, &mut key)
            .map_err(|_| KeyError::Length(chars))?;
        debug_assert_eq!(written, 32);
        Ok(AesKey(key))
    }

    /// Build a key from raw bytes (tests, or keys kept in another form).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        AesKey(bytes)
    }

    /// The canonical 43-character EncodingAESKey for this key.
    pub fn to_encoding_aes_key(&self) -> String {
        let mut s = STANDARD.encode(self.0);
        s.pop(); // the single '=' of padding
        s
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

/// Encrypt `msg` for `appid` and return the base64 `Encrypt` value.
///
/// `random` is the 16-byte prefix WeChat's layout starts with; pass fresh
/// random bytes in production and fixed ones in tests.
///
/// # Errors
/// [`CryptoError::MessageTooLarge`] for a message over 4 GiB.
pub fn encrypt(
    key: &AesKey,
    appid: &str,
    msg: &[u8],
    random: &[u8; 16],
) -> Result<String, CryptoError> {
    let msg_len = u32::try_from(msg.len()).map_err(|_| CryptoError::MessageTooLarge(msg.len()))?;
    let unpadded = 16 + 4 + msg.len() + appid.len();
    let pad = PAD_BLOCK - unpadded % PAD_BLOCK; // 1..=32: a full block when aligned
    let mut buf = Vec::with_capacity(unpadded + pad);
    buf.extend_from_slice(random);
    buf.extend_from_slice(&msg_len.to_be_bytes());
    buf.extend_from_slice(msg);
    buf.extend_from_slice(appid.as_bytes());
    // pad <= 32, so the cast is exact.
    buf.resize(unpadded + pad, pad as u8);
    let len = buf.len();
    let cipher = Aes256CbcEnc::new(&key.0.into(), &key.iv().into());
    let encrypted = cipher
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .map_err(|_| CryptoError::CiphertextLength(len))?;
    Ok(STANDARD.encode(encrypted))
}

/// Decrypt a base64 `Encrypt` value and check that it was made for `appid`.
///
/// # Errors
/// A [`CryptoError`] naming the check that failed: base64, length, padding,
/// header, message length or appid.
pub fn decrypt(key: &AesKey, appid: &str, encrypt: &str) -> Result<Vec<u8>, CryptoError> {
    Decrypter::new(key).decrypt(appid, encrypt)
}

/// A key ready to decrypt: its AES round keys expanded once, not per push.
#[derive(Clone)]
struct Decrypter {
    cipher: aes::Aes256Dec,
    iv: [u8; 16],
}

impl Decrypter {
    fn new(key: &AesKey) -> Self {
        Decrypter {
            cipher: aes::Aes256Dec::new(&key.0.into()),
            iv: key.iv(),
        }
    }

    /// See [`decrypt`].
    fn decrypt(&self, appid: &str, encrypt: &str) -> Result<Vec<u8>, CryptoError> {
        decrypt_with(self, appid, encrypt)
    }
}

fn decrypt_with(key: &Decrypter, appid: &str, encrypt: &str) -> Result<Vec<u8>, CryptoError> {
    let encrypt = encrypt.trim();
    let mut buf = vec![0u8; base64::decoded_len_estimate(encrypt.len())];
    // WeChat's Encrypt is canonical base64, which the SIMD decoder takes at
    // several times the speed; anything else gets the lenient decoder.
    let canonical = base64_simd::STANDARD
        .decode(encrypt.as_bytes(), base64_simd::Out::from_slice(&mut buf))
        .map(|decoded| decoded.len());
    let len = match canonical {
        Ok(len) => len,
        Err(_) => LENIENT
            .decode_slice(encrypt, &mut buf)
            .map_err(|e| match e {
                base64::DecodeSliceError::DecodeError(e) => CryptoError::Base64(e),
                // The buffer is sized by the estimate, which is an upper bound.
                base64::DecodeSliceError::OutputSliceTooSmall => CryptoError::CiphertextLength(0),
            })?,
    };
    buf.truncate(len);
    if len == 0 || len % 16 != 0 {
        return Err(CryptoError::CiphertextLength(len));
    }
    let cipher = Aes256CbcDec::inner_iv_init(key.cipher.clone(), &key.iv.into());
    let plain = cipher
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| CryptoError::CiphertextLength(len))?;
    let content = unpad(plain)?;
    let (msg, trailing_appid) = split_payload(content)?;
    if trailing_appid != appid.as_bytes() {
        let shown = &trailing_appid[..trailing_appid.len().min(64)];
        return Err(CryptoError::AppIdMismatch {
            got: String::from_utf8_lossy(shown).into_owned(),
            expected: appid.to_owned(),
        });
    }
    // The message sits after the 20-byte header: moved to the front of the
    // buffer it was decrypted in, rather than copied into a new one.
    let msg_len = msg.len();
    buf.truncate(20 + msg_len);
    buf.drain(..20);
    Ok(buf)
}

fn unpad(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let Some(&pad) = plain.last() else {
        return Err(CryptoError::TooShort(0));
    };
    let pad_len = usize::from(pad);
    if !(1..=PAD_BLOCK).contains(&pad_len) || pad_len > plain.len() {
        return Err(CryptoError::Padding(pad));
    }
    let (content, padding) = plain.split_at(plain.len() - pad_len);
    if padding.iter().any(|&b| b != pad) {
        return Err(CryptoError::PaddingInconsistent);
    }
    Ok(content)
}

/// Split `random ‖ msg_len ‖ msg ‖ appid` into `(msg, appid)`.
fn split_payload(content: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let Some((header, rest)) = content.split_at_checked(20) else {
        return Err(CryptoError::TooShort(content.len()));
    };
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&header[16..20]);
    let declared = u32::from_be_bytes(len_bytes) as usize;
    if declared > rest.len() {
        return Err(CryptoError::MessageLength {
            declared,
            available: rest.len(),
        });
    }
    Ok(rest.split_at(declared))
}

/// Which key of a [`KeyRing`] opened a push; replies use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    /// The current EncodingAESKey.
    Current,
    /// The previous EncodingAESKey, kept during a key rotation.
    Previous,
}

/// The current key and, during a rotation, the previous one.
///
/// WeChat's guidance for rotation: try the current key, then the previous
/// one, and encrypt the reply with whichever worked.
#[derive(Clone)]
pub struct KeyRing {
    current: AesKey,
    previous: Option<AesKey>,
    decrypt_current: Decrypter,
    decrypt_previous: Option<Decrypter>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring with the current key and an optional previous one.
    pub fn new(current: AesKey, previous: Option<AesKey>) -> Self {
        KeyRing {
            decrypt_current: Decrypter::new(&current),
            decrypt_previous: previous.as_ref().map(Decrypter::new),
            current,
            previous,
        }
    }

    /// The key in `slot` (the current one if there is no previous key).
    pub fn key(&self, slot: KeySlot) -> &AesKey {
        match (slot, &self.previous) {
            (KeySlot::Previous, Some(previous)) => previous,
            _ => &self.current,
        }
    }

    /// Decrypt with the current key, then the previous one.
    ///
    /// # Errors
    /// The current key's error when no key opens the value.
    pub fn decrypt(&self, appid: &str, encrypt: &str) -> Result<(Vec<u8>, KeySlot), CryptoError> {
        match self.decrypt_current.decrypt(appid, encrypt) {
            Ok(msg) => Ok((msg, KeySlot::Current)),
            Err(err) => match &self.decrypt_previous {
                Some(previous) => previous
                    .decrypt(appid, encrypt)
                    .map(|msg| (msg, KeySlot::Previous))
                    .map_err(|_| err),
                None => Err(err),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPID: &str = "wxba5fad812f8e6fb9";

    fn key(s: &str) -> AesKey {
        AesKey::from_encoding_aes_key(s).unwrap()
    }

    #[test]
    fn encrypt_values_without_padding_still_open() {
        let k = key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
        // 5 bytes of message: the ciphertext's base64 ends in padding.
        for msg in [&b"hello"[..], b"hello world, 32 bytes of message"] {
            let sealed = encrypt(&k, APPID, msg, &[3; 16]).unwrap();
            let unpadded = sealed.trim_end_matches('=');
            assert_eq!(decrypt(&k, APPID, &sealed).unwrap(), msg);
            assert_eq!(decrypt(&k, APPID, unpadded).unwrap(), msg, "{unpadded}");
        }
        assert!(matches!(
            decrypt(&k, APPID, "not base64!"),
            Err(CryptoError::Base64(_))
        ));
    }

    #[test]
    fn non_canonical_keys_decode_like_other_languages() {
        // "…B" has low bits set: a strict decoder refuses it. The low 2 bits
        // are dropped, so it is the same key as "…A".
        let all_a = key(&"A".repeat(43));
        let ends_b = key(&format!("{}B", "A".repeat(42)));
        assert_eq!(all_a, ends_b);
        let ends_d = key(&format!("{}E", "A".repeat(42)));
        assert_ne!(all_a, ends_d);
        assert_eq!(all_a.to_encoding_aes_key(), "A".repeat(43));
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        assert_eq!(
            AesKey::from_encoding_aes_key("abc"),
            Err(KeyError::Length(3))
        );
        let err = AesKey::from_encoding_aes_key(&format!("{}-", "A".repeat(42))).unwrap_err();
        assert_eq!(
            err,
            KeyError::Character {
                position: 42,
                found: '-'
            }
        );
        assert_eq!(
            AesKey::from_encoding_aes_key(&"é".repeat(43)).unwrap_err(),
            KeyError::Character {
                position: 0,
                found: 'é'
            }
        );
    }

    #[test]
    fn key_debug_is_redacted() {
        assert_eq!(format!("{:?}", key(&"A".repeat(43))), "AesKey([redacted])");
    }

    #[test]
    fn aligned_message_gets_a_full_block_of_padding() {
        let k = key(&"A".repeat(43));
        // 16 + 4 + msg + 18 (appid) = 64 when msg is 26 bytes.
        let msg = [b'x'; 26];
        let enc = encrypt(&k, APPID, &msg, &[7; 16]).unwrap();
        let raw = STANDARD.decode(&enc).unwrap();
        assert_eq!(raw.len(), 96);
        assert_eq!(decrypt(&k, APPID, &enc).unwrap(), msg);
    }

    #[test]
    fn empty_large_multiple_of_32_and_multilingual_messages_round_trip() {
        let k = key(&format!("{}B", "A".repeat(42)));
        let chinese_emoji = "你好，世界 👋🏽 عربى".repeat(3);
        let messages: [Vec<u8>; 5] = [
            Vec::new(),
            vec![b'x'; 32],
            vec![b'y'; 64],
            "长".repeat(32 * 1024 / 3).into_bytes(),
            chinese_emoji.into_bytes(),
        ];
        for (i, msg) in messages.iter().enumerate() {
            let enc = encrypt(&k, APPID, msg, &[i as u8; 16]).unwrap();
            assert_eq!(&decrypt(&k, APPID, &enc).unwrap(), msg, "message {i}");
        }
    }

    #[test]
    fn each_check_names_itself() {
        let k = key(&"A".repeat(43));
        let enc = encrypt(&k, APPID, b"hello", &[1; 16]).unwrap();
        let err = decrypt(&k, "wx0000000000000000", &enc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "appid mismatch: got wxba5fad812f8e6fb9, expected wx0000000000000000"
        );
        assert!(matches!(
            decrypt(&k, APPID, "!!!"),
            Err(CryptoError::Base64(_))
        ));
        assert!(matches!(
            decrypt(&k, APPID, ""),
            Err(CryptoError::CiphertextLength(0))
        ));
        assert!(matches!(
            decrypt(&k, APPID, "AAAA"),
            Err(CryptoError::CiphertextLength(3))
        ));

        // Forge plaintexts with chosen padding and header to reach each check.
        let forge = |plain: &[u8]| {
            let mut buf = plain.to_vec();
            let len = buf.len();
            let c = Aes256CbcEnc::new(&k.0.into(), &k.iv().into());
            STANDARD.encode(c.encrypt_padded_mut::<NoPadding>(&mut buf, len).unwrap())
        };
        let mut p = [0u8; 32];
        p[31] = 45;
        assert_eq!(
            decrypt(&k, APPID, &forge(&p)).unwrap_err().to_string(),
            "padding byte 45 out of range 1..=32"
        );
        p[31] = 0;
        assert_eq!(decrypt(&k, APPID, &forge(&p)), Err(CryptoError::Padding(0)));
        p[31] = 2;
        p[30] = 3;
        assert_eq!(
            decrypt(&k, APPID, &forge(&p)),
            Err(CryptoError::PaddingInconsistent)
        );
        let p = [16u8; 32]; // 16 bytes left: shorter than the header
        assert_eq!(
            decrypt(&k, APPID, &forge(&p)),
            Err(CryptoError::TooShort(16))
        );
        let mut p = [1u8; 32];
        p[16..20].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(
            decrypt(&k, APPID, &forge(&p)),
            Err(CryptoError::MessageLength {
                declared: 1000,
                available: 11
            })
        );
        let mut p = [1u8; 32];
        p[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decrypt(&k, APPID, &forge(&p)),
            Err(CryptoError::MessageLength { .. })
        ));
    }

    #[test]
    fn key_ring_tries_the_previous_key_and_says_which_worked() {
        let old = key(&"A".repeat(43));
        let new = key(&format!("{}E", "B".repeat(42)));
        let ring = KeyRing::new(new.clone(), Some(old.clone()));
        let by_old = encrypt(&old, APPID, b"m", &[0; 16]).unwrap();
        let by_new = encrypt(&new, APPID, b"m", &[0; 16]).unwrap();
        assert_eq!(ring.decrypt(APPID, &by_new).unwrap().1, KeySlot::Current);
        assert_eq!(ring.decrypt(APPID, &by_old).unwrap().1, KeySlot::Previous);
        assert_eq!(ring.key(KeySlot::Previous), &old);
        let only_new = KeyRing::new(new, None);
        assert!(only_new.decrypt(APPID, &by_old).is_err());
    }
}
