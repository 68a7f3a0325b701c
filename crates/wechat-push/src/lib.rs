//! Receive WeChat message pushes for Mini Programs and Official Accounts.
//!
//! A push travels one path, and each step has its own module:
//!
//! 1. **verify** the signature: [`protocol::signature`], constant time;
//! 2. **open** it: [`protocol::envelope`] checks the timestamp against the
//!    replay window, decrypts ([`protocol::crypto`]) and reads the body
//!    ([`protocol::wire`]) into a typed [`Message`];
//! 3. **de-duplicate and store** it, keyed by its [`DedupKey`], durably:
//!    [`store`] (SQLite by default, group-committed);
//! 4. **acknowledge** it: [`server`] answers only after the store commits;
//! 5. **handle** it: [`worker`] runs the [`Handler`] with retries;
//! 6. **reply**: [`reply`] builds passive replies.
//!
//! The [`protocol`] layer is sans-IO: no clock, no randomness, no sockets.
//!
//! ```
//! use wechat_push::protocol::crypto::{self, AesKey};
//!
//! // Most real EncodingAESKeys are non-canonical base64; they are accepted.
//! let key = AesKey::from_encoding_aes_key(&format!("{}B", "A".repeat(42))).unwrap();
//! let sealed = crypto::encrypt(&key, "wxba5fad812f8e6fb9", b"hello", &[0; 16]).unwrap();
//! assert_eq!(crypto::decrypt(&key, "wxba5fad812f8e6fb9", &sealed).unwrap(), b"hello");
//! ```

pub use forward::webhook;
pub use protocol::message;

pub mod api;
pub mod clock;
pub mod config;
pub mod console;
pub mod forward;
pub mod handler;
mod lease;
pub mod listener;
pub mod metrics;
pub mod mock_wechat;
pub mod outbox;
pub mod protocol;
pub mod reply;
pub mod router;
pub mod rules;
pub mod server;
pub mod simulate;
pub mod store;
pub mod tls;
pub mod worker;

/// An error and its causes on one line, `outer: cause: root cause`, as
/// logs and answers show them.
///
/// # Example
/// ```
/// use wechat_push::protocol::crypto::{self, AesKey};
/// let key = AesKey::from_bytes([0; 32]);
/// let err = wechat_push::OpenError::Decrypt(crypto::decrypt(&key, "wx", "AAAA").unwrap_err());
/// assert_eq!(wechat_push::display_chain(&err), "decryption failed: ciphertext length 3 is not a positive multiple of 16");
/// ```
pub fn display_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

pub use config::Config;
pub use handler::{Handler, HandlerError, Push};
pub use message::{Body, DedupKey, Event, Message, MsgId, OpenId};
pub use protocol::envelope::{AppCrypto, OpenError, Opened, PushQuery};
pub use protocol::{Format, Mode, Token};
pub use reply::{MiniProgramReply, OfficialAccountReply, PassiveReply};
pub use server::Application;
