//! `wechat-push crypto …`: the protocol's primitives on the command line.
//!
//! The output formats are a contract for scripts: `sign` prints the hex
//! signature and a newline; `decrypt` prints the message byte for byte with
//! nothing added; `encrypt` prints the base64 `Encrypt` value and a newline;
//! `parse` prints one JSON object and a newline.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use wechat_push::protocol::crypto::{self, AesKey};
use wechat_push::protocol::signature;
use wechat_push::protocol::wire::{self, Limits};
use wechat_push::{Format, Message, Token};

/// The `crypto` subcommands.
#[derive(Debug, Subcommand)]
pub enum CryptoCommand {
    /// Print the URL signature, or with --encrypt the msg_signature.
    Sign(SignArgs),
    /// Decrypt an Encrypt value (argument or stdin) and print the message as is.
    Decrypt(DecryptArgs),
    /// Encrypt a message (argument or stdin) and print the Encrypt value.
    Encrypt(EncryptArgs),
    /// Parse a plaintext push body (file or stdin) and print it as one JSON object.
    Parse(ParseArgs),
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The app's Token.
    #[arg(long)]
    token: String,
    /// The timestamp, as sent.
    #[arg(long)]
    timestamp: String,
    /// The nonce, as sent.
    #[arg(long)]
    nonce: String,
    /// The Encrypt value: sign it too (msg_signature).
    #[arg(long)]
    encrypt: Option<String>,
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The 43-character EncodingAESKey.
    #[arg(long)]
    aes_key: String,
    /// The app's appid, which the message must carry.
    #[arg(long)]
    appid: String,
    /// Token, to verify --msg-signature.
    #[arg(long, requires_all = ["timestamp", "nonce", "msg_signature"])]
    token: Option<String>,
    /// Timestamp, to verify --msg-signature.
    #[arg(long, requires = "msg_signature")]
    timestamp: Option<String>,
    /// Nonce, to verify --msg-signature.
    #[arg(long, requires = "msg_signature")]
    nonce: Option<String>,
    /// The msg_signature to verify before decrypting.
    #[arg(long, requires_all = ["token", "timestamp", "nonce"])]
    msg_signature: Option<String>,
    /// The base64 Encrypt value; read from stdin when absent.
    encrypt: Option<String>,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The 43-character EncodingAESKey.
    #[arg(long)]
    aes_key: String,
    /// The appid to seal into the message.
    #[arg(long)]
    appid: String,
    /// Exactly 16 bytes of text for the random prefix: makes the output deterministic.
    #[arg(long)]
    random: Option<String>,
    /// The message; read from stdin when absent.
    message: Option<String>,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The body's format; detected from its first character when absent.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// A file holding the body; stdin when absent.
    file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Xml,
    Json,
}

/// Run one `crypto` subcommand.
pub fn run(cmd: CryptoCommand) -> Result<()> {
    match cmd {
        CryptoCommand::Sign(a) => sign(a),
        CryptoCommand::Decrypt(a) => decrypt(a),
        CryptoCommand::Encrypt(a) => encrypt(a),
        CryptoCommand::Parse(a) => parse(a),
    }
}

fn sign(a: SignArgs) -> Result<()> {
    let token = Token::new(a.token);
    let sig = match &a.encrypt {
        Some(encrypt) => signature::msg_signature(&token, &a.timestamp, &a.nonce, encrypt),
        None => signature::url_signature(&token, &a.timestamp, &a.nonce),
    };
    println!("{sig}");
    Ok(())
}

fn decrypt(a: DecryptArgs) -> Result<()> {
    let key = AesKey::from_encoding_aes_key(&a.aes_key).context("invalid --aes-key")?;
    let encrypt = match a.encrypt {
        Some(e) => e,
        None => String::from_utf8(read_stdin()?).context("stdin is not UTF-8 base64")?,
    };
    let encrypt = encrypt.trim();
    if let (Some(token), Some(ts), Some(nonce), Some(sig)) =
        (a.token, a.timestamp, a.nonce, a.msg_signature)
    {
        signature::verify_msg(&Token::new(token), &ts, &nonce, encrypt, &sig)?;
    }
    let message = crypto::decrypt(&key, &a.appid, encrypt).context("decryption failed")?;
    write_stdout(&message)
}

fn encrypt(a: EncryptArgs) -> Result<()> {
    let key = AesKey::from_encoding_aes_key(&a.aes_key).context("invalid --aes-key")?;
    let random: [u8; 16] = match a.random {
        Some(r) => match <[u8; 16]>::try_from(r.as_bytes()) {
            Ok(bytes) => bytes,
            Err(_) => bail!("--random must be exactly 16 bytes, got {}", r.len()),
        },
        None => {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).context("no system randomness")?;
            bytes
        }
    };
    let message = match a.message {
        Some(m) => m.into_bytes(),
        None => read_stdin()?,
    };
    println!("{}", crypto::encrypt(&key, &a.appid, &message, &random)?);
    Ok(())
}

fn parse(a: ParseArgs) -> Result<()> {
    let body = match &a.file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => read_stdin()?,
    };
    let format = match a.format {
        Some(FormatArg::Xml) => Format::Xml,
        Some(FormatArg::Json) => Format::Json,
        None => wire::sniff(&body).context("body is neither XML nor JSON")?,
    };
    let fields = wire::parse(format, &body, &Limits::default())
        .with_context(|| format!("cannot parse the body as {format}"))?;
    let message = Message::from_fields(fields).context("not a push")?;
    let json = serde_json::to_string(&message.to_json())?;
    println!("{json}");
    Ok(())
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read stdin")?;
    Ok(buf)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}
