//! The inbox: pushes stored durably before they are acknowledged, taken by
//! workers, retried, and pruned.
//!
//! [`Store`] is the seam between the server and a backend; [`sqlite`] is the
//! embedded default. A backend must make [`Inbox::insert`] atomic on
//! `(appid, dedup_key)` (a key comes with one [`NewPush::create_time`], which
//! SQLite's index leads by), so that WeChat's retries of one push, even arriving
//! at once on several instances, store one push; and it must not report an
//! insert before it is durable, because the server says `success` on it.

mod arrival;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

pub use crate::clock::Millis;

use crate::protocol::message::{DedupKey, OpenId};
use crate::protocol::Format;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::config::StoreLocation;

/// A boxed future, so that [`Store`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Upper bounds, in seconds, of the buckets of [`WriterStats::batches`].
pub const BATCH_SECONDS_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];

/// What a store's writer measured since it started: the time of each batch
/// of writes from its start to its commit, which every acknowledgement of
/// the batch waited for, and the WAL's checkpoints (SQLite).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriterStats {
    /// Batches by the time each took, from its start to its commit.
    pub batches: Histogram,
    /// The WAL restarts the writer ran between two batches (SQLite), by
    /// the time each took: the pushes of the next batch waited for them.
    pub wal_restart_time: Histogram,
    /// The checkpointer's fdatasyncs of the database file (SQLite), one
    /// after each checkpoint pass that copied pages, by the time each took:
    /// off the writer's thread, but on its disk.
    pub database_sync_time: Histogram,
    /// Checkpoints run (off the writer's thread).
    pub checkpoints: u64,
    /// Times the writer restarted the WAL from its beginning, between two
    /// batches (a RESTART checkpoint of the last few batches' pages).
    pub wal_restarts: u64,
    /// WAL pages (4 KiB) not yet copied back into the database file after
    /// the last checkpoint.
    pub wal_backlog_pages: u64,
    /// Batches that waited a moment for more writes before they began
    /// (group commit, SQLite: few writes waiting right after a commit).
    pub commit_delays: u64,
}

/// Durations counted in [`BATCH_SECONDS_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// How many took at most each bound of [`BATCH_SECONDS_BUCKETS`]
    /// (cumulative, as Prometheus histograms count).
    pub buckets: Vec<u64>,
    /// How many there were.
    pub count: u64,
    /// Their total time, in seconds.
    pub seconds: f64,
}

/// The row id of a stored push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PushId(pub i64);

impl fmt::Display for PushId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A worker's hold on a push it claimed: the push's id and the fencing
/// token its claim set. The token grows by one at every claim and never
/// goes back (not even when a push is released), so a worker whose lease
/// ran out, and whose push another worker or instance has claimed since,
/// holds an older token: its finishing calls ([`Inbox::complete`],
/// [`Inbox::fail`], [`Inbox::release`], [`Inbox::forget_reply`]) change
/// nothing, and the newer holder's outcome stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Claim {
    /// The claimed push.
    pub id: PushId,
    /// The fencing token: how many times the push had been claimed, this
    /// claim included. A push stored unclaimed has token 0, which no
    /// finishing call matches until it is claimed.
    pub fence: i64,
}

/// The row id of a push's delivery to one forward target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeliveryId(pub i64);

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The row id of an answer to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AnswerId(pub i64);

impl fmt::Display for AnswerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A forwarder's hold on a delivery it claimed: as [`Claim`] is to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct DeliveryClaim {
    /// The claimed delivery.
    pub id: DeliveryId,
    /// The fencing token its claim set (see [`Claim::fence`]).
    pub fence: i64,
}

/// Where a stored push is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a worker (first time, or for a retry).
    Pending,
    /// Claimed by a worker, under a lease.
    Working,
    /// Handled successfully; pruned after `inbox.retention`, unless a delivery of
    /// it is unfinished or dead.
    Done,
    /// Failed `max_attempts` times; waits for `inbox retry`.
    Dead,
}

impl Status {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Working => "working",
            Status::Done => "done",
            Status::Dead => "dead",
        }
    }

    /// Parse a stored or typed name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "working" => Status::Working,
            "done" => Status::Done,
            "dead" => Status::Dead,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A push to store, from an opened push.
#[derive(Debug, Clone)]
pub struct NewPush {
    /// The app it was sent to.
    pub appid: String,
    /// What makes its retries one.
    pub dedup_key: DedupKey,
    /// Its kind (`text`, `event:…`, `unknown`).
    pub kind: String,
    /// `FromUserName`: the sender's openid (WeChat's own fixed one for
    /// virtual-payment events).
    pub from_user: OpenId,
    /// `CreateTime`: when WeChat created the push, in seconds since the epoch.
    ///
    /// Must follow from `dedup_key`, as it does for every push opened (the
    /// key's digest covers `CreateTime`): the SQLite store de-duplicates on
    /// `(create_time, appid, dedup_key)`, so one key given with two times
    /// would be stored twice there (PostgreSQL would keep the first).
    pub create_time: i64,
    /// The format of `body`.
    pub format: Format,
    /// The decrypted body, byte for byte.
    pub body: Vec<u8>,
    /// When it arrived, milliseconds since the epoch.
    pub received_at_ms: Millis,
}

/// What an insert found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The push is new and now stored; with `claim_until`, claimed by the
    /// caller (fencing token 1), else unclaimed (token 0).
    New(Claim),
    /// The push was already stored: a retry from WeChat.
    Duplicate {
        /// The row id of the push stored first.
        id: PushId,
        /// The stored push's status (`working` while a worker has it).
        status: Status,
        /// The passive reply it was answered with, if any (unencrypted).
        reply: Option<Vec<u8>>,
    },
}

/// How a new push is stored: its status, when it is due, its attempts
/// and when it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredAs {
    /// Unclaimed, for a worker to claim.
    Pending,
    /// Claimed by the caller until then (milliseconds): its first attempt.
    Claimed(Millis),
    /// Handled already: no handler takes it ([`Inbox::insert_handled`]).
    Handled,
}

impl StoredAs {
    /// For [`Inbox::insert`]'s `claim_until`.
    pub(crate) fn claimed_until(claim_until: Option<Millis>) -> Self {
        claim_until.map_or(StoredAs::Pending, StoredAs::Claimed)
    }

    /// The row's `(status, due_at, attempts, finished_at)` for a push that
    /// arrived at `received_at`. Its fencing token (`claims`) is its
    /// attempts: a claimed insert is the push's first claim.
    pub(crate) fn row(self, received_at: Millis) -> (Status, Millis, i32, Option<Millis>) {
        match self {
            StoredAs::Pending => (Status::Pending, received_at, 0, None),
            StoredAs::Claimed(until) => (Status::Working, until, 1, None),
            StoredAs::Handled => (Status::Done, received_at, 0, Some(received_at)),
        }
    }
}

/// A stored push, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct StoredPush {
    /// The push's row id, given by the store.
    pub id: PushId,
    /// The appid it was pushed to (the `{appid}` of `/wechat/{appid}`).
    pub appid: String,
    /// The key its retries share, `m:<FromUserName>:<MsgId>:<digest>` or
    /// `e:<FromUserName>:<CreateTime>:<Event or MsgType>:<digest>` (see [`DedupKey`]).
    pub dedup_key: DedupKey,
    /// Its kind: the `MsgType` of a message (`text`, `image`, …), `event:<Event>` for
    /// an event this crate types (`event:subscribe`), `unknown` for anything else.
    pub kind: String,
    /// `FromUserName`: the sender's openid (WeChat's own fixed one for
    /// virtual-payment events).
    pub from: OpenId,
    /// `CreateTime`: when WeChat created the push, in seconds since the epoch.
    pub create_time: i64,
    /// Where it is.
    pub status: Status,
    /// Handling attempts so far.
    pub attempts: u32,
    /// Times it has been claimed, the current claim included: the fencing
    /// token of [`StoredPush::claim`].
    #[serde(skip)]
    pub fence: i64,
    /// When it arrived, milliseconds since the epoch.
    pub received_at: Millis,
    /// When it was finished (done or dead), milliseconds since the epoch.
    pub finished_at: Option<Millis>,
    /// The last handler error.
    pub last_error: Option<String>,
    /// The format of `body`.
    #[serde(skip)]
    pub format: Format,
    /// The decrypted body, byte for byte, in `format`; turned back into a message by
    /// [`Message::from_stored`](crate::protocol::message::Message::from_stored).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// The passive reply, if one was given (unencrypted).
    #[serde(skip)]
    pub reply: Option<Vec<u8>>,
}

impl StoredPush {
    /// The claim this read of the push carries (meaningful for a push just
    /// claimed: what the finishing calls take).
    pub fn claim(&self) -> Claim {
        Claim {
            id: self.id,
            fence: self.fence,
        }
    }
}

/// Which pushes to list. Every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this app's.
    pub appid: Option<String>,
    /// Only in this status.
    pub status: Option<Status>,
    /// Only of this kind (`text`, `event:subscribe`, …).
    pub kind: Option<String>,
    /// Only from this user (`FromUserName`, an openid).
    pub from: Option<String>,
    /// Only received at or after this time, milliseconds since the epoch.
    pub since: Option<Millis>,
    /// Only received before this time, milliseconds since the epoch.
    pub until: Option<Millis>,
    /// Only those whose decrypted body contains these bytes (a text
    /// message's words, an openid, an order number): a scan, bounded by
    /// the other conditions and by `limit`.
    pub text: Option<String>,
    /// Only older than this push (the next page after a page ending with
    /// it: pages by id, which stay right while pushes arrive).
    pub before: Option<PushId>,
    /// Only newer than this push (what arrived since a page was shown).
    pub after: Option<PushId>,
    /// At most this many, newest first (0: all).
    pub limit: usize,
}

/// How many pushes of one kind one app received in a time span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindCount {
    /// The app.
    pub appid: String,
    /// The kind (`text`, `event:subscribe`, …).
    pub kind: String,
    /// How many.
    pub count: u64,
}

/// What `inbox retry` re-queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retried {
    /// Dead pushes, handled again.
    pub pushes: usize,
    /// Dead deliveries, sent again.
    pub deliveries: usize,
}

/// How many pushes are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Waiting for a worker: new, or due for a retry later.
    pub pending: u64,
    /// Claimed by a worker (or by one that died, until its lease runs out).
    pub working: u64,
    /// Handled (until pruned).
    pub done: u64,
    /// Given up on (out of attempts, or a permanent error); kept until `inbox retry`.
    pub dead: u64,
}

impl Counts {
    /// Record `n` pushes in the status stored as `status`; an unknown
    /// status is not counted.
    pub fn set(&mut self, status: &str, n: u64) {
        match Status::parse(status) {
            Some(Status::Pending) => self.pending = n,
            Some(Status::Working) => self.working = n,
            Some(Status::Done) => self.done = n,
            Some(Status::Dead) => self.dead = n,
            None => {}
        }
    }

    /// Add `n` pushes to the status stored as `status` (counts read in
    /// pages); an unknown status is not counted.
    pub fn add(&mut self, status: &str, n: u64) {
        match Status::parse(status) {
            Some(Status::Pending) => self.pending += n,
            Some(Status::Working) => self.working += n,
            Some(Status::Done) => self.done += n,
            Some(Status::Dead) => self.dead += n,
            None => {}
        }
    }
}

/// Per-app depths from `(appid, status, count)` rows, by appid.
fn depth_by_app(rows: impl IntoIterator<Item = (String, String, u64)>) -> Vec<(String, Depth)> {
    let mut by_app: std::collections::BTreeMap<String, Counts> = std::collections::BTreeMap::new();
    for (appid, status, n) in rows {
        by_app.entry(appid).or_default().add(&status, n);
    }
    by_app
        .into_iter()
        .map(|(appid, counts)| (appid, Depth::from(counts)))
        .collect()
}

impl From<Counts> for Depth {
    fn from(c: Counts) -> Depth {
        Depth {
            pending: c.pending,
            working: c.working,
            dead: c.dead,
        }
    }
}

/// The pushes still to handle or given up on: [`Counts`] without the done
/// ones, whose count would cost a scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Depth {
    /// Waiting for a worker.
    pub pending: u64,
    /// Claimed by a worker.
    pub working: u64,
    /// Given up on; kept until `inbox retry`.
    pub dead: u64,
}

/// An access token (or an uploaded file's media id) shared by every process using
/// the store.
#[derive(Clone, PartialEq, Eq)]
pub struct CachedToken {
    /// The key it is cached under: the appid for an access token,
    /// `media:<appid>:<kind>:<digest>` for a media id.
    pub appid: String,
    /// The access token or media id. Never shown by `Debug`.
    pub token: String,
    /// When it expires, milliseconds since the epoch.
    pub expires_at: Millis,
    /// When it was fetched, milliseconds since the epoch.
    pub fetched_at: Millis,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("appid", &self.appid)
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("fetched_at", &self.fetched_at)
            .finish()
    }
}

/// Where an answer of the outbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerStatus {
    /// Recorded, not (known to be) sent yet.
    Pending,
    /// WeChat accepted it.
    Sent,
    /// WeChat refused it for good (window closed, quota used, …).
    Failed,
    /// Sent, but WeChat's answer never came (a timeout after the request
    /// was written): it may or may not have reached the user, so it is not
    /// sent again by itself; `inbox retry` resends it.
    Uncertain,
}

impl AnswerStatus {
    /// As stored: `pending`, `sent`, `failed` or `uncertain`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerStatus::Pending => "pending",
            AnswerStatus::Sent => "sent",
            AnswerStatus::Failed => "failed",
            AnswerStatus::Uncertain => "uncertain",
        }
    }
}

/// An answer to a push, recorded before it is sent.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerRecord {
    /// The answer's row id (what [`AnswerLog::mark_answer`] takes).
    pub id: AnswerId,
    /// The push it answers.
    pub push_id: PushId,
    /// Who gave it: `handler`, `passive` (a passive reply), or `forward:<url>` (the
    /// target's URL without its query).
    pub source: String,
    /// Its place among the push's answers.
    pub seq: u32,
    /// The customer-service `msgtype` (`text`, `image`, `news`, …); a passive reply's
    /// `MsgType`.
    pub msgtype: String,
    /// The request body, JSON (for a passive reply, its fields).
    pub body: String,
    /// Where it is.
    pub status: AnswerStatus,
    /// Why it failed, for failed ones.
    pub error: Option<String>,
    /// Last change, milliseconds since the epoch.
    pub updated_at: Millis,
}

/// Where a delivery of a push to a forward target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or its next retry.
    Pending,
    /// Being sent, under a lease.
    Working,
    /// The target answered 2xx (and its reply, if any, was sent).
    Delivered,
    /// Out of retries; waits for `inbox retry`.
    Dead,
}

impl DeliveryStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Working => "working",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    fn parse(s: &str) -> DeliveryStatus {
        match s {
            "working" => DeliveryStatus::Working,
            "delivered" => DeliveryStatus::Delivered,
            "dead" => DeliveryStatus::Dead,
            _ => DeliveryStatus::Pending,
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One push's delivery to one forward target, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// The delivery's row id.
    pub id: DeliveryId,
    /// The row id of the push being delivered.
    pub push_id: PushId,
    /// The target, by its URL.
    pub target: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// Times it has been claimed, the current claim included: the fencing
    /// token of [`Delivery::claim`].
    #[serde(skip)]
    pub fence: i64,
    /// Whether the target already answered 2xx: then only its reply is
    /// still to send, and a retry does not post the push again.
    pub responded: bool,
    /// The last failure, or a note on an ignored reply.
    pub last_error: Option<String>,
    /// Last change, milliseconds since the epoch.
    pub updated_at: Millis,
}

impl Delivery {
    /// The claim this read of the delivery carries (what
    /// [`DeliveryLog::finish_delivery`] takes).
    pub fn claim(&self) -> DeliveryClaim {
        DeliveryClaim {
            id: self.id,
            fence: self.fence,
        }
    }
}

/// One attempt of a delivery, as recorded when it finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryAttempt {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// When it finished, milliseconds since the epoch.
    pub at: Millis,
    /// How long it took, in milliseconds (0: no request was made).
    pub took_ms: i64,
    /// `delivered`, `retry` (failed, tried again later) or `dead`.
    pub outcome: String,
    /// Why it failed, or a note on an ignored reply.
    pub error: Option<String>,
}

impl DeliveryOutcome {
    /// What the outcome leaves in a delivery's row, finished at `now`:
    /// `(status, due_at, last_error, responded)`. The same in every backend.
    pub fn row(self, now: Millis) -> (&'static str, Millis, Option<String>, bool) {
        match self {
            DeliveryOutcome::Delivered { note } => ("delivered", now, note, true),
            DeliveryOutcome::Retry {
                at,
                error,
                responded,
            } => ("pending", at, Some(error), responded),
            DeliveryOutcome::Dead { error } => ("dead", now, Some(error), false),
        }
    }

    /// The outcome's name in [`DeliveryAttempt::outcome`].
    pub fn name(&self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered { .. } => "delivered",
            DeliveryOutcome::Retry { .. } => "retry",
            DeliveryOutcome::Dead { .. } => "dead",
        }
    }
}

/// How many deliveries to one target are in one unfinished status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// The target's URL.
    pub target: String,
    /// Pending, working or dead.
    pub status: DeliveryStatus,
    /// How many of `target`'s deliveries are in `status`.
    pub count: u64,
}

/// What became of one attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Done: the target answered 2xx; `note` says why a reply was not sent.
    Delivered {
        /// Why the target's reply was ignored, if it was.
        note: Option<String>,
    },
    /// Try again at `at` (milliseconds).
    Retry {
        /// When to try again, in milliseconds since the epoch.
        at: Millis,
        /// Why this attempt failed.
        error: String,
        /// The target answered 2xx; only its reply failed to go out.
        responded: bool,
    },
    /// Out of retries.
    Dead {
        /// Why the last attempt failed.
        error: String,
    },
}

/// A store that cannot do what was asked. The server answers 503, so WeChat
/// retries later.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A statement failed; the source is the database driver's error
    /// (rusqlite's, for the SQLite store).
    #[error("database error")]
    Database(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The database file or its directory could not be prepared.
    #[error("cannot prepare {path}")]
    Io {
        /// The directory or database file being prepared.
        path: String,
        /// The I/O error: creating the directory or file, watching the file, or starting
        /// the writer thread.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The store has shut down.
    #[error("store is closed")]
    Closed,
    /// The database file was deleted or replaced while open: whatever is
    /// written now is lost at the next restart, so nothing is acknowledged.
    #[error(
        "the database file {path} was deleted or replaced while in use; restart to open it again"
    )]
    Lost {
        /// The database file's path, as opened.
        path: String,
    },
    /// The last commit failed (a full disk, an I/O error): not healthy
    /// until one succeeds.
    #[error("the last commit failed: {0}")]
    Failing(String),
    /// `store.url` cannot be used as it is (the reason says why).
    #[error("{0}")]
    Config(String),
    /// The database server may lose a commit it reported (a setting is
    /// off): a push acknowledged could be lost, so the store is not used.
    #[error(
        "PostgreSQL has {setting} = off: a commit it reports can be lost in a crash, and with it \
         a push already answered `success`; turn {setting} on (postgresql.conf) to use it"
    )]
    NotDurable {
        /// `fsync` or `synchronous_commit`.
        setting: String,
    },
}

/// Open the store `location` names (from `store.url`, see
/// [`StoreConfig::location`](crate::config::StoreConfig::location)): the
/// one place that chooses a backend, so the server and every command open
/// the same store the same way.
///
/// # Errors
/// [`StoreError::Io`] when the database file or its directory cannot be
/// made; [`StoreError::Database`] when the database cannot be opened or
/// migrated; for PostgreSQL, [`StoreError::Config`] and
/// [`StoreError::NotDurable`] (see [`PostgresStore::open`]).
pub async fn open(location: &StoreLocation) -> Result<Arc<dyn Store>, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path)?)),
        StoreLocation::Postgres(url) => Ok(Arc::new(PostgresStore::open(url).await?)),
    }
}

/// Durable, de-duplicating storage of pushes, shared by every instance of
/// the server that uses the same database: the four parts together, as a
/// backend provides them ([`SqliteStore`], [`PostgresStore`]; any type with
/// all four is a `Store`). Each part of the server takes only the part it
/// uses (an `Arc<dyn Store>` coerces to any of them).
pub trait Store: Inbox + TokenCache + AnswerLog + DeliveryLog {}

impl<T: Inbox + TokenCache + AnswerLog + DeliveryLog> Store for T {}

/// The inbox: pushes stored, de-duplicated, claimed, finished, looked at
/// and pruned. What the request path and the workers use.
pub trait Inbox: Send + Sync + 'static {
    /// Store a push unless `(appid, dedup_key)` is stored already. With
    /// `claim_until` the new push is stored already claimed by the caller
    /// until then (milliseconds), so that no worker takes it meanwhile.
    /// The push is shared, not copied: the caller may hand it on after.
    fn insert(
        &self,
        push: Arc<NewPush>,
        claim_until: Option<Millis>,
    ) -> BoxFuture<'_, Result<Inserted, StoreError>>;

    /// Store a push unless `(appid, dedup_key)` is stored already, as
    /// handled: `done` at its arrival, with no attempt, never claimed. For
    /// a push the handler in force would do nothing with (no rule, route
    /// or forward target takes it), which would otherwise be claimed,
    /// handled by doing nothing and marked done: the same end, without a
    /// second write. [`Inserted::New`] carries fencing token 0.
    fn insert_handled(&self, push: Arc<NewPush>) -> BoxFuture<'_, Result<Inserted, StoreError>>;

    /// Claim up to `limit` pushes that are due at `now` (pending ones whose
    /// retry time has come, and working ones whose lease has run out), leased
    /// until `lease_until`. Each claim counts as an attempt.
    fn claim(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>>;

    /// Mark claimed pushes done, each with the passive reply it got, if any.
    /// Many at once cost about as much as one: workers batch them. A push
    /// claimed again since (its lease ran out) is left as its newer holder
    /// leaves it; returns how many were still held and are now done.
    fn complete(
        &self,
        done: Vec<(Claim, Option<Vec<u8>>)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Forget the passive reply stored with a push (it missed its answer and
    /// went some other way): WeChat's retry then gets `success`, not a
    /// second copy of the answer.
    /// Nothing changes when the push has been claimed again since.
    fn forget_reply(&self, claim: Claim) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Record a failed attempt: retry at `retry_at`, or with `None` mark it
    /// dead. Returns whether the claim still held; when it did not (another
    /// worker claimed the push after this one's lease ran out), nothing
    /// changes.
    fn fail(
        &self,
        claim: Claim,
        error: String,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Give claimed pushes back unhandled (shutdown): due at once, the
    /// attempt not counted. Claims that no longer hold are skipped.
    fn release(&self, claims: Vec<Claim>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// List pushes, newest first.
    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>>;

    /// Every push with this dedup key (one per app at most), or whose key
    /// begins with it followed by `:` (`m:oUser:77` finds
    /// `m:oUser:77:<digest>`).
    fn get(&self, dedup_key: String) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>>;

    /// Re-queue dead pushes with this dedup key (matched as by
    /// [`Inbox::get`]), and the dead deliveries of pushes with it (to
    /// `targets` only, when given: a delivery to a target no longer
    /// configured would wait for ever); returns how many of each. (Uncertain answers are resent by the caller,
    /// see [`crate::outbox::Outbox::resend`].)
    fn retry(
        &self,
        dedup_key: String,
        appid: Option<String>,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<Retried, StoreError>>;

    /// The push with this id, if it is stored.
    fn push(&self, id: PushId) -> BoxFuture<'_, Result<Option<StoredPush>, StoreError>>;

    /// Re-queue every dead push and every dead delivery (of `appid`'s
    /// pushes only, when given; to `targets` only, when given); returns
    /// how many of each.
    fn retry_dead(
        &self,
        appid: Option<String>,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<Retried, StoreError>>;

    /// How many pushes each app received of each kind since `since`
    /// (milliseconds since the epoch). Reads only the pushes of that span
    /// (found by id, which grows with arrival), not every push kept.
    fn kinds_since(&self, since: Millis) -> BoxFuture<'_, Result<Vec<KindCount>, StoreError>>;

    /// How many pushes arrived in each span of `bucket` milliseconds since
    /// `since`: `(start of the span, count)`, oldest first, spans with none
    /// left out. Reads only the pushes of that time (as
    /// [`Inbox::kinds_since`]).
    fn arrivals(
        &self,
        since: Millis,
        bucket: i64,
    ) -> BoxFuture<'_, Result<Vec<(Millis, u64)>, StoreError>>;

    /// Delete done pushes finished before `before`, with their answers and
    /// deliveries, unless a delivery is unfinished or dead; returns how many.
    fn prune(&self, before: Millis) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// How many pushes are in each status. Counting the done ones reads
    /// every push kept: see [`Inbox::depth`] for what a scrape can afford.
    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>>;

    /// How many pushes are pending, working and dead, read off partial
    /// indexes that hold only those: as cheap with ten million done pushes
    /// as with none (what each `/metrics` scrape reads).
    fn depth(&self) -> BoxFuture<'_, Result<Depth, StoreError>>;

    /// [`Inbox::depth`] of each app (apps with none left out), off the
    /// same partial indexes: what the console's overview shows per app.
    fn depth_by_app(&self) -> BoxFuture<'_, Result<Vec<(String, Depth)>, StoreError>>;

    /// Whether the store answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// What the writer measured, where the backend measures it (SQLite);
    /// `None` by default.
    fn writer_stats(&self) -> Option<WriterStats> {
        None
    }
}

/// Access tokens (and uploaded media ids) shared by every process using
/// the store, with a refresh lease. What [`crate::api::WechatApi`] uses.
pub trait TokenCache: Send + Sync + 'static {
    /// The cached access token of `appid`, if any (expired or not).
    fn token(&self, appid: String) -> BoxFuture<'_, Result<Option<CachedToken>, StoreError>>;

    /// Take the right to refresh `appid`'s token until `until` (milliseconds),
    /// unless another holder has it and its lease has not run out. Returns
    /// whether `holder` now has it. One refresh at a time per app, across
    /// every process sharing the store.
    fn lease_token_refresh(
        &self,
        appid: String,
        holder: String,
        until: Millis,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Store a freshly fetched token and end `holder`'s refresh lease.
    fn put_token(
        &self,
        token: CachedToken,
        holder: String,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Forget `appid`'s token if it is still `token` (WeChat refused it):
    /// a token another process has already replaced is left alone.
    fn invalidate_token(
        &self,
        appid: String,
        token: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Forget every cached value whose key starts with `prefix` and whose
    /// value is `token` (a media id WeChat refused, cached per file under
    /// `media:<appid>:…`). Returns whether any was.
    fn invalidate_token_value(
        &self,
        prefix: String,
        token: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
}

/// The outbox's record of each push's answers, written before they are
/// sent. What [`crate::outbox::Outbox`] uses.
pub trait AnswerLog: Send + Sync + 'static {
    /// Record the answers `source` gives a push before they are sent, as
    /// `(msgtype, body)`; when the push already has answers from `source` (a
    /// retry), return those instead. Sources (the handler, each forward
    /// target) answer independently.
    fn record_answers(
        &self,
        push: PushId,
        source: String,
        answers: Vec<(String, String)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<Vec<AnswerRecord>, StoreError>>;

    /// Record what became of an answer: `Sent`, `Failed` or `Uncertain`,
    /// with the reason for the last two.
    fn mark_answer(
        &self,
        id: AnswerId,
        status: AnswerStatus,
        error: Option<String>,
        now: Millis,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Take answer `id` to send it: mark it `Uncertain` with `note` (it is
    /// on its way) if it is still `from`, and say whether it was. Of
    /// workers racing to send one answer (one whose lease ran out, and the
    /// one that took its push over), only one takes it, so the user is not
    /// answered twice.
    fn take_answer(
        &self,
        id: AnswerId,
        from: AnswerStatus,
        note: String,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// The answers of a push, in order.
    fn answers(&self, push: PushId) -> BoxFuture<'_, Result<Vec<AnswerRecord>, StoreError>>;
}

/// Deliveries of pushes to forward targets: recorded, claimed (fenced),
/// finished. What [`crate::forward::Forwarder`] uses.
pub trait DeliveryLog: Send + Sync + 'static {
    /// Create a pending delivery of `push` to each of `targets`, as `(URL,
    /// due at)`; deliveries that exist already are left as they are. A
    /// delivery due later than `now` is held for whoever claims it at that
    /// time (a first attempt made by the handler itself).
    fn add_deliveries(
        &self,
        push: PushId,
        targets: Vec<(String, Millis)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Claim up to `limit` deliveries to `target` (of `push` only, when
    /// given) that are due at `now` (pending ones whose time has come,
    /// working ones whose lease ran out), leased until `lease_until`, each
    /// with its push. Each claim counts as an attempt.
    fn claim_deliveries(
        &self,
        target: String,
        push: Option<PushId>,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredPush)>, StoreError>>;

    /// Record the outcome of an attempt of a claimed delivery. Returns
    /// whether the claim still held; when it did not (another forwarder
    /// claimed the delivery after this one's lease ran out), nothing
    /// changes.
    /// The attempt (which took `took_ms` milliseconds, 0 when no request
    /// was made) is recorded among the delivery's attempts
    /// ([`DeliveryLog::delivery_attempts`]) when the claim held.
    fn finish_delivery(
        &self,
        claim: DeliveryClaim,
        outcome: DeliveryOutcome,
        took_ms: i64,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Every recorded attempt of `push`'s deliveries, oldest first.
    fn delivery_attempts(
        &self,
        push: PushId,
    ) -> BoxFuture<'_, Result<Vec<DeliveryAttempt>, StoreError>>;

    /// The deliveries of a push.
    fn deliveries(&self, push: PushId) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>>;

    /// Dead deliveries (of `appid`'s pushes only, when given), newest
    /// first, at most `limit`, each with its push.
    fn dead_deliveries(
        &self,
        appid: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredPush)>, StoreError>>;

    /// Re-queue delivery `id` if it is dead (and to one of `targets`,
    /// when given); returns whether it was.
    fn retry_delivery(
        &self,
        id: DeliveryId,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// How many deliveries wait (pending), are being sent (working) or are
    /// dead, by target URL: what a forward target owes. Delivered ones are
    /// not counted.
    fn delivery_backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, StoreError>>;

    /// Mark every unfinished delivery to a target not in `targets` dead, so
    /// that it shows (and can be retried once the target is back) instead of
    /// waiting forever. Returns how many.
    fn bury_unknown_targets(
        &self,
        targets: Vec<String>,
        now: Millis,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;
}

/// `columns` (a backend's column list) with each name qualified by
/// `table` (`pushes.id, pushes.appid, …`), for joins.
fn prefixed(table: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
