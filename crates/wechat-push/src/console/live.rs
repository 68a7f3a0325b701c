//! Live pages: `/console/events` streams what arrives (server-sent
//! events), read from the store once a second, so that pushes stored by
//! any instance sharing it show. The inbox gets each new push's row (the
//! page's filter applied); the overview a note to read itself again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::pages::{self, InboxQuery};
use super::Console;
use crate::store::{ListFilter, PushId};

/// How often the store is read for new pushes.
const TICK: Duration = Duration::from_secs(1);

/// New rows sent at once, at most (a burst shows its newest).
const ROWS_AT_ONCE: usize = 50;

/// `/console/events?after=ID&…the inbox's filter…`.
pub(super) async fn events(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<InboxQuery>,
) -> Response {
    if let Err(turned) = console.visitor(&headers).map(drop) {
        return turned.into_response();
    }
    let Ok(filter) = super::inbox_filter(&query) else {
        return (axum::http::StatusCode::BAD_REQUEST, "400: not a filter").into_response();
    };
    let state = (console, filter, query.after.map(PushId));
    let stream = futures_util::stream::unfold(state, |(console, filter, mut after)| async move {
        loop {
            tokio::time::sleep(TICK).await;
            if console.stopping.load(Ordering::Relaxed) {
                return None;
            }
            let pushes = console
                .store
                .list(ListFilter {
                    after,
                    before: None,
                    limit: ROWS_AT_ONCE,
                    ..filter.clone()
                })
                .await;
            let Ok(pushes) = pushes else {
                // The store is away: try again next tick.
                continue;
            };
            let Some(newest) = pushes.first() else {
                continue;
            };
            after = Some(newest.id);
            let rows: String = pushes
                .iter()
                .map(|p| pages::push_row(p).into_string())
                .collect();
            let event = Event::default().event("push").data(rows);
            return Some((
                Ok::<_, std::convert::Infallible>(event),
                (console, filter, after),
            ));
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
