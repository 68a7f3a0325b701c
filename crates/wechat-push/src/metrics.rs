//! Counters and the acknowledgement-latency histogram, rendered in
//! Prometheus' text format (version 0.0.4) at `GET /metrics`, with the
//! process's own (`process_*`, Linux) and `wechat_push_build_info`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::{Backlog, DeliveryStatus, Depth};

/// The content type of [`Metrics::render`]'s text: Prometheus' text
/// exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a scrape read from the store, for [`Metrics::render`].
#[derive(Debug, Clone, Copy)]
pub struct Scrape<'a> {
    /// Pushes pending, working and dead, if the store answered.
    pub depth: Option<Depth>,
    /// Done pushes, as last counted (refreshed in the background), if ever.
    pub done: Option<u64>,
    /// Deliveries not delivered yet, by target and status.
    pub backlog: &'a [Backlog],
    /// Every configured forward target's URL: each shows its backlog,
    /// at 0 when it owes nothing.
    pub targets: &'a [String],
}

/// Pushes received and stored or found duplicate, by app, kind and outcome.
pub const PUSHES: &str = "wechat_push_pushes_total";
/// Pushes refused, by app and reason.
pub const REJECTIONS: &str = "wechat_push_rejections_total";
/// Retries of pushes already stored, by app.
pub const DUPLICATES: &str = "wechat_push_duplicates_total";
/// Handler runs, by app and outcome (`done`, `retry`, `dead`).
pub const HANDLED: &str = "wechat_push_handled_total";
/// Handler failures, by app.
pub const HANDLER_FAILURES: &str = "wechat_push_handler_failures_total";

/// Attempts to deliver pushes to forward targets, by app, target and
/// outcome (`delivered`, `retry`, `dead`).
pub const FORWARDS: &str = "wechat_push_forward_total";
/// Counter: WeChat API answers with an errcode, by app and errcode.
pub const API_ERRORS: &str = "wechat_push_api_errors_total";
/// Counter: WeChat API calls, by app, endpoint and errcode (`0`, or `none`
/// when no answer came).
pub const API_CALLS: &str = "wechat_push_api_calls_total";
/// Counter: access tokens fetched from WeChat, by app and outcome
/// (`fetched`, `failed`).
pub const TOKEN_REFRESHES: &str = "wechat_push_token_refreshes_total";
/// Counter: customer-service messages sent with no answer back (uncertain).
pub const API_UNCERTAIN: &str = "wechat_push_answers_uncertain_total";
/// Counter: connections answered 503 and closed, over `server.max_connections`.
pub const CONNECTIONS_REFUSED: &str = "wechat_push_connections_refused_total";
/// Counter: failures to accept a connection, by kind (`descriptors`, `other`).
pub const ACCEPT_ERRORS: &str = "wechat_push_accept_errors_total";
/// Counter: configuration reloads, by outcome (`applied`, `refused`).
pub const CONFIG_RELOADS: &str = "wechat_push_config_reloads_total";
/// Time forward targets took to answer, by target.
pub const FORWARD_SECONDS: &str = "wechat_push_forward_seconds";

const HELP: &[(&str, &str)] = &[
    (
        PUSHES,
        "Pushes accepted, by app, kind and outcome (stored or duplicate).",
    ),
    (
        REJECTIONS,
        "Pushes and handshakes refused, by app and reason.",
    ),
    (
        DUPLICATES,
        "Deliveries of pushes already stored (WeChat's retries).",
    ),
    (
        HANDLED,
        "Handler runs, by app and outcome (done, retry, dead).",
    ),
    (HANDLER_FAILURES, "Handler runs that failed, by app."),
    (
        FORWARDS,
        "Delivery attempts to forward targets, by app, target and outcome (delivered, retry, dead).",
    ),
    (
        API_UNCERTAIN,
        "Customer-service messages sent with no answer back: they may have reached the user, and are not resent by themselves.",
    ),
    (
        CONNECTIONS_REFUSED,
        "Connections answered 503 and closed because server.max_connections were open.",
    ),
    (
        ACCEPT_ERRORS,
        "Failures to accept a connection, by kind (descriptors: out of file descriptors).",
    ),
    (
        API_CALLS,
        "WeChat API calls, by app, endpoint and errcode (0: success; none: no answer came).",
    ),
    (
        TOKEN_REFRESHES,
        "Access tokens fetched from WeChat (shared by every instance through the store), by app and outcome.",
    ),
    (
        CONFIG_RELOADS,
        "Configuration reloads (SIGHUP), by outcome: applied, or refused (the running configuration stayed).",
    ),
    (
        API_ERRORS,
        "WeChat API answers with an errcode, by app and errcode (48001: no permission, 45015: window closed, ...).",
    ),
];

const HISTOGRAM_HELP: &[(&str, &str)] = &[(
    FORWARD_SECONDS,
    "Time forward targets took to answer a delivery, by app and target.",
)];

/// One labelled histogram.
#[derive(Debug, Clone)]
struct Histogram {
    name: &'static str,
    labels: Labels,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labels = Vec<(&'static str, String)>;

/// One counter and what it is counted by.
#[derive(Debug, Clone)]
struct Counter {
    name: &'static str,
    labels: Labels,
    value: u64,
}

thread_local! {
    /// Reused to build lookup keys, so that counting a push allocates nothing.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The lookup key of a counter: its name and label values, separated.
fn encode(buf: &mut String, name: &str, labels: &[(&'static str, &str)]) {
    buf.clear();
    buf.push_str(name);
    for (k, v) in labels {
        buf.push('\u{1f}');
        buf.push_str(k);
        buf.push('=');
        buf.push_str(v);
    }
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<HashMap<String, Counter>>,
    histograms: Mutex<HashMap<String, Histogram>>,
    ack_buckets: [AtomicU64; BUCKETS.len()],
    ack_count: AtomicU64,
    ack_sum_micros: AtomicU64,
    /// Connections open now (gauge).
    pub open_connections: AtomicU64,
}

impl Metrics {
    /// Add one to counter `name` with `labels`.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        KEY.with(|key| {
            let mut key = key.borrow_mut();
            encode(&mut key, name, labels);
            let Ok(mut counters) = self.counters.lock() else {
                return;
            };
            match counters.get_mut(key.as_str()) {
                Some(counter) => counter.value += 1,
                None => {
                    let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
                    counters.insert(
                        key.clone(),
                        Counter {
                            name,
                            labels,
                            value: 1,
                        },
                    );
                }
            }
        });
    }

    /// The value of a counter (for tests and reports).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let mut key = String::new();
        encode(&mut key, name, labels);
        self.counters
            .lock()
            .map(|c| c.get(&key).map_or(0, |c| c.value))
            .unwrap_or(0)
    }

    /// Record `elapsed` in histogram `name` with `labels`.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], elapsed: Duration) {
        let mut key = String::new();
        encode(&mut key, name, labels);
        let Ok(mut histograms) = self.histograms.lock() else {
            return;
        };
        let h = histograms.entry(key).or_insert_with(|| Histogram {
            name,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            buckets: [0; BUCKETS.len()],
            count: 0,
            sum: 0.0,
        });
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in h.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// How many observations histogram `name` with `labels` has (for tests).
    pub fn observations(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let mut key = String::new();
        encode(&mut key, name, labels);
        self.histograms
            .lock()
            .map(|h| h.get(&key).map_or(0, |h| h.count))
            .unwrap_or(0)
    }

    /// Record how long a push took from arrival to answer.
    pub fn observe_ack(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in self.ack_buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.ack_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.ack_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Everything in Prometheus' text format, with what the scrape read
    /// from the store.
    pub fn render(&self, scrape: &Scrape<'_>) -> String {
        let mut out = String::new();
        let name = "wechat_push_build_info";
        let _ = writeln!(
            out,
            "# HELP {name} The running build: its version.\n# TYPE {name} gauge\n{name}{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let mut counters: Vec<Counter> = self
            .counters
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        counters.sort_by(|a, b| (a.name, &a.labels).cmp(&(b.name, &b.labels)));
        for (name, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for c in counters.iter().filter(|c| c.name == *name) {
                let _ = writeln!(out, "{}{} {}", c.name, render_labels(&c.labels), c.value);
            }
        }
        let name = "wechat_push_ack_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a push's arrival to its answer.\n# TYPE {name} histogram"
        );
        for (bucket, bound) in self.ack_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.ack_count.load(Ordering::Relaxed);
        let sum = self.ack_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        let mut histograms: Vec<Histogram> = self
            .histograms
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default();
        histograms.sort_by(|a, b| (a.name, &a.labels).cmp(&(b.name, &b.labels)));
        for (name, help) in HISTOGRAM_HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for h in histograms.iter().filter(|h| h.name == *name) {
                for (n, bound) in h.buckets.iter().zip(BUCKETS) {
                    let mut labels = h.labels.clone();
                    labels.push(("le", bound.to_string()));
                    let _ = writeln!(out, "{name}_bucket{} {n}", render_labels(&labels));
                }
                let mut labels = h.labels.clone();
                labels.push(("le", "+Inf".into()));
                let _ = writeln!(out, "{name}_bucket{} {}", render_labels(&labels), h.count);
                let labels = render_labels(&h.labels);
                let _ = writeln!(
                    out,
                    "{name}_sum{labels} {}\n{name}_count{labels} {}",
                    h.sum, h.count
                );
            }
        }
        // Configured targets at 0 unless the store says otherwise; targets
        // no longer configured while deliveries to them remain, as stored.
        let mut backlog: Vec<(String, DeliveryStatus, u64)> = scrape
            .targets
            .iter()
            .flat_map(|t| {
                [
                    DeliveryStatus::Pending,
                    DeliveryStatus::Working,
                    DeliveryStatus::Dead,
                ]
                .map(|status| (t.clone(), status, 0))
            })
            .collect();
        for b in scrape.backlog {
            match backlog
                .iter_mut()
                .find(|(t, s, _)| *t == b.target && *s == b.status)
            {
                Some(entry) => entry.2 = b.count,
                None => backlog.push((b.target.clone(), b.status, b.count)),
            }
        }
        if !backlog.is_empty() {
            let name = "wechat_push_forward_backlog";
            let _ = writeln!(
                out,
                "# HELP {name} Deliveries to forward targets not delivered yet, by target and status (pending, working, dead).\n# TYPE {name} gauge"
            );
            for (target, status, count) in &backlog {
                let labels = render_labels(&vec![
                    ("target", crate::config::display_url(target)),
                    ("status", status.as_str().to_owned()),
                ]);
                let _ = writeln!(out, "{name}{labels} {count}");
            }
        }
        let name = "wechat_push_open_connections";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP connections open now.\n# TYPE {name} gauge\n{name} {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        let name = "wechat_push_inbox_depth";
        let _ = writeln!(
            out,
            "# HELP {name} Stored pushes by status (done: counted in the background, from the second scrape on).\n# TYPE {name} gauge"
        );
        let depth = scrape.depth.map(|d| {
            [
                ("pending", d.pending),
                ("working", d.working),
                ("dead", d.dead),
            ]
        });
        for (status, n) in depth.into_iter().flatten() {
            let _ = writeln!(out, "{name}{{status=\"{status}\"}} {n}");
        }
        if let Some(done) = scrape.done {
            let _ = writeln!(out, "{name}{{status=\"done\"}} {done}");
        }
        out
    }
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The store writer's measurements in Prometheus text:
/// `wechat_push_store_batch_seconds` (a histogram of the time each batch of
/// writes took, begin to commit, which its acknowledgements waited for),
/// `wechat_push_store_checkpoints_total`, `wechat_push_store_wal_restarts_total`
/// and `wechat_push_store_wal_backlog_pages`.
pub fn render_writer(stats: &crate::store::WriterStats) -> String {
    let mut out = String::new();
    let name = "wechat_push_store_batch_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time each batch of store writes took, from its start to its commit.\n# TYPE {name} histogram"
    );
    for (n, bound) in stats
        .batches
        .iter()
        .zip(crate::store::BATCH_SECONDS_BUCKETS)
    {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let count = stats.batch_count;
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {}\n{name}_count {count}",
        stats.batch_seconds
    );
    let name = "wechat_push_store_checkpoints_total";
    let _ = writeln!(
        out,
        "# HELP {name} WAL checkpoints run, off the writer's thread.\n# TYPE {name} counter\n{name} {}",
        stats.checkpoints
    );
    let name = "wechat_push_store_wal_restarts_total";
    let _ = writeln!(
        out,
        "# HELP {name} Times the store's writer restarted the WAL from its beginning, between two batches.\n# TYPE {name} counter\n{name} {}",
        stats.wal_restarts
    );
    let name = "wechat_push_store_wal_backlog_pages";
    let _ = writeln!(
        out,
        "# HELP {name} WAL pages not yet copied back into the database file after the last checkpoint.\n# TYPE {name} gauge\n{name} {}",
        stats.wal_backlog_pages
    );
    out
}

/// The process's soft limit on open file descriptors, from
/// `/proc/self/limits` (Linux); `None` elsewhere or when unlimited.
pub fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The process's own metrics, by their standard names (Linux: read from
/// `/proc/self`; nothing elsewhere): CPU seconds, resident memory, open
/// and allowed file descriptors, and start time.
pub fn render_process() -> String {
    let mut out = String::new();
    let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok() else {
        return out;
    };
    // Fields after the command, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 and 15 (utime, stime), 22 (starttime) and 24 (rss) of
    // proc(5), counted from 1 with the pid and command as 1 and 2.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // Linux reports these in clock ticks (USER_HZ, 100 on every Linux
    // platform Rust targets) and pages of 4 KiB (x86-64, aarch64's default).
    const TICKS: f64 = 100.0;
    const PAGE: u64 = 4096;
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            ((user + system) as f64 / TICKS).to_string(),
        );
    }
    if let Some(pages) = field(24) {
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (pages * PAGE).to_string(),
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count().to_string(),
        );
    }
    if let Some(max) = descriptor_limit() {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max.to_string(),
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            (boot as f64 + start as f64 / TICKS).to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_depth() {
        let m = Metrics::default();
        m.inc(
            PUSHES,
            &[("appid", "wx1"), ("kind", "text"), ("outcome", "stored")],
        );
        m.inc(
            PUSHES,
            &[("appid", "wx1"), ("kind", "text"), ("outcome", "stored")],
        );
        m.inc(
            REJECTIONS,
            &[("appid", "wx\"1"), ("reason", "signature_mismatch")],
        );
        m.observe_ack(Duration::from_micros(1500));
        m.observe(
            FORWARD_SECONDS,
            &[("appid", "wx1"), ("target", "http://b/h")],
            Duration::from_millis(30),
        );
        let backlog = [crate::store::Backlog {
            target: "http://b/h?k=secret".to_owned(),
            status: crate::store::DeliveryStatus::Dead,
            count: 2,
        }];
        let targets = ["http://b/h?k=secret".to_owned(), "http://idle/h".to_owned()];
        let text = m.render(&Scrape {
            depth: Some(Depth {
                pending: 3,
                ..Depth::default()
            }),
            done: Some(7),
            backlog: &backlog,
            targets: &targets,
        });
        assert!(
            text.contains("wechat_push_forward_backlog{target=\"http://b/h\",status=\"dead\"} 2")
        );
        // A target owing nothing shows 0 rather than vanishing.
        assert!(
            text.contains(
                "wechat_push_forward_backlog{target=\"http://b/h\",status=\"pending\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains(
            "wechat_push_forward_backlog{target=\"http://idle/h\",status=\"working\"} 0"
        ));
        assert!(text.contains("wechat_push_inbox_depth{status=\"done\"} 7"));
        assert!(text.contains(&format!(
            "wechat_push_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(!text.contains("secret"));
        assert!(
            text.contains(
                "wechat_push_pushes_total{appid=\"wx1\",kind=\"text\",outcome=\"stored\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "wechat_push_rejections_total{appid=\"wx\\\"1\",reason=\"signature_mismatch\"} 1"
        ));
        assert!(text.contains("wechat_push_ack_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("wechat_push_ack_seconds_bucket{le=\"0.002\"} 1"));
        assert!(text.contains("wechat_push_ack_seconds_count 1"));
        assert!(text.contains("wechat_push_inbox_depth{status=\"pending\"} 3"));
        assert!(text
            .contains("wechat_push_forward_seconds_bucket{appid=\"wx1\",target=\"http://b/h\",le=\"0.025\"} 0"));
        assert!(text.contains(
            "wechat_push_forward_seconds_bucket{appid=\"wx1\",target=\"http://b/h\",le=\"0.05\"} 1"
        ));
        assert!(text
            .contains("wechat_push_forward_seconds_count{appid=\"wx1\",target=\"http://b/h\"} 1"));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod process_tests {
    #[test]
    fn process_metrics_are_read_from_proc() {
        let text = crate::metrics::render_process();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        let rss: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(rss > 1 << 20, "{rss}");
    }
}
