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
use wechat_push::store::{
    AnswerRecord, AnswerStatus, Delivery, DeliveryStatus, ListFilter, Status, Store, StoredPush,
};

use crate::ConfigArgs;

/// The `inbox` subcommands.
#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// List stored pushes, newest first.
    List(ListArgs),
    /// Print one push whole, with its decrypted body.
    Show(ShowArgs),
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

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// One JSON object per push (times in RFC 3339, as in webhooks), with
    /// its answers and deliveries.
    #[arg(long)]
    json: bool,
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
    crate::open_existing_store(&config.load()?).await
}

async fn list(a: ListArgs) -> Result<()> {
    let store = open(&a.config).await?;
    let filter = ListFilter {
        appid: a.app,
        status: a.status.as_deref().and_then(Status::parse),
        limit: a.limit,
        ..ListFilter::default()
    };
    let pushes = store.list(filter).await?;
    if a.json {
        for p in &pushes {
            println!("{}", serde_json::to_string(p)?);
        }
        return Ok(());
    }
    // Columns as wide as their longest value (keys end in a 32-digit
    // digest; kinds and openids vary), by display width: no wrapping, so
    // that a row stays one line for grep.
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header([
            "RECEIVED",
            "APPID",
            "DEDUP KEY",
            "KIND",
            "STATUS",
            "TRY",
            "FROM",
        ]);
    for p in &pushes {
        table.add_row([
            p.received_at.to_rfc3339(),
            p.appid.clone(),
            p.dedup_key.to_string(),
            p.kind.clone(),
            p.status.to_string(),
            p.attempts.to_string(),
            p.from.to_string(),
        ]);
    }
    if let Some(column) = table.column_mut(5) {
        column.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
    Ok(())
}

async fn show(show: ShowArgs) -> Result<()> {
    let a = show.key;
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
    if show.json {
        for p in pushes {
            let answers = store.answers(p.id).await?;
            let deliveries = store.deliveries(p.id).await?;
            println!("{}", show_json(&p, &answers, &deliveries));
        }
        return Ok(());
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
        // A push stored done as it arrived was never handled (Handler::handles).
        let on_arrival = if p.status == Status::Done && p.attempts == 0 {
            " (stored done on arrival: no rule or forward target took it)"
        } else {
            ""
        };
        println!(
            "status:      {} after {} attempt(s){on_arrival}",
            p.status, p.attempts
        );
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

/// One push as `inbox show --json` prints it.
fn show_json(
    p: &StoredPush,
    answers: &[AnswerRecord],
    deliveries: &[Delivery],
) -> serde_json::Value {
    let rfc3339 = |m: Millis| m.to_rfc3339();
    // The body as JSON where it is JSON (the wire reader keeps wide
    // integers' digits), else as its text (XML).
    let body = |bytes: &[u8]| {
        let limits = wire::Limits {
            max_body: usize::MAX,
            ..wire::Limits::default()
        };
        wire::parse_json(bytes, &limits)
            .ok()
            .and_then(|fields| serde_json::to_value(fields).ok())
            .unwrap_or_else(|| serde_json::Value::from(String::from_utf8_lossy(bytes).into_owned()))
    };
    serde_json::json!({
        "appid": p.appid,
        "dedup_key": p.dedup_key.as_str(),
        "kind": p.kind,
        "from": p.from.to_string(),
        "create_time": Millis(p.create_time.saturating_mul(1000)).to_rfc3339(),
        "received_at": rfc3339(p.received_at),
        "status": p.status.to_string(),
        "attempts": p.attempts,
        "finished_at": p.finished_at.map(rfc3339),
        "last_error": p.last_error,
        "format": p.format.to_string(),
        "body": body(&p.body),
        "passive_reply": p.reply.as_deref().map(body),
        "answers": answers.iter().map(|a| serde_json::json!({
            "seq": a.seq + 1,
            "source": a.source,
            "msgtype": a.msgtype,
            "status": format!("{:?}", a.status).to_lowercase(),
            "error": a.error,
            "updated_at": rfc3339(a.updated_at),
        })).collect::<Vec<_>>(),
        "deliveries": deliveries.iter().map(|d| serde_json::json!({
            "target": display_url(&d.target),
            "status": d.status.to_string(),
            "attempts": d.attempts,
            "last_error": d.last_error,
            "updated_at": rfc3339(d.updated_at),
        })).collect::<Vec<_>>(),
    })
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
    // Deliveries only to the targets configured: one to a target removed
    // since would wait for ever.
    let targets = a
        .config
        .load()?
        .apps
        .iter()
        .flat_map(|app| app.forward.iter().map(|f| f.url.clone()))
        .collect();
    let r = store
        .retry(a.key.clone(), a.app.clone(), Some(targets))
        .await?;
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
