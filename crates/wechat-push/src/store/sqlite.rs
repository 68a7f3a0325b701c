//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Every write goes through one thread that owns the writing connection. It
//! takes every operation waiting in its queue, runs them in **one** transaction and
//! answers them only after that transaction has committed: concurrent pushes
//! share one fsync (group commit) instead of paying one each, and no caller
//! hears "stored" before the data is on disk.
//!
//! Each operation is a single SQL statement that writes (statements are atomic
//! in SQLite), so a failing one cannot leave half its work in the batch.
//! Several processes may share the file: `BEGIN IMMEDIATE` and a busy timeout
//! serialise their writers, and the unique index on `(create_time, appid,
//! dedup_key)` (see `IDENTITY_INDEX`) keeps de-duplication atomic across
//! them.
//!
//! Nothing else runs on the writer's thread, so that an acknowledgement
//! waits for its own batch only:
//!
//! - **Checkpoints** (copying the WAL back into the database file, with an
//!   fdatasync of that file after each pass that copied pages) run on a
//!   thread and connection of their own, every
//!   `CHECKPOINT_EVERY` (100 ms) while pushes arrive. SQLite's automatic checkpoint
//!   is off on the writer: it ran *inside* the commit that crossed 1,000 WAL
//!   pages, so the pushes of that batch waited for the copy of 4 MB and an
//!   fsync of the main file. The WAL only starts over from its beginning
//!   when a write begins with every frame copied, which a checkpointer
//!   running beside a busy writer never sees: the writer restarts it
//!   itself (a RESTART checkpoint, copying only what the last checkpoint
//!   had not) once it holds `WAL_RESTART_AT` (4,096) frames, right after the
//!   checkpointer caught up.
//! - **Reads** (`/metrics` counts and backlog, `inbox list` and `show`,
//!   answers and deliveries) run on a read-only connection of their own: in
//!   WAL mode they see every committed batch and wait for none.
//! - **Pruning** deletes `PRUNE_CHUNK` (200) pushes per operation, so that a
//!   batch holding a chunk is not much slower than one without.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::{mpsc, oneshot};

use super::arrival::{FirstIdAt, Step};
use super::{
    prefixed, AnswerId, AnswerLog, AnswerRecord, AnswerStatus, Backlog, BoxFuture, CachedToken,
    Claim, Counts, Delivery, DeliveryAttempt, DeliveryClaim, DeliveryId, DeliveryLog,
    DeliveryOutcome, DeliveryStatus, Depth, Inbox, Inserted, KindCount, ListFilter, Millis,
    NewPush, PushId, Retried, Status, StoreError, StoredAs, StoredPush, TokenCache, WriterStats,
};
use crate::protocol::message::{DedupKey, OpenId};
use crate::protocol::Format;

/// How long opening waits for another process's migration of the file.
const MIGRATION_WAIT: Duration = Duration::from_secs(120);

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Most pushes one pruning operation deletes (with their answers and
/// deliveries): small enough that the batch it rides in stays quick.
const PRUNE_CHUNK: usize = 200;

/// How often the checkpointer copies committed pages back into the
/// database file while batches are being committed. Each pass that copies
/// costs the disk two flushes (SQLite syncs the WAL before copying, then
/// the pass's own sync of the database file; a third when it copied the
/// whole WAL) and a write per page it copies; the pages
/// every commit rewrites (the table's last leaf, the indexes' newest) are
/// copied once per pass however often they changed. Every 10 ms, at 8,000
/// pushes/s open loop, the disk took 3,700–4,100 writes and 1,400–1,600
/// flushes a second; every 100 ms, 2,800 and 1,200 (both with the 250 µs
/// wait; two alternating pairs of 30 s development runs). The fewer
/// requests matter beyond the disk: on a virtual machine whose host charges
/// its disk emulation to the machine's CPU time, they cost the whole
/// machine stalls (ARCHITECTURE.md, "What the host takes"). The WAL may
/// pass [`WAL_RESTART_AT`] by one interval's frames before a pass sees it.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL frames (a 4 KiB page each: about 16 MB) at which the writer restarts
/// the log, right after the checkpointer copied all but the last batches.
/// Measured at concurrency 64 with passes every 10 ms: a restart held the
/// writer 0.7–3 ms; with 16,384 frames and passes every 100 ms, 3–15 ms.
/// Its copy is the batches committed since the checkpointer caught up
/// (at most [`RESTART_WINDOW`]), whatever the pass interval.
const WAL_RESTART_AT: u64 = 4_096;

/// Batches committed since the checkpointer caught up within which the
/// writer's restart has little left to copy.
const RESTART_WINDOW: u64 = 2;

/// The WAL file is cut back to this size when it restarts from its beginning.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Bytes the health check writes: more than a push of 32 KB with its index
/// entries, so that a disk with room for a few small rows but not for a
/// push (a WAL that cannot grow past what checkpoints could not copy back)
/// reads unhealthy. A WAL frame per 4 KiB page: 17 frames a check. Random
/// bytes: SQLite writes only the pages of a row whose content changed, so
/// the same bytes again would cost one frame.
const HEALTH_WRITE: i64 = 64 * 1024;

/// Group commit's wait: a batch that found fewer than [`SMALL_BATCH`]
/// operations waiting, within [`BUSY_WITHIN`] of the last commit, waits this
/// long for more before it begins (the idea of PostgreSQL's `commit_delay`;
/// PostgreSQL waits when enough other transactions are active, this writer
/// when too few operations are waiting, since its batch is the group). Each
/// commit costs the writer about 100 µs of the core (the WAL's writes and
/// fsync, whatever the batch holds), so at 10,000 pushes/s arriving one at
/// a time, batches of two or three spent as much of the one core on commits
/// as the request path on pushes; and each commit is a write and a flush
/// for the disk. Waiting 800 µs for 12 (it was 250 µs for 4), with
/// [`CHECKPOINT_EVERY`]'s passes every 100 ms, open loop at 8,000/s: the
/// disk's writes fell from 3,700–4,100 to 1,600–1,900 a second and its
/// flushes from 1,400–1,600 to 620–750, batches over 10 ms from 45–119 to
/// 0–6 per 30 s run, CPU per push from 81–96 µs to 63–94 µs, for 0.2–0.4 ms
/// more at the median (alternating development runs, ARCHITECTURE.md).
const COMMIT_DELAY: Duration = Duration::from_micros(800);

/// Fewer operations than this waiting when a batch begins, right after a
/// commit, make it wait [`COMMIT_DELAY`] for more.
const SMALL_BATCH: usize = 12;

/// A commit this recent says writes arrive faster than one per commit: only
/// then is a small batch worth its wait.
const BUSY_WITHIN: Duration = Duration::from_millis(2);

/// A batch slower than this is logged (at debug, target
/// `wechat_push::store::sqlite`) with the operations it held.
const SLOW_BATCH: Duration = Duration::from_millis(10);

/// An operation for the connection's thread: runs against the open
/// transaction (or learns that none could be opened) and returns what to send
/// once the outcome of the commit is known. `kind` names it in the log of a
/// slow batch.
struct Op {
    kind: &'static str,
    run: Run,
}
type Run = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> Deferred + Send>;
type Deferred = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// Pushes counted per read by [`Inbox::counts`].
const COUNT_PAGE: i64 = 2_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pushes (
    id INTEGER PRIMARY KEY,
    appid TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_user TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    format TEXT NOT NULL,
    body BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- pending: when to try; working: when the lease runs out
    due_at INTEGER NOT NULL,
    last_error TEXT,
    reply BLOB,
    finished_at INTEGER,
    -- the fencing token: +1 at every claim, never less (see store::Claim)
    claims INTEGER NOT NULL DEFAULT 0
);
-- One row, written by each health check: writing is what health means.
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL,
    room BLOB
);
CREATE TABLE IF NOT EXISTS tokens (
    appid TEXT PRIMARY KEY,
    token TEXT,
    expires_at INTEGER NOT NULL DEFAULT 0,
    fetched_at INTEGER NOT NULL DEFAULT 0,
    lease_holder TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    push_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    msgtype TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    updated_at INTEGER NOT NULL,
    UNIQUE (push_id, seq)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    push_id INTEGER NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- pending: when to try; working: when the lease runs out
    due_at INTEGER NOT NULL,
    responded INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at INTEGER NOT NULL,
    -- the fencing token: +1 at every claim, never less (see store::DeliveryClaim)
    claims INTEGER NOT NULL DEFAULT 0,
    UNIQUE (push_id, target)
);
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries (target, due_at)
    WHERE status IN ('pending', 'working');
-- Dead deliveries, counted for /metrics without reading the delivered ones.
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (target) WHERE status = 'dead';
CREATE TABLE IF NOT EXISTS delivery_attempts (
    id INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    push_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    took_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS delivery_attempts_push ON delivery_attempts (push_id);
-- Only pushes still to handle are indexed by when they are due: marking one
-- done removes its entry instead of moving it.
CREATE INDEX IF NOT EXISTS pushes_ready ON pushes (due_at) WHERE status IN ('pending', 'working');
-- Dead pushes, counted for each /metrics scrape without reading the done ones.
CREATE INDEX IF NOT EXISTS pushes_dead ON pushes (appid) WHERE status = 'dead';
";

/// A dedup key `?1`, or the beginning of one up to a `:` (`m:oUser:77`
/// finds `m:oUser:77:<digest>`, not `m:oUser:771:…`): keys end in a digest
/// that people need not type. `;` is the byte after `:`.
const KEY_MATCHES: &str = "(dedup_key = ?1 OR (dedup_key >= ?1 || ':' AND dedup_key < ?1 || ';'))";

const COLUMNS: &str = "id, appid, dedup_key, kind, from_user, create_time, format, body, \
                       received_at, status, attempts, last_error, reply, finished_at, claims";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(Arc::new(e))
    }
}

/// The embedded SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    queue: mpsc::Sender<Op>,
    path: PathBuf,
    health: Arc<Health>,
    /// The read-only connection (see the module docs).
    reader: Arc<std::sync::Mutex<Connection>>,
    /// The file's identity when opened: reads check it too (an idle
    /// writer would not notice the file gone).
    identity: (u64, u64),
    /// What the writer and checkpointer measured.
    stats: Arc<WriterCounters>,
    /// Dropped with the last handle: the checkpointer then stops.
    _checkpointer: Arc<std::sync::mpsc::SyncSender<()>>,
}

impl SqliteStore {
    /// Open (creating it and its directory if missing) the database at `path`
    /// and start its thread.
    ///
    /// # Errors
    /// [`StoreError`] when the directory cannot be created or the database
    /// cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |at: &Path| {
            let at = at.display().to_string();
            move |e| StoreError::Io {
                path: at,
                source: Arc::new(e),
            }
        };
        // The database holds decrypted messages and live access tokens:
        // only its owner reads it. A directory made here is the owner's
        // alone; SQLite gives its -wal and -shm files the database's mode.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io(dir))?;
            }
        }
        if !path.exists() {
            // Said aloud: a restart after the file was deleted or moved
            // starts from an empty store, and an operator should see why.
            tracing::info!(path = %path.display(), "no database file: creating an empty store");
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers do not block the writer. FULL: a commit is on disk
        // (the WAL is fsynced) before it returns, so kill -9 loses nothing
        // that was acknowledged.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Checkpoints run on the checkpointer's connection, not in commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        // Schema and migrations in one write transaction: two processes
        // opening an old database at once take turns, and the second finds
        // it current (a column added twice would fail its open). The second
        // waits as long as a migration may take (re-indexing takes 1.2 s a
        // million pushes in the page cache), not the 5 s a batch may.
        conn.busy_timeout(MIGRATION_WAIT)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let migrated = conn.execute_batch(SCHEMA).and_then(|()| migrate(&conn));
        match migrated {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        conn.busy_timeout(Duration::from_secs(5))?;
        let reader = Connection::open(path)?;
        reader.busy_timeout(Duration::from_secs(5))?;
        reader.pragma_update(None, "query_only", true)?;
        let (queue, rx) = mpsc::channel(MAX_BATCH * 4);
        let health = Arc::new(Health::default());
        let stats = Arc::new(WriterCounters::default());
        let watch = FileWatch::new(path).map_err(io(path))?;
        let file_identity = watch.identity;
        let spawn_error = |e| StoreError::Io {
            path: path.display().to_string(),
            source: Arc::new(e),
        };
        let (stop, stopped) = std::sync::mpsc::sync_channel(1);
        let checkpoints = Connection::open(path)?;
        checkpoints.busy_timeout(Duration::from_secs(5))?;
        let database_file = database_handle(path).map_err(io(path))?;
        let (checkpoint_stats, checkpoint_health) = (stats.clone(), health.clone());
        std::thread::Builder::new()
            .name("wechat-push-checkpoint".into())
            .spawn(move || {
                checkpoint(
                    &checkpoints,
                    database_file,
                    &stopped,
                    &checkpoint_stats,
                    &checkpoint_health,
                )
            })
            .map_err(spawn_error)?;
        let (writer_health, writer_stats) = (health.clone(), stats.clone());
        std::thread::Builder::new()
            .name("wechat-push-sqlite".into())
            .spawn(move || run(conn, rx, watch, &writer_health, &writer_stats))
            .map_err(spawn_error)?;
        Ok(SqliteStore {
            queue,
            path: path.to_owned(),
            health,
            reader: Arc::new(std::sync::Mutex::new(reader)),
            identity: file_identity,
            stats,
            _checkpointer: Arc::new(stop),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` (an operation of `kind`) in the next batch and return its
    /// result once the batch commits.
    async fn call<T, F>(&self, kind: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |conn: Result<&Connection, &StoreError>| -> Deferred {
            let result = match conn {
                Ok(conn) => f(conn).map_err(StoreError::from),
                Err(e) => Err(e.clone()),
            };
            Box::new(move |commit_error: Option<&StoreError>| {
                let _ = tx.send(match commit_error {
                    Some(e) => Err(e.clone()),
                    None => result,
                });
            })
        });
        let op = Op { kind, run };
        self.queue.send(op).await.map_err(|_| StoreError::Closed)?;
        let result = rx.await.map_err(|_| StoreError::Closed)?;
        if let Err(e @ StoreError::Database(cause)) = &result {
            // A full disk fails statements, not only commits: unhealthy
            // until a batch writes again.
            if cause
                .downcast_ref::<rusqlite::Error>()
                .is_some_and(cannot_write)
            {
                self.health.set_failing(Some(e));
            }
        }
        result
    }
}

impl SqliteStore {
    /// Run the read `f` on the read-only connection, off the writer's
    /// thread; it sees every batch committed before it starts.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        // One stat: the reader would go on reading a deleted file's inode.
        if self.health.lost.load(Ordering::Relaxed)
            || identity(&self.path).ok() != Some(self.identity)
        {
            return Err(StoreError::Lost {
                path: self.path.display().to_string(),
            });
        }
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StoreError::Closed)?;
            f(&conn).map_err(StoreError::from)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// What the writer and the checkpointer measured, for `/metrics`.
#[derive(Debug, Default)]
struct WriterCounters {
    /// Batches by time taken (begin to commit).
    batches: Timings,
    /// The writer's WAL restarts by time taken, whether they restarted it
    /// or found a reader in the way: between two batches, so the next
    /// batch's pushes waited for them too.
    restarting: Timings,
    /// The checkpointer's syncs of the database file, one after each pass
    /// that copied pages, by time taken.
    database_syncs: Timings,
    /// Batches committed: the checkpointer has work when this moved.
    commits: AtomicU64,
    checkpoints: AtomicU64,
    /// WAL pages not yet copied back after the last checkpoint.
    wal_backlog: AtomicU64,
    /// Frames in the WAL at the last checkpoint.
    wal_frames: AtomicU64,
    /// `commits` when the last checkpoint that copied every frame began
    /// (`u64::MAX`: it did not copy them all).
    caught_up: AtomicU64,
    /// Times the writer restarted the WAL.
    restarts: AtomicU64,
    /// Batches that waited [`COMMIT_DELAY`] for more operations.
    delayed: AtomicU64,
    /// When the checkpoint running now began, in microseconds since
    /// [`EPOCH`] (0: none is running), for the log of a slow batch.
    checkpoint_since: AtomicU64,
    /// Up by one as each checkpoint pass begins and again as it ends, failed
    /// or not (odd: one is running), so that the writer can tell exactly how
    /// many passes overlapped a batch from two reads.
    checkpoint_phase: AtomicU64,
}

/// Checkpoint passes that ran at any time between two reads of
/// [`WriterCounters::checkpoint_phase`]: the one running at the first
/// read, if any, and each one begun after it (begun at an odd phase).
fn passes_between(before: u64, after: u64) -> u64 {
    let running = before & 1;
    let begun = after.div_ceil(2).saturating_sub(before.div_ceil(2));
    running + begun
}

/// The start of [`WriterCounters::checkpoint_since`]'s clock.
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

fn micros_since_epoch() -> u64 {
    // Never 0, which means "none running".
    u64::try_from(EPOCH.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Durations counted per [`super::BATCH_SECONDS_BUCKETS`] bound
/// (cumulative, as Prometheus histograms count), with their number and sum.
#[derive(Debug, Default)]
struct Timings {
    buckets: [AtomicU64; super::BATCH_SECONDS_BUCKETS.len()],
    count: AtomicU64,
    micros: AtomicU64,
}

impl Timings {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(super::BATCH_SECONDS_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn histogram(&self) -> super::Histogram {
        super::Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            seconds: self.micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// The checkpointer's loop: copy committed WAL pages back into the database
/// file while batches are committed, off the writer's thread; stop when the
/// store's last handle is dropped.
fn checkpoint(
    conn: &Connection,
    database_file: Arc<std::fs::File>,
    stop: &std::sync::mpsc::Receiver<()>,
    stats: &WriterCounters,
    health: &Health,
) {
    let mut seen = 0;
    let mut last_copied = 0;
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let commits = stats.commits.load(Ordering::Relaxed);
        if commits == seen || health.lost.load(Ordering::Relaxed) {
            continue;
        }
        seen = commits;
        // Past the restart mark, passes follow each other, each copying what
        // the writer added during the last, until the writer's restart has
        // only a batch or two left to copy.
        let mut passes = 0;
        loop {
            let started_at = stats.commits.load(Ordering::Relaxed);
            stats.checkpoint_phase.fetch_add(1, Ordering::Relaxed);
            stats
                .checkpoint_since
                .store(micros_since_epoch(), Ordering::Relaxed);
            let checkpointed = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
            // Within the pass as a slow batch's log counts it: the sync
            // shares the batch's disk as the copy did.
            if let Ok((_, copied)) = checkpointed {
                if copied > 0 && copied != last_copied {
                    last_copied = copied;
                    write_back(&database_file, stats);
                }
            }
            stats.checkpoint_since.store(0, Ordering::Relaxed);
            stats.checkpoint_phase.fetch_add(1, Ordering::Relaxed);
            let (log, copied) = match checkpointed {
                Ok(counts) => counts,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot checkpoint the WAL");
                    break;
                }
            };
            passes += 1;
            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            let backlog = u64::try_from(log - copied).unwrap_or(0);
            let frames = u64::try_from(log).unwrap_or(0);
            stats.wal_backlog.store(backlog, Ordering::Relaxed);
            stats.wal_frames.store(frames, Ordering::Relaxed);
            let caught_up = if backlog == 0 { started_at } else { u64::MAX };
            stats.caught_up.store(caught_up, Ordering::Relaxed);
            let behind = stats.commits.load(Ordering::Relaxed) - started_at;
            // The writer looks after its next commit, one batch later: stop
            // while that still leaves it within the window.
            if frames < WAL_RESTART_AT || backlog > 0 || behind < RESTART_WINDOW || passes == 8 {
                break;
            }
        }
    }
}

/// Put the pages a checkpoint pass just copied into the database file on
/// disk (fdatasync), on the checkpointer's thread, so that each sync has
/// one pass's pages to write.
///
/// SQLite syncs the database file only after a pass that copied the whole
/// WAL, which a pass beside a busy writer seldom does: the pages of
/// hundreds of passes piled up in the page cache, and that one sync then
/// wrote tens of MB while the writer's commits, each waiting for its WAL
/// fsync, queued behind it on the same disk (commits of 60-450 ms in
/// closed-loop runs of 10 s at concurrency 64, development runs). With
/// this sync such batches were fewer (5 against 13 over 10 ms in three
/// pairs of 60 s open-loop runs), not gone. An extra fsync is never less
/// durable. A failed one
/// means the disk lost writes (Linux then marks the pages clean), which
/// SQLite's own next sync of the file reports too, failing its checkpoint:
/// logged as an error for the operator, who has a disk to replace.
fn write_back(database_file: &std::fs::File, stats: &WriterCounters) {
    let started = std::time::Instant::now();
    let synced = database_file.sync_data();
    stats.database_syncs.observe(started.elapsed());
    if let Err(e) = synced {
        tracing::error!(error = %e, "cannot sync the database file after a checkpoint pass: the disk may have lost writes");
    }
}

/// A handle on the database file for [`write_back`]: one per file for the
/// life of the process, never closed. Closing any descriptor of a file
/// drops every POSIX lock the process holds on it, SQLite's included
/// (<https://www.sqlite.org/howtocorrupt.html>, 2.2): another process could
/// then take the file and delete the WAL under this one's writer. Read-only
/// is enough: fdatasync writes back the file's pages whoever wrote them.
fn database_handle(path: &Path) -> std::io::Result<Arc<std::fs::File>> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    /// By device and inode.
    type Handles = HashMap<(u64, u64), Arc<std::fs::File>>;
    static HANDLES: std::sync::LazyLock<std::sync::Mutex<Handles>> =
        std::sync::LazyLock::new(Default::default);
    // Identified by its path's metadata, not by opening it: a second
    // descriptor, closed again, would drop the locks too.
    let meta = std::fs::metadata(path)?;
    let mut handles = HANDLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = handles.get(&(meta.dev(), meta.ino())) {
        return Ok(handle.clone());
    }
    let handle = Arc::new(std::fs::File::open(path)?);
    handles.insert((meta.dev(), meta.ino()), handle.clone());
    Ok(handle)
}

/// Restart the WAL from its beginning if it has grown to `WAL_RESTART_AT` (4,096)
/// frames and the checkpointer copied all of it but the last few batches:
/// on the writer's thread, between two batches, so that nothing else
/// writes; readers are not waited for (another chance comes after the
/// checkpointer's next pass, within [`CHECKPOINT_EVERY`]).
fn restart_wal(conn: &Connection, stats: &WriterCounters) {
    let commits = stats.commits.load(Ordering::Relaxed);
    let caught_up = stats.caught_up.load(Ordering::Relaxed);
    // While the last pass left frames uncopied (a reader holds an older
    // snapshot), `caught_up` is `u64::MAX`: `checked_sub` gives no
    // difference, so it is outside the window, where a restart would copy
    // that whole backlog while pushes wait.
    let within_window = commits
        .checked_sub(caught_up)
        .is_some_and(|since| since <= RESTART_WINDOW);
    if stats.wal_frames.load(Ordering::Relaxed) < WAL_RESTART_AT || !within_window {
        return;
    }
    let started = std::time::Instant::now();
    let restarted = conn.busy_timeout(Duration::ZERO).and_then(|()| {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
    });
    let _ = conn.busy_timeout(Duration::from_secs(5));
    stats.restarting.observe(started.elapsed());
    match restarted {
        Ok(0) => {
            tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "WAL restarted");
            stats.restarts.fetch_add(1, Ordering::Relaxed);
            stats.wal_frames.store(0, Ordering::Relaxed);
            stats.wal_backlog.store(0, Ordering::Relaxed);
        }
        Ok(_) => tracing::debug!("WAL not restarted: a reader holds it"),
        Err(e) => tracing::warn!(error = %e, "cannot restart the WAL"),
    }
}

/// Bring a database made by an earlier version up to the current schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // 0.1: answers had no source (they all came from the handler).
    let has_source = conn
        .prepare("SELECT 1 FROM pragma_table_info('answers') WHERE name = 'source'")?
        .exists([])?;
    if !has_source {
        conn.execute_batch(
            "ALTER TABLE answers ADD COLUMN source TEXT NOT NULL DEFAULT 'handler'",
        )?;
    }
    // 0.2: the health check writes as much as a push (see `HEALTH_WRITE`).
    let has_room = conn
        .prepare("SELECT 1 FROM pragma_table_info('health') WHERE name = 'room'")?
        .exists([])?;
    if !has_room {
        conn.execute_batch("ALTER TABLE health ADD COLUMN room BLOB")?;
    }
    // 0.3: claims carry a fencing token. Any start will do, since claims
    // only ever increase it; the attempts so far keep it meaningful. (An
    // older binary still sharing the file claims without increasing it: run
    // one version at a time on a file.)
    for table in ["pushes", "deliveries"] {
        let has_claims = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'claims'"
            ))?
            .exists([])?;
        if !has_claims {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN claims INTEGER NOT NULL DEFAULT 0; \
                 UPDATE {table} SET claims = attempts;"
            ))?;
        }
    }
    // 0.4: de-duplication's unique index is led by `create_time` (see
    // `IDENTITY_INDEX`). The old one's rows are unique under it too, since
    // it asks less, so building it cannot fail.
    let has_old_index = conn
        .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'index' AND name = 'pushes_dedup'")?
        .exists([])?;
    if has_old_index {
        let pushes: i64 = conn.query_row("SELECT count(*) FROM pushes", [], |row| row.get(0))?;
        tracing::info!(
            pushes,
            "SQLite store: re-indexing the stored pushes for de-duplication, once (1.2 s a million pushes whose file is in the page cache, more from the disk); stop any older wechat-push still using this file: its inserts fail without the old index"
        );
    }
    conn.execute_batch(IDENTITY_INDEX)?;
    conn.execute_batch("DROP INDEX IF EXISTS pushes_dedup")?;
    Ok(())
}

/// De-duplication's unique index: `(appid, dedup_key)` as the store's
/// contract says, led by WeChat's `CreateTime`.
///
/// Why led: keys begin with the sender's openid, which is random, so an
/// index on `(appid, dedup_key)` alone put each new push's entry on a random
/// leaf page of an index as large as the store (some 29,500 pages a million
/// pushes): each commit wrote one page a push to the WAL, and each
/// checkpoint copied them all back. Pushes
/// arrive about in the order WeChat created them, so led by `CreateTime`
/// their entries go to the few pages at the index's end, which stay in the
/// page cache and are copied back once a checkpoint however often written.
///
/// It keeps exactly what the other kept apart: a key ends in a digest of
/// every field of the message, `CreateTime` among them (see
/// [`DedupKey`]), so one `(appid, dedup_key)` never comes with two times.
const IDENTITY_INDEX: &str = "CREATE UNIQUE INDEX IF NOT EXISTS pushes_identity \
                              ON pushes (create_time, appid, dedup_key)";

fn drain(rx: &mut mpsc::Receiver<Op>, batch: &mut Vec<Op>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
}

/// What the writer knows of the store's health, for `ping`.
#[derive(Debug, Default)]
struct Health {
    /// The file was deleted or replaced (for good).
    lost: AtomicBool,
    /// Why the last commit failed, while it is the last.
    failing: std::sync::Mutex<Option<String>>,
}

/// The database file's identity (device and inode), checked at most every
/// [`FileWatch::EVERY`] before a batch: a file deleted or replaced under a
/// running server would take every later write with it at the next restart.
struct FileWatch {
    path: PathBuf,
    identity: (u64, u64),
    /// The write-ahead log's, once it exists: SQLite keeps it while the
    /// connection is open, and pushes acknowledged since the last
    /// checkpoint live only there.
    wal: Option<(u64, u64)>,
    checked: std::time::Instant,
}

impl FileWatch {
    /// Cheap (one `stat`) and often enough that little is written to a lost file.
    const EVERY: Duration = Duration::from_millis(250);

    fn new(path: &Path) -> std::io::Result<Self> {
        Ok(FileWatch {
            path: path.to_owned(),
            identity: identity(path)?,
            wal: None,
            checked: std::time::Instant::now(),
        })
    }

    /// Whether the file is still the one opened (checked when due).
    fn still_there(&mut self) -> bool {
        if self.checked.elapsed() < Self::EVERY {
            return true;
        }
        self.checked = std::time::Instant::now();
        if identity(&self.path).ok() != Some(self.identity) {
            return false;
        }
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        match (self.wal, identity(Path::new(&wal)).ok()) {
            (None, now) => {
                self.wal = now;
                true
            }
            (Some(seen), now) => now == Some(seen),
        }
    }
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// The writer thread's nice adjustment (nice(1)'s term): its nice value is
/// the one it was started with plus this, at least -20 (Linux's floor).
///
/// Why: on a core the request path keeps busy, Linux's scheduler shares it
/// evenly between the runnable threads, so a batch's statements took about
/// twice their CPU time in wall time while every push of the batch, and of
/// the batch behind it, waited. 10 lower weighs the writer 9,548 against the
/// request path's 1,024 (the kernel's `sched_prio_to_weight`): a batch runs
/// nearly as if alone, and the request path gets the core back while the
/// commit's fsync waits for the disk. Each batch ends in that fsync, and
/// housekeeping (pruning) queues its next chunk only after the last one's
/// commit, from the request path's runtime, so the request path runs at
/// least once a batch. Measured in ARCHITECTURE.md ("A batch sharing the
/// core evenly with the request path").
///
/// Lowering a nice value needs `CAP_SYS_NICE` or a nice limit
/// (`RLIMIT_NICE`, systemd's `LimitNICE=-10`); without either the writer
/// runs at the nice value it was started with and says so once.
#[cfg(target_os = "linux")]
const WRITER_NICE_ADJUSTMENT: i32 = -10;

/// The nice value a thread now at `nice` asks for.
#[cfg(target_os = "linux")]
fn writer_nice(nice: i32) -> i32 {
    (nice + WRITER_NICE_ADJUSTMENT).max(-20)
}

/// Apply [`WRITER_NICE_ADJUSTMENT`] to the calling thread (the writer); the
/// nice value it runs at, or why not.
#[cfg(target_os = "linux")]
fn raise_writer_priority() -> std::io::Result<i32> {
    // `None` is the calling thread: on Linux a nice value is a thread's.
    let nice = writer_nice(rustix::process::getpriority_process(None)?);
    rustix::process::setpriority_process(None, nice)?;
    Ok(nice)
}

#[cfg(not(target_os = "linux"))]
fn raise_writer_priority() -> std::io::Result<i32> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// The connection's thread: batch, run, commit, answer.
fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Op>,
    mut watch: FileWatch,
    health: &Health,
    stats: &WriterCounters,
) {
    match raise_writer_priority() {
        Ok(nice) => tracing::info!(nice, "SQLite store: the writer runs above the request path"),
        #[cfg(not(target_os = "linux"))]
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => tracing::info!(
            error = %e,
            "SQLite store: cannot raise the writer's priority (it needs CAP_SYS_NICE or a nice limit, e.g. systemd's LimitNICE=-10): under load, acknowledgements wait longer"
        ),
    }
    // Reused: the kinds of each batch, for the log of a slow one.
    let mut kinds: Vec<&'static str> = Vec::with_capacity(MAX_BATCH);
    let mut last_commit: Option<std::time::Instant> = None;
    // A wait that gathered nothing says the writes come one at a time from
    // callers that each wait for their answer (a client sending one push
    // after another): another wait would only slow them. Waits resume once
    // a batch finds two operations waiting without one.
    let mut waits_gather = true;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        drain(&mut rx, &mut batch);
        waits_gather |= batch.len() > 1;
        if waits_gather
            && batch.len() < SMALL_BATCH
            && last_commit.is_some_and(|t| t.elapsed() < BUSY_WITHIN)
        {
            let found = batch.len();
            std::thread::sleep(COMMIT_DELAY);
            drain(&mut rx, &mut batch);
            stats.delayed.fetch_add(1, Ordering::Relaxed);
            waits_gather = batch.len() > found;
        }
        // The wait above is not the batch's: the histogram times the
        // transaction, begin to commit.
        let started = std::time::Instant::now();
        let phase_before = stats.checkpoint_phase.load(Ordering::Relaxed);
        if !health.lost.load(Ordering::Relaxed) && !watch.still_there() {
            health.lost.store(true, Ordering::Relaxed);
            tracing::error!(path = %watch.path.display(), "the database file was deleted or replaced: refusing every write until a restart");
        }
        if health.lost.load(Ordering::Relaxed) {
            let e = StoreError::Lost {
                path: watch.path.display().to_string(),
            };
            for op in batch {
                (op.run)(Err(&e))(None);
            }
            continue;
        }
        // Prepared once, not parsed per batch.
        let begin = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]));
        if let Err(e) = begin {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "cannot begin a transaction");
            health.set_failing(Some(&e));
            // Nothing ran: each caller learns why.
            for op in batch {
                (op.run)(Err(&e))(None);
            }
            continue;
        }
        let changes = conn.total_changes();
        kinds.clear();
        kinds.extend(batch.iter().map(|op| op.kind));
        let deferred: Vec<Deferred> = batch.into_iter().map(|op| (op.run)(Ok(&conn))).collect();
        let committing = std::time::Instant::now();
        let commit_error = conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .err()
            .map(StoreError::from);
        last_commit = Some(std::time::Instant::now());
        let took = started.elapsed();
        stats.batches.observe(took);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        if took >= SLOW_BATCH {
            // What ran beside the batch: checkpoint passes (copying pages
            // into the database file and fsyncing it) share the disk with
            // the commit's fsync of the WAL.
            let passes =
                passes_between(phase_before, stats.checkpoint_phase.load(Ordering::Relaxed));
            let running = stats.checkpoint_since.load(Ordering::Relaxed);
            let checkpoint_ms = if running == 0 {
                0.0
            } else {
                micros_since_epoch().saturating_sub(running) as f64 / 1e3
            };
            tracing::debug!(
                ms = took.as_secs_f64() * 1e3,
                commit_ms = committing.elapsed().as_secs_f64() * 1e3,
                ops = kinds.len(),
                kinds = %summarize(&kinds),
                checkpoint_passes = passes,
                checkpoint_running_ms = checkpoint_ms,
                began_during_checkpoint = phase_before & 1 == 1,
                "slow batch"
            );
        }
        if let Some(e) = &commit_error {
            tracing::error!(error = %e, "commit failed");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        match &commit_error {
            Some(e) => health.set_failing(Some(e)),
            // Writing works again once a batch wrote and committed.
            None if conn.total_changes() > changes => health.set_failing(None),
            None => {}
        }
        for answer in deferred {
            answer(commit_error.as_ref());
        }
        // After the answers: the pushes of the batch are acknowledged first.
        if commit_error.is_none() {
            restart_wal(&conn, stats);
        }
    }
}

/// `insert×40 claim×1`: the kinds of a batch's operations, with counts, in
/// order of first appearance.
fn summarize(kinds: &[&'static str]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for kind in kinds {
        match counted.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => counted.push((kind, 1)),
        }
    }
    counted
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether an error says the database cannot be written (full, I/O,
/// read-only, gone), as opposed to one statement's own fault.
fn cannot_write(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{
        CannotOpen, DatabaseCorrupt, DiskFull, NotADatabase, ReadOnly, SystemIoFailure,
    };
    matches!(
        e.sqlite_error_code(),
        Some(DiskFull | SystemIoFailure | ReadOnly | CannotOpen | DatabaseCorrupt | NotADatabase)
    )
}

impl Health {
    fn set_failing(&self, error: Option<&StoreError>) {
        if let Ok(mut failing) = self.failing.lock() {
            *failing = error.map(|e| crate::display_chain(e));
        }
    }
}

/// The answers of `push`, all or only those of `source`.
fn read_answers(
    conn: &Connection,
    push: PushId,
    source: Option<&str>,
) -> rusqlite::Result<Vec<AnswerRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, seq, msgtype, body, status, error, updated_at, source FROM answers \
         WHERE push_id = ?1 AND (?2 IS NULL OR source = ?2) ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![push.0, source], |row| {
        let status: String = row.get(4)?;
        Ok(AnswerRecord {
            id: AnswerId(row.get(0)?),
            push_id: push,
            source: row.get(7)?,
            seq: row.get(1)?,
            msgtype: row.get(2)?,
            body: row.get(3)?,
            status: match status.as_str() {
                "sent" => AnswerStatus::Sent,
                "failed" => AnswerStatus::Failed,
                "uncertain" => AnswerStatus::Uncertain,
                _ => AnswerStatus::Pending,
            },
            error: row.get(5)?,
            updated_at: row.get(6)?,
        })
    })?;
    rows.collect()
}

const DELIVERY_COLUMNS: &str =
    "id, push_id, target, status, attempts, responded, last_error, updated_at, claims";

fn read_delivery(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = row.get(3)?;
    Ok(Delivery {
        id: DeliveryId(row.get(0)?),
        push_id: PushId(row.get(1)?),
        target: row.get(2)?,
        status: DeliveryStatus::parse(&status),
        attempts: row.get(4)?,
        responded: row.get(5)?,
        last_error: row.get(6)?,
        updated_at: row.get(7)?,
        fence: row.get(8)?,
    })
}

/// A list of targets as SQLite's `json_each` reads it (`None`: any).
fn targets_json(targets: Option<Vec<String>>) -> Option<String> {
    targets.map(|t| serde_json::Value::from(t).to_string())
}

/// [`DeliveryLog::finish_delivery`] on the writer's connection.
fn finish_delivery_in(
    conn: &Connection,
    claim: DeliveryClaim,
    outcome: DeliveryOutcome,
    took_ms: i64,
    now: Millis,
) -> rusqlite::Result<bool> {
    let name = outcome.name();
    let (status, due_at, error, responded) = outcome.row(now);
    let changed = conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?3, due_at = ?4, last_error = ?5, \
               responded = MAX(responded, ?6), updated_at = ?7 \
             WHERE id = ?1 AND claims = ?2 AND status = 'working'",
        )?
        .execute(params![
            claim.id.0,
            claim.fence,
            status,
            due_at,
            error,
            responded,
            now
        ])?;
    if changed == 1 {
        conn.prepare_cached(
            "INSERT INTO delivery_attempts (delivery_id, push_id, at, took_ms, outcome, error) \
             SELECT id, push_id, ?2, ?3, ?4, ?5 FROM deliveries WHERE id = ?1",
        )?
        .execute(params![claim.id.0, now, took_ms, name, error])?;
    }
    Ok(changed == 1)
}

/// The first id of a push received at or after `at` (past the last id
/// when none was): [`FirstIdAt`]'s search, each probe one primary-key seek.
fn first_id_at(conn: &Connection, at: Millis) -> rusqlite::Result<i64> {
    let (lowest, highest): (Option<i64>, Option<i64>) =
        // Two subqueries: SQLite reads a lone MIN or MAX off the primary
        // key, but scans the table for both in one SELECT (115 ms at a
        // million pushes).
        conn.query_row(
            "SELECT (SELECT MIN(id) FROM pushes), (SELECT MAX(id) FROM pushes)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
    let mut search = FirstIdAt::new(lowest, highest, at);
    let mut probe = conn
        .prepare_cached("SELECT id, received_at FROM pushes WHERE id >= ?1 ORDER BY id LIMIT 1")?;
    loop {
        match search.next() {
            Step::Done(id) => return Ok(id),
            Step::Probe(id) => {
                let first = probe
                    .query_row(params![id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                search.found(id, first);
            }
        }
    }
}

fn format_of(s: &str) -> Format {
    if s == "json" {
        Format::Json
    } else {
        Format::Xml
    }
}

fn read_push(row: &Row<'_>) -> rusqlite::Result<StoredPush> {
    read_push_at(row, 0)
}

/// A push read from `row`'s [`COLUMNS`] starting at column `at`.
fn read_push_at(row: &Row<'_>, at: usize) -> rusqlite::Result<StoredPush> {
    let status: String = row.get(at + 9)?;
    let format: String = row.get(at + 6)?;
    Ok(StoredPush {
        id: PushId(row.get(at)?),
        appid: row.get(at + 1)?,
        dedup_key: DedupKey::from_stored(row.get::<_, String>(at + 2)?),
        kind: row.get(at + 3)?,
        from: OpenId::new(row.get::<_, String>(at + 4)?),
        create_time: row.get(at + 5)?,
        format: format_of(&format),
        body: row.get(at + 7)?,
        received_at: row.get(at + 8)?,
        status: Status::parse(&status).unwrap_or(Status::Pending),
        attempts: row.get(at + 10)?,
        last_error: row.get(at + 11)?,
        reply: row.get(at + 12)?,
        finished_at: row.get(at + 13)?,
        fence: row.get(at + 14)?,
    })
}

/// The push stored first under a key, by `(create_time, appid, dedup_key)`:
/// one search of [`IDENTITY_INDEX`].
const FIND_RETRY: &str = "SELECT id, status, reply FROM pushes \
                          WHERE create_time = ?1 AND appid = ?2 AND dedup_key = ?3";

/// Store `push` as `stored_as` asks, or find the push stored first under
/// its key.
fn insert_push(
    conn: &Connection,
    push: &NewPush,
    stored_as: StoredAs,
) -> rusqlite::Result<Inserted> {
    let (status, due_at, attempts, finished_at) = stored_as.row(push.received_at_ms);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO pushes (appid, dedup_key, kind, from_user, create_time, format, \
             body, received_at, status, attempts, due_at, claims, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?10, ?12) \
             ON CONFLICT (create_time, appid, dedup_key) DO NOTHING",
        )?
        .execute(params![
            push.appid,
            push.dedup_key.as_str(),
            push.kind,
            push.from_user.as_str(),
            push.create_time,
            push.format.to_string(),
            push.body,
            push.received_at_ms,
            status.as_str(),
            attempts,
            due_at,
            finished_at,
        ])?;
    if inserted == 1 {
        return Ok(Inserted::New(Claim {
            id: PushId(conn.last_insert_rowid()),
            fence: i64::from(attempts),
        }));
    }
    conn.prepare_cached(FIND_RETRY)?.query_row(
        params![push.create_time, push.appid, push.dedup_key.as_str()],
        |row| {
            let status: String = row.get(1)?;
            Ok(Inserted::Duplicate {
                id: PushId(row.get(0)?),
                status: Status::parse(&status).unwrap_or(Status::Pending),
                reply: row.get(2)?,
            })
        },
    )
}

impl Inbox for SqliteStore {
    fn insert(
        &self,
        push: Arc<NewPush>,
        claim_until: Option<Millis>,
    ) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        let stored_as = StoredAs::claimed_until(claim_until);
        Box::pin(self.call("insert", move |conn| insert_push(conn, &push, stored_as)))
    }

    fn insert_handled(&self, push: Arc<NewPush>) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        Box::pin(self.call("insert", move |conn| {
            insert_push(conn, &push, StoredAs::Handled)
        }))
    }

    fn claim(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        Box::pin(self.call("claim", move |conn| {
            let sql = format!(
                "UPDATE pushes SET status = 'working', attempts = attempts + 1, \
                   claims = claims + 1, due_at = ?2 \
                 WHERE id IN (SELECT id FROM pushes \
                   WHERE status IN ('pending', 'working') AND due_at <= ?1 \
                   ORDER BY due_at LIMIT ?3) \
                 RETURNING {COLUMNS}"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![now, lease_until, limit as i64], read_push)?;
            rows.collect()
        }))
    }

    fn complete(
        &self,
        done: Vec<(Claim, Option<Vec<u8>>)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.call("complete", move |conn| {
            let mut finished = 0;
            // Pushes without a reply (nearly all) in one statement.
            let plain: Vec<[i64; 2]> = done
                .iter()
                .filter(|(_, r)| r.is_none())
                .map(|(c, _)| [c.id.0, c.fence])
                .collect();
            if !plain.is_empty() {
                let claims = serde_json::to_string(&plain).unwrap_or_default();
                finished += conn
                    .prepare_cached(
                        "UPDATE pushes SET status = 'done', finished_at = ?2, last_error = NULL \
                         FROM (SELECT value ->> 0 AS id, value ->> 1 AS fence FROM json_each(?1)) AS held \
                         WHERE pushes.id = held.id AND pushes.claims = held.fence \
                           AND pushes.status = 'working'",
                    )?
                    .execute(params![claims, now])?;
            }
            for (claim, reply) in done.into_iter().filter(|(_, r)| r.is_some()) {
                finished += conn
                    .prepare_cached(
                        "UPDATE pushes SET status = 'done', reply = ?3, finished_at = ?4, last_error = NULL \
                         WHERE id = ?1 AND claims = ?2 AND status = 'working'",
                    )?
                    .execute(params![claim.id.0, claim.fence, reply, now])?;
            }
            Ok(finished)
        }))
    }

    fn forget_reply(&self, claim: Claim) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.call("forget_reply", move |conn| {
            conn.prepare_cached("UPDATE pushes SET reply = NULL WHERE id = ?1 AND claims = ?2")?
                .execute(params![claim.id.0, claim.fence])?;
            Ok(())
        }))
    }

    fn fail(
        &self,
        claim: Claim,
        error: String,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.call("fail", move |conn| {
            let changed = match retry_at {
                Some(at) => conn
                    .prepare_cached(
                        "UPDATE pushes SET status = 'pending', due_at = ?3, last_error = ?4 \
                         WHERE id = ?1 AND claims = ?2 AND status = 'working'",
                    )?
                    .execute(params![claim.id.0, claim.fence, at, error])?,
                None => conn
                    .prepare_cached(
                        "UPDATE pushes SET status = 'dead', finished_at = ?3, last_error = ?4 \
                         WHERE id = ?1 AND claims = ?2 AND status = 'working'",
                    )?
                    .execute(params![claim.id.0, claim.fence, now, error])?,
            };
            Ok(changed == 1)
        }))
    }

    fn release(&self, claims: Vec<Claim>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.call("release", move |conn| {
            let mut stmt = conn.prepare_cached(
                "UPDATE pushes SET status = 'pending', due_at = 0, attempts = MAX(attempts - 1, 0) \
                 WHERE id = ?1 AND claims = ?2 AND status = 'working'",
            )?;
            for claim in claims {
                stmt.execute(params![claim.id.0, claim.fence])?;
            }
            Ok(())
        }))
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        Box::pin(self.read(move |conn| {
            // A time span becomes a span of ids: read by the primary key,
            // newest first, never every push kept.
            let mut low = match filter.since {
                Some(since) => first_id_at(conn, since)?,
                None => 0,
            };
            if let Some(after) = filter.after {
                low = low.max(after.0.saturating_add(1));
            }
            let mut high = match filter.until {
                Some(until) => first_id_at(conn, until)?,
                None => i64::MAX,
            };
            if let Some(before) = filter.before {
                high = high.min(before.0);
            }
            // Only the conditions set, so that the plan SQLite makes once
            // for the statement fits them (a `?n IS NULL OR …` hides from
            // the planner which index a condition could use). Each `?` is
            // the next value. Plans checked with EXPLAIN QUERY PLAN at a
            // million pushes (docs/BENCHMARKS.md, console pages).
            let mut conditions: Vec<&str> = Vec::new();
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            // A status with a partial index is read off it: SQLite would
            // rather walk the primary key backwards for `ORDER BY id DESC`,
            // through every push kept (150 ms at a million) to find the
            // few dead ones.
            let source = match filter.status {
                Some(Status::Dead) => {
                    conditions.push("status = 'dead'");
                    "pushes INDEXED BY pushes_dead"
                }
                Some(status @ (Status::Pending | Status::Working)) => {
                    // The first condition: its `?` comes first.
                    conditions.push("status IN ('pending', 'working') AND status = ?");
                    values.push(status.as_str().to_owned().into());
                    "pushes INDEXED BY pushes_ready"
                }
                Some(Status::Done) => {
                    conditions.push("status = 'done'");
                    "pushes"
                }
                None => "pushes",
            };
            let driven_elsewhere = filter.status.is_some_and(|s| s != Status::Done);
            // `+id`: a filter, not what drives the read, when an index does.
            let (id_low, id_high) = if driven_elsewhere {
                ("+id >= ?", "+id < ?")
            } else {
                ("id >= ?", "id < ?")
            };
            if low > 0 {
                conditions.push(id_low);
                values.push(low.into());
            }
            if high < i64::MAX {
                conditions.push(id_high);
                values.push(high.into());
            }
            if let Some(appid) = filter.appid.clone() {
                conditions.push("appid = ?");
                values.push(appid.into());
            }
            if let Some(kind) = filter.kind {
                conditions.push("kind = ?");
                values.push(kind.into());
            }
            // No index leads by the user: each push would write its entry
            // on a random page of it, which cost a third of the throughput
            // (see `IDENTITY_INDEX`). Of one app, a user's pushes are found
            // by reading the identity index, whose keys begin
            // `e:<FromUserName>:` or `m:<FromUserName>:` (DedupKey; before
            // 0.2 `evt:<user>:` or `msg:<MsgId>`): a fifth of the pages of
            // the pushes themselves, read whole whoever the user. The `CASE`
            // compares each key with its own kind's range only (150 ms a
            // million pushes in the page cache, against 230 ms for an `OR`
            // of the four ranges and 210 ms for a read of the pushes).
            if let Some(from) = filter.from {
                conditions.push("from_user = ?");
                values.push(from.clone().into());
                if let Some(appid) = &filter.appid {
                    conditions.push(
                        "id IN (SELECT id FROM pushes INDEXED BY pushes_identity \
                         WHERE appid = ? AND CASE \
                           WHEN dedup_key < 'e;' THEN dedup_key >= ? AND dedup_key < ? \
                           WHEN dedup_key < 'evt;' THEN dedup_key >= ? AND dedup_key < ? \
                           WHEN dedup_key < 'm;' THEN dedup_key >= ? AND dedup_key < ? \
                           ELSE dedup_key >= 'msg:' AND dedup_key < 'msg;' END)",
                    );
                    values.push(appid.clone().into());
                    for prefix in ["e", "evt", "m"] {
                        values.push(format!("{prefix}:{from}:").into());
                        values.push(format!("{prefix}:{from};").into());
                    }
                }
            }
            if let Some(since) = filter.since {
                conditions.push("received_at >= ?");
                values.push(since.0.into());
            }
            if let Some(until) = filter.until {
                conditions.push("received_at < ?");
                values.push(until.0.into());
            }
            if let Some(text) = filter.text {
                conditions.push("instr(body, ?) > 0");
                values.push(text.into_bytes().into());
            }
            let limit = if filter.limit == 0 {
                -1
            } else {
                i64::try_from(filter.limit).unwrap_or(i64::MAX)
            };
            values.push(limit.into());
            let conditions = if conditions.is_empty() {
                "1".to_owned()
            } else {
                conditions.join(" AND ")
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM {source} WHERE {conditions} ORDER BY id DESC LIMIT ?"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), read_push)?;
            rows.collect()
        }))
    }

    fn push(&self, id: PushId) -> BoxFuture<'_, Result<Option<StoredPush>, StoreError>> {
        Box::pin(self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM pushes WHERE id = ?1"))?
                .query_row(params![id.0], read_push)
                .optional()
        }))
    }

    fn retry_dead(
        &self,
        appid: Option<String>,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<Retried, StoreError>> {
        let targets = targets_json(targets);
        Box::pin(self.call("retry", move |conn| {
            let pushes = conn
                .prepare_cached(
                    "UPDATE pushes SET status = 'pending', due_at = 0, attempts = 0, finished_at = NULL \
                     WHERE status = 'dead' AND (?1 IS NULL OR appid = ?1)",
                )?
                .execute(params![appid])?;
            let deliveries = conn
                .prepare_cached(
                    // EXISTS, not `push_id IN (SELECT id … appid)`: that
                    // lists every push of the app, on the writer's thread,
                    // to find the few dead deliveries' pushes.
                    "UPDATE deliveries SET status = 'pending', due_at = 0, attempts = 0 \
                     WHERE status = 'dead' AND (?1 IS NULL OR EXISTS \
                       (SELECT 1 FROM pushes p WHERE p.id = deliveries.push_id AND p.appid = ?1)) \
                       AND (?2 IS NULL OR target IN (SELECT value FROM json_each(?2)))",
                )?
                .execute(params![appid, targets])?;
            Ok(Retried { pushes, deliveries })
        }))
    }

    fn arrivals(
        &self,
        since: Millis,
        bucket: i64,
    ) -> BoxFuture<'_, Result<Vec<(Millis, u64)>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let low = first_id_at(conn, since)?;
            let bucket = bucket.max(1);
            let mut stmt = conn.prepare_cached(
                "SELECT received_at / ?3 * ?3 AS span, COUNT(*) FROM pushes \
                 WHERE id >= ?1 AND received_at >= ?2 GROUP BY span ORDER BY span",
            )?;
            let rows = stmt.query_map(params![low, since, bucket], |row| {
                Ok((Millis(row.get(0)?), row.get::<_, i64>(1)?.max(0) as u64))
            })?;
            rows.collect()
        }))
    }

    fn kinds_since(&self, since: Millis) -> BoxFuture<'_, Result<Vec<KindCount>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let low = first_id_at(conn, since)?;
            let mut stmt = conn.prepare_cached(
                "SELECT appid, kind, COUNT(*) FROM pushes \
                 WHERE id >= ?1 AND received_at >= ?2 GROUP BY appid, kind ORDER BY appid, kind",
            )?;
            let rows = stmt.query_map(params![low, since], |row| {
                Ok(KindCount {
                    appid: row.get(0)?,
                    kind: row.get(1)?,
                    count: row.get::<_, i64>(2)?.max(0) as u64,
                })
            })?;
            rows.collect()
        }))
    }

    fn get(&self, dedup_key: String) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let sql = format!("SELECT {COLUMNS} FROM pushes WHERE {KEY_MATCHES} ORDER BY id");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![dedup_key], read_push)?;
            rows.collect()
        }))
    }

    fn retry(
        &self,
        dedup_key: String,
        appid: Option<String>,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<Retried, StoreError>> {
        let targets = targets_json(targets);
        Box::pin(self.call("retry", move |conn| {
            let pushes = conn
                .prepare_cached(
                    &format!(
                        "UPDATE pushes SET status = 'pending', due_at = 0, attempts = 0, finished_at = NULL \
                         WHERE {KEY_MATCHES} AND (?2 IS NULL OR appid = ?2) AND status = 'dead'"
                    ),
                )?
                .execute(params![dedup_key, appid])?;
            let deliveries = conn
                .prepare_cached(
                    &format!(
                        "UPDATE deliveries SET status = 'pending', due_at = 0, attempts = 0 \
                         WHERE status = 'dead' AND push_id IN (SELECT id FROM pushes \
                           WHERE {KEY_MATCHES} AND (?2 IS NULL OR appid = ?2)) \
                           AND (?3 IS NULL OR target IN (SELECT value FROM json_each(?3)))"
                    ),
                )?
                .execute(params![dedup_key, appid, targets])?;
            Ok(Retried { pushes, deliveries })
        }))
    }

    fn prune(&self, before: Millis) -> BoxFuture<'_, Result<usize, StoreError>> {
        // In chunks, each an operation of its own, so that a week of pushes
        // pruned at once does not hold up the inserts queued behind it.
        Box::pin(async move {
            let mut total = 0;
            loop {
                let n = self
                    .call("prune", move |conn| {
                        // A push whose delivery is unfinished or dead stays
                        // until that is settled: it is what a retry sends.
                        let ids: Vec<i64> = conn
                            .prepare_cached(
                                "SELECT id FROM pushes WHERE status = 'done' AND finished_at < ?1 \
                                 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                                   WHERE d.push_id = pushes.id AND d.status != 'delivered') \
                                 ORDER BY id LIMIT ?2",
                            )?
                            .query_map(params![before, PRUNE_CHUNK as i64], |r| r.get(0))?
                            .collect::<rusqlite::Result<_>>()?;
                        let ids_json = serde_json::to_string(&ids).unwrap_or_default();
                        for table in ["answers", "deliveries", "delivery_attempts"] {
                            conn.prepare_cached(&format!(
                                "DELETE FROM {table} WHERE push_id IN (SELECT value FROM json_each(?1))"
                            ))?
                            .execute(params![ids_json])?;
                        }
                        conn.prepare_cached(
                            "DELETE FROM pushes WHERE id IN (SELECT value FROM json_each(?1))",
                        )?
                        .execute(params![ids_json])
                    })
                    .await?;
                total += n;
                if n < PRUNE_CHUNK {
                    return Ok(total);
                }
            }
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>> {
        Box::pin(async move {
            // Every push is read: with a million stored, at once that is a
            // few hundred ms of a core taken from the requests (acks' p99
            // tripled while /metrics counted). A page of ids at a time
            // instead (by key, so that gaps left by pruning cost nothing),
            // each a short read, with a pause after each four times as
            // long: at most a fifth of a core, however many pushes there are.
            let mut counts = Counts::default();
            let mut after = i64::MIN;
            loop {
                let started = std::time::Instant::now();
                let page: Vec<(String, i64, i64)> = self
                    .read(move |conn| {
                        let mut stmt = conn.prepare_cached(
                            "SELECT status, COUNT(*), MAX(id) FROM \
                             (SELECT id, status FROM pushes WHERE id > ?1 ORDER BY id LIMIT ?2) \
                             GROUP BY status",
                        )?;
                        let rows = stmt.query_map(params![after, COUNT_PAGE], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                        })?;
                        rows.collect()
                    })
                    .await?;
                let mut read = 0;
                for (status, n, last) in page {
                    let n = u64::try_from(n).unwrap_or(0);
                    read += n;
                    after = after.max(last);
                    counts.add(&status, n);
                }
                if read < COUNT_PAGE.unsigned_abs() {
                    return Ok(counts);
                }
                tokio::time::sleep(started.elapsed() * 4).await;
            }
        })
    }

    fn depth(&self) -> BoxFuture<'_, Result<Depth, StoreError>> {
        Box::pin(self.read(|conn| {
            // Each term is the WHERE of a partial index, word for word, so
            // that SQLite reads that index and not the table.
            let mut counts = Counts::default();
            let mut stmt = conn.prepare_cached(
                "SELECT status, COUNT(*) FROM pushes WHERE status IN ('pending', 'working') GROUP BY status \
                 UNION ALL \
                 SELECT 'dead', COUNT(*) FROM pushes WHERE status = 'dead'",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let n = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
                counts.set(&row.get::<_, String>(0)?, n);
            }
            Ok(Depth::from(counts))
        }))
    }

    fn depth_by_app(&self) -> BoxFuture<'_, Result<Vec<(String, Depth)>, StoreError>> {
        Box::pin(self.read(|conn| {
            // Each half read off its partial index (the rows of the
            // backlog and the dead ones only), never the done pushes.
            let mut stmt = conn.prepare_cached(
                "SELECT appid, status, COUNT(*) FROM pushes INDEXED BY pushes_ready \
                   WHERE status IN ('pending', 'working') GROUP BY appid, status \
                 UNION ALL \
                 SELECT appid, 'dead', COUNT(*) FROM pushes INDEXED BY pushes_dead \
                   WHERE status = 'dead' GROUP BY appid",
            )?;
            let rows = stmt
                .query_map([], |row| {
                    let n = u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0);
                    Ok((row.get(0)?, row.get(1)?, n))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(super::depth_by_app(rows))
        }))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // Through the writer's queue: a store that cannot take a batch
            // (lost, closed, stuck) is not healthy.
            // A write, not a read: a read succeeds on a full disk, and a
            // store that failed a write is healthy again only when one
            // succeeds (this one, without waiting for a push).
            self.call("ping", |conn| {
                conn.prepare_cached(
                    "INSERT INTO health (id, checked_at, room) VALUES (1, ?1, randomblob(?2)) \
                     ON CONFLICT (id) DO UPDATE SET checked_at = ?1, room = randomblob(?2)",
                )?
                .execute(params![crate::clock::now_ms(), HEALTH_WRITE])
                .map(drop)
            })
            .await?;
            let failing = self.health.failing.lock().ok().and_then(|f| f.clone());
            match failing {
                Some(why) => Err(StoreError::Failing(why)),
                None => Ok(()),
            }
        })
    }

    fn writer_stats(&self) -> Option<WriterStats> {
        let s = &self.stats;
        Some(WriterStats {
            batches: s.batches.histogram(),
            wal_restart_time: s.restarting.histogram(),
            database_sync_time: s.database_syncs.histogram(),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
            wal_restarts: s.restarts.load(Ordering::Relaxed),
            wal_backlog_pages: s.wal_backlog.load(Ordering::Relaxed),
            commit_delays: s.delayed.load(Ordering::Relaxed),
        })
    }
}

impl TokenCache for SqliteStore {
    fn token(&self, appid: String) -> BoxFuture<'_, Result<Option<CachedToken>, StoreError>> {
        Box::pin(self.call("token", move |conn| {
            conn.prepare_cached(
                "SELECT token, expires_at, fetched_at FROM tokens WHERE appid = ?1 AND token IS NOT NULL",
            )?
            .query_row(params![appid], |row| {
                Ok(CachedToken {
                    appid: appid.clone(),
                    token: row.get(0)?,
                    expires_at: row.get(1)?,
                    fetched_at: row.get(2)?,
                })
            })
            .optional()
        }))
    }

    fn lease_token_refresh(
        &self,
        appid: String,
        holder: String,
        until: Millis,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.call("lease_token_refresh", move |conn| {
            let taken = conn
                .prepare_cached(
                    "INSERT INTO tokens (appid, lease_holder, lease_until) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (appid) DO UPDATE SET lease_holder = ?2, lease_until = ?3 \
                     WHERE tokens.lease_holder IS NULL OR tokens.lease_holder = ?2 \
                        OR tokens.lease_until <= ?4",
                )?
                .execute(params![appid, holder, until, now])?;
            Ok(taken == 1)
        }))
    }

    fn put_token(
        &self,
        token: CachedToken,
        holder: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.call("put_token", move |conn| {
            conn.prepare_cached(
                "INSERT INTO tokens (appid, token, expires_at, fetched_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (appid) DO UPDATE SET token = ?2, expires_at = ?3, fetched_at = ?4, \
                   lease_holder = CASE WHEN lease_holder = ?5 THEN NULL ELSE lease_holder END, \
                   lease_until = CASE WHEN lease_holder = ?5 THEN 0 ELSE lease_until END",
            )?
            .execute(params![token.appid, token.token, token.expires_at, token.fetched_at, holder])?;
            Ok(())
        }))
    }

    fn invalidate_token(
        &self,
        appid: String,
        token: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.call("invalidate_token", move |conn| {
            let n = conn
                .prepare_cached("UPDATE tokens SET token = NULL, expires_at = 0 WHERE appid = ?1 AND token = ?2")?
                .execute(params![appid, token])?;
            Ok(n == 1)
        }))
    }

    fn invalidate_token_value(
        &self,
        prefix: String,
        token: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.call("invalidate_token_value", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE tokens SET token = NULL, expires_at = 0 \
                     WHERE substr(appid, 1, length(?1)) = ?1 AND token = ?2",
                )?
                .execute(params![prefix, token])?;
            Ok(n > 0)
        }))
    }
}

impl AnswerLog for SqliteStore {
    fn record_answers(
        &self,
        push: PushId,
        source: String,
        answers: Vec<(String, String)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<Vec<AnswerRecord>, StoreError>> {
        Box::pin(self.call("record_answers", move |conn| {
            let existing = read_answers(conn, push, Some(&source))?;
            if !existing.is_empty() {
                return Ok(existing);
            }
            // Numbered after every source's answers: `seq` orders them all.
            let first: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(seq) + 1, 0) FROM answers WHERE push_id = ?1")?
                .query_row(params![push.0], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(
                "INSERT INTO answers (push_id, seq, msgtype, body, status, updated_at, source) \
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)",
            )?;
            for (i, (msgtype, body)) in answers.into_iter().enumerate() {
                stmt.execute(params![
                    push.0,
                    first + i as i64,
                    msgtype,
                    body,
                    now,
                    source
                ])?;
            }
            read_answers(conn, push, Some(&source))
        }))
    }

    fn take_answer(
        &self,
        id: AnswerId,
        from: AnswerStatus,
        note: String,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.call("take_answer", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE answers SET status = 'uncertain', error = ?3, updated_at = ?4 \
                     WHERE id = ?1 AND status = ?2",
                )?
                .execute(params![id.0, from.as_str(), note, now])?;
            Ok(n == 1)
        }))
    }

    fn mark_answer(
        &self,
        id: AnswerId,
        status: AnswerStatus,
        error: Option<String>,
        now: Millis,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.call("mark_answer", move |conn| {
            let status = status.as_str();
            conn.prepare_cached(
                "UPDATE answers SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id.0, status, error, now])?;
            Ok(())
        }))
    }

    fn answers(&self, push: PushId) -> BoxFuture<'_, Result<Vec<AnswerRecord>, StoreError>> {
        Box::pin(self.read(move |conn| read_answers(conn, push, None)))
    }
}

impl DeliveryLog for SqliteStore {
    fn add_deliveries(
        &self,
        push: PushId,
        targets: Vec<(String, Millis)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.call("add_deliveries", move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO deliveries (push_id, target, status, due_at, updated_at) \
                 VALUES (?1, ?2, 'pending', ?3, ?4) ON CONFLICT (push_id, target) DO NOTHING",
            )?;
            for (target, due_at) in targets {
                stmt.execute(params![push.0, target, due_at, now])?;
            }
            Ok(())
        }))
    }

    fn claim_deliveries(
        &self,
        target: String,
        push: Option<PushId>,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredPush)>, StoreError>> {
        Box::pin(self.call("claim_deliveries", move |conn| {
            let claimed: Vec<Delivery> = conn
                .prepare_cached(&format!(
                    "UPDATE deliveries SET status = 'working', attempts = attempts + 1, \
                       claims = claims + 1, due_at = ?3, updated_at = ?2 \
                     WHERE id IN (SELECT id FROM deliveries WHERE target = ?1 \
                       AND status IN ('pending', 'working') AND due_at <= ?2 \
                       AND (?5 IS NULL OR push_id = ?5) \
                       ORDER BY due_at LIMIT ?4) \
                     RETURNING {DELIVERY_COLUMNS}"
                ))?
                .query_map(
                    params![target, now, lease_until, limit as i64, push.map(|p| p.0)],
                    read_delivery,
                )?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM pushes WHERE id = ?1"))?;
            let mut out = Vec::with_capacity(claimed.len());
            for delivery in claimed {
                // A push is pruned only once its deliveries are settled.
                if let Some(push) = stmt
                    .query_row(params![delivery.push_id.0], read_push)
                    .optional()?
                {
                    out.push((delivery, push));
                }
            }
            Ok(out)
        }))
    }

    fn finish_delivery(
        &self,
        claim: DeliveryClaim,
        outcome: DeliveryOutcome,
        took_ms: i64,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.call("finish_delivery", move |conn| {
            // The outcome and its attempt's record together, or neither.
            // Prepared once, as BEGIN and COMMIT are: one of these per delivery.
            conn.prepare_cached("SAVEPOINT finish_delivery")?
                .execute([])?;
            let finished = finish_delivery_in(conn, claim, outcome, took_ms, now);
            if finished.is_ok() {
                conn.prepare_cached("RELEASE finish_delivery")?
                    .execute([])?;
            } else {
                conn.execute_batch("ROLLBACK TO finish_delivery; RELEASE finish_delivery")?;
            }
            finished
        }))
    }

    fn delivery_attempts(
        &self,
        push: PushId,
    ) -> BoxFuture<'_, Result<Vec<DeliveryAttempt>, StoreError>> {
        Box::pin(self.read(move |conn| {
            conn.prepare_cached(
                "SELECT delivery_id, at, took_ms, outcome, error FROM delivery_attempts \
                 WHERE push_id = ?1 ORDER BY id",
            )?
            .query_map(params![push.0], |row| {
                Ok(DeliveryAttempt {
                    delivery_id: DeliveryId(row.get(0)?),
                    at: row.get(1)?,
                    took_ms: row.get(2)?,
                    outcome: row.get(3)?,
                    error: row.get(4)?,
                })
            })?
            .collect()
        }))
    }

    fn deliveries(&self, push: PushId) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE push_id = ?1 ORDER BY id"
            ))?
            .query_map(params![push.0], read_delivery)?
            .collect()
        }))
    }

    fn dead_deliveries(
        &self,
        appid: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredPush)>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let sql = format!(
                "SELECT {}, {} FROM deliveries d JOIN pushes p ON p.id = d.push_id \
                 WHERE d.status = 'dead' AND (?1 IS NULL OR p.appid = ?1) \
                 ORDER BY d.id DESC LIMIT ?2",
                prefixed("d", DELIVERY_COLUMNS),
                prefixed("p", COLUMNS)
            );
            let width = DELIVERY_COLUMNS.split(',').count();
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![appid, limit], |row| {
                Ok((read_delivery(row)?, read_push_at(row, width)?))
            })?;
            rows.collect()
        }))
    }

    fn retry_delivery(
        &self,
        id: DeliveryId,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let targets = targets_json(targets);
        Box::pin(self.call("retry", move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE deliveries SET status = 'pending', due_at = 0, attempts = 0 \
                     WHERE id = ?1 AND status = 'dead' \
                       AND (?2 IS NULL OR target IN (SELECT value FROM json_each(?2)))",
                )?
                .execute(params![id.0, targets])?;
            Ok(n == 1)
        }))
    }

    fn delivery_backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, StoreError>> {
        Box::pin(self.read(|conn| {
            // Each half reads only its partial index.
            let mut stmt = conn.prepare_cached(
                "SELECT target, status, COUNT(*) FROM deliveries \
                   WHERE status IN ('pending', 'working') GROUP BY target, status \
                 UNION ALL \
                 SELECT target, status, COUNT(*) FROM deliveries \
                   WHERE status = 'dead' GROUP BY target \
                 ORDER BY 1, 2",
            )?;
            let rows = stmt.query_map([], |row| {
                let status: String = row.get(1)?;
                let n: i64 = row.get(2)?;
                Ok(Backlog {
                    target: row.get(0)?,
                    status: DeliveryStatus::parse(&status),
                    count: n.max(0) as u64,
                })
            })?;
            rows.collect()
        }))
    }

    fn bury_unknown_targets(
        &self,
        targets: Vec<String>,
        now: Millis,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.call("bury_unknown_targets", move |conn| {
            let known = serde_json::to_string(&targets).unwrap_or_default();
            conn.prepare_cached(
                "UPDATE deliveries SET status = 'dead', updated_at = ?2, \
                   last_error = 'the forward target is no longer configured' \
                 WHERE status IN ('pending', 'working') \
                   AND target NOT IN (SELECT value FROM json_each(?1))",
            )?
            .execute(params![known, now])
        }))
    }
}

impl rusqlite::ToSql for Millis {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.0))
    }
}

impl rusqlite::types::FromSql for Millis {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(value).map(Millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(key: &str, at: i64) -> Arc<NewPush> {
        Arc::new(NewPush {
            appid: "wx1".into(),
            dedup_key: DedupKey::from_stored(key),
            kind: "text".into(),
            from_user: OpenId::new("oU"),
            create_time: 1,
            format: Format::Json,
            body: b"{}".to_vec(),
            received_at_ms: Millis(at),
        })
    }

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wp-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("nested/inbox.db")
    }

    /// `/healthz` said ok on a full disk while every push got 503.
    #[tokio::test]
    async fn a_store_whose_writes_fail_is_unhealthy_until_one_succeeds() {
        let store = SqliteStore::open(&temp_db("full")).unwrap();
        store.ping().await.unwrap();
        // A disk with no room left: the database may not grow.
        let pages: i64 = store
            .call("test", |c| {
                c.query_row("PRAGMA page_count", [], |r| r.get(0))
            })
            .await
            .unwrap();
        store
            .call("test", move |c| {
                c.pragma_update(None, "max_page_count", pages)
            })
            .await
            .unwrap();
        let big = |key: &str| {
            let mut p = (*push(key, 1)).clone();
            p.body = vec![b'x'; 64 << 10];
            Arc::new(p)
        };
        let mut failed = false;
        for i in 0..64 {
            if store.insert(big(&format!("k{i}")), None).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "the database never filled up");
        // Failing until a write succeeds (here a health check's own small
        // write fits; on a full disk it fails too, see the binary test).
        assert!(store.health.failing.lock().unwrap().is_some());
        store
            .call("test", |c| {
                c.pragma_update(None, "max_page_count", 1_000_000)
            })
            .await
            .unwrap();
        store.insert(push("small", 2), None).await.unwrap();
        assert!(store.health.failing.lock().unwrap().is_none());
        store.ping().await.unwrap();
    }

    /// With the database files deleted under it, `serve` answered
    /// `success` into the unlinked file, and lost it all at the restart.
    #[tokio::test]
    async fn a_database_file_deleted_or_replaced_refuses_every_write() {
        let path = temp_db("lost");
        let store = SqliteStore::open(&path).unwrap();
        store.insert(push("before", 1), None).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        tokio::time::sleep(FileWatch::EVERY + Duration::from_millis(50)).await;
        let e = store.insert(push("after", 2), None).await.unwrap_err();
        assert!(matches!(e, StoreError::Lost { .. }), "{e}");
        assert!(matches!(store.ping().await, Err(StoreError::Lost { .. })));
        // A new file in its place is not the one opened either.
        std::fs::write(&path, b"").unwrap();
        tokio::time::sleep(FileWatch::EVERY + Duration::from_millis(50)).await;
        assert!(store.insert(push("later", 3), None).await.is_err());

        // Only the write-ahead log deleted: as lost (the pushes it holds
        // are gone at the next restart).
        let path = temp_db("lost-wal");
        let store = SqliteStore::open(&path).unwrap();
        store.insert(push("before", 1), None).await.unwrap();
        tokio::time::sleep(FileWatch::EVERY + Duration::from_millis(50)).await;
        store.insert(push("seen", 2), None).await.unwrap();
        std::fs::remove_file(format!("{}-wal", path.display())).unwrap();
        tokio::time::sleep(FileWatch::EVERY + Duration::from_millis(50)).await;
        let e = store.insert(push("after", 3), None).await.unwrap_err();
        assert!(matches!(e, StoreError::Lost { .. }), "{e}");
    }

    /// Reads moved to a connection of their own, which would have gone on
    /// reading a deleted file's inode while no write noticed it gone.
    #[tokio::test]
    async fn reads_of_a_deleted_database_file_are_refused_at_once() {
        let path = temp_db("lost-read");
        let store = SqliteStore::open(&path).unwrap();
        store.insert(push("before", 1), None).await.unwrap();
        assert_eq!(store.counts().await.unwrap().pending, 1);
        std::fs::remove_file(&path).unwrap();
        // No write since, and no wait for the writer's periodic check.
        let e = store.counts().await.unwrap_err();
        assert!(matches!(e, StoreError::Lost { .. }), "{e}");
        let e = store.list(ListFilter::default()).await.unwrap_err();
        assert!(matches!(e, StoreError::Lost { .. }), "{e}");
    }

    /// The writer's thread runs at the test's own nice value plus
    /// [`WRITER_NICE_ADJUSTMENT`] where the system lets a thread lower it
    /// (root, `CAP_SYS_NICE`, `RLIMIT_NICE`), and at the test's where it
    /// does not.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_writer_runs_above_the_request_path_where_the_system_allows() {
        // Lower, and never below Linux's floor.
        assert_eq!(writer_nice(0), -10);
        assert_eq!(writer_nice(-15), -20);
        let base = rustix::process::getpriority_process(None).unwrap();
        let allowed = std::thread::spawn(move || {
            rustix::process::setpriority_process(None, writer_nice(base)).is_ok()
        })
        .join()
        .unwrap();
        let path = temp_db("writer-priority");
        let store = SqliteStore::open(&path).unwrap();
        // Answered: this store's writer is running.
        store.insert(push("m:1", 1), None).await.unwrap();
        // Every writer thread of the test process (other tests open stores too).
        let mut writers = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
                continue; // the thread ended
            };
            let (comm, rest) = stat.rsplit_once(')').unwrap();
            if comm.ends_with("(wechat-push-sql") {
                // Field 19 of proc_pid_stat(5): the 17th after the name.
                writers.push(
                    rest.split_whitespace()
                        .nth(16)
                        .unwrap()
                        .parse::<i32>()
                        .unwrap(),
                );
            }
        }
        let expected = if allowed { writer_nice(base) } else { base };
        assert!(
            writers.contains(&expected),
            "base {base}, allowed {allowed}, writers {writers:?}"
        );
        if !allowed {
            assert!(writers.iter().all(|&n| n == base), "{writers:?}");
        }
    }

    /// Group commit: the wait is only for batches that follow a commit.
    #[tokio::test]
    async fn a_small_batch_right_after_a_commit_waits_for_more_and_a_lone_one_does_not() {
        let path = temp_db("commit-delay");
        let store = SqliteStore::open(&path).unwrap();
        let delays = || store.writer_stats().unwrap().commit_delays;
        store.insert(push("m:first", 1), None).await.unwrap();
        // Alone: no commit within BUSY_WITHIN before it.
        tokio::time::sleep(BUSY_WITHIN * 50).await;
        store.insert(push("m:alone", 1), None).await.unwrap();
        assert_eq!(delays(), 0);
        // One after another, each sent as the last one's commit answered:
        // the first right after a commit waits, gathers nothing, and the
        // others, still one at a time, do not wait again.
        for i in 0..50 {
            store
                .insert(push(&format!("m:{i}"), 1), None)
                .await
                .unwrap();
        }
        assert_eq!(delays(), 1, "{:?}", store.writer_stats());
        assert_eq!(store.counts().await.unwrap().pending, 52);
    }

    /// Found by the benchmark: with checkpoints beside a busy writer, the
    /// WAL never started over and grew by 50 MB a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_pushes_keep_arriving() {
        let path = temp_db("wal-restart");
        let store = SqliteStore::open(&path).unwrap();
        let body = vec![b'x'; 3000];
        // About 20,000 pages written, five times the restart mark.
        for round in 0..20 {
            let inserts = (0..1000).map(|i| {
                let s = store.clone();
                let mut p = (*push(&format!("m:{round}:{i}"), 1)).clone();
                p.body = body.clone();
                tokio::spawn(async move { s.insert(Arc::new(p), None).await.unwrap() })
            });
            futures_join(inserts).await;
            // A pass every CHECKPOINT_EVERY: a machine that writes the
            // rounds faster than that must still see passes between them.
            tokio::time::sleep(CHECKPOINT_EVERY + Duration::from_millis(20)).await;
        }
        let stats = store.writer_stats().unwrap();
        assert!(stats.wal_restarts >= 1, "{stats:?}");
        assert!(stats.checkpoints >= 1, "{stats:?}");
        // Every restart the writer ran is timed, the ones a reader
        // prevented too: the next batch waited for each.
        let restarting = &stats.wal_restart_time;
        assert!(restarting.count >= stats.wal_restarts, "{stats:?}");
        assert!(restarting.buckets.last() > Some(&0), "{stats:?}");
        assert!(restarting.seconds > 0.0, "{stats:?}");
        // The checkpointer synced the database file after its passes, not
        // only SQLite after a pass that copied the whole WAL (its seconds
        // may round to 0 where fdatasync costs nothing, as on tmpfs).
        let syncs = &stats.database_sync_time;
        assert!(syncs.count > 0, "{stats:?}");
        assert!(syncs.buckets.last() > Some(&0), "{stats:?}");
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let wal = std::fs::metadata(&wal).unwrap().len();
        // Without restarts the WAL would hold all 80 MB written.
        assert!(wal < 40 << 20, "WAL of {} MB", wal >> 20);
        assert_eq!(store.counts().await.unwrap().pending, 20_000);
    }

    #[test]
    fn the_writer_does_not_restart_a_wal_its_checkpointer_left_behind() {
        let path = temp_db("wal-behind");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        let stats = WriterCounters::default();
        stats
            .wal_frames
            .store(WAL_RESTART_AT + 1, Ordering::Relaxed);
        stats.commits.store(10, Ordering::Relaxed);
        // The last pass did not copy every frame: no attempt, not even timed.
        stats.caught_up.store(u64::MAX, Ordering::Relaxed);
        restart_wal(&conn, &stats);
        assert_eq!(stats.restarting.histogram().count, 0);
        // Caught up one batch ago: within the window, so it restarts.
        stats.caught_up.store(9, Ordering::Relaxed);
        restart_wal(&conn, &stats);
        assert_eq!(stats.restarting.histogram().count, 1);
        assert_eq!(stats.restarts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn checkpoint_passes_beside_a_batch_are_counted_from_two_reads() {
        // (phase at the batch's start, at its end) → passes that overlapped it
        for (before, after, passes) in [
            (2, 2, 0), // idle throughout
            (3, 3, 1), // one running throughout
            (2, 3, 1), // one began
            (3, 4, 1), // the running one ended
            (3, 6, 2), // it ended, another began and ended
            (2, 7, 3), // three began, the last still running
            (0, 1, 1),
        ] {
            assert_eq!(passes_between(before, after), passes, "{before} → {after}");
        }
    }

    async fn futures_join<T: Send + 'static>(
        handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_database_of_the_previous_version_is_migrated() {
        let path = temp_db("migrate");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE answers (id INTEGER PRIMARY KEY, push_id INTEGER NOT NULL, \
                 seq INTEGER NOT NULL, msgtype TEXT NOT NULL, body TEXT NOT NULL, \
                 status TEXT NOT NULL, error TEXT, updated_at INTEGER NOT NULL, \
                 UNIQUE (push_id, seq)); \
                 INSERT INTO answers VALUES (1, 5, 0, 'text', '{}', 'sent', NULL, 1);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let old = store.answers(PushId(5)).await.unwrap();
        assert_eq!(old[0].source, "handler");
        let new = store
            .record_answers(
                PushId(5),
                "forward:x".into(),
                vec![("text".into(), "{}".into())],
                Millis(2),
            )
            .await
            .unwrap();
        assert_eq!(new[0].seq, 1);
    }

    /// A push that was working when the database was upgraded: its
    /// worker's claim, from before, must still finish it.
    #[tokio::test]
    async fn a_database_without_fencing_tokens_is_migrated() {
        let path = temp_db("migrate-fence");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE pushes (id INTEGER PRIMARY KEY, appid TEXT NOT NULL, \
                 dedup_key TEXT NOT NULL, kind TEXT NOT NULL, from_user TEXT NOT NULL, \
                 create_time INTEGER NOT NULL, format TEXT NOT NULL, body BLOB NOT NULL, \
                 received_at INTEGER NOT NULL, status TEXT NOT NULL, \
                 attempts INTEGER NOT NULL DEFAULT 0, due_at INTEGER NOT NULL, \
                 last_error TEXT, reply BLOB, finished_at INTEGER); \
                 CREATE TABLE deliveries (id INTEGER PRIMARY KEY, push_id INTEGER NOT NULL, \
                 target TEXT NOT NULL, status TEXT NOT NULL, \
                 attempts INTEGER NOT NULL DEFAULT 0, due_at INTEGER NOT NULL, \
                 responded INTEGER NOT NULL DEFAULT 0, last_error TEXT, \
                 updated_at INTEGER NOT NULL, UNIQUE (push_id, target)); \
                 INSERT INTO pushes VALUES (4, 'wx1', 'k', 'text', 'oU', 1, 'json', x'7b7d', \
                 1, 'working', 2, 99999, NULL, NULL, NULL); \
                 INSERT INTO deliveries VALUES (9, 4, 'http://t/', 'working', 3, 99999, 0, NULL, 1);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let p = &store.get("k".into()).await.unwrap()[0];
        assert_eq!((p.attempts, p.fence), (2, 2));
        let d = &store.deliveries(PushId(4)).await.unwrap()[0];
        assert_eq!((d.attempts, d.fence), (3, 3));
        let done = DeliveryOutcome::Delivered { note: None };
        assert!(store
            .finish_delivery(d.claim(), done, 0, Millis(5))
            .await
            .unwrap());
        assert_eq!(
            store
                .complete(vec![(p.claim(), None)], Millis(5))
                .await
                .unwrap(),
            1
        );
    }

    /// 0.3's unique index on `(appid, dedup_key)` alone put each push's
    /// entry on a random page; a database that has it is re-indexed at open
    /// and still finds the retries of what it stored before.
    #[tokio::test]
    async fn a_database_indexed_by_key_alone_is_reindexed_and_still_finds_retries() {
        let path = temp_db("migrate-identity");
        let first = {
            let store = SqliteStore::open(&path).unwrap();
            store.insert(push("k", 10), None).await.unwrap()
        };
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "DROP INDEX pushes_identity; \
                 CREATE UNIQUE INDEX pushes_dedup ON pushes (appid, dedup_key);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let indexes: Vec<String> = store
            .read(|conn| {
                conn.prepare(
                    "SELECT name FROM sqlite_schema WHERE type = 'index' \
                     AND tbl_name = 'pushes' AND name LIKE 'pushes_%' ORDER BY name",
                )?
                .query_map([], |row| row.get(0))?
                .collect()
            })
            .await
            .unwrap();
        assert_eq!(indexes, ["pushes_dead", "pushes_identity", "pushes_ready"]);
        let Inserted::New(first) = first else {
            panic!("the first push was new")
        };
        match store.insert(push("k", 20), None).await.unwrap() {
            Inserted::Duplicate { id, .. } => assert_eq!(id, first.id),
            other => panic!("a retry stored again: {other:?}"),
        }
        assert!(matches!(
            store.insert(push("k2", 20), None).await.unwrap(),
            Inserted::New(_)
        ));
    }

    /// The retry's lookup is one search of the identity index: a scan of
    /// the pushes would hold every batch for as long as the store is large.
    #[test]
    fn a_retry_is_found_by_the_identity_index_not_a_scan() {
        let path = temp_db("identity-plan");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {FIND_RETRY}"))
            .unwrap()
            .query_map([1, 2, 3], |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH pushes USING INDEX pushes_identity (create_time=? AND appid=? AND dedup_key=?)"]
        );
    }

    #[tokio::test]
    async fn reopening_keeps_everything() {
        let path = temp_db("reopen");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.insert(push("a", 10), None).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let all = store.list(ListFilter::default()).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].body, b"{}");
    }
}
