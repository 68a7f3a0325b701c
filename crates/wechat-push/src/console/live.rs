//! Live pages: `/console/events` streams what arrives (server-sent
//! events). One poller per process reads the newest push id from the store
//! once a second, and only while a page listens, so that pushes stored by
//! any instance sharing the store show; each stream reads its page's new
//! rows only when that id moved. The inbox gets each new push's row (its
//! filter applied); the overview a note, at most every few seconds, to
//! read itself again. Rows are sent by id: with several instances on
//! PostgreSQL, a push that commits after one with a higher id was shown
//! appears on the next reload, not live.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::pages::{self, InboxQuery};
use super::{Console, Visitor};
use crate::store::{ListFilter, PushId};

/// How often the poller reads the newest push id.
const TICK: Duration = Duration::from_secs(1);

/// How long a stream waits for news before it checks its session again.
const RECHECK: Duration = Duration::from_secs(15);

/// New rows sent at once, at most; past it the page is told to reload.
const ROWS_AT_ONCE: usize = 50;

/// The overview reads itself again at most this often.
const OVERVIEW_EVERY: Duration = Duration::from_secs(5);

/// The newest push id, as the poller last read it.
pub(super) type Newest = tokio::sync::watch::Sender<i64>;

/// Read the newest push id once a tick while any page listens, until the
/// server stops.
pub(super) async fn poll_newest(console: Arc<Console>) {
    while !console.stopping.load(Ordering::Relaxed) {
        tokio::time::sleep(TICK).await;
        if console.newest.receiver_count() == 0 {
            continue;
        }
        if let Ok(id) = console.newest_id().await {
            console.newest.send_if_modified(|old| {
                let moved = *old != id;
                *old = id;
                moved
            });
        }
    }
}

/// `/console/events?after=ID&…the inbox's filter…` (or `page=overview`).
pub(super) async fn events(
    State(console): State<Arc<Console>>,
    visitor: Visitor,
    headers: HeaderMap,
    Query(query): Query<InboxQuery>,
) -> Response {
    let Ok(filter) = super::inbox_filter(&query) else {
        return (axum::http::StatusCode::BAD_REQUEST, "400: not a filter").into_response();
    };
    console.start_poller();
    // A reconnecting browser says what it last got.
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let after = query.after.max(resumed).unwrap_or(0);
    let stream = Stream {
        newest: console.newest.subscribe(),
        console,
        session: visitor.id,
        filter,
        after,
        overview: query.page == "overview",
        told: None,
    };
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), s))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    // nginx holds proxied answers back in a buffer unless told not to.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One page's stream.
struct Stream {
    console: Arc<Console>,
    newest: tokio::sync::watch::Receiver<i64>,
    session: String,
    filter: ListFilter,
    /// The highest id sent.
    after: i64,
    overview: bool,
    /// When the overview was last told to read itself again.
    told: Option<Instant>,
}

impl Stream {
    /// The next event; `None` ends the stream (signed out, session over,
    /// server stopping).
    async fn next(&mut self) -> Option<Event> {
        loop {
            let woke = tokio::time::timeout(RECHECK, self.newest.changed()).await;
            if matches!(woke, Ok(Err(_)))
                || self.console.stopping.load(Ordering::Relaxed)
                || self
                    .console
                    .sessions
                    .get(&self.session, Instant::now())
                    .is_none()
            {
                return None;
            }
            if woke.is_err() {
                continue;
            }
            let newest = *self.newest.borrow_and_update();
            if newest <= self.after {
                continue;
            }
            if self.overview {
                if let Some(at) = self.told {
                    let wait = OVERVIEW_EVERY.saturating_sub(at.elapsed());
                    tokio::time::sleep(wait).await;
                }
                self.told = Some(Instant::now());
                self.after = *self.newest.borrow_and_update();
                return Some(
                    Event::default()
                        .event("changed")
                        .data(self.after.to_string()),
                );
            }
            let Ok(pushes) = self
                .console
                .store
                .list(ListFilter {
                    after: Some(PushId(self.after)),
                    before: None,
                    limit: ROWS_AT_ONCE,
                    ..self.filter.clone()
                })
                .await
            else {
                continue; // the store is away: next time
            };
            if pushes.len() >= ROWS_AT_ONCE {
                // More than a page at once: the page reads itself again.
                self.after = newest;
                return Some(Event::default().event("reload").data(newest.to_string()));
            }
            self.after = self.after.max(newest);
            if pushes.is_empty() {
                continue;
            }
            let rows: String = pushes
                .iter()
                .map(|p| pages::push_row(p).into_string())
                .collect();
            return Some(
                Event::default()
                    .event("push")
                    .id(self.after.to_string())
                    .data(rows),
            );
        }
    }
}
