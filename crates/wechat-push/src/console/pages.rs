//! The console's HTML, server-rendered with `maud` (every value escaped).
//! Each function renders one page from what its handler read; none reads
//! anything itself.

use maud::{html, Markup, DOCTYPE};

use crate::clock::Millis;
use crate::store::{
    AnswerRecord, Backlog, Delivery, DeliveryStatus, Depth, KindCount, Status, StoredPush,
};

/// The stylesheet, served at `/console/assets/console.css`: system fonts
/// (with CJK and emoji faces), one column on a phone.
pub const CSS: &str = include_str!("console.css");

/// The one script, served at `/console/assets/console.js`: live pages.
pub const SCRIPT: &str = include_str!("console.js");

/// Where a page sits in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/console`.
    Overview,
    /// `/console/inbox`.
    Inbox,
    /// `/console/dead`.
    Dead,
    /// `/console/conversations`.
    Conversations,
    /// None of them.
    Other,
}

/// What every page's frame needs: the session's CSRF token (for the
/// sign-out form), and whether signing out means anything.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// The session's CSRF token.
    pub csrf: &'a str,
    /// Whether a password signs in (else there is no sign-out).
    pub signed_in: bool,
}

pub(crate) fn layout(title: &str, nav: Nav, frame: Option<&Frame<'_>>, body: Markup) -> Markup {
    layout_live(title, nav, frame, None, body)
}

/// [`layout`] of a live page: `live` is its event stream's URL.
pub(crate) fn layout_live(
    title: &str,
    nav: Nav,
    frame: Option<&Frame<'_>>,
    live: Option<&str>,
    body: Markup,
) -> Markup {
    let link = |href: &str, label: &str, this: Nav| {
        html! { a href=(href) aria-current=[(nav == this).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wechat-push" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    strong { "wechat-push" }
                    @if let Some(frame) = frame {
                        nav {
                            (link("/console", "Overview", Nav::Overview))
                            (link("/console/inbox", "Inbox", Nav::Inbox))
                            (link("/console/conversations", "Conversations", Nav::Conversations))
                            (link("/console/dead", "Dead letters", Nav::Dead))
                        }
                        @if frame.signed_in {
                            form method="post" action="/console/sign-out" class="inline" {
                                input type="hidden" name="csrf" value=(frame.csrf);
                                button type="submit" class="link" { "Sign out" }
                            }
                        }
                    }
                }
                main data-live=[live] { (body) }
            }
        }
    }
}

/// The sign-in page; `failed` after a wrong password.
pub fn sign_in(csrf: &str, failed: bool) -> Markup {
    layout(
        "Sign in",
        Nav::Other,
        None,
        html! {
            h1 { "Sign in" }
            @if failed {
                p class="error" role="alert" { "Wrong password." }
            }
            form method="post" action="/console/sign-in" class="stack" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Password" input type="password" name="password" autocomplete="current-password" autofocus required; }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A page that could not be read: the store's error.
pub fn unavailable(frame: &Frame<'_>, error: &str) -> Markup {
    layout(
        "Unavailable",
        Nav::Other,
        Some(frame),
        html! {
            h1 { "The store does not answer" }
            p class="error" { (error) }
        },
    )
}

/// A page or item that does not exist.
pub fn not_found(frame: &Frame<'_>, what: &str) -> Markup {
    layout(
        "Not found",
        Nav::Other,
        Some(frame),
        html! { h1 { "Not found" } p { (what) } },
    )
}

/// "Re-queued 1 push and 2 deliveries."
pub(crate) fn requeued_text(pushes: u64, deliveries: u64) -> String {
    let push = if pushes == 1 { "push" } else { "pushes" };
    let delivery = if deliveries == 1 {
        "delivery"
    } else {
        "deliveries"
    };
    format!("Re-queued {pushes} {push} and {deliveries} {delivery}.")
}

/// The filter forms' app choice: all, or one of `appids`.
pub(crate) fn app_select(appids: &[String], selected: &str) -> Markup {
    html! {
        label { "App"
            select name="app" {
                option value="" { "all" }
                @for a in appids { option value=(a) selected[selected == a] { (a) } }
            }
        }
    }
}

/// The inbox filtered by `pairs`, each value URL-encoded.
pub fn inbox_url(pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    format!("/console/inbox?{}", query.finish())
}

/// A conversation's page: `/console/conversations/{appid}/{openid}`.
pub fn conversation_url(appid: &str, openid: &str) -> String {
    let segment = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "/console/conversations/{}/{}",
        segment(appid),
        segment(openid)
    )
}

/// A moment as RFC 3339 in UTC, in a `<time>`.
pub(crate) fn time(at: Millis) -> Markup {
    let text = at.to_rfc3339();
    html! { time datetime=(text) { (text) } }
}

pub(crate) fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status) } }
}

/// The overview's figures.
#[derive(Debug, Clone)]
pub struct Overview {
    /// Pushes by app and kind in the last hour.
    pub last_hour: Vec<KindCount>,
    /// Pushes by app and kind in the last day.
    pub last_day: Vec<KindCount>,
    /// Pending, working and dead pushes.
    pub depth: Depth,
    /// The same, by app.
    pub depth_by_app: Vec<(String, Depth)>,
    /// Deliveries owed, by target and status.
    pub backlog: Vec<Backlog>,
    /// The configured apps.
    pub appids: Vec<String>,
    /// When these were read.
    pub now: Millis,
    /// The newest push's id: the live page shows what comes after it.
    pub newest: i64,
    /// The two charts.
    pub charts: Charts,
}

/// The overview's charts: pushes per span, and this process's
/// acknowledgement latency per span.
#[derive(Debug, Clone)]
pub struct Charts {
    /// The last day (else the last hour).
    pub day: bool,
    /// The first span's start.
    pub since: Millis,
    /// The end.
    pub now: Millis,
    /// How long a span is.
    pub per: std::time::Duration,
    /// Pushes that arrived, by span start.
    pub arrivals: Vec<(Millis, u64)>,
    /// Acknowledgement latency, by span.
    pub latency: Vec<crate::metrics::minutes::Span>,
}

/// The chart's drawing area, in SVG units.
const CHART_W: f64 = 600.0;
const CHART_H: f64 = 140.0;
const CHART_LEFT: f64 = 44.0;
const CHART_BOTTOM: f64 = 18.0;

/// A count as a coordinate (exact below 2^53, and a chart needs no more).
#[allow(clippy::cast_precision_loss)]
fn as_f64(n: u64) -> f64 {
    n as f64
}

fn x_of(c: &Charts, at: Millis) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let f = (at - c.since) as f64 / ((c.now - c.since).max(1) as f64);
    CHART_LEFT + f.clamp(0.0, 1.0) * (CHART_W - CHART_LEFT)
}

fn y_of(value: f64, max: f64) -> f64 {
    let plot = CHART_H - CHART_BOTTOM;
    plot - (value / max.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0) * (plot - 6.0)
}

/// A round top for an axis: 1, 2 or 5 times a power of ten.
fn nice(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let power = 10_f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * power)
}

/// `HH:MM` of a moment, UTC.
fn hour_minute(at: Millis) -> String {
    at.to_rfc3339().get(11..16).unwrap_or_default().to_owned()
}

fn axes(c: &Charts, top: &str) -> Markup {
    let plot = CHART_H - CHART_BOTTOM;
    html! {
        line x1=(CHART_LEFT) y1=(plot) x2=(CHART_W) y2=(plot) class="axis" {}
        line x1=(CHART_LEFT) y1="6" x2=(CHART_LEFT) y2=(plot) class="axis" {}
        text x=(CHART_LEFT - 4.0) y="12" text-anchor="end" { (top) }
        text x=(CHART_LEFT - 4.0) y=(plot) text-anchor="end" { "0" }
        text x=(CHART_LEFT) y=(CHART_H - 4.0) { (hour_minute(c.since)) " UTC" }
        text x=(CHART_W) y=(CHART_H - 4.0) text-anchor="end" { (hour_minute(c.now)) }
    }
}

fn arrivals_chart(c: &Charts) -> Markup {
    let max = nice(as_f64(
        c.arrivals.iter().map(|(_, n)| *n).max().unwrap_or(0),
    ));
    let width = (x_of(c, c.since + c.per) - CHART_LEFT).max(1.0);
    let per = if c.day { "15 minutes" } else { "minute" };
    html! {
        figure class="chart" {
            figcaption { "Pushes per " (per) }
            svg viewBox={ "0 0 " (CHART_W) " " (CHART_H) } role="img" aria-label={ "Pushes per " (per) } {
                (axes(c, &format!("{max}")))
                @for (at, n) in &c.arrivals {
                    @let y = y_of(as_f64(*n), max);
                    rect class="bar" x=(x_of(c, *at)) y=(y) width=((width - 1.0).max(0.5)) height=((CHART_H - CHART_BOTTOM - y).max(0.0)) {
                        title { (at.to_rfc3339()) ": " (n) }
                    }
                }
            }
        }
    }
}

fn latency_chart(c: &Charts) -> Markup {
    let max = nice(c.latency.iter().map(|s| s.p99_ms).fold(0.0, f64::max));
    let half = (x_of(c, c.since + c.per) - CHART_LEFT) / 2.0;
    // The middle of a span; the span still running ends at the chart's edge.
    let mid = |s: &crate::metrics::minutes::Span| (x_of(c, s.start) + half).min(CHART_W - 3.0);
    let line = |pick: fn(&crate::metrics::minutes::Span) -> f64| {
        c.latency
            .iter()
            .map(|s| format!("{:.1},{:.1}", mid(s), y_of(pick(s), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        figure class="chart" {
            figcaption {
                "Acknowledgement latency (this host): "
                span class="p50" { "p50" } " and " span class="p99" { "p99" } ", ms"
            }
            svg viewBox={ "0 0 " (CHART_W) " " (CHART_H) } role="img" aria-label="Acknowledgement latency, p50 and p99" {
                (axes(c, &format!("{max} ms")))
                polyline class="p99" points=(line(|s| s.p99_ms)) {}
                polyline class="p50" points=(line(|s| s.p50_ms)) {}
                @for s in &c.latency {
                    circle class="p50" cx=(mid(s)) cy=(y_of(s.p50_ms, max)) r="2.5" {}
                    circle class="p99" cx=(mid(s)) cy=(y_of(s.p99_ms, max)) r="2.5" {
                        title { (s.start.to_rfc3339()) ": p50 " (format!("{:.2}", s.p50_ms)) " ms, p99 " (format!("{:.2}", s.p99_ms)) " ms, " (s.count) " pushes" }
                    }
                }
            }
        }
    }
}

/// `/console`: what came in, what is stuck.
pub fn overview(frame: &Frame<'_>, o: &Overview) -> Markup {
    let mut rows: Vec<(&str, &str)> = o
        .last_day
        .iter()
        .map(|k| (k.appid.as_str(), k.kind.as_str()))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let count = |list: &[KindCount], appid: &str, kind: &str| {
        list.iter()
            .find(|k| k.appid == appid && k.kind == kind)
            .map_or(0, |k| k.count)
    };
    let total = |list: &[KindCount], appid: &str| {
        list.iter()
            .filter(|k| k.appid == appid)
            .map(|k| k.count)
            .sum::<u64>()
    };
    let live = format!("/console/events?page=overview&after={}", o.newest);
    layout_live(
        "Overview",
        Nav::Overview,
        Some(frame),
        Some(&live),
        html! {
            h1 { "Overview" }
            p class="muted" { "As of " (time(o.now)) "." }
            section class="cards" {
                a class="card" href="/console/inbox?status=pending" { span class="figure" { (o.depth.pending) } " pending" }
                a class="card" href="/console/inbox?status=working" { span class="figure" { (o.depth.working) } " working" }
                a class={ "card" @if o.depth.dead > 0 { " alert" } } href="/console/dead" {
                    span class="figure" { (o.depth.dead) } " dead pushes"
                }
                @let dead_deliveries: u64 = o.backlog.iter().filter(|b| b.status == DeliveryStatus::Dead).map(|b| b.count).sum();
                a class={ "card" @if dead_deliveries > 0 { " alert" } } href="/console/dead" {
                    span class="figure" { (dead_deliveries) } " dead deliveries"
                }
            }
            p class="spans" {
                a href="/console" aria-current=[(!o.charts.day).then_some("page")] { "Last hour" }
                " · "
                a href="/console?span=day" aria-current=[o.charts.day.then_some("page")] { "Last day" }
            }
            div class="charts" {
                (arrivals_chart(&o.charts))
                (latency_chart(&o.charts))
            }
            h2 { "Pushes by app" }
            table {
                thead { tr { th { "App" } th { "Last hour" } th { "Last day" } th { "Pending" } th { "Working" } th { "Dead" } } }
                tbody {
                    @for appid in &o.appids {
                        @let depth = o.depth_by_app.iter().find(|(a, _)| a == appid).map(|(_, d)| *d).unwrap_or_default();
                        tr {
                            td { a href=(inbox_url(&[("app", appid)])) { (appid) } }
                            td class="num" { (total(&o.last_hour, appid)) }
                            td class="num" { (total(&o.last_day, appid)) }
                            td class="num" { a href=(inbox_url(&[("app", appid), ("status", "pending")])) { (depth.pending) } }
                            td class="num" { a href=(inbox_url(&[("app", appid), ("status", "working")])) { (depth.working) } }
                            td class="num" { a href=(inbox_url(&[("app", appid), ("status", "dead")])) { (depth.dead) } }
                        }
                    }
                }
            }
            h2 { "By kind" }
            @if rows.is_empty() {
                p class="muted" { "No push in the last day." }
            } @else {
                table {
                    thead { tr { th { "App" } th { "Kind" } th { "Last hour" } th { "Last day" } } }
                    tbody {
                        @for (appid, kind) in &rows {
                            tr {
                                td { (appid) }
                                td { a href=(inbox_url(&[("app", appid), ("kind", kind)])) { (kind) } }
                                td class="num" { (count(&o.last_hour, appid, kind)) }
                                td class="num" { (count(&o.last_day, appid, kind)) }
                            }
                        }
                    }
                }
            }
            h2 { "Forward targets" }
            @if o.backlog.is_empty() {
                p class="muted" { "Nothing owed to any target." }
            } @else {
                table {
                    thead { tr { th { "Target" } th { "Status" } th { "Deliveries" } } }
                    tbody {
                        @for b in &o.backlog {
                            tr {
                                td class="wrap" { (crate::config::display_url(&b.target)) }
                                td { (status_badge(b.status.as_str())) }
                                td class="num" { (b.count) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The inbox's filter, as the form holds it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct InboxQuery {
    /// Only this app's.
    #[serde(default)]
    pub app: String,
    /// Only in this status.
    #[serde(default)]
    pub status: String,
    /// Only of this kind.
    #[serde(default)]
    pub kind: String,
    /// Only from this openid.
    #[serde(default)]
    pub openid: String,
    /// Received at or after (UTC, `YYYY-MM-DDTHH:MM`).
    #[serde(default)]
    pub since: String,
    /// Received before (UTC).
    #[serde(default)]
    pub until: String,
    /// Words in the body.
    #[serde(default)]
    pub q: String,
    /// Older than this push id (the next page).
    #[serde(default)]
    pub before: Option<i64>,
    /// Newer than this push id (what a live page has not shown yet).
    #[serde(default)]
    pub after: Option<i64>,
    /// For `/console/events`: `overview` streams a note to read the page
    /// again; anything else, the inbox's rows.
    #[serde(default)]
    pub page: String,
}

impl InboxQuery {
    /// This query's string, with `before` set to `next`.
    pub fn with_before(&self, next: i64) -> String {
        self.with("before", next)
    }

    /// This query's string, with `name` set to `id`.
    fn with(&self, name: &str, id: i64) -> String {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("app", &self.app),
            ("status", &self.status),
            ("kind", &self.kind),
            ("openid", &self.openid),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ] {
            if !v.is_empty() {
                url.append_pair(k, v);
            }
        }
        url.append_pair(name, &id.to_string());
        url.finish()
    }
}

/// What a push says, in a few words: a text's content, an event's name.
pub fn summary(push: &StoredPush) -> String {
    let fields = crate::protocol::message::Message::from_stored(push.format, &push.body)
        .map(|m| m.fields().clone())
        .unwrap_or_default();
    let text = |k: &str| fields.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let said = text("Content")
        .or_else(|| text("Title"))
        .or_else(|| text("Event").map(|e| format!("event {e}")))
        .unwrap_or_default();
    let mut short: String = said.chars().take(80).collect();
    if short.len() < said.len() {
        short.push('…');
    }
    short
}

/// `/console/inbox`: the pushes, newest first, filtered, a page at a time.
pub fn inbox(
    frame: &Frame<'_>,
    query: &InboxQuery,
    appids: &[String],
    pushes: &[StoredPush],
    next: Option<i64>,
    error: Option<&str>,
) -> Markup {
    let statuses = ["pending", "working", "done", "dead"];
    // Live on the first page only: a later page is history.
    let live = query.before.is_none().then(|| {
        let newest = pushes.first().map_or(0, |p| p.id.0);
        format!("/console/events?{}", query.with("after", newest))
    });
    layout_live(
        "Inbox",
        Nav::Inbox,
        Some(frame),
        live.as_deref(),
        html! {
            h1 { "Inbox" }
            form method="get" action="/console/inbox" class="filters" {
                (app_select(appids, &query.app))
                label { "Status"
                    select name="status" {
                        option value="" { "any" }
                        @for s in statuses { option value=(s) selected[query.status == s] { (s) } }
                    }
                }
                label { "Kind" input name="kind" value=(query.kind) placeholder="text, event:subscribe"; }
                label { "User (openid)" input name="openid" value=(query.openid); }
                label { "From (UTC)" input type="datetime-local" name="since" value=(query.since); }
                label { "Until (UTC)" input type="datetime-local" name="until" value=(query.until); }
                label class="grow" { "Text" input type="search" name="q" value=(query.q) placeholder="words in the push"; }
                button type="submit" { "Filter" }
                a href="/console/inbox" { "Clear" }
            }
            @if let Some(error) = error {
                p class="error" role="alert" { (error) }
            }
            @if !query.q.trim().is_empty() && query.since.trim().is_empty() {
                p class="muted" { "Text is searched in the 24 hours before Until (or now); set From to search further back." }
            }
            table class="pushes" {
                thead { tr { th { "Received" } th { "App" } th { "Kind" } th { "User" } th { "Status" } th { "Says" } } }
                tbody id="pushes" {
                    @if pushes.is_empty() {
                        tr id="no-push" { td colspan="6" class="muted" { "No push matches." } }
                    }
                    @for p in pushes { (push_row(p)) }
                }
            }
            @if let Some(next) = next {
                p { a href={ "/console/inbox?" (query.with_before(next)) } rel="next" { "Older →" } }
            }
        },
    )
}

/// One push's row in the inbox (also what a live page gets).
pub fn push_row(p: &StoredPush) -> Markup {
    let link = format!("/console/pushes/{}", p.id.0);
    html! {
        tr data-id=(p.id.0) {
            td { a href=(link) { (time(p.received_at)) } }
            td { (p.appid) }
            td { (p.kind) }
            td class="mono wrap" { a href=(conversation_url(&p.appid, p.from.as_str())) { (p.from.as_str()) } }
            td { (status_badge(p.status.as_str())) }
            td class="wrap" { a href=(link) { (summary(p)) } }
        }
    }
}

/// One push's page, as read.
#[derive(Debug)]
pub struct PushPage {
    /// The push.
    pub push: StoredPush,
    /// Its answers, in order.
    pub answers: Vec<AnswerRecord>,
    /// Its deliveries.
    pub deliveries: Vec<Delivery>,
    /// Every attempt of its deliveries, oldest first.
    pub attempts: Vec<crate::store::DeliveryAttempt>,
    /// What a retry re-queued, when the page follows one.
    pub requeued: Option<(u64, u64)>,
}

fn pretty_body(push: &StoredPush) -> String {
    let text = String::from_utf8_lossy(&push.body);
    if push.format == crate::protocol::Format::Json {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&push.body) {
            return serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.into_owned());
        }
    }
    text.into_owned()
}

/// `/console/pushes/{id}`.
pub fn push(frame: &Frame<'_>, page: &PushPage) -> Markup {
    let p = &page.push;
    let fields = crate::protocol::message::Message::from_stored(p.format, &p.body)
        .map(|m| m.fields().clone());
    layout(
        &format!("Push {}", p.id.0),
        Nav::Other,
        Some(frame),
        html! {
            h1 { "Push " (p.id.0) " " (status_badge(p.status.as_str())) }
            @if let Some((pushes, deliveries)) = page.requeued {
                p class="notice" role="status" { (requeued_text(pushes, deliveries)) }
            }
            @if p.status == Status::Dead || page.deliveries.iter().any(|d| d.status == DeliveryStatus::Dead) {
                form method="post" action={ "/console/pushes/" (p.id.0) "/retry" } class="inline" {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    button type="submit" { "Retry the dead push and its dead deliveries" }
                }
            }
            dl class="facts" {
                dt { "App" } dd { (p.appid) }
                dt { "Kind" } dd { (p.kind) }
                dt { "User" } dd class="mono wrap" {
                    a href=(conversation_url(&p.appid, p.from.as_str())) { (p.from.as_str()) } " "
                    a class="muted" href=(inbox_url(&[("app", &p.appid), ("openid", p.from.as_str())])) { "(pushes)" }
                }
                dt { "Dedup key" } dd class="mono wrap" { (p.dedup_key.as_str()) }
                dt { "Created (CreateTime)" } dd { (time(Millis(p.create_time.saturating_mul(1000)))) }
                dt { "Received" } dd { (time(p.received_at)) }
                dt { "Attempts" } dd { (p.attempts) }
                @if let Some(at) = p.finished_at { dt { "Finished" } dd { (time(at)) } }
                @if let Some(e) = &p.last_error { dt { "Last error" } dd class="error wrap" { (e) } }
            }
            h2 { "Fields" }
            @match &fields {
                Ok(fields) => {
                    table class="fields" {
                        tbody {
                            @for (k, v) in fields {
                                tr { th class="mono" { (k) } td class="wrap" { @if let Some(s) = v.as_str() { (s) } @else { (v.to_string()) } } }
                            }
                        }
                    }
                }
                Err(e) => p class="error" { "Unreadable: " (e.to_string()) }
            }
            details {
                summary { "Body (" (if p.format == crate::protocol::Format::Json { "JSON" } else { "XML" }) ", decrypted)" }
                pre { code { (pretty_body(p)) } }
            }
            h2 { "Passive reply" }
            @match &p.reply {
                Some(reply) => pre { code { (String::from_utf8_lossy(reply)) } },
                None => p class="muted" { "None: acknowledged with success." },
            }
            h2 { "Answers" }
            @if page.answers.is_empty() {
                p class="muted" { "None." }
            } @else {
                table {
                    thead { tr { th { "Source" } th { "Type" } th { "Status" } th { "Updated" } th { "Message" } } }
                    tbody {
                        @for a in &page.answers {
                            tr {
                                td { (a.source) }
                                td { (a.msgtype) }
                                td { (status_badge(a.status.as_str())) @if let Some(e) = &a.error { br; span class="error" { (e) } } }
                                td { (time(a.updated_at)) }
                                td class="wrap" { code { (a.body) } }
                            }
                        }
                    }
                }
            }
            h2 { "Deliveries" }
            @if page.deliveries.is_empty() {
                p class="muted" { "None." }
            } @else {
                table {
                    thead { tr { th { "Target" } th { "Status" } th { "Attempts" } th { "Updated" } th { "Last error" } th {} } }
                    tbody {
                        @for d in &page.deliveries {
                            (delivery_row(frame, d, &format!("/console/pushes/{}", p.id.0)))
                            @let tries: Vec<_> = page.attempts.iter().filter(|a| a.delivery_id == d.id).collect();
                            @if !tries.is_empty() {
                                tr class="attempts" {
                                    td colspan="6" {
                                        ol {
                                            @for a in tries {
                                                li {
                                                    (time(a.at)) " · " (status_badge(&a.outcome)) " · " (a.took_ms) " ms"
                                                    @if let Some(e) = &a.error { " · " span class="error wrap" { (e) } }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn delivery_row(frame: &Frame<'_>, d: &Delivery, back: &str) -> Markup {
    html! { tr { (delivery_cells(frame, d, back)) } }
}

/// A delivery's cells; its retry button comes `back` to this page.
fn delivery_cells(frame: &Frame<'_>, d: &Delivery, back: &str) -> Markup {
    html! {
            td class="wrap" { (crate::config::display_url(&d.target)) }
            td { (status_badge(d.status.as_str())) }
            td class="num" { (d.attempts) }
            td { (time(d.updated_at)) }
            td class="wrap error" { (d.last_error.as_deref().unwrap_or("")) }
            td {
                @if d.status == DeliveryStatus::Dead {
                    form method="post" action={ "/console/deliveries/" (d.id.0) "/retry" } class="inline" {
                        input type="hidden" name="csrf" value=(frame.csrf);
                        input type="hidden" name="back" value=(back);
                        button type="submit" { "Retry" }
                    }
                }
            }
    }
}

/// `/console/dead`: dead pushes and dead deliveries, retried one by one
/// or all at once (of one app, or of all).
pub fn dead(
    frame: &Frame<'_>,
    app: &str,
    appids: &[String],
    pushes: &[StoredPush],
    deliveries: &[(Delivery, StoredPush)],
    requeued: Option<(u64, u64)>,
) -> Markup {
    layout(
        "Dead letters",
        Nav::Dead,
        Some(frame),
        html! {
            h1 { "Dead letters" }
            @if let Some((pushes, deliveries)) = requeued {
                p class="notice" role="status" { (requeued_text(pushes, deliveries)) }
            }
            form method="get" action="/console/dead" class="filters" {
                (app_select(appids, app))
                button type="submit" { "Show" }
            }
            form method="post" action="/console/dead/retry" class="inline" {
                input type="hidden" name="csrf" value=(frame.csrf);
                input type="hidden" name="app" value=(app);
                button type="submit" disabled[pushes.is_empty() && deliveries.is_empty()] {
                    "Retry all" @if !app.is_empty() { " of " (app) }
                }
            }
            h2 { "Dead pushes" }
            @if pushes.is_empty() {
                p class="muted" { "None." }
            } @else {
                table {
                    thead { tr { th { "Received" } th { "App" } th { "Kind" } th { "Attempts" } th { "Last error" } th {} } }
                    tbody {
                        @for p in pushes {
                            tr {
                                td { a href={ "/console/pushes/" (p.id.0) } { (time(p.received_at)) } }
                                td { (p.appid) }
                                td { (p.kind) }
                                td class="num" { (p.attempts) }
                                td class="wrap error" { (p.last_error.as_deref().unwrap_or("")) }
                                td {
                                    form method="post" action={ "/console/pushes/" (p.id.0) "/retry" } class="inline" {
                                        input type="hidden" name="csrf" value=(frame.csrf);
                                        button type="submit" { "Retry" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Dead deliveries" }
            @if deliveries.is_empty() {
                p class="muted" { "None." }
            } @else {
                table {
                    thead { tr { th { "Push" } th { "Target" } th { "Status" } th { "Attempts" } th { "Updated" } th { "Last error" } th {} } }
                    tbody {
                        @for (d, p) in deliveries {
                            tr {
                                td { a href={ "/console/pushes/" (p.id.0) } { (p.appid) " · " (p.kind) } }
                                (delivery_cells(frame, d, "/console/dead"))
                            }
                        }
                    }
                }
            }
        },
    )
}
