//! Conversations: each user's pushes and every answer they got, in time
//! order, like a chat; and answering a user by hand through the
//! customer-service API, recorded in the outbox like every other answer.
//!
//! WeChat takes customer-service messages only within 48 hours of the
//! user's last message ("5 messages within 48 h after a user message",
//! 客服消息 in WeChat's Mini Program and Official Account documentation):
//! past it the answer box is closed, and an answer posted anyway is refused
//! here before WeChat would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::pages::{self, conversation_url, layout, status_badge, time, Frame, Nav};
use super::{store_error, Console, Visitor};
use crate::clock::{now_ms, Millis};
use crate::protocol::message::OpenId;
use crate::protocol::AppKind;
use crate::reply::CsMessage;
use crate::store::{AnswerRecord, ListFilter, PushId, StoredPush};

/// How long after a user's last push WeChat takes customer-service
/// messages to them.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(48 * 3600);

/// Whether a user last heard from at `last` may still be answered at `now`.
fn window_open(last: Millis, now: Millis) -> bool {
    now < last + ANSWER_WINDOW
}

/// The newest pushes read to find the recent conversations.
const RECENT_PUSHES: usize = 2_000;

/// Conversations listed.
const CONVERSATIONS_SHOWN: usize = 100;

/// A conversation's pushes shown, newest.
const MESSAGES_SHOWN: usize = 100;

/// Longest text answered by hand, in characters (WeChat's limit for a
/// customer-service text is about 2,048 bytes).
const MAX_ANSWER_CHARS: usize = 600;

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    #[serde(default)]
    app: String,
}

/// One user's latest activity.
struct Recent {
    appid: String,
    openid: String,
    last: Millis,
    pushes: usize,
    said: String,
}

/// `/console/conversations`: the users heard from most recently.
pub(super) async fn list(
    State(console): State<Arc<Console>>,
    visitor: Visitor,
    Query(query): Query<ListQuery>,
) -> Response {
    let frame = visitor.frame(&console);
    let app = super::non_empty(&query.app);
    let pushes = match console
        .store
        .list(ListFilter {
            appid: app.clone(),
            limit: RECENT_PUSHES,
            ..ListFilter::default()
        })
        .await
    {
        Ok(p) => p,
        Err(e) => {
            return visitor.page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::unavailable(&frame, &store_error(&e)),
            )
        }
    };
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut recent: Vec<Recent> = Vec::new();
    for p in &pushes {
        let key = (p.appid.clone(), p.from.as_str().to_owned());
        match seen.get(&key) {
            Some(&i) => recent[i].pushes += 1,
            None if recent.len() < CONVERSATIONS_SHOWN => {
                seen.insert(key, recent.len());
                recent.push(Recent {
                    appid: p.appid.clone(),
                    openid: p.from.as_str().to_owned(),
                    last: p.received_at,
                    pushes: 1,
                    said: pages::summary(p),
                });
            }
            None => {}
        }
    }
    let markup = layout(
        "Conversations",
        Nav::Conversations,
        Some(&frame),
        html! {
            h1 { "Conversations" }
            form method="get" action="/console/conversations" class="filters" {
                (pages::app_select(&console.apps().appids, &query.app))
                button type="submit" { "Show" }
            }
            p class="muted" { "Users heard from in the last " (RECENT_PUSHES) " pushes, most recent first." }
            @if recent.is_empty() {
                p class="muted" { "No conversation yet." }
            } @else {
                table {
                    thead { tr { th { "Last" } th { "App" } th { "User" } th { "Pushes" } th { "Last said" } } }
                    tbody {
                        @for r in &recent {
                            @let link = conversation_url(&r.appid, &r.openid);
                            tr {
                                td { a href=(link) { (time(r.last)) } }
                                td { (r.appid) }
                                td class="mono wrap" { a href=(link) { (r.openid) } }
                                td class="num" { (r.pushes) }
                                td class="wrap" { (r.said) }
                            }
                        }
                    }
                }
            }
        },
    );
    visitor.page(StatusCode::OK, markup)
}

/// What an answer said, for a chat bubble: a text's words, else its type.
fn answer_text(record: &AnswerRecord) -> String {
    let body: serde_json::Value = serde_json::from_str(&record.body).unwrap_or_default();
    body.get("text")
        .and_then(|t| t.get("content"))
        .and_then(|c| c.as_str())
        .map_or_else(|| format!("({})", record.msgtype), str::to_owned)
}

/// What a passive reply said: its `Content`, else its `MsgType`.
fn reply_text(push: &StoredPush) -> Option<(String, bool)> {
    let reply = push.reply.as_ref()?;
    let fields = crate::protocol::wire::parse(
        crate::protocol::Format::Xml,
        reply,
        &crate::protocol::wire::Limits::default(),
    )
    .unwrap_or_default();
    let text = |k: &str| fields.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let msg_type = text("MsgType").unwrap_or_default();
    let transfer = msg_type == "transfer_customer_service";
    Some((
        text("Content").unwrap_or_else(|| format!("({msg_type})")),
        transfer,
    ))
}

/// A conversation, oldest first: each push with its answers.
struct Exchange {
    push: StoredPush,
    answers: Vec<AnswerRecord>,
}

#[derive(Deserialize, Default)]
pub(super) struct PageQuery {
    #[serde(default)]
    answered: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// An answer recorded but not sent (`error=not_sent`): the form sends
    /// it again, as the same answer.
    #[serde(default)]
    answer_id: Option<String>,
    /// The push it was recorded under.
    #[serde(default)]
    push_id: Option<i64>,
}

/// Whether `token` is a form's answer id: 64 hex digits.
fn is_answer_id(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn exchanges(
    console: &Console,
    appid: &str,
    openid: &str,
) -> Result<Vec<Exchange>, crate::store::StoreError> {
    let mut pushes = console
        .store
        .list(ListFilter {
            appid: Some(appid.to_owned()),
            from: Some(openid.to_owned()),
            limit: MESSAGES_SHOWN,
            ..ListFilter::default()
        })
        .await?;
    pushes.reverse();
    let mut out = Vec::with_capacity(pushes.len());
    for push in pushes {
        let answers = console.store.answers(push.id).await?;
        out.push(Exchange { push, answers });
    }
    Ok(out)
}

/// `/console/conversations/{appid}/{openid}`.
pub(super) async fn page(
    State(console): State<Arc<Console>>,
    visitor: Visitor,
    Path((appid, openid)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Response {
    let frame = visitor.frame(&console);
    let apps = console.apps();
    let Some(app) = apps.app(&appid) else {
        return visitor.page(
            StatusCode::NOT_FOUND,
            pages::not_found(&frame, &format!("No app {appid} is configured.")),
        );
    };
    let exchanges = match exchanges(&console, &appid, &openid).await {
        Ok(e) => e,
        Err(e) => {
            return visitor.page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::unavailable(&frame, &store_error(&e)),
            )
        }
    };
    if exchanges.is_empty() {
        return visitor.page(
            StatusCode::NOT_FOUND,
            pages::not_found(
                &frame,
                &format!("No push from {openid} to {appid} is stored."),
            ),
        );
    }
    let now = now_ms();
    let last = exchanges.last().map_or(Millis(0), |e| e.push.received_at);
    let window_open = window_open(last, now);
    let closes = last + ANSWER_WINDOW;
    // The same answer again after a failed send; else a new one, recorded
    // under the latest push the page shows.
    let again = query.error.as_deref() == Some("not_sent");
    let (answer_id, push_id) = match (&query.answer_id, query.push_id) {
        (Some(id), Some(push)) if again && is_answer_id(id) => (id.clone(), push),
        _ => (
            super::session::random_token().unwrap_or_default(),
            exchanges.last().map_or(0, |e| e.push.id.0),
        ),
    };
    let markup = layout(
        &format!("{openid} · {appid}"),
        Nav::Conversations,
        Some(&frame),
        html! {
            h1 class="wrap" { "Conversation with " span class="mono" { (openid) } }
            p class="muted" {
                (appid) " · "
                (match app.kind { AppKind::MiniProgram => "Mini Program", AppKind::OfficialAccount => "Official Account" })
                " · " a href=(pages::inbox_url(&[("app", &appid), ("openid", &openid)])) { "in the inbox" }
            }
            @if query.answered.is_some() {
                p class="notice" role="status" { "Answer recorded; its status is below." }
            }
            @if let Some(e) = query.error.as_deref().and_then(error_text) {
                p class="error" role="alert" { (e) }
            }
            ol class="chat" {
                @for e in &exchanges { (exchange(e)) }
            }
            (answer_box(&frame, app, &appid, &openid, (&answer_id, push_id, again), window_open, closes))
        },
    );
    visitor.page(StatusCode::OK, markup)
}

fn exchange(e: &Exchange) -> Markup {
    let p = &e.push;
    html! {
        li class="from-user" {
            div class="bubble" {
                @let said = pages::summary(p);
                @if said.is_empty() { span class="muted" { "(" (p.kind) ")" } } @else { (said) }
            }
            div class="meta" { a href={ "/console/pushes/" (p.id.0) } { (time(p.received_at)) } " · " (p.kind) " · " (status_badge(p.status.as_str())) }
        }
        @if let Some((text, transfer)) = reply_text(p) {
            li class="to-user" {
                div class="bubble" {
                    @if transfer { "Transferred to human customer service (WeChat's customer-service tool)." } @else { (text) }
                }
                div class="meta" { "passive reply" }
            }
        }
        @for a in &e.answers {
            li class="to-user" {
                div class="bubble" { (answer_text(a)) }
                div class="meta" {
                    (time(a.updated_at)) " · " (a.source) " · " (status_badge(a.status.as_str()))
                    @if let Some(err) = &a.error { " " span class="error" { (err) } }
                }
            }
        }
    }
}

fn answer_box(
    frame: &Frame<'_>,
    app: &super::ConsoleApp,
    appid: &str,
    openid: &str,
    (answer_id, push_id, again): (&str, i64, bool),
    window_open: bool,
    closes: Millis,
) -> Markup {
    let action = format!("{}/answer", conversation_url(appid, openid));
    let closed = if !app.can_answer {
        Some("Answering needs the app's AppSecret (secret in its [[apps]] entry): the customer-service API takes none without it.".to_owned())
    } else if !window_open {
        Some(format!(
            "WeChat's 48-hour window has passed (it closed at {}): the user has to write again before they can be answered.",
            closes.to_rfc3339()
        ))
    } else {
        None
    };
    html! {
        form method="post" action=(action) class="answer" {
            input type="hidden" name="csrf" value=(frame.csrf);
            input type="hidden" name="answer_id" value=(answer_id);
            input type="hidden" name="push_id" value=(push_id);
            @if again && closed.is_none() {
                // The recorded answer is what goes: the text is not asked again.
                input type="hidden" name="text" value="(recorded)";
                button type="submit" { "Send the recorded answer again" }
            } @else {
                label { "Answer by hand (text, through the customer-service API)"
                    textarea name="text" rows="3" maxlength=(MAX_ANSWER_CHARS) required disabled[closed.is_some()] {}
                }
                @match &closed {
                    Some(note) => p class="muted" { (note) },
                    None => {
                        p class="muted" { "Open until " (closes.to_rfc3339()) " (48 hours after the user's last push)." }
                        button type="submit" { "Send" }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct AnswerForm {
    #[serde(default)]
    csrf: String,
    /// A token the page made: the same form posted twice is one answer.
    #[serde(default)]
    answer_id: String,
    /// The push the answer is recorded under: the user's latest when the
    /// page was shown (a form posted again after the user wrote once more
    /// is still the same answer).
    #[serde(default)]
    push_id: i64,
    #[serde(default)]
    text: String,
}

/// What went wrong, by the code a redirect carries (never text from the
/// URL itself, which anyone can write).
fn error_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "empty" => "Not sent: an answer is 1 to 600 characters.",
        "no_secret" => "Not sent: this app has no AppSecret, which the customer-service API needs.",
        "window" => "Not sent: WeChat's 48-hour window has passed since the user's last push.",
        "not_sent" => "Not sent yet: WeChat or the store did not answer. The answer is recorded (below, pending): send it again with the button under the conversation.",
        _ => return None,
    })
}

/// Back to the conversation, with what happened.
fn back(appid: &str, openid: &str, key: &str, value: &str) -> Response {
    back_with(appid, openid, &[(key, value)])
}

/// Back to the conversation, with `pairs` in the query.
fn back_with(appid: &str, openid: &str, pairs: &[(&str, &str)]) -> Response {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        query.append_pair(key, value);
    }
    Redirect::to(&format!(
        "{}?{}",
        conversation_url(appid, openid),
        query.finish()
    ))
    .into_response()
}

/// `POST /console/conversations/{appid}/{openid}/answer`.
pub(super) async fn answer(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path((appid, openid)): Path<(String, String)>,
    Form(form): Form<AnswerForm>,
) -> Response {
    let visitor = match console.poster(&headers, &form.csrf) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    let frame = visitor.frame(&console);
    let text = form.text.trim();
    if text.is_empty() || text.chars().count() > MAX_ANSWER_CHARS {
        return back(&appid, &openid, "error", "empty");
    }
    if !is_answer_id(&form.answer_id) {
        return (
            StatusCode::BAD_REQUEST,
            "400: the form is incomplete; reload the page",
        )
            .into_response();
    }
    let apps = console.apps();
    let (Some(app), Some(outbox)) = (apps.app(&appid), apps.outbox.as_ref()) else {
        return back(&appid, &openid, "error", "no_secret");
    };
    if !app.can_answer {
        return back(&appid, &openid, "error", "no_secret");
    }
    let read = async {
        let latest = console
            .store
            .list(ListFilter {
                appid: Some(appid.clone()),
                from: Some(openid.clone()),
                limit: 1,
                ..ListFilter::default()
            })
            .await?
            .pop();
        let under = console.store.push(PushId(form.push_id)).await?;
        Ok::<_, crate::store::StoreError>((latest, under))
    };
    let (latest, under) = match read.await {
        Ok(read) => read,
        Err(e) => {
            return visitor.page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::unavailable(&frame, &store_error(&e)),
            )
        }
    };
    // The push named by the form must be this user's, of this app.
    let Some(under) = under.filter(|p| p.appid == appid && p.from.as_str() == openid) else {
        return (
            StatusCode::BAD_REQUEST,
            "400: the form names no push of this conversation; reload the page",
        )
            .into_response();
    };
    let Some(latest) = latest else {
        return visitor.page(
            StatusCode::NOT_FOUND,
            pages::not_found(
                &frame,
                &format!("No push from {openid} to {appid} is stored."),
            ),
        );
    };
    if !window_open(latest.received_at, now_ms()) {
        return back(&appid, &openid, "error", "window");
    }
    // Recorded under the push the page showed last, as an answer of its
    // own source: recorded once however often the form is posted (and
    // whatever the user wrote since), and sent once.
    let source = format!("console:{}", &form.answer_id[..16]);
    let to = OpenId::new(openid.clone());
    let sent = outbox
        .deliver(
            &appid,
            under.id,
            &source,
            &to,
            &[CsMessage::Text(text.to_owned())],
        )
        .await;
    match sent {
        Ok(()) => {
            tracing::info!(target: "wechat_push::console", %appid, push = under.id.0, "console: answered a user by hand");
            back(&appid, &openid, "answered", "1")
        }
        Err(e) => {
            let reason = crate::display_chain(&e);
            tracing::warn!(target: "wechat_push::console", %appid, error = %reason, "console: an answer by hand was not sent");
            let push = under.id.0.to_string();
            back_with(
                &appid,
                &openid,
                &[
                    ("error", "not_sent"),
                    ("answer_id", &form.answer_id),
                    ("push_id", &push),
                ],
            )
        }
    }
}
