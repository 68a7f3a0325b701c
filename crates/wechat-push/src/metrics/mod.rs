//! Counters, histograms and gauges, kept by `prometheus-client` and
//! rendered in the OpenMetrics text format at `GET /metrics`, with the
//! store writer's measurements, the process's own (`process_*`, Linux) and
//! `wechat_push_build_info`.

pub mod minutes;

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::store::{Backlog, DeliveryStatus, Depth};

/// The content type of [`Metrics::render`]'s text: OpenMetrics 1.0.0,
/// which Prometheus reads (and asks for first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
/// Counter: log lines not written, by reason (`queue_full`: the log
/// writer fell behind and lines were dropped rather than requests held up;
/// `write_failed`: standard output refused them, a closed pipe or a full
/// disk).
pub const LOG_LINES_DROPPED: &str = "wechat_push_log_lines_dropped_total";
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
        LOG_LINES_DROPPED,
        "Log lines not written, by reason: queue_full (the log writer fell behind), write_failed (standard output refused them).",
    ),
    (
        API_ERRORS,
        "WeChat API answers with an errcode, by app and errcode (48001: no permission, 45015: window closed, ...).",
    ),
];

/// Counters counted without labels: shown as `name_total N`.
const UNLABELLED: &[&str] = &[API_UNCERTAIN, CONNECTIONS_REFUSED];

const HISTOGRAM_HELP: &[(&str, &str)] = &[(
    FORWARD_SECONDS,
    "Time forward targets took to answer a delivery, by app and target.",
)];

/// One labelled series' labels: names and values, in order.
type Labels = Vec<(&'static str, String)>;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Histograms by label set, each with [`BUCKETS`].
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The server's metrics: a `prometheus-client` registry of counters,
/// histograms and gauges that every part counts into, lock-free on the
/// way of a push once its series exists.
pub struct Metrics {
    registry: Registry,
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    /// The counters counted without labels ([`UNLABELLED`]).
    plain: HashMap<&'static str, Counter>,
    histograms: HashMap<&'static str, Histograms>,
    ack: Histogram,
    /// The same latencies minute by minute, for the console's chart.
    ack_minutes: minutes::AckMinutes,
    /// Connections open now.
    open_connections: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// OpenMetrics names a counter without its `_total`, and ends its help
/// with a period of its own.
fn registered(name: &str, help: &str) -> (String, String) {
    (
        name.strip_suffix("_total").unwrap_or(name).to_owned(),
        help.strip_suffix('.').unwrap_or(help).to_owned(),
    )
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counters = HashMap::new();
        let mut plain = HashMap::new();
        for (name, help) in HELP {
            let (n, h) = registered(name, help);
            if UNLABELLED.contains(name) {
                let counter = Counter::default();
                registry.register(n, h, counter.clone());
                plain.insert(*name, counter);
            } else {
                let family = Family::<Labels, Counter>::default();
                registry.register(n, h, family.clone());
                counters.insert(*name, family);
            }
        }
        let mut histograms = HashMap::new();
        for (name, help) in HISTOGRAM_HELP {
            let family: Histograms = Family::new_with_constructor(latency_histogram);
            let (n, h) = registered(name, help);
            registry.register(n, h, family.clone());
            histograms.insert(*name, family);
        }
        let ack = latency_histogram();
        registry.register(
            "wechat_push_ack_seconds",
            "Time from a push's arrival to its answer",
            ack.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "wechat_push_open_connections",
            "HTTP connections open now",
            open_connections.clone(),
        );
        registry.register(
            "wechat_push_build",
            "The running build: its version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            counters,
            plain,
            histograms,
            ack,
            ack_minutes: minutes::AckMinutes::default(),
            open_connections,
        }
    }
}

fn labels(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, escaped(v))).collect()
}

/// A label value as the text format writes it: `prometheus-client` (0.24)
/// writes values as they are, and a `"` in one (a kind or an appid, from a
/// push or the config) would end it early and break the whole scrape.
fn escaped(value: &str) -> String {
    if !value.contains(['\\', '"', '\n']) {
        return value.to_owned();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Add one to counter `name` (one of this module's constants) with
    /// `labels`; a name not declared here is not counted.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Add `n` to counter `name` with `labels`, as [`Metrics::inc`] adds one.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        if let Some(counter) = self.plain.get(name) {
            counter.inc_by(n);
        } else if let Some(family) = self.counters.get(name) {
            family.get_or_create(&self::labels(labels)).inc_by(n);
        } else {
            debug_assert!(false, "counter {name} is not declared in metrics::HELP");
        }
    }

    /// The value of counter `name` with `labels` (0 before the first count).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        if let Some(counter) = self.plain.get(name) {
            return counter.get();
        }
        self.counters.get(name).map_or(0, |family| {
            family.get_or_create(&self::labels(labels)).get()
        })
    }

    /// Record `elapsed` in histogram `name` with `labels`.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], elapsed: Duration) {
        if let Some(family) = self.histograms.get(name) {
            family
                .get_or_create(&self::labels(labels))
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Record how long a push took from arrival to answer.
    pub fn observe_ack(&self, elapsed: Duration) {
        self.ack.observe(elapsed.as_secs_f64());
        self.ack_minutes
            .record(crate::clock::now_ms(), elapsed.as_secs_f64());
    }

    /// Acknowledgement latency in spans of `per` minutes since `since`
    /// (this process's; a day at most), for the console's chart.
    pub fn ack_series(&self, since: crate::clock::Millis, per: i64) -> Vec<minutes::Span> {
        self.ack_minutes.series(since, crate::clock::now_ms(), per)
    }

    /// A connection opened (`wechat_push_open_connections`).
    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    /// A connection closed.
    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }
}

impl Metrics {
    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]): the
    /// registry, what the scrape read from the store, the store writer's
    /// measurements and the process's.
    pub fn render(
        &self,
        scrape: &Scrape<'_>,
        writer: Option<&crate::store::WriterStats>,
    ) -> String {
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        // What the store said now, in a registry of its own made for this
        // scrape: gauges set from the counts.
        let mut read = Registry::default();
        let value = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
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
            let family = Family::<Labels, Gauge>::default();
            for (target, status, count) in &backlog {
                let labels = vec![
                    ("target", escaped(&crate::config::display_url(target))),
                    ("status", status.as_str().to_owned()),
                ];
                // Targets that differ only in what is not shown (a query,
                // a password) share a label set: their counts add up.
                family.get_or_create(&labels).inc_by(value(*count));
            }
            read.register(
                "wechat_push_forward_backlog",
                "Deliveries to forward targets not delivered yet, by target and status (pending, working, dead)",
                family,
            );
        }
        let depth = Family::<Labels, Gauge>::default();
        if let Some(d) = scrape.depth {
            for (status, n) in [
                ("pending", d.pending),
                ("working", d.working),
                ("dead", d.dead),
            ] {
                depth
                    .get_or_create(&vec![("status", status.to_owned())])
                    .set(value(n));
            }
        }
        if let Some(done) = scrape.done {
            depth
                .get_or_create(&vec![("status", "done".to_owned())])
                .set(value(done));
        }
        read.register(
            "wechat_push_inbox_depth",
            "Stored pushes by status (done: counted in the background, from the second scrape on)",
            depth,
        );
        let _ = encode_registry(&mut out, &read);
        if let Some(stats) = writer {
            out.push_str(&render_writer(stats));
        }
        out.push_str(&render_process());
        let _ = encode_eof(&mut out);
        out
    }
}

/// The store writer's measurements in Prometheus text:
/// `wechat_push_store_batch_seconds` (a histogram of the time each batch of
/// writes took, begin to commit, which its acknowledgements waited for),
/// `wechat_push_store_wal_restart_seconds` (a histogram of the WAL restarts
/// the writer tried between two batches, which the next batch waited for),
/// `wechat_push_store_database_sync_seconds` (a histogram of the
/// checkpointer's syncs of the database file),
/// `wechat_push_store_checkpoints_total`, `wechat_push_store_wal_restarts_total`,
/// `wechat_push_store_commit_delays_total` (batches that waited a moment
/// for more writes: group commit) and `wechat_push_store_wal_backlog_pages`.
pub fn render_writer(stats: &crate::store::WriterStats) -> String {
    let mut out = String::new();
    render_histogram(
        &mut out,
        "wechat_push_store_batch_seconds",
        "Time each batch of store writes took, from its start to its commit.",
        &stats.batches,
    );
    render_histogram(
        &mut out,
        "wechat_push_store_wal_restart_seconds",
        "Time each WAL restart the store's writer tried between two batches took, whether it restarted the WAL or a reader held it.",
        &stats.wal_restart_time,
    );
    render_histogram(
        &mut out,
        "wechat_push_store_database_sync_seconds",
        "Time each fdatasync of the database file after a checkpoint pass took (off the writer's thread, on its disk).",
        &stats.database_sync_time,
    );
    // OpenMetrics: a counter's family is named without `_total`.
    let name = "wechat_push_store_checkpoints";
    let _ = writeln!(
        out,
        "# HELP {name} WAL checkpoints run, off the writer's thread.\n# TYPE {name} counter\n{name}_total {}",
        stats.checkpoints
    );
    let name = "wechat_push_store_wal_restarts";
    let _ = writeln!(
        out,
        "# HELP {name} Times the store's writer restarted the WAL from its beginning, between two batches.\n# TYPE {name} counter\n{name}_total {}",
        stats.wal_restarts
    );
    let name = "wechat_push_store_commit_delays";
    let _ = writeln!(
        out,
        "# HELP {name} Batches of store writes that waited a moment for more before they began (group commit).\n# TYPE {name} counter\n{name}_total {}",
        stats.commit_delays
    );
    let name = "wechat_push_store_wal_backlog_pages";
    let _ = writeln!(
        out,
        "# HELP {name} WAL pages not yet copied back into the database file after the last checkpoint.\n# TYPE {name} gauge\n{name} {}",
        stats.wal_backlog_pages
    );
    out
}

fn render_histogram(out: &mut String, name: &str, help: &str, h: &crate::store::Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (n, bound) in h.buckets.iter().zip(crate::store::BATCH_SECONDS_BUCKETS) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    // Read apart from the buckets: one counted in between must not show a
    // bucket above the total.
    let count = h.count.max(h.buckets.last().copied().unwrap_or(0));
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {}\n{name}_count {count}",
        h.seconds
    );
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
    // Fields 14 and 15 (utime, stime) and 22 (starttime) of
    // proc(5), counted from 1 with the pid and command as 1 and 2.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // Linux reports these in clock ticks (USER_HZ, 100 on every Linux
    // platform Rust targets).
    const TICKS: f64 = 100.0;
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n\
             process_cpu_seconds_total {}",
            (user + system) as f64 / TICKS
        );
    }
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    // In kB from /proc/self/status: pages are not 4 KiB everywhere.
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    if let Some(kb) = rss_kb {
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (kb * 1024).to_string(),
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
    fn the_writers_batches_wal_restarts_and_database_syncs_are_histograms() {
        let n = crate::store::BATCH_SECONDS_BUCKETS.len();
        let histogram = |count: u64, seconds| crate::store::Histogram {
            buckets: (0..n as u64).map(|i| count.min(i)).collect(),
            count,
            seconds,
        };
        let stats = crate::store::WriterStats {
            batches: histogram(40, 0.5),
            wal_restart_time: histogram(3, 0.012),
            database_sync_time: histogram(5, 0.004),
            commit_delays: 7,
            ..Default::default()
        };
        let text = render_writer(&stats);
        assert!(
            text.contains("# TYPE wechat_push_store_commit_delays counter\nwechat_push_store_commit_delays_total 7\n"),
            "{text}"
        );
        for (name, count, sum) in [
            ("wechat_push_store_batch_seconds", 40, "0.5"),
            ("wechat_push_store_wal_restart_seconds", 3, "0.012"),
            ("wechat_push_store_database_sync_seconds", 5, "0.004"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} histogram\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("{name}_bucket{{le=\"0.0005\"}} 0\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("{name}_sum {sum}\n{name}_count {count}\n")),
                "{text}"
            );
        }
    }

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
        let text = m.render(
            &Scrape {
                depth: Some(Depth {
                    pending: 3,
                    ..Depth::default()
                }),
                done: Some(7),
                backlog: &backlog,
                targets: &targets,
            },
            None,
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
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
            .contains("wechat_push_forward_seconds_bucket{le=\"0.025\",appid=\"wx1\",target=\"http://b/h\"} 0"));
        assert!(text.contains(
            "wechat_push_forward_seconds_bucket{le=\"0.05\",appid=\"wx1\",target=\"http://b/h\"} 1"
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
