//! An open-loop load generator for the benchmark (bench/run.py), the way
//! WeChat sends: pushes fall due at a steady rate whatever the answers, and
//! each latency counts from when its push was due, so a stall also counts
//! against every push it held back (wrk2's correction of coordinated
//! omission).
//!
//! `cargo run --release --example open_loop -- URL PUSHES RATE SECONDS CONNECTIONS [empty]`
//!
//! - `URL`: the server's origin, `http://127.0.0.1:PORT`.
//! - `PUSHES`: pre-sealed pushes, one per line, as `examples/sealed_pushes.rs`
//!   writes them (path with query, a tab, the body); each is sent once.
//! - `RATE`: pushes per second; `SECONDS`: how long.
//! - `CONNECTIONS`: keep-alive HTTP/1.1 connections; connection `j` sends
//!   pushes `j`, `j + CONNECTIONS`, …, each at its due time or, when the
//!   answer to its last one came late, as soon as it came.
//! - `empty`: the right answer is an empty body (else `success`).
//!
//! Prints one JSON line shaped like `simulate load --json`, plus
//! `sent_late`: pushes the generator itself sent over 200 µs after they
//! were due while their connection was idle. A generator that keeps time
//! shows almost none; otherwise its figures are its own, not the server's.
//!
//! It runs on one thread, sealing nothing while it runs, and waits for due
//! times by yielding rather than on Tokio's millisecond timer, so it keeps
//! time to microseconds at the cost of a busy core (its own).

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Push {
    path: String,
    body: Bytes,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    sent_late: u64,
    first_error: Option<String>,
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: open_loop URL PUSHES RATE SECONDS CONNECTIONS [empty]";
    if args.len() < 5 {
        return Err(usage.into());
    }
    let origin = args[0].trim_end_matches('/').to_owned();
    let authority = origin
        .strip_prefix("http://")
        .ok_or("URL must be http://HOST:PORT")?
        .to_owned();
    let pushes = read_pushes(&args[1])?;
    let rate: f64 = args[2].parse()?;
    let seconds: f64 = args[3].parse()?;
    let connections: usize = args[4].parse()?;
    let expected: &'static [u8] = if args.get(5).map(String::as_str) == Some("empty") {
        b""
    } else {
        b"success"
    };
    let total = (rate * seconds) as usize;
    if total > pushes.len() {
        return Err(format!(
            "{total} pushes due in {seconds} s at {rate}/s, but the file holds {}",
            pushes.len()
        )
        .into());
    }
    let pushes: std::sync::Arc<[Push]> = pushes.into();
    let interval = Duration::from_secs_f64(1.0 / rate);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tally, elapsed) = runtime.block_on(async move {
        let start = Instant::now() + Duration::from_millis(200);
        let mut tasks = tokio::task::JoinSet::new();
        for j in 0..connections.max(1) {
            let pushes = pushes.clone();
            let authority = authority.clone();
            tasks.spawn(async move {
                connection(
                    &authority,
                    &pushes,
                    j,
                    connections,
                    total,
                    start,
                    interval,
                    expected,
                )
                .await
            });
        }
        let mut tally = Tally::default();
        while let Some(done) = tasks.join_next().await {
            let t = done.unwrap_or_else(|e| Tally {
                errors: 1,
                first_error: Some(e.to_string()),
                ..Tally::default()
            });
            tally.latencies_us.extend(t.latencies_us);
            tally.errors += t.errors;
            tally.sent_late += t.sent_late;
            tally.first_error = tally.first_error.or(t.first_error);
        }
        (tally, start.elapsed())
    });

    let mut lat = tally.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let ok = lat.len() as u64;
    let secs = elapsed.as_secs_f64();
    let report = serde_json::json!({
        "ok": ok,
        "errors": tally.errors,
        "error_kinds": tally.first_error.map(|e| vec![(e, tally.errors)]).unwrap_or_default(),
        "seconds": secs,
        "throughput": ok as f64 / secs,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": lat.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        "sent_late": tally.sent_late,
    });
    println!("{report}");
    Ok(())
}

fn read_pushes(path: &str) -> Result<Vec<Push>, Failure> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (path, body) = line
                .split_once('\t')
                .ok_or("a line without a tab: expected PATH?QUERY<TAB>BODY")?;
            Ok(Push {
                path: path.to_owned(),
                body: Bytes::copy_from_slice(body.as_bytes()),
            })
        })
        .collect()
}

/// Wait until `due` to the microsecond: Tokio's timer for all but the last
/// couple of milliseconds (it wakes up to a millisecond late), then yield
/// until the time comes, letting the other connections run meanwhile.
async fn wait_until(due: Instant) {
    let now = Instant::now();
    if due > now + Duration::from_millis(2) {
        tokio::time::sleep_until((due - Duration::from_millis(2)).into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(authority: &str) -> Result<Sender, Failure> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    authority: &str,
    pushes: &[Push],
    first: usize,
    stride: usize,
    total: usize,
    start: Instant,
    interval: Duration,
    expected: &[u8],
) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    let mut i = first;
    while i < total {
        let due = start + interval.mul_f64(i as f64);
        let idle = Instant::now() < due;
        wait_until(due).await;
        if idle && due.elapsed() > Duration::from_micros(200) {
            tally.sent_late += 1;
        }
        let outcome = async {
            if sender.is_none() {
                sender = Some(connect(authority).await?);
            }
            let s = sender.as_mut().ok_or("no connection")?;
            s.ready().await?;
            let push = &pushes[i];
            let request = hyper::Request::post(push.path.as_str())
                .header(hyper::header::HOST, authority)
                .header(hyper::header::CONTENT_TYPE, "text/xml")
                .body(Full::new(push.body.clone()))?;
            let response = s.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if status != hyper::StatusCode::OK || body.as_ref() != expected {
                return Err::<(), Failure>(
                    format!("answered {status} {:?}", String::from_utf8_lossy(&body)).into(),
                );
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                let us = u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX);
                tally.latencies_us.push(us);
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                sender = None;
            }
        }
        i += stride;
    }
    tally
}
