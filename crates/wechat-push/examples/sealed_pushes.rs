//! Distinct pushes, sealed as WeChat sends them, for load generators that
//! cannot seal (wrk): the benchmark's HTTP runs send these, so that the
//! generator costs least and the server is the limit (see bench/run.py).
//!
//! `cargo run --release --example sealed_pushes -- N CONFIG [APPS] > pushes.tsv`
//!
//! One line per push: the path with its query, a tab, the body (one line).
//! Each is a text message of its own user (spread like real openids) and
//! `MsgId`, to the config's first app (or, with `APPS`, to its first `APPS`
//! apps in turn), in the app's mode and format, signed now:
//! send them within `server.timestamp_window`. Their `CreateTime`s begin
//! now and advance as if WeChat created `CREATED_PER_SECOND` a second, as
//! real traffic's do (a store may index by it).

use std::io::Write;

use wechat_push::protocol::wire::Fields;
use wechat_push::simulate::query_pairs;
use wechat_push::Config;

/// Pushes a second of `CreateTime`: the open-loop benchmark's rate.
const CREATED_PER_SECOND: u64 = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .ok_or("usage: sealed_pushes N CONFIG [APPS]")?
        .parse()?;
    let config_path = args.next().ok_or("usage: sealed_pushes N CONFIG [APPS]")?;
    let spread: usize = args
        .next()
        .map_or(Ok(1), |a| a.parse().map_err(|e| format!("APPS {a:?}: {e}")))?;
    if args.next().is_some() {
        return Err("usage: sealed_pushes N CONFIG [APPS]".into());
    }
    let config = Config::load(Some(std::path::Path::new(&config_path)), std::env::vars())?;
    if config.apps.is_empty() {
        return Err("no [[apps]] in the config".into());
    }
    if spread == 0 || spread > config.apps.len() {
        return Err(format!(
            "APPS is {spread}: from 1 to the config's {} [[apps]]",
            config.apps.len()
        )
        .into());
    }
    let apps = config.apps[..spread]
        .iter()
        .map(|app| Ok((app, app.crypto(0)?)))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let timestamp = now.to_string();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)?;
    let base = u64::from_le_bytes(random) >> 16;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for (i, (app, crypto)) in (0..n).zip(apps.iter().cycle()) {
        // Spread like real openids, which are random: users numbered in
        // order would append to the store's dedup index, a best case.
        let user = format!("oBench{:022x}", splitmix64(base.wrapping_add(i)));
        let fields: Fields = serde_json::from_value(serde_json::json!({
            "ToUserName": "gh_97417a04a28d",
            "FromUserName": user,
            "CreateTime": now + i / CREATED_PER_SECOND,
            "MsgType": "text",
            "Content": "hello from the benchmark",
            "MsgId": base.wrapping_add(i),
        }))?;
        let nonce = format!("{i}");
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&i.to_le_bytes());
        let push = crypto.seal_push(
            &fields,
            app.mode,
            app.format,
            &timestamp,
            &nonce,
            &iv,
            Some(&user),
        )?;
        // Hex, digits and letters only: nothing to escape.
        let query: Vec<String> = query_pairs(&push.query)
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        writeln!(
            out,
            "/wechat/{}?{}\t{}",
            app.appid,
            query.join("&"),
            push.body.replace('\n', "")
        )?;
    }
    out.flush()?;
    Ok(())
}

/// SplitMix64's finaliser: a bijection on `u64`, so users stay distinct.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
