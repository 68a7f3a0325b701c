//! `wechat-push inbox list|show|retry`: the stored pushes.
//!
//! `list --json` prints one JSON object per line with at least `appid`,
//! `dedup_key`, `kind`, `from`, `create_time`, `status`, `attempts` and
//! `received_at` (milliseconds since the epoch): a contract for scripts.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::sync::Arc;
use wechat_push::clock::Millis;
use wechat_push::forward::display_url;
use wechat_push::outbox::{HANDLER_SOURCE, PASSIVE_SOURCE};
use wechat_push::protocol::wire;

use wechat_push::api::WechatApi;
use wechat_push::outbox::Outbox;
use wechat_push::store::{AnswerStatus, DeliveryStatus, ListFilter, Status, Store, StoredPush};

use crate::ConfigArgs;

/// The `inbox` subcommands.
#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// List stored pushes, newest first.
    List(ListArgs),
    /// Print one push whole, with its decrypted body.
    Show(KeyArgs),
    /// Re-queue a dead push, and the dead deliveries of a push.
    Retry(KeyArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this app's pushes.
    #[arg(long)]
    app: Option<String>,
    /// Only pushes in this status.
    #[arg(long, value_parser = ["pending", "working", "done", "dead"])]
    status: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// At most this many (0: all).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this app's push with the key.
    #[arg(long)]
    app: Option<String>,
    /// The dedup key, as `inbox list` shows it (e.g. m:oUser…:1234567890123456:3f2a…).
    key: String,
}

/// Run one `inbox` subcommand.
pub fn run(cmd: InboxCommand) -> Result<()> {
    crate::block_on(crate::Threads::One, async move {
        match cmd {
            InboxCommand::List(a) => list(a).await,
            InboxCommand::Show(a) => show(a).await,
            InboxCommand::Retry(a) => retry(a).await,
        }
    })
}

async fn open(config: &ConfigArgs) -> Result<Arc<dyn Store>> {
    crate::open_store(&config.load()?).await
}

async fn list(a: ListArgs) -> Result<()> {
    let store = open(&a.config).await?;
    let filter = ListFilter {
        appid: a.app,
        status: a.status.as_deref().and_then(Status::parse),
        limit: a.limit,
    };
    let pushes = store.list(filter).await?;
    if a.json {
        for p in &pushes {
            println!("{}", serde_json::to_string(p)?);
        }
        return Ok(());
    }
    // Columns as wide as their longest value: keys end in a 32-digit digest.
    let key_width = pushes
        .iter()
        .map(|p| p.dedup_key.as_str().chars().count())
        .max()
        .unwrap_or(0)
        .max("DEDUP KEY".len());
    let kind_width = pushes
        .iter()
        .map(|p| p.kind.chars().count())
        .max()
        .unwrap_or(0)
        .max("KIND".len());
    println!(
        "{:<20}  {:<18}  {:<key_width$}  {:<kind_width$}  {:<7}  {:>3}  FROM",
        "RECEIVED", "APPID", "DEDUP KEY", "KIND", "STATUS", "TRY"
    );
    for p in &pushes {
        println!(
            "{:<20}  {:<18}  {:<key_width$}  {:<kind_width$}  {:<7}  {:>3}  {}",
            p.received_at.to_rfc3339(),
            p.appid,
            p.dedup_key,
            p.kind,
            p.status,
            p.attempts,
            p.from
        );
    }
    Ok(())
}

async fn show(a: KeyArgs) -> Result<()> {
    let store = open(&a.config).await?;
    let pushes: Vec<StoredPush> = store
        .get(a.key.clone())
        .await?
        .into_iter()
        .filter(|p| a.app.as_ref().is_none_or(|app| &p.appid == app))
        .collect();
    if pushes.is_empty() {
        bail!("no stored push has the dedup key {}", a.key);
    }
    for p in pushes {
        println!("appid:       {}", p.appid);
        println!("dedup key:   {}", p.dedup_key);
        println!("kind:        {}", p.kind);
        println!("from:        {}", p.from);
        println!(
            "create time: {}",
            Millis(p.create_time.saturating_mul(1000)).to_rfc3339()
        );
        println!("received:    {}", p.received_at.to_rfc3339());
        println!("status:      {} after {} attempt(s)", p.status, p.attempts);
        if let Some(at) = p.finished_at {
            println!("finished:    {}", at.to_rfc3339());
        }
        if let Some(e) = &p.last_error {
            println!("last error:  {e}");
        }
        println!("body ({}):\n{}", p.format, pretty(&p.body));
        if let Some(reply) = &p.reply {
            println!("passive reply:\n{}", pretty(reply));
        }
        for a in store.answers(p.id).await? {
            let status = format!("{:?}", a.status).to_lowercase();
            let outcome = match &a.error {
                Some(e) => format!("{status}: {e}"),
                None => status,
            };
            let from = match a.source.as_str() {
                HANDLER_SOURCE => String::new(),
                PASSIVE_SOURCE => " as a passive reply".to_owned(),
                other => format!(" from {other}"),
            };
            println!(
                "answer {} ({}){from}: {} at {}",
                a.seq + 1,
                a.msgtype,
                outcome,
                a.updated_at.to_rfc3339()
            );
        }
        for d in store.deliveries(p.id).await? {
            let mut line = format!(
                "delivery to {}: {} after {} attempt(s), {}",
                display_url(&d.target),
                d.status,
                d.attempts,
                d.updated_at.to_rfc3339()
            );
            if let Some(e) = &d.last_error {
                let what = match d.status {
                    DeliveryStatus::Delivered => "note",
                    _ => "last error",
                };
                line.push_str(&format!("; {what}: {e}"));
            }
            println!("{line}");
        }
        println!();
    }
    Ok(())
}

/// A JSON body indented, every number with the digits WeChat sent (the
/// wire reader keeps integers wider than 64 bits as their text); anything
/// else as it is.
fn pretty(body: &[u8]) -> String {
    let limits = wire::Limits {
        max_body: usize::MAX,
        ..wire::Limits::default()
    };
    wire::parse_json(body, &limits)
        .ok()
        .and_then(|fields| serde_json::to_string_pretty(&fields).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

async fn retry(a: KeyArgs) -> Result<()> {
    let store = open(&a.config).await?;
    // A beginning of a key finds every push it begins; re-queueing is for
    // one push at a time (`e:` would re-queue every dead event).
    let mut keys: Vec<String> = store
        .get(a.key.clone())
        .await?
        .into_iter()
        .filter(|p| a.app.as_ref().is_none_or(|app| &p.appid == app))
        .map(|p| p.dedup_key.as_str().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    if keys.len() > 1 {
        let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
        bail!(
            "{} matches {} pushes; `inbox retry` re-queues one: give its whole key ({}{})",
            a.key,
            keys.len(),
            shown.join(", "),
            if keys.len() > 5 { ", …" } else { "" }
        );
    }
    let r = store.retry(a.key.clone(), a.app.clone()).await?;
    // Answers whose fate is unknown are resent now, by hand: WeChat may have
    // delivered them, which only the person asking can judge.
    let mut uncertain = Vec::new();
    for p in store.get(a.key.clone()).await? {
        if a.app.as_ref().is_some_and(|app| &p.appid != app) {
            continue;
        }
        for answer in store.answers(p.id).await? {
            if answer.status == AnswerStatus::Uncertain {
                uncertain.push((p.appid.clone(), answer));
            }
        }
    }
    if r.pushes == 0 && r.deliveries == 0 && uncertain.is_empty() {
        bail!(
            "no dead push has the dedup key {}, and no push with it has a dead delivery or an uncertain answer",
            a.key
        );
    }
    if !uncertain.is_empty() {
        let config = a.config.load()?;
        let store: Arc<dyn Store> = store.clone();
        let outbox = Outbox::new(store.clone(), WechatApi::for_config(&config, store));
        for (appid, answer) in &uncertain {
            let status = outbox.resend(appid, answer).await?;
            println!(
                "resent answer {} ({}), which was uncertain: now {}",
                answer.seq + 1,
                answer.msgtype,
                format!("{status:?}").to_lowercase()
            );
        }
    }
    if r.pushes > 0 {
        println!("re-queued {} push(es) with key {}", r.pushes, a.key);
    }
    if r.deliveries > 0 {
        println!(
            "re-queued {} delivery(ies) of the push with key {}",
            r.deliveries, a.key
        );
    }
    Ok(())
}
