//! The sans-IO protocol layer: signatures, AES, envelopes, wire bodies and
//! the typed messages they hold.
//!
//! Nothing here does I/O, reads a clock or draws random bytes: time and
//! randomness are arguments, so every function is deterministic and tested
//! with WeChat's own vectors. The request path through it is
//! [`envelope::AppCrypto::open`] (verify, then check for replay against the
//! `now` it is given, then decrypt, then parse into a [`message::Message`])
//! for pushes and [`envelope::AppCrypto::seal`] for encrypted passive replies.

pub mod answer;
pub mod canonical;
pub mod crypto;
pub mod envelope;
pub mod message;
pub mod signature;
pub mod wire;

use std::fmt;

/// The data format an app chose in WeChat's console.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `<xml>…</xml>` bodies (the default, and the only one for Official Accounts).
    Xml,
    /// JSON object bodies (Mini Programs may choose it).
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Xml => "xml",
            Format::Json => "json",
        })
    }
}

/// The encryption mode an app chose in WeChat's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// 明文: no encryption; the URL `signature` authenticates the push.
    Plaintext,
    /// 兼容: plaintext fields and `Encrypt` side by side; the encrypted copy is authoritative.
    Compatible,
    /// 安全: only `Encrypt`, authenticated by `msg_signature`.
    Safe,
}

impl Mode {
    /// Whether pushes in this mode carry `Encrypt`.
    pub fn is_encrypted(self) -> bool {
        !matches!(self, Mode::Plaintext)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Plaintext => "plaintext",
            Mode::Compatible => "compatible",
            Mode::Safe => "safe",
        })
    }
}

/// The app's Token (3–32 characters), used only for signatures.
///
/// `Debug` and `Display` never show it; [`Token::expose`] is the one way out.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wrap a token.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    /// The token itself, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// The kind of app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// 小程序.
    MiniProgram,
    /// 公众号.
    OfficialAccount,
}

/// A secret from the configuration (an AppSecret, EncodingAESKey,
/// webhook secret). `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
