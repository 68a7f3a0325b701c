//! `wechat-push simulate …`: WeChat's push server on a laptop.
//!
//! Exit status is 0 only when every answer was right; the report says what
//! was wrong in plain words.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use wechat_push::clock::now_secs;
use wechat_push::config::{parse_duration, AppKind};
use wechat_push::protocol::answer::DocumentedAnswers;
use wechat_push::protocol::crypto::{AesKey, KeyRing};
use wechat_push::protocol::wire::{self, Fields, Limits};
use wechat_push::simulate::{
    message_fields, Acknowledgement, Attempt, Content, Pacing, Parties, Sent, Simulator,
};
use wechat_push::{AppCrypto, Config, Format, Mode, Token};

/// The `simulate` subcommands.
#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Perform the GET URL handshake exactly as WeChat does.
    VerifyUrl(TargetArgs),
    /// Send one push as WeChat does, retrying like WeChat, and judge the answer.
    Send(SendArgs),
    /// Send distinct pushes for a while and report throughput and latency.
    Load(LoadArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Plaintext,
    Compatible,
    Safe,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Xml,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    MiniProgram,
    OfficialAccount,
}

/// The endpoint and the app's settings.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The endpoint's URL. With --app and --config: defaults to the configured server's /wechat/APPID.
    #[arg(long)]
    url: Option<String>,
    /// The app's Token.
    #[arg(long)]
    token: Option<String>,
    /// The EncodingAESKey (compatible and safe modes).
    #[arg(long)]
    aes_key: Option<String>,
    /// The appid (compatible and safe modes).
    #[arg(long)]
    appid: Option<String>,
    /// The encryption mode [default: plaintext].
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// The data format [default: xml].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// The kind of app, which decides the passive replies allowed [default: mini-program].
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Take token, key, mode, format and kind of this app from --config
    /// (not needed when the config has one app).
    #[arg(long, requires = "config")]
    app: Option<String>,
    /// A wechat-push config file: the app's settings and the server's URL.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Deliver as WeChat Cloud Run's gateway does: plaintext and unsigned,
    /// with x-wx-source, x-wx-appid and x-wx-openid headers instead of a query.
    #[arg(long)]
    cloud_run: bool,
    /// How long to wait for an answer, as WeChat's 5 s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    deadline: Duration,
    /// Trust this PEM certificate (a private CA's or a self-signed
    /// server's) for an https:// URL, beside the Web PKI's roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// What to push.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct ContentArgs {
    /// A text message.
    #[arg(long)]
    text: Option<String>,
    /// An image message with this media id.
    #[arg(long)]
    image: Option<String>,
    /// An event of this name (add fields with --field).
    #[arg(long)]
    event: Option<String>,
    /// A prepared plaintext push body (XML or JSON), sent as is.
    #[arg(long)]
    body: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    content: ContentArgs,
    /// An extra field of an --event, KEY=VALUE (repeatable).
    #[arg(long = "field", value_name = "K=V", requires = "event")]
    fields: Vec<String>,
    /// The user's openid (FromUserName).
    #[arg(long)]
    openid: Option<String>,
    /// Send this many copies of the same push at once (retry storms, de-duplication).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// With --repeat: how many at a time.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    content: ContentArgs,
    /// Pushes per second (open loop).
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Pushes in flight at once (closed loop) [default: 16].
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
}

/// Run one `simulate` subcommand.
pub fn run(cmd: SimulateCommand) -> Result<()> {
    crate::block_on(crate::Threads::All, async move {
        match cmd {
            SimulateCommand::VerifyUrl(t) => verify_url(t).await,
            SimulateCommand::Send(a) => send(a).await,
            SimulateCommand::Load(a) => load(a).await,
        }
    })
}

fn simulator(t: &TargetArgs) -> Result<Simulator> {
    let from_config = match &t.config {
        Some(path) => {
            let config = Config::load(Some(path), std::env::vars())
                .with_context(|| format!("invalid configuration in {}", path.display()))?;
            let found = match &t.app {
                Some(appid) => config
                    .apps
                    .iter()
                    .enumerate()
                    .find(|(_, a)| &a.appid == appid),
                // The only app needs no naming.
                None if config.apps.len() == 1 => config.apps.iter().enumerate().next(),
                None => {
                    let appids: Vec<&str> = config.apps.iter().map(|a| a.appid.as_str()).collect();
                    bail!(
                        "{} has {} apps: pick one with --app ({})",
                        path.display(),
                        appids.len(),
                        appids.join(", ")
                    );
                }
            };
            let Some((index, app)) = found else {
                bail!(
                    "no app {} in {}",
                    t.app.as_deref().unwrap_or_default(),
                    path.display()
                );
            };
            let appid = &app.appid;
            let crypto = app.crypto(index)?.require_encryption(false);
            let url = format!("http://{}/wechat/{appid}", config.server.listen);
            let answers = DocumentedAnswers::new(app.answers.clone());
            Some((crypto, app.mode, app.format, app.kind, url, answers))
        }
        _ => None,
    };
    let mode = t.mode.map(|m| match m {
        ModeArg::Plaintext => Mode::Plaintext,
        ModeArg::Compatible => Mode::Compatible,
        ModeArg::Safe => Mode::Safe,
    });
    let format = t.format.map(|f| match f {
        FormatArg::Xml => Format::Xml,
        FormatArg::Json => Format::Json,
    });
    let kind = t.kind.map(|k| match k {
        KindArg::MiniProgram => AppKind::MiniProgram,
        KindArg::OfficialAccount => AppKind::OfficialAccount,
    });
    let (crypto, mode, format, kind, url, answers) = match from_config {
        Some((crypto, m, f, k, url, answers)) => (
            crypto,
            mode.unwrap_or(m),
            format.unwrap_or(f),
            kind.unwrap_or(k),
            t.url.clone().unwrap_or(url),
            answers,
        ),
        None => {
            let token = t
                .token
                .clone()
                .context("--token is required (or --config)")?;
            let url = t.url.clone().context("--url is required (or --config)")?;
            let mode = mode.unwrap_or(Mode::Plaintext);
            let keys = match &t.aes_key {
                Some(k) => Some(KeyRing::new(
                    AesKey::from_encoding_aes_key(k).context("invalid --aes-key")?,
                    None,
                )),
                None if mode.is_encrypted() => {
                    bail!("--aes-key and --appid are required in {mode} mode")
                }
                None => None,
            };
            let appid = match (&t.appid, mode.is_encrypted() || t.cloud_run) {
                (Some(a), _) => a.clone(),
                (None, false) => String::new(),
                (None, true) if t.cloud_run => bail!("--appid is required with --cloud-run"),
                (None, true) => bail!("--appid is required in {mode} mode"),
            };
            let crypto = AppCrypto::new(appid, Token::new(token), keys);
            (
                crypto,
                mode,
                format.unwrap_or(Format::Xml),
                kind.unwrap_or(AppKind::MiniProgram),
                url,
                DocumentedAnswers::new([]),
            )
        }
    };
    // The gateway delivers plaintext, whatever the app's mode.
    let mode = if t.cloud_run { Mode::Plaintext } else { mode };
    let mut sim = Simulator::new(url, crypto, kind, mode, format);
    if let Some(ca) = &t.ca {
        let pem =
            std::fs::read(ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
        sim = sim
            .trusting(&pem)
            .with_context(|| format!("--ca {}", ca.display()))?;
    }
    sim.deadline = t.deadline;
    sim.answers = answers;
    sim.cloud_run = t.cloud_run;
    Ok(sim)
}

async fn verify_url(t: TargetArgs) -> Result<()> {
    let sim = simulator(&t)?;
    let (echostr, verdict) = sim.verify_url(now_secs()).await;
    if t.json {
        println!(
            "{}",
            serde_json::json!({
                "url": sim.url,
                "echostr": echostr,
                "ok": verdict.is_ok(),
                "problem": verdict.as_ref().err().map(ToString::to_string),
            })
        );
        return verdict.map_err(|problem| anyhow::anyhow!("handshake failed: {problem}"));
    }
    match verdict {
        Ok(()) => {
            println!(
                "OK: {} answered the handshake with echostr {echostr} verbatim",
                sim.url
            );
            Ok(())
        }
        Err(problem) => bail!("handshake failed: {problem}"),
    }
}

fn content(c: &ContentArgs, fields: &[String]) -> Result<Option<Content>> {
    if let Some(text) = &c.text {
        return Ok(Some(Content::Text(text.clone())));
    }
    if let Some(media) = &c.image {
        return Ok(Some(Content::Image(media.clone())));
    }
    if let Some(name) = &c.event {
        let fields = fields
            .iter()
            .map(|f| {
                f.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .with_context(|| format!("--field {f:?} is not KEY=VALUE"))
            })
            .collect::<Result<_>>()?;
        return Ok(Some(Content::Event {
            name: name.clone(),
            fields,
        }));
    }
    Ok(None)
}

fn push_fields(c: &ContentArgs, fields: &[String], parties: &Parties) -> Result<Fields> {
    if let Some(path) = &c.body {
        let body =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let format = wire::sniff(&body).context("--body is neither XML nor JSON")?;
        return wire::parse(format, &body, &Limits::default())
            .with_context(|| format!("--body {} is not a valid {format} push", path.display()));
    }
    let content =
        content(c, fields)?.unwrap_or(Content::Text("hello from wechat-push simulate".into()));
    let mut id = [0u8; 6];
    let _ = getrandom::fill(&mut id);
    let msg_id = id
        .iter()
        .fold(1u64 << 60, |acc, b| (acc << 8) | u64::from(*b))
        >> 4;
    Ok(message_fields(&content, parties, now_secs(), msg_id))
}

fn describe(answer: &Acknowledgement) -> String {
    match answer {
        Acknowledgement::Success => "success".to_owned(),
        Acknowledgement::Empty => "an empty body".to_owned(),
        Acknowledgement::Documented {
            encrypted,
            plaintext,
        } => format!(
            "the documented answer{} {}",
            if *encrypted { ", encrypted:" } else { "" },
            String::from_utf8_lossy(plaintext)
        ),
        Acknowledgement::Reply {
            msg_type,
            encrypted,
            plaintext,
        } => format!(
            "a{} passive reply of type {msg_type}:\n{}",
            if *encrypted {
                "n encrypted"
            } else {
                " plaintext"
            },
            readable(plaintext)
        ),
    }
}

/// A reply's fields, one per line and indented, whatever its format.
fn readable(body: &[u8]) -> String {
    let fields = wire::sniff(body).and_then(|f| wire::parse(f, body, &Limits::default()).ok());
    match fields {
        Some(fields) => serde_json::to_string_pretty(&fields)
            .unwrap_or_default()
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        None => format!("    {}", String::from_utf8_lossy(body)),
    }
}

/// One delivery as `simulate send --json` prints it.
fn attempt_json(a: &Attempt) -> serde_json::Value {
    let (answer, problem) = match &a.outcome {
        Ok(answer) => (Some(describe(answer)), None),
        Err(problem) => (None, Some(problem.clone())),
    };
    serde_json::json!({
        "attempt": a.number,
        "elapsed_ms": a.elapsed.as_secs_f64() * 1000.0,
        "ok": a.outcome.is_ok(),
        "answer": answer,
        "problem": problem,
        "retried": a.retried,
    })
}

fn report(attempts: &[Attempt], label: &str) -> bool {
    let mut all_right = true;
    for a in attempts {
        match &a.outcome {
            Ok(answer) => println!(
                "{label}attempt {}: answered {} in {:.1} ms",
                a.number,
                describe(answer),
                a.elapsed.as_secs_f64() * 1000.0
            ),
            Err(problem) => {
                all_right = false;
                let next = if a.retried {
                    "; WeChat delivers it again"
                } else {
                    ""
                };
                println!(
                    "{label}attempt {}: WRONG after {:.1} ms: {problem}{next}",
                    a.number,
                    a.elapsed.as_secs_f64() * 1000.0
                );
            }
        }
    }
    all_right
}

async fn send(a: SendArgs) -> Result<()> {
    let sim = simulator(&a.target)?;
    let mut parties = Parties::default();
    if let Some(openid) = &a.openid {
        parties.from = openid.clone();
    }
    let fields = push_fields(&a.content, &a.fields, &parties)?;
    let push = sim.build(&fields, now_secs())?;
    let expected = sim.documented(&fields);
    let json = a.target.json;
    let msg_type = fields
        .get("MsgType")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned();
    let header = |attempts: serde_json::Value, right: bool| {
        serde_json::json!({
            "url": sim.url,
            "mode": sim.mode.to_string(),
            "format": sim.format.to_string(),
            "cloud_run": sim.cloud_run,
            "msg_type": msg_type,
            "attempts": attempts,
            "right": right,
        })
    };
    if !json {
        println!(
            "sending a {}{} {} push ({}) to {}",
            if sim.cloud_run { "Cloud Run " } else { "" },
            sim.mode,
            sim.format,
            fields
                .get("MsgType")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            sim.url
        );
    }
    if a.repeat <= 1 {
        let attempts = sim
            .send(
                &push,
                Sent {
                    push: Some(&fields),
                    documented: expected.as_ref(),
                },
            )
            .await;
        if json {
            let right = attempts.iter().all(|a| a.outcome.is_ok());
            println!(
                "{}",
                header(attempts.iter().map(attempt_json).collect(), right)
            );
            if !right {
                bail!("the endpoint did not answer as WeChat requires");
            }
            return Ok(());
        }
        let right = report(&attempts, "");
        println!(
            "{} deliver{} in all",
            attempts.len(),
            if attempts.len() == 1 { "y" } else { "ies" }
        );
        if !right {
            bail!("the endpoint did not answer as WeChat requires");
        }
        return Ok(());
    }
    // N copies of the same push, C at a time.
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for copy in 1..=a.repeat {
        let sim = sim.clone();
        let push = push.clone();
        let expected = expected.clone();
        let fields = fields.clone();
        let permit = permits.clone().acquire_owned().await?;
        tasks.spawn(async move {
            let sent = Sent {
                push: Some(&fields),
                documented: expected.as_ref(),
            };
            let r = sim.deliver(&push, sent).await;
            drop(permit);
            (copy, r)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r?);
    }
    results.sort_by_key(|(copy, _)| *copy);
    if json {
        let copies: Vec<serde_json::Value> = results
            .iter()
            .map(|(copy, (elapsed, outcome, _))| {
                let mut one = attempt_json(&Attempt {
                    number: 1,
                    elapsed: *elapsed,
                    outcome: outcome.clone(),
                    retried: false,
                });
                one["copy"] = serde_json::Value::from(*copy);
                one
            })
            .collect();
        let wrong = results.iter().filter(|(_, (_, o, _))| o.is_err()).count();
        println!("{}", header(serde_json::Value::from(copies), wrong == 0));
        if wrong > 0 {
            bail!(
                "{wrong} of {} copies were not answered as WeChat requires",
                a.repeat
            );
        }
        return Ok(());
    }
    let mut wrong = 0;
    for (copy, (elapsed, outcome, _)) in &results {
        let attempt = Attempt {
            number: 1,
            elapsed: *elapsed,
            outcome: outcome.clone(),
            retried: false,
        };
        if !report(std::slice::from_ref(&attempt), &format!("copy {copy}: ")) {
            wrong += 1;
        }
    }
    if wrong > 0 {
        bail!(
            "{wrong} of {} copies were not answered as WeChat requires",
            a.repeat
        );
    }
    println!("all {} copies answered rightly", a.repeat);
    Ok(())
}

async fn load(a: LoadArgs) -> Result<()> {
    let sim = simulator(&a.target)?;
    let content = content(&a.content, &[])?.unwrap_or(Content::Text("load test 压力测试".into()));
    if a.content.body.is_some() {
        bail!("--body is not supported by load: it needs distinct pushes; use --text, --image or --event");
    }
    let pacing = match (a.rate, a.concurrency) {
        (Some(r), _) => Pacing::Rate(r),
        (None, c) => Pacing::Concurrency(c.unwrap_or(16)),
    };
    let tty = std::io::stderr().is_terminal();
    eprintln!(
        "load: {} {} pushes to {} for {:?}, {}",
        sim.mode,
        sim.format,
        sim.url,
        a.duration,
        match pacing {
            Pacing::Rate(r) => format!("{r}/s"),
            Pacing::Concurrency(c) => format!("{c} in flight"),
        }
    );
    let last_line = std::sync::Mutex::new(std::time::Instant::now());
    let report = sim
        .load(
            &content,
            &Parties::default(),
            pacing,
            a.duration,
            move |p| {
                let frac = p.elapsed.as_secs_f64() / p.duration.as_secs_f64().max(0.001);
                let filled = (frac * 30.0).round() as usize;
                let rate = p.ok as f64 / p.elapsed.as_secs_f64().max(0.001);
                let line = format!(
                    "[{}{}] {:>5.1}s/{:.0}s  {} ok  {} errors  {:.0}/s",
                    "#".repeat(filled.min(30)),
                    " ".repeat(30 - filled.min(30)),
                    p.elapsed.as_secs_f64(),
                    p.duration.as_secs_f64(),
                    p.ok,
                    p.errors,
                    rate
                );
                if tty {
                    eprint!("\r{line}");
                } else if let Ok(mut last) = last_line.lock() {
                    if last.elapsed() >= Duration::from_secs(5) {
                        *last = std::time::Instant::now();
                        eprintln!("{line}");
                    }
                }
            },
        )
        .await?;
    if tty {
        eprintln!();
    }
    if a.target.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} pushes answered rightly in {:.1} s: {:.0}/s\nlatency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, p99.9 {:.2} ms\nerrors: {}",
            report.ok, report.seconds, report.throughput, report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms, report.p999_ms, report.errors
        );
    }
    for (problem, n) in &report.error_kinds {
        eprintln!("  {n} × {problem}");
    }
    if report.errors > 0 {
        bail!(
            "{} pushes were not answered as WeChat requires",
            report.errors
        );
    }
    Ok(())
}
