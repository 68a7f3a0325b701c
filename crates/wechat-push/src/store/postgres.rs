//! The PostgreSQL store: the inbox shared by every instance of the server
//! behind a load balancer (`store.url = "postgres://…"`).
//!
//! - **Durable before `success`**: every statement commits before it
//!   returns, and the store refuses to open a server that has `fsync` or
//!   `synchronous_commit` off (a commit could then be lost by a crash after
//!   the push was acknowledged). PostgreSQL group-commits concurrent
//!   transactions across connections, so pushes arriving together share
//!   WAL flushes without a writer thread of ours.
//! - **De-duplication across instances**: the unique index on
//!   `(appid, dedup_key)` with `INSERT … ON CONFLICT DO NOTHING`; WeChat's
//!   retries landing on two hosts at once store one push.
//! - **Claims**: `FOR UPDATE SKIP LOCKED` in a materialized CTE on the
//!   `pushes_ready` partial index, so instances claiming at once take
//!   different pushes without waiting for each other; every claim
//!   increments the fencing token (`claims`), which every finishing
//!   statement checks (see [`super::Claim`]).
//! - **Migrations** run at start-up under an advisory lock (two instances
//!   starting at once is the normal case), recorded in
//!   `wechat_push_schema`: in one transaction, except indexes added to
//!   `pushes` once it may be large, which are built `CONCURRENTLY` so that
//!   running instances go on inserting.
//! - Bodies are `bytea`: the decrypted push, byte for byte.

use std::sync::Arc;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::arrival::{FirstIdAt, Step};
use super::{
    prefixed, AnswerId, AnswerLog, AnswerRecord, AnswerStatus, Backlog, BoxFuture, CachedToken,
    Claim, Counts, Delivery, DeliveryAttempt, DeliveryClaim, DeliveryId, DeliveryLog,
    DeliveryOutcome, DeliveryStatus, Depth, Inbox, Inserted, KindCount, ListFilter, Millis,
    NewPush, PushId, Retried, Status, StoreError, StoredAs, StoredPush, TokenCache,
};
use crate::protocol::message::{DedupKey, OpenId};
use crate::protocol::Format;

/// Connections per instance for inserts, answers, tokens and reads.
/// With [`RELAXED_POOL_SIZE`], PostgreSQL's default `max_connections`
/// (100) takes four instances.
const POOL_SIZE: usize = 16;

/// Connections per instance with `synchronous_commit = off`, for claims,
/// marking pushes done without a reply, failures, releases and delivery
/// outcomes: a crash may lose the last of these (a fraction of a second of
/// them), which only means a push handled or delivered again after its
/// lease, the at-least-once window the inbox already has. Inserts (what
/// `success` promises), answers (what must not be sent twice), passive
/// replies and tokens commit synchronously, always.
const RELAXED_POOL_SIZE: usize = 8;

/// Advisory locks are the database's, not a schema's: each of this
/// store's is keyed by the schema the store lives in as well, so that
/// stores in two schemas of one database never wait for each other.
/// `$1` names the lock.
const SCHEMA_LOCK_KEY: &str = "hashtextextended(current_schema() || '/' || $1, 0)";

/// How long a batch of inserts may take before its pushes get 503.
const INSERT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Most pushes inserted by one statement.
const MAX_INSERT_BATCH: usize = 256;

/// Insert statements in flight at once, each a batch: while some commit,
/// the next batch gathers.
const INSERT_BATCHES_IN_FLIGHT: usize = 4;

/// Done pushes deleted per prune statement (as the SQLite store's).
const PRUNE_CHUNK: i64 = 200;

/// One version of the schema.
enum Migration {
    /// Statements run in the migration transaction.
    Transaction(&'static str),
    /// An index on a table that may already be large and in use, built
    /// with `CREATE INDEX CONCURRENTLY` outside any transaction: inserts
    /// go on while it reads the table (a plain `CREATE INDEX` would hold
    /// every insert of every instance back until it is done).
    ConcurrentIndex {
        /// The index's name, dropped first when an interrupted build
        /// left it INVALID (`IF NOT EXISTS` would keep it, unused forever).
        name: &'static str,
        /// `CREATE INDEX CONCURRENTLY IF NOT EXISTS …`.
        sql: &'static str,
    },
}

/// The schema, one entry per version, applied in order.
const MIGRATIONS: &[Migration] = &[
    Migration::Transaction(
        "
CREATE TABLE pushes (
    id BIGSERIAL PRIMARY KEY,
    appid TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_user TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    format TEXT NOT NULL,
    body BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- pending: when to try; working: when the lease runs out
    due_at BIGINT NOT NULL,
    last_error TEXT,
    reply BYTEA,
    finished_at BIGINT,
    -- the fencing token: +1 at every claim, never less (see store::Claim)
    claims BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX pushes_dedup ON pushes (appid, dedup_key);
CREATE INDEX pushes_ready ON pushes (due_at) WHERE status IN ('pending', 'working');
CREATE INDEX pushes_key ON pushes (dedup_key text_pattern_ops);
CREATE TABLE health (
    instance TEXT PRIMARY KEY,
    checked_at BIGINT NOT NULL
);
CREATE TABLE tokens (
    appid TEXT PRIMARY KEY,
    token TEXT,
    expires_at BIGINT NOT NULL DEFAULT 0,
    fetched_at BIGINT NOT NULL DEFAULT 0,
    lease_holder TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE answers (
    id BIGSERIAL PRIMARY KEY,
    push_id BIGINT NOT NULL,
    seq INTEGER NOT NULL,
    msgtype TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    updated_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    UNIQUE (push_id, seq)
);
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    push_id BIGINT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at BIGINT NOT NULL,
    responded BOOLEAN NOT NULL DEFAULT FALSE,
    last_error TEXT,
    updated_at BIGINT NOT NULL,
    claims BIGINT NOT NULL DEFAULT 0,
    UNIQUE (push_id, target)
);
CREATE INDEX deliveries_ready ON deliveries (target, due_at)
    WHERE status IN ('pending', 'working');
CREATE INDEX deliveries_dead ON deliveries (target) WHERE status = 'dead';
",
    ),
    Migration::Transaction(
        "
-- What pruning reads: done pushes, oldest first.
CREATE INDEX pushes_done ON pushes (finished_at) WHERE status = 'done';
",
    ),
    Migration::Transaction(
        "
-- Every change of a push's status rewrote this index's entry too, for the
-- one reader of it (`inbox show` by a key's beginning), which may scan.
DROP INDEX IF EXISTS pushes_key;
",
    ),
    // Dead pushes, counted for each /metrics scrape without reading the done ones.
    Migration::ConcurrentIndex {
        name: "pushes_dead",
        sql: "CREATE INDEX CONCURRENTLY IF NOT EXISTS pushes_dead ON pushes (appid) \
              WHERE status = 'dead'",
    },
    Migration::Transaction(
        "
-- Each attempt of a delivery, for the console's push page.
CREATE TABLE delivery_attempts (
    id BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT NOT NULL,
    push_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    took_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX delivery_attempts_push ON delivery_attempts (push_id);
",
    ),
];

const COLUMNS: &str = "id, appid, dedup_key, kind, from_user, create_time, format, body, \
                       received_at, status, attempts, last_error, reply, finished_at, claims";

const DELIVERY_COLUMNS: &str =
    "id, push_id, target, status, attempts, responded, last_error, updated_at, claims";

/// Mark handled pushes done, many per statement: `$1` their ids, `$2` their
/// fences, `$3` the time.
const COMPLETE: &str = "UPDATE pushes SET status = 'done', finished_at = $3, last_error = NULL \
     FROM unnest($1::bigint[], $2::bigint[]) AS held(id, fence) \
     WHERE pushes.id = held.id AND pushes.claims = held.fence AND pushes.status = 'working'";

/// A dedup key `$1`, or the beginning of one up to a `:` (as the SQLite
/// store's `get`).
const KEY_MATCHES: &str = "(dedup_key = $1 OR starts_with(dedup_key, $1 || ':'))";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Database(Arc::new(e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Database(Arc::new(e))
    }
}

/// The PostgreSQL store. Cloning shares the connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Connections with `synchronous_commit = off`, for the writes whose
    /// loss in a crash only means work done again (see [`RELAXED_POOL_SIZE`]).
    relaxed: Pool,
    /// Pushes to insert, taken by the batcher ([`insert_batches`]).
    inserts: mpsc::Sender<PendingInsert>,
    /// This process, in the `health` table: each instance writes its own row.
    instance: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL holds the password: never shown.
        f.debug_struct("PostgresStore")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connect to the database `url` names (`postgres://user:password@host:5432/db`
    /// or `postgresql://…`, with libpq's parameters), check that commits are
    /// durable, and bring the schema up to date.
    ///
    /// TLS: with `sslmode=require` (or libpq's `verify-ca` and
    /// `verify-full`, which mean the same here) every connection is TLS
    /// (rustls), and the server's certificate is verified, always: against
    /// the CA certificates of the PEM file `sslrootcert=PATH` names, else
    /// against the Web PKI's roots (Mozilla's, as `webpki-roots` carries
    /// them). A managed database with a CA of its own (Amazon RDS, Cloud SQL,
    /// …) needs its CA bundle as `sslrootcert`. Without `sslmode` (or with
    /// `disable` or `prefer`) connections are plain.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a URL that cannot be used (or an
    /// `sslrootcert` file that cannot be read);
    /// [`StoreError::NotDurable`] when the server has `fsync` or
    /// `synchronous_commit` off; [`StoreError::Database`] when the
    /// database does not answer or a migration fails.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (url, root_cert) = tls_parameters(url)?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                StoreError::Config(format!("store.url is not a PostgreSQL URL: {e}"))
            })?;
        // A database that stops answering, rather than refusing, must not
        // hold requests forever: bounded connects, keepalives on idle
        // connections, and statements cut off server-side (the URL's own
        // settings win).
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.keepalives_idle(std::time::Duration::from_secs(15));
        let mut options = config.get_options().unwrap_or_default().to_owned();
        if !options.contains("statement_timeout") {
            options.push_str(" -c statement_timeout=10000");
        }
        // Every statement is planned for the parameters it runs with. The
        // default caches a generic plan after five runs, made for the table
        // as it was then: prepared on a new, empty table, the batched
        // `complete` kept a plan that read every entry of the ready index
        // (a hash join) instead of one primary-key lookup per push, so each
        // batch cost more as the table grew, until an ANALYZE (never, with
        // autovacuum off). Planning these short statements costs tens of
        // microseconds, once per batch.
        if !options.contains("plan_cache_mode") {
            options.push_str(" -c plan_cache_mode=force_custom_plan");
        }
        config.options(options.trim());
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => Some(tls_connector(root_cert.as_deref())?),
            _ if root_cert.is_some() => {
                return Err(StoreError::Config(
                    "store.url has sslrootcert but not sslmode=require: add sslmode=require \
                     (the certificate is checked only over TLS)"
                        .into(),
                ))
            }
            _ => None,
        };
        let mut relaxed_config = config.clone();
        relaxed_config.options(
            format!(
                "{} -c synchronous_commit=off",
                config.get_options().unwrap_or_default()
            )
            .trim(),
        );
        let relaxed = pool_of(relaxed_config, RELAXED_POOL_SIZE, tls.clone())?;
        let pool = pool_of(config, POOL_SIZE, tls)?;
        let mut random = [0u8; 6];
        let _ = getrandom::fill(&mut random);
        let instance = format!(
            "{}-{}",
            std::process::id(),
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let (inserts, queue) = mpsc::channel(MAX_INSERT_BATCH * 4);
        let store = PostgresStore {
            pool,
            relaxed,
            inserts,
            instance,
        };
        let mut client = store.pool.get().await?;
        for setting in ["fsync", "synchronous_commit"] {
            let value: String = client
                .query_one(&format!("SHOW {setting}"), &[])
                .await?
                .get(0);
            if value == "off" {
                return Err(StoreError::NotDurable {
                    setting: setting.to_owned(),
                });
            }
        }
        migrate(&mut client).await?;
        tokio::spawn(insert_batches(store.pool.clone(), queue));
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        execute_on(&self.pool, sql, params).await
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        query_on(&self.pool, sql, params).await
    }

    /// [`Self::execute`] for a write whose loss in a crash costs only
    /// work done again (see [`RELAXED_POOL_SIZE`]).
    async fn execute_relaxed(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        execute_on(&self.relaxed, sql, params).await
    }

    /// [`Self::query`] for such a write.
    async fn query_relaxed(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        query_on(&self.relaxed, sql, params).await
    }
}

/// `url` for the driver, and the `sslrootcert` file it named: the driver
/// knows neither `sslrootcert` nor libpq's `verify-ca` and `verify-full`
/// (which become `require`: the certificate is verified whatever the mode).
fn tls_parameters(url: &str) -> Result<(String, Option<std::path::PathBuf>), StoreError> {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        // Not a URL the driver reads either: it says why.
        return Ok((url.to_owned(), None));
    };
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let ours = |(k, v): &(String, String)| {
        k == "sslrootcert" || (k == "sslmode" && (v == "verify-ca" || v == "verify-full"))
    };
    if !pairs.iter().any(ours) {
        // Left exactly as written.
        return Ok((url.to_owned(), None));
    }
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "sslrootcert" => root_cert = Some(std::path::PathBuf::from(value)),
            "sslmode" if value == "verify-ca" || value == "verify-full" => {
                kept.push((key, "require".to_owned()));
            }
            _ => kept.push((key, value)),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.to_string(), root_cert))
}

/// rustls for the database, trusting the CA certificates of `root_cert`
/// (PEM), else the Web PKI's roots.
fn tls_connector(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let unreadable = |e: &dyn std::fmt::Display| {
                StoreError::Config(format!("sslrootcert {}: {e}", path.display()))
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| unreadable(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unreadable(&e))?;
            if certs.is_empty() {
                return Err(unreadable(&"no PEM certificate in it"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| unreadable(&e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A pool of at most `size` connections made with `config`, whose waits,
/// connects and recycles give up after 5 s.
fn pool_of(
    config: tokio_postgres::Config,
    size: usize,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
) -> Result<Pool, StoreError> {
    let recycling = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Some(tls) => Manager::from_config(config, tls, recycling),
        None => Manager::from_config(config, NoTls, recycling),
    };
    let limit = Some(std::time::Duration::from_secs(5));
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(limit)
        .create_timeout(limit)
        .recycle_timeout(limit)
        .build()
        .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))
}

/// One statement on a connection of `pool`, prepared once per connection.
async fn execute_on(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql).await?;
    Ok(client.execute(&stmt, params).await?)
}

/// As [`execute_on`], returning the rows.
async fn query_on(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(sql).await?;
    Ok(client.query(&stmt, params).await?)
}

/// A push waiting for its batch.
struct PendingInsert {
    push: Arc<NewPush>,
    stored_as: StoredAs,
    done: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// Insert pushes in batches, one multi-row statement each, until the store
/// is dropped: pushes that arrive together share a statement, a round trip
/// and a commit (PostgreSQL's own group commit shares WAL flushes across
/// the batches in flight).
async fn insert_batches(pool: Pool, mut queue: mpsc::Receiver<PendingInsert>) {
    let in_flight = Arc::new(Semaphore::new(INSERT_BATCHES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued while waiting for a permit joins this batch.
        let mut batch = vec![first];
        while batch.len() < MAX_INSERT_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let outcome = insert_batch(&pool, &batch).await;
            for (pending, result) in batch.into_iter().zip(outcome) {
                let _ = pending.done.send(result);
            }
            drop(permit);
        });
    }
}

/// One batch: its results in its order (every one the same error if the
/// statement failed). Of pushes sharing `(appid, dedup_key)`, in the batch
/// or with a stored one, only the first in the batch can be new.
async fn insert_batch(pool: &Pool, batch: &[PendingInsert]) -> Vec<Result<Inserted, StoreError>> {
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        // WeChat stops waiting after 5 s: a batch that takes longer (a
        // database that stopped answering) gets 503, and WeChat's retry
        // finds the push if it was stored after all.
        let attempt = tokio::time::timeout(INSERT_DEADLINE, try_insert_batch(pool, batch)).await;
        match attempt {
            Err(_) => {
                break Err(StoreError::Database(Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the database did not take the pushes within {INSERT_DEADLINE:?}"),
                ))))
            }
            // Inserts are ordered by key, so batches cannot deadlock each
            // other; a deadlock with something else is tried again.
            Ok(Err(e)) if tries < 3 && is_deadlock(&e) => continue,
            Ok(other) => break other,
        }
    };
    match outcome {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
    }
}

fn is_deadlock(e: &StoreError) -> bool {
    let StoreError::Database(cause) = e else {
        return false;
    };
    cause
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| {
            *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// Text for a `text` column: PostgreSQL's `text` cannot hold a NUL, which
/// an error's words (a target's answer, read lossily) may carry. A NUL in
/// an identifier is refused when the push is typed; in words it becomes
/// U+FFFD, so that recording the outcome never fails for it.
fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

async fn try_insert_batch(
    pool: &Pool,
    batch: &[PendingInsert],
) -> Result<Vec<Inserted>, StoreError> {
    let n = batch.len();
    let mut appid = Vec::with_capacity(n);
    let mut dedup_key = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut from_user = Vec::with_capacity(n);
    let mut create_time = Vec::with_capacity(n);
    let mut format = Vec::with_capacity(n);
    let mut body: Vec<&[u8]> = Vec::with_capacity(n);
    let mut received_at = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut attempts: Vec<i32> = Vec::with_capacity(n);
    let mut due_at = Vec::with_capacity(n);
    let mut finished_at = Vec::with_capacity(n);
    // Copies of one push in one batch (WeChat's retries arriving together):
    // only the first goes into the statement, so that the row stored is the
    // one its request asked for (claimed or not); the others are its
    // duplicates, found after.
    let mut seen = std::collections::HashSet::new();
    let mut first = Vec::with_capacity(n);
    for p in batch {
        let is_first = seen.insert((p.push.appid.as_str(), p.push.dedup_key.as_str()));
        first.push(is_first);
        if !is_first {
            continue;
        }
        let push = &p.push;
        let (s, due, a, finished) = p.stored_as.row(push.received_at_ms);
        appid.push(push.appid.as_str());
        dedup_key.push(push.dedup_key.as_str());
        kind.push(push.kind.as_str());
        from_user.push(push.from_user.as_str());
        create_time.push(push.create_time);
        format.push(push.format.to_string());
        body.push(push.body.as_slice());
        received_at.push(push.received_at_ms);
        status.push(s.as_str());
        attempts.push(a);
        due_at.push(due);
        finished_at.push(finished);
    }
    let client = pool.get().await?;
    // A claimed insert is the push's first claim: its token is its attempts.
    let stmt = client
        .prepare_cached(
            "INSERT INTO pushes (appid, dedup_key, kind, from_user, create_time, format, body, \
               received_at, status, attempts, due_at, claims, finished_at) \
             SELECT appid, dedup_key, kind, from_user, create_time, format, body, received_at, \
               status, attempts, due_at, attempts, finished_at \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
               $6::text[], $7::bytea[], $8::bigint[], $9::text[], $10::int[], $11::bigint[], \
               $12::bigint[]) \
               AS t(appid, dedup_key, kind, from_user, create_time, format, body, received_at, \
                 status, attempts, due_at, finished_at) \
             ORDER BY appid, dedup_key \
             ON CONFLICT (appid, dedup_key) DO NOTHING \
             RETURNING id, appid, dedup_key, claims",
        )
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &appid,
                &dedup_key,
                &kind,
                &from_user,
                &create_time,
                &format,
                &body,
                &received_at,
                &status,
                &attempts,
                &due_at,
                &finished_at,
            ],
        )
        .await?;
    let mut new: std::collections::HashMap<(String, String), Claim> = rows
        .iter()
        .map(|r| {
            (
                (r.get::<_, String>(1), r.get::<_, String>(2)),
                Claim {
                    id: PushId(r.get(0)),
                    fence: r.get(3),
                },
            )
        })
        .collect();
    let mut results: Vec<Option<Inserted>> = batch
        .iter()
        .zip(&first)
        .map(|(p, &is_first)| {
            if !is_first {
                return None;
            }
            new.remove(&(p.push.appid.clone(), p.push.dedup_key.as_str().to_owned()))
                .map(Inserted::New)
        })
        .collect();
    if results.iter().all(Option::is_some) {
        return Ok(results.into_iter().flatten().collect());
    }
    // Retries: the stored push each one repeats. Conflicting rows are
    // committed (an insert that conflicts with an uncommitted one waits
    // for it), so this sees them.
    let (dup_appid, dup_key): (Vec<&str>, Vec<&str>) = batch
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_none())
        .map(|(p, _)| (p.push.appid.as_str(), p.push.dedup_key.as_str()))
        .unzip();
    let stmt = client
        .prepare_cached(
            "SELECT p.id, p.status, p.reply, p.appid, p.dedup_key FROM pushes p \
             JOIN unnest($1::text[], $2::text[]) AS k(appid, dedup_key) \
               ON p.appid = k.appid AND p.dedup_key = k.dedup_key",
        )
        .await?;
    let stored: std::collections::HashMap<(String, String), Inserted> = client
        .query(&stmt, &[&dup_appid, &dup_key])
        .await?
        .iter()
        .map(|r| {
            let status: String = r.get(1);
            (
                (r.get::<_, String>(3), r.get::<_, String>(4)),
                Inserted::Duplicate {
                    id: PushId(r.get(0)),
                    status: Status::parse(&status).unwrap_or(Status::Pending),
                    reply: r.get(2),
                },
            )
        })
        .collect();
    for (p, r) in batch.iter().zip(results.iter_mut()) {
        if r.is_none() {
            let key = (p.push.appid.clone(), p.push.dedup_key.as_str().to_owned());
            *r = Some(stored.get(&key).cloned().ok_or_else(|| {
                StoreError::Database(Arc::new(std::io::Error::other(format!(
                    "push {} of {} neither inserted nor found",
                    p.push.dedup_key, p.push.appid
                ))))
            })?);
        }
    }
    Ok(results.into_iter().flatten().collect())
}

/// Apply the migrations this database lacks, under an advisory lock: an
/// instance starting while another migrates waits, then finds the schema
/// current. Consecutive [`Migration::Transaction`]s are applied in one
/// transaction; each [`Migration::ConcurrentIndex`] on its own, outside any.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    while let Some((version, name, sql)) = migrate_in_transaction(client).await? {
        build_index_concurrently(client, version, name, sql).await?;
    }
    Ok(())
}

/// How long a waiting instance sleeps between tries for the schema lock.
const SCHEMA_LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Say, at the first try and every 30 s after, that another instance is
/// migrating: an index built concurrently on a large table takes minutes,
/// and a silent start would look hung.
fn waiting_for_the_schema_lock(tries: &mut u32) {
    if *tries % 300 == 0 {
        tracing::info!(
            waited_s = *tries / 10,
            "PostgreSQL store: another instance is migrating the schema; waiting for it"
        );
    }
    *tries += 1;
}

/// The version the schema is at (0: none yet).
async fn schema_version(client: &impl GenericClient) -> Result<i32, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS wechat_push_schema (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
    Ok(client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM wechat_push_schema",
            &[],
        )
        .await?
        .get(0))
}

/// Apply the transactional migrations from the schema's version on, in one
/// transaction, up to the first concurrent index not built yet, which is
/// returned (with its version) for [`build_index_concurrently`].
async fn migrate_in_transaction(
    client: &mut deadpool_postgres::Object,
) -> Result<Option<(i32, &'static str, &'static str)>, StoreError> {
    // The lock is tried, not waited for: a session waiting for a lock
    // holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the session
    // that has the lock waits for every older snapshot: each would wait
    // for the other.
    let mut waited = 0;
    let tx = loop {
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one(
                &format!("SELECT pg_try_advisory_xact_lock({SCHEMA_LOCK_KEY})"),
                &[&"migrate"],
            )
            .await?
            .get(0);
        if locked {
            break tx;
        }
        tx.rollback().await?;
        waiting_for_the_schema_lock(&mut waited);
        tokio::time::sleep(SCHEMA_LOCK_RETRY).await;
    };
    // A migration may rewrite a large table: no statement timeout for it.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    let current = schema_version(&tx).await?;
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if current > known {
        // A newer build migrated it (a rolling deploy, or a rollback):
        // its migrations only add, so this build goes on, and says so.
        tracing::warn!(
            schema = current,
            known,
            "PostgreSQL store: the schema is newer than this build knows"
        );
    }
    let mut concurrent = None;
    for (i, migration) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        if version <= current {
            continue;
        }
        match migration {
            Migration::Transaction(sql) => {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO wechat_push_schema (version) VALUES ($1)",
                    &[&version],
                )
                .await?;
                tracing::info!(version, "PostgreSQL store: schema migrated");
            }
            Migration::ConcurrentIndex { name, sql } => {
                concurrent = Some((version, *name, *sql));
                break;
            }
        }
    }
    tx.commit().await?;
    Ok(concurrent)
}

/// Build migration `version`'s index concurrently, under the schema lock
/// held by the session, and record the version.
async fn build_index_concurrently(
    client: &mut deadpool_postgres::Object,
    version: i32,
    name: &str,
    sql: &str,
) -> Result<(), StoreError> {
    let mut waited = 0;
    loop {
        let locked: bool = client
            .query_one(
                &format!("SELECT pg_try_advisory_lock({SCHEMA_LOCK_KEY})"),
                &[&"migrate"],
            )
            .await?
            .get(0);
        if locked {
            break;
        }
        waiting_for_the_schema_lock(&mut waited);
        tokio::time::sleep(SCHEMA_LOCK_RETRY).await;
    }
    let built = async {
        // Session settings, reset below: this connection goes back to the pool.
        client.batch_execute("SET statement_timeout = 0").await?;
        if schema_version(&*client).await? >= version {
            return Ok(());
        }
        tracing::info!(
            version,
            index = name,
            "PostgreSQL store: building an index concurrently (pushes go on being stored)"
        );
        // A build interrupted (a killed instance, a timeout) leaves the
        // index behind, INVALID: never used, and kept by `IF NOT EXISTS`.
        let invalid: Option<bool> = client
            .query_opt(
                "SELECT NOT i.indisvalid FROM pg_index i \
                 WHERE i.indexrelid = to_regclass(current_schema() || '.' || $1)",
                &[&name],
            )
            .await?
            .map(|row| row.get(0));
        if invalid == Some(true) {
            client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                .await?;
        }
        client.batch_execute(sql).await?;
        client
            .execute(
                "INSERT INTO wechat_push_schema (version) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&version],
            )
            .await?;
        tracing::info!(version, "PostgreSQL store: schema migrated");
        Ok::<_, StoreError>(())
    }
    .await;
    let reset = client
        .batch_execute(&format!(
            "RESET statement_timeout; SELECT pg_advisory_unlock({})",
            SCHEMA_LOCK_KEY.replace("$1", "'migrate'")
        ))
        .await;
    built?;
    reset?;
    Ok(())
}

fn format_of(s: &str) -> Format {
    if s == "json" {
        Format::Json
    } else {
        Format::Xml
    }
}

fn read_push(row: &Row) -> StoredPush {
    read_push_at(row, 0)
}

fn read_delivery(row: &Row) -> Delivery {
    let status: String = row.get(3);
    let attempts: i32 = row.get(4);
    Delivery {
        id: DeliveryId(row.get(0)),
        push_id: PushId(row.get(1)),
        target: row.get(2),
        status: DeliveryStatus::parse(&status),
        attempts: u32::try_from(attempts).unwrap_or(0),
        responded: row.get(5),
        last_error: row.get(6),
        updated_at: row.get(7),
        fence: row.get(8),
    }
}

fn read_answer(row: &Row, push: PushId) -> AnswerRecord {
    let status: String = row.get(4);
    let seq: i32 = row.get(1);
    AnswerRecord {
        id: AnswerId(row.get(0)),
        push_id: push,
        source: row.get(7),
        seq: u32::try_from(seq).unwrap_or(0),
        msgtype: row.get(2),
        body: row.get(3),
        status: match status.as_str() {
            "sent" => AnswerStatus::Sent,
            "failed" => AnswerStatus::Failed,
            "uncertain" => AnswerStatus::Uncertain,
            _ => AnswerStatus::Pending,
        },
        error: row.get(5),
        updated_at: row.get(6),
    }
}

const ANSWER_COLUMNS: &str = "id, seq, msgtype, body, status, error, updated_at, source";

fn limit_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Queue `push` for the next insert batch and wait for its outcome.
    async fn queue_insert(
        &self,
        push: Arc<NewPush>,
        stored_as: StoredAs,
    ) -> Result<Inserted, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inserts
            .send(PendingInsert {
                push,
                stored_as,
                done: tx,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

impl Inbox for PostgresStore {
    fn insert(
        &self,
        push: Arc<NewPush>,
        claim_until: Option<Millis>,
    ) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        Box::pin(self.queue_insert(push, StoredAs::claimed_until(claim_until)))
    }

    fn insert_handled(&self, push: Arc<NewPush>) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        Box::pin(self.queue_insert(push, StoredAs::Handled))
    }

    fn claim(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "WITH due AS MATERIALIZED (SELECT id FROM pushes \
                   WHERE status IN ('pending', 'working') AND due_at <= $1 \
                   ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE pushes SET status = 'working', attempts = pushes.attempts + 1, \
                   claims = pushes.claims + 1, due_at = $2 \
                 FROM due WHERE pushes.id = due.id \
                 RETURNING {}",
                prefixed("pushes", COLUMNS)
            );
            let rows = self
                .query_relaxed(&sql, &[&now, &lease_until, &limit_of(limit)])
                .await?;
            let mut claimed: Vec<StoredPush> = rows.iter().map(read_push).collect();
            claimed.sort_by_key(|p| p.id);
            Ok(claimed)
        })
    }

    fn complete(
        &self,
        done: Vec<(Claim, Option<Vec<u8>>)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut finished = 0;
            let (ids, fences): (Vec<i64>, Vec<i64>) = done
                .iter()
                .filter(|(_, r)| r.is_none())
                .map(|(c, _)| (c.id.0, c.fence))
                .unzip();
            if !ids.is_empty() {
                finished += self
                    .execute_relaxed(COMPLETE, &[&ids, &fences, &now])
                    .await?;
            }
            for (claim, reply) in done.into_iter().filter(|(_, r)| r.is_some()) {
                finished += self
                    .execute(
                        "UPDATE pushes SET status = 'done', reply = $3, finished_at = $4, \
                           last_error = NULL \
                         WHERE id = $1 AND claims = $2 AND status = 'working'",
                        &[&claim.id.0, &claim.fence, &reply, &now],
                    )
                    .await?;
            }
            Ok(usize::try_from(finished).unwrap_or(usize::MAX))
        })
    }

    fn forget_reply(&self, claim: Claim) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.execute(
                "UPDATE pushes SET reply = NULL WHERE id = $1 AND claims = $2",
                &[&claim.id.0, &claim.fence],
            )
            .await?;
            Ok(())
        })
    }

    fn fail(
        &self,
        claim: Claim,
        error: String,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let changed = match retry_at {
                Some(at) => {
                    self.execute_relaxed(
                        "UPDATE pushes SET status = 'pending', due_at = $3, last_error = $4 \
                         WHERE id = $1 AND claims = $2 AND status = 'working'",
                        &[&claim.id.0, &claim.fence, &at, &pg_text(&error)],
                    )
                    .await?
                }
                None => {
                    self.execute_relaxed(
                        "UPDATE pushes SET status = 'dead', finished_at = $3, last_error = $4 \
                         WHERE id = $1 AND claims = $2 AND status = 'working'",
                        &[&claim.id.0, &claim.fence, &now, &pg_text(&error)],
                    )
                    .await?
                }
            };
            Ok(changed == 1)
        })
    }

    fn release(&self, claims: Vec<Claim>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (ids, fences): (Vec<i64>, Vec<i64>) =
                claims.iter().map(|c| (c.id.0, c.fence)).unzip();
            self.execute_relaxed(
                "UPDATE pushes SET status = 'pending', due_at = 0, \
                   attempts = GREATEST(pushes.attempts - 1, 0) \
                 FROM unnest($1::bigint[], $2::bigint[]) AS held(id, fence) \
                 WHERE pushes.id = held.id AND pushes.claims = held.fence \
                   AND pushes.status = 'working'",
                &[&ids, &fences],
            )
            .await?;
            Ok(())
        })
    }

    fn list(&self, filter: ListFilter) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        Box::pin(async move {
            // A time span becomes a span of ids: read by the primary key,
            // newest first, never every push kept.
            let client = self.client().await?;
            let mut low = match filter.since {
                Some(since) => first_id_at(&client, since).await?,
                None => 0,
            };
            if let Some(after) = filter.after {
                low = low.max(after.0.saturating_add(1));
            }
            let mut high = match filter.until {
                Some(until) => first_id_at(&client, until).await?,
                None => i64::MAX,
            };
            if let Some(before) = filter.before {
                high = high.min(before.0);
            }
            let sql = format!(
                "SELECT {COLUMNS} FROM pushes \
                 WHERE id >= $1 AND id < $2 \
                   AND ($3::text IS NULL OR appid = $3) AND ($4::text IS NULL OR status = $4) \
                   AND ($5::text IS NULL OR kind = $5) AND ($6::text IS NULL OR from_user = $6) \
                   AND ($7::bigint IS NULL OR received_at >= $7) \
                   AND ($8::bigint IS NULL OR received_at < $8) \
                   AND ($9::bytea IS NULL OR position($9::bytea IN body) > 0) \
                 ORDER BY id DESC LIMIT $10"
            );
            let limit = if filter.limit == 0 {
                i64::MAX
            } else {
                limit_of(filter.limit)
            };
            let status = filter.status.map(Status::as_str);
            let text = filter.text.map(String::into_bytes);
            let rows = client
                .query(
                    &sql,
                    &[
                        &low,
                        &high,
                        &filter.appid,
                        &status,
                        &filter.kind,
                        &filter.from,
                        &filter.since,
                        &filter.until,
                        &text,
                        &limit,
                    ],
                )
                .await?;
            Ok(rows.iter().map(read_push).collect())
        })
    }

    fn push(&self, id: PushId) -> BoxFuture<'_, Result<Option<StoredPush>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    &format!("SELECT {COLUMNS} FROM pushes WHERE id = $1"),
                    &[&id.0],
                )
                .await?;
            Ok(rows.first().map(read_push))
        })
    }

    fn retry_dead(
        &self,
        appid: Option<String>,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<Retried, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let pushes = tx
                .execute(
                    "UPDATE pushes SET status = 'pending', due_at = 0, attempts = 0, \
                       finished_at = NULL \
                     WHERE status = 'dead' AND ($1::text IS NULL OR appid = $1)",
                    &[&appid],
                )
                .await?;
            let deliveries = tx
                .execute(
                    "UPDATE deliveries SET status = 'pending', due_at = 0, attempts = 0 \
                     WHERE status = 'dead' AND ($1::text IS NULL OR EXISTS \
                       (SELECT 1 FROM pushes p WHERE p.id = deliveries.push_id AND p.appid = $1)) \
                       AND ($2::text[] IS NULL OR target = ANY($2))",
                    &[&appid, &targets],
                )
                .await?;
            tx.commit().await?;
            Ok(Retried {
                pushes: usize::try_from(pushes).unwrap_or(usize::MAX),
                deliveries: usize::try_from(deliveries).unwrap_or(usize::MAX),
            })
        })
    }

    fn arrivals(
        &self,
        since: Millis,
        bucket: i64,
    ) -> BoxFuture<'_, Result<Vec<(Millis, u64)>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let low = first_id_at(&client, since).await?;
            let bucket = bucket.max(1);
            let rows = client
                .query(
                    "SELECT received_at / $3 * $3 AS span, COUNT(*) FROM pushes \
                     WHERE id >= $1 AND received_at >= $2 GROUP BY span ORDER BY span",
                    &[&low, &since, &bucket],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| {
                    (
                        Millis(row.get(0)),
                        u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                    )
                })
                .collect())
        })
    }

    fn kinds_since(&self, since: Millis) -> BoxFuture<'_, Result<Vec<KindCount>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let low = first_id_at(&client, since).await?;
            let rows = client
                .query(
                    "SELECT appid, kind, COUNT(*) FROM pushes \
                     WHERE id >= $1 AND received_at >= $2 \
                     GROUP BY appid, kind ORDER BY appid, kind",
                    &[&low, &since],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| KindCount {
                    appid: row.get(0),
                    kind: row.get(1),
                    count: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                })
                .collect())
        })
    }

    fn get(&self, dedup_key: String) -> BoxFuture<'_, Result<Vec<StoredPush>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM pushes WHERE {KEY_MATCHES} ORDER BY id");
            let rows = self.query(&sql, &[&dedup_key]).await?;
            Ok(rows.iter().map(read_push).collect())
        })
    }

    fn retry(
        &self,
        dedup_key: String,
        appid: Option<String>,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<Retried, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let pushes = tx
                .execute(
                    &format!(
                        "UPDATE pushes SET status = 'pending', due_at = 0, attempts = 0, \
                           finished_at = NULL \
                         WHERE {KEY_MATCHES} AND ($2::text IS NULL OR appid = $2) \
                           AND status = 'dead'"
                    ),
                    &[&dedup_key, &appid],
                )
                .await?;
            let deliveries = tx
                .execute(
                    &format!(
                        "UPDATE deliveries SET status = 'pending', due_at = 0, attempts = 0 \
                         WHERE status = 'dead' AND push_id IN (SELECT id FROM pushes \
                           WHERE {KEY_MATCHES} AND ($2::text IS NULL OR appid = $2)) \
                           AND ($3::text[] IS NULL OR target = ANY($3))"
                    ),
                    &[&dedup_key, &appid, &targets],
                )
                .await?;
            tx.commit().await?;
            Ok(Retried {
                pushes: usize::try_from(pushes).unwrap_or(usize::MAX),
                deliveries: usize::try_from(deliveries).unwrap_or(usize::MAX),
            })
        })
    }

    fn prune(&self, before: Millis) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut total = 0;
            let mut client = self.client().await?;
            loop {
                let tx = client.transaction().await?;
                // One instance prunes at a time; the others find the lock
                // taken and leave it to that one.
                let mine: bool = tx
                    .query_one(
                        &format!("SELECT pg_try_advisory_xact_lock({SCHEMA_LOCK_KEY})"),
                        &[&"prune"],
                    )
                    .await?
                    .get(0);
                if !mine {
                    return Ok(total);
                }
                // Data-modifying CTEs share one snapshot: the answers and
                // deliveries deleted are those of the pushes deleted.
                let rows = tx
                    .query(
                        "WITH gone AS MATERIALIZED (SELECT id FROM pushes \
                           WHERE status = 'done' AND finished_at < $1 \
                           AND NOT EXISTS (SELECT 1 FROM deliveries d \
                             WHERE d.push_id = pushes.id AND d.status <> 'delivered') \
                           ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
                         a AS (DELETE FROM answers WHERE push_id IN (SELECT id FROM gone)), \
                         d AS (DELETE FROM deliveries WHERE push_id IN (SELECT id FROM gone)), \
                         t AS (DELETE FROM delivery_attempts WHERE push_id IN (SELECT id FROM gone)) \
                         DELETE FROM pushes WHERE id IN (SELECT id FROM gone) RETURNING id",
                        &[&before, &PRUNE_CHUNK],
                    )
                    .await?;
                tx.commit().await?;
                total += rows.len();
                if (rows.len() as i64) < PRUNE_CHUNK {
                    return Ok(total);
                }
            }
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query("SELECT status, COUNT(*) FROM pushes GROUP BY status", &[])
                .await?;
            let mut counts = Counts::default();
            for row in rows {
                let status: String = row.get(0);
                let n: i64 = row.get(1);
                counts.set(&status, u64::try_from(n).unwrap_or(0));
            }
            Ok(counts)
        })
    }

    fn depth(&self) -> BoxFuture<'_, Result<Depth, StoreError>> {
        Box::pin(async move {
            // Each term matches a partial index's WHERE (pushes_ready, pushes_dead).
            let rows = self
                .query(
                    "SELECT status, COUNT(*) FROM pushes WHERE status IN ('pending', 'working') GROUP BY status \
                     UNION ALL \
                     SELECT 'dead', COUNT(*) FROM pushes WHERE status = 'dead'",
                    &[],
                )
                .await?;
            let mut counts = Counts::default();
            for row in rows {
                counts.set(
                    row.get::<_, &str>(0),
                    u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                );
            }
            Ok(Depth::from(counts))
        })
    }

    fn depth_by_app(&self) -> BoxFuture<'_, Result<Vec<(String, Depth)>, StoreError>> {
        Box::pin(async move {
            // Each term matches a partial index's WHERE (pushes_ready, pushes_dead).
            let rows = self
                .query(
                    "SELECT appid, status, COUNT(*) FROM pushes \
                       WHERE status IN ('pending', 'working') GROUP BY appid, status \
                     UNION ALL \
                     SELECT appid, 'dead', COUNT(*) FROM pushes WHERE status = 'dead' GROUP BY appid",
                    &[],
                )
                .await?;
            Ok(super::depth_by_app(rows.iter().map(|row| {
                (
                    row.get::<_, String>(0),
                    row.get::<_, String>(1),
                    u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                )
            })))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // A write, not a read: a database that takes reads but no
            // commits (a full disk, a read-only standby) is not healthy.
            self.execute(
                "INSERT INTO health (instance, checked_at) VALUES ($1, $2) \
                 ON CONFLICT (instance) DO UPDATE SET checked_at = $2",
                &[&self.instance, &crate::clock::now_ms()],
            )
            .await?;
            Ok(())
        })
    }
}

impl TokenCache for PostgresStore {
    fn token(&self, appid: String) -> BoxFuture<'_, Result<Option<CachedToken>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT token, expires_at, fetched_at FROM tokens \
                     WHERE appid = $1 AND token IS NOT NULL",
                    &[&appid],
                )
                .await?;
            Ok(rows.first().map(|row| CachedToken {
                appid: appid.clone(),
                token: row.get(0),
                expires_at: row.get(1),
                fetched_at: row.get(2),
            }))
        })
    }

    fn lease_token_refresh(
        &self,
        appid: String,
        holder: String,
        until: Millis,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let taken = self
                .execute(
                    "INSERT INTO tokens (appid, lease_holder, lease_until) VALUES ($1, $2, $3) \
                     ON CONFLICT (appid) DO UPDATE SET lease_holder = $2, lease_until = $3 \
                     WHERE tokens.lease_holder IS NULL OR tokens.lease_holder = $2 \
                        OR tokens.lease_until <= $4",
                    &[&appid, &holder, &until, &now],
                )
                .await?;
            Ok(taken == 1)
        })
    }

    fn put_token(
        &self,
        token: CachedToken,
        holder: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.execute(
                "INSERT INTO tokens (appid, token, expires_at, fetched_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (appid) DO UPDATE SET token = $2, expires_at = $3, fetched_at = $4, \
                   lease_holder = CASE WHEN tokens.lease_holder = $5 THEN NULL \
                     ELSE tokens.lease_holder END, \
                   lease_until = CASE WHEN tokens.lease_holder = $5 THEN 0 \
                     ELSE tokens.lease_until END",
                &[
                    &token.appid,
                    &token.token,
                    &token.expires_at,
                    &token.fetched_at,
                    &holder,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn invalidate_token(
        &self,
        appid: String,
        token: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let n = self
                .execute(
                    "UPDATE tokens SET token = NULL, expires_at = 0 WHERE appid = $1 AND token = $2",
                    &[&appid, &token],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn invalidate_token_value(
        &self,
        prefix: String,
        token: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let n = self
                .execute(
                    "UPDATE tokens SET token = NULL, expires_at = 0 \
                     WHERE starts_with(appid, $1) AND token = $2",
                    &[&prefix, &token],
                )
                .await?;
            Ok(n > 0)
        })
    }
}

impl AnswerLog for PostgresStore {
    fn record_answers(
        &self,
        push: PushId,
        source: String,
        answers: Vec<(String, String)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<Vec<AnswerRecord>, StoreError>> {
        Box::pin(async move {
            let select = format!(
                "SELECT {ANSWER_COLUMNS} FROM answers WHERE push_id = $1 AND source = $2 \
                 ORDER BY seq"
            );
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // One recorder per push at a time, across instances: the first
            // source's answers are numbered before the next looks.
            tx.execute(
                &format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})"),
                &[&format!("answers/{}", push.0)],
            )
            .await?;
            let existing = tx.query(&select, &[&push.0, &source]).await?;
            if !existing.is_empty() {
                tx.commit().await?;
                return Ok(existing.iter().map(|r| read_answer(r, push)).collect());
            }
            let first: i32 = tx
                .query_one(
                    "SELECT COALESCE(MAX(seq) + 1, 0) FROM answers WHERE push_id = $1",
                    &[&push.0],
                )
                .await?
                .get(0);
            let insert = tx
                .prepare(
                    "INSERT INTO answers (push_id, seq, msgtype, body, status, updated_at, source) \
                     VALUES ($1, $2, $3, $4, 'pending', $5, $6)",
                )
                .await?;
            for (i, (msgtype, body)) in answers.iter().enumerate() {
                let seq = first + i32::try_from(i).unwrap_or(i32::MAX);
                tx.execute(
                    &insert,
                    &[
                        &push.0,
                        &seq,
                        &pg_text(msgtype),
                        &pg_text(body),
                        &now,
                        &source,
                    ],
                )
                .await?;
            }
            let recorded = tx.query(&select, &[&push.0, &source]).await?;
            tx.commit().await?;
            Ok(recorded.iter().map(|r| read_answer(r, push)).collect())
        })
    }

    fn take_answer(
        &self,
        id: AnswerId,
        from: AnswerStatus,
        note: String,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let n = self
                .execute(
                    "UPDATE answers SET status = 'uncertain', error = $3, updated_at = $4 \
                     WHERE id = $1 AND status = $2",
                    &[&id.0, &from.as_str(), &pg_text(&note), &now],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn mark_answer(
        &self,
        id: AnswerId,
        status: AnswerStatus,
        error: Option<String>,
        now: Millis,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let status = status.as_str();
            self.execute(
                "UPDATE answers SET status = $2, error = $3, updated_at = $4 WHERE id = $1",
                &[&id.0, &status, &error.as_deref().map(pg_text), &now],
            )
            .await?;
            Ok(())
        })
    }

    fn answers(&self, push: PushId) -> BoxFuture<'_, Result<Vec<AnswerRecord>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    &format!(
                        "SELECT {ANSWER_COLUMNS} FROM answers WHERE push_id = $1 ORDER BY seq"
                    ),
                    &[&push.0],
                )
                .await?;
            Ok(rows.iter().map(|r| read_answer(r, push)).collect())
        })
    }
}

impl DeliveryLog for PostgresStore {
    fn add_deliveries(
        &self,
        push: PushId,
        targets: Vec<(String, Millis)>,
        now: Millis,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (urls, due): (Vec<String>, Vec<Millis>) = targets.into_iter().unzip();
            self.execute(
                "INSERT INTO deliveries (push_id, target, status, due_at, updated_at) \
                 SELECT $1, t.target, 'pending', t.due_at, $4 \
                 FROM unnest($2::text[], $3::bigint[]) AS t(target, due_at) \
                 ON CONFLICT (push_id, target) DO NOTHING",
                &[&push.0, &urls, &due, &now],
            )
            .await?;
            Ok(())
        })
    }

    fn claim_deliveries(
        &self,
        target: String,
        push: Option<PushId>,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredPush)>, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "WITH due AS MATERIALIZED (SELECT id FROM deliveries WHERE target = $1 \
                   AND status IN ('pending', 'working') AND due_at <= $2 \
                   AND ($5::bigint IS NULL OR push_id = $5) \
                   ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED), \
                 claimed AS (UPDATE deliveries SET status = 'working', \
                   attempts = deliveries.attempts + 1, claims = deliveries.claims + 1, \
                   due_at = $3, updated_at = $2 \
                   FROM due WHERE deliveries.id = due.id \
                   RETURNING {}) \
                 SELECT claimed.*, {} FROM claimed JOIN pushes ON pushes.id = claimed.push_id \
                 ORDER BY claimed.id",
                prefixed("deliveries", DELIVERY_COLUMNS),
                prefixed("pushes", COLUMNS),
            );
            let rows = self
                .query_relaxed(
                    &sql,
                    &[
                        &target,
                        &now,
                        &lease_until,
                        &limit_of(limit),
                        &push.map(|p| p.0),
                    ],
                )
                .await?;
            let width = DELIVERY_COLUMNS.split(',').count();
            Ok(rows
                .iter()
                .map(|row| (read_delivery(row), read_push_at(row, width)))
                .collect())
        })
    }

    fn finish_delivery(
        &self,
        claim: DeliveryClaim,
        outcome: DeliveryOutcome,
        took_ms: i64,
        now: Millis,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let name = outcome.name();
            let (status, due_at, error, responded) = outcome.row(now);
            // One statement: the attempt is recorded only if the update
            // took (the claim held).
            let changed = self
                .execute_relaxed(
                    "WITH done AS (UPDATE deliveries SET status = $3, due_at = $4, last_error = $5, \
                       responded = responded OR $6, updated_at = $7 \
                     WHERE id = $1 AND claims = $2 AND status = 'working' RETURNING id, push_id) \
                     INSERT INTO delivery_attempts (delivery_id, push_id, at, took_ms, outcome, error) \
                     SELECT id, push_id, $7, $8, $9, $5 FROM done",
                    &[
                        &claim.id.0,
                        &claim.fence,
                        &status,
                        &due_at,
                        &error.as_deref().map(pg_text),
                        &responded,
                        &now,
                        &took_ms,
                        &name,
                    ],
                )
                .await?;
            Ok(changed == 1)
        })
    }

    fn delivery_attempts(
        &self,
        push: PushId,
    ) -> BoxFuture<'_, Result<Vec<DeliveryAttempt>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT delivery_id, at, took_ms, outcome, error FROM delivery_attempts \
                     WHERE push_id = $1 ORDER BY id",
                    &[&push.0],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| DeliveryAttempt {
                    delivery_id: DeliveryId(row.get(0)),
                    at: row.get(1),
                    took_ms: row.get(2),
                    outcome: row.get(3),
                    error: row.get(4),
                })
                .collect())
        })
    }

    fn deliveries(&self, push: PushId) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE push_id = $1 ORDER BY id"
                    ),
                    &[&push.0],
                )
                .await?;
            Ok(rows.iter().map(read_delivery).collect())
        })
    }

    fn dead_deliveries(
        &self,
        appid: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredPush)>, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {}, {} FROM deliveries JOIN pushes ON pushes.id = deliveries.push_id \
                 WHERE deliveries.status = 'dead' AND ($1::text IS NULL OR pushes.appid = $1) \
                 ORDER BY deliveries.id DESC LIMIT $2",
                prefixed("deliveries", DELIVERY_COLUMNS),
                prefixed("pushes", COLUMNS),
            );
            let rows = self.query(&sql, &[&appid, &limit_of(limit)]).await?;
            let width = DELIVERY_COLUMNS.split(',').count();
            Ok(rows
                .iter()
                .map(|row| (read_delivery(row), read_push_at(row, width)))
                .collect())
        })
    }

    fn retry_delivery(
        &self,
        id: DeliveryId,
        targets: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let n = self
                .execute(
                    "UPDATE deliveries SET status = 'pending', due_at = 0, attempts = 0 \
                     WHERE id = $1 AND status = 'dead' AND ($2::text[] IS NULL OR target = ANY($2))",
                    &[&id.0, &targets],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn delivery_backlog(&self) -> BoxFuture<'_, Result<Vec<Backlog>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT target, status, COUNT(*) FROM deliveries \
                       WHERE status IN ('pending', 'working') GROUP BY target, status \
                     UNION ALL \
                     SELECT target, status, COUNT(*) FROM deliveries \
                       WHERE status = 'dead' GROUP BY target, status \
                     ORDER BY 1, 2",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| {
                    let status: String = row.get(1);
                    let n: i64 = row.get(2);
                    Backlog {
                        target: row.get(0),
                        status: DeliveryStatus::parse(&status),
                        count: u64::try_from(n).unwrap_or(0),
                    }
                })
                .collect())
        })
    }

    fn bury_unknown_targets(
        &self,
        targets: Vec<String>,
        now: Millis,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let n = self
                .execute(
                    "UPDATE deliveries SET status = 'dead', updated_at = $2, \
                       last_error = 'the forward target is no longer configured' \
                     WHERE status IN ('pending', 'working') AND target <> ALL($1::text[])",
                    &[&targets, &now],
                )
                .await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

/// The first id of a push received at or after `at` (past the last id
/// when none was): [`FirstIdAt`]'s search, each probe one primary-key seek.
async fn first_id_at(client: &deadpool_postgres::Object, at: Millis) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT MIN(id) FROM pushes), (SELECT MAX(id) FROM pushes)",
            &[],
        )
        .await?;
    let mut search = FirstIdAt::new(row.get(0), row.get(1), at);
    let probe = client
        .prepare_cached("SELECT id, received_at FROM pushes WHERE id >= $1 ORDER BY id LIMIT 1")
        .await?;
    loop {
        match search.next() {
            Step::Done(id) => return Ok(id),
            Step::Probe(id) => {
                let first = client
                    .query_opt(&probe, &[&id])
                    .await?
                    .map(|row| (row.get::<_, i64>(0), row.get::<_, Millis>(1)));
                search.found(id, first);
            }
        }
    }
}

/// A push read from `row`'s columns starting at `at` (after a delivery's).
fn read_push_at(row: &Row, at: usize) -> StoredPush {
    let status: String = row.get(at + 9);
    let format: String = row.get(at + 6);
    let attempts: i32 = row.get(at + 10);
    StoredPush {
        id: PushId(row.get(at)),
        appid: row.get(at + 1),
        dedup_key: DedupKey::from_stored(row.get::<_, String>(at + 2)),
        kind: row.get(at + 3),
        from: OpenId::new(row.get::<_, String>(at + 4)),
        create_time: row.get(at + 5),
        format: format_of(&format),
        body: row.get(at + 7),
        received_at: row.get(at + 8),
        status: Status::parse(&status).unwrap_or(Status::Pending),
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.get(at + 11),
        reply: row.get(at + 12),
        finished_at: row.get(at + 13),
        fence: row.get(at + 14),
    }
}

impl ToSql for Millis {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <i64 as ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

impl<'a> tokio_postgres::types::FromSql<'a> for Millis {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        i64::from_sql(ty, raw).map(Millis)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <i64 as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bug: `complete`, prepared while the table was empty, kept a
    /// generic plan that read the whole ready index (a hash join) for every
    /// batch, whatever the table's size since; a run of 10 s spent most of
    /// PostgreSQL's CPU there. Each statement must be planned for its
    /// parameters and the table as it is.
    #[tokio::test]
    async fn complete_prepared_on_an_empty_table_still_looks_pushes_up_by_id() {
        let Some((admin, schema, url)) = test_schema("plan").await else {
            return;
        };
        let store = PostgresStore::open(&url).await.unwrap();
        let client = store.relaxed.get().await.unwrap();
        let fill = |from: i64, to: i64| {
            format!(
                "INSERT INTO pushes (appid, dedup_key, kind, from_user, create_time, format, \
                   body, received_at, status, due_at) \
                 SELECT 'wx1', g::text, 'text', 'o1', 0, 'xml', '\\x00', 0, 'working', g \
                 FROM generate_series({from}, {to}) g"
            )
        };
        client.batch_execute(&fill(1, 20)).await.unwrap();
        client
            .batch_execute(&format!("PREPARE complete_test AS {COMPLETE}"))
            .await
            .unwrap();
        // Past the five runs after which PostgreSQL may settle on a generic plan.
        for id in 1..=8 {
            client
                .batch_execute(&format!(
                    "EXECUTE complete_test(ARRAY[{id}]::bigint[], ARRAY[0]::bigint[], 1)"
                ))
                .await
                .unwrap();
        }
        client.batch_execute(&fill(21, 20_000)).await.unwrap();
        let plan: Vec<String> = client
            .query(
                "EXPLAIN EXECUTE complete_test(ARRAY[9, 10]::bigint[], ARRAY[0, 0]::bigint[], 1)",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("pushes_pkey"), "{plan}");
        assert!(!plan.contains("pushes_ready"), "{plan}");
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    /// A fresh schema in the test database and the URL that uses it, or
    /// `None` without `WP_TEST_POSTGRES_URL`.
    async fn test_schema(name: &str) -> Option<(tokio_postgres::Client, String, String)> {
        let Ok(base) = std::env::var("WP_TEST_POSTGRES_URL") else {
            eprintln!("WP_TEST_POSTGRES_URL is not set, not run against PostgreSQL");
            return None;
        };
        let schema = format!("unit_{}_{name}", std::process::id());
        let (admin, conn) = tokio_postgres::connect(&base, NoTls)
            .await
            .unwrap_or_else(|e| panic!("WP_TEST_POSTGRES_URL={base} does not answer: {e}"));
        tokio::spawn(conn);
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        Some((admin, schema, url))
    }

    /// The bug it guards against: migration 4 built `pushes_dead` with a
    /// plain `CREATE INDEX` inside the migration transaction, holding every
    /// insert back while it read the table. Built concurrently, a build
    /// that failed half-way leaves an INVALID index, which `IF NOT EXISTS`
    /// alone would keep for ever: the next start drops and builds it.
    #[tokio::test]
    async fn an_index_build_left_invalid_is_built_again_at_the_next_start() {
        let Some((admin, schema, url)) = test_schema("invalid_index").await else {
            return;
        };
        let store = PostgresStore::open(&url).await.unwrap();
        let client = store.relaxed.get().await.unwrap();
        // A real failed concurrent build: a unique index over duplicates.
        client
            .batch_execute(
                "INSERT INTO pushes (appid, dedup_key, kind, from_user, create_time, format, \
                   body, received_at, status, due_at) \
                 SELECT 'wx1', g::text, 'text', 'o1', 0, 'xml', '\\x00', 0, 'dead', g \
                 FROM generate_series(1, 50) g; \
                 DROP INDEX pushes_dead; DROP TABLE delivery_attempts; \
                 DELETE FROM wechat_push_schema WHERE version >= 4",
            )
            .await
            .unwrap();
        let failed = client
            .batch_execute(
                "CREATE UNIQUE INDEX CONCURRENTLY pushes_dead ON pushes (appid) \
                 WHERE status = 'dead'",
            )
            .await;
        assert!(failed.is_err());
        let valid = |client: deadpool_postgres::Object| async move {
            let row = client
                .query_one(
                    "SELECT i.indisvalid, i.indisunique, \
                       (SELECT MAX(version) FROM wechat_push_schema) \
                     FROM pg_index i WHERE i.indexrelid = to_regclass('pushes_dead')",
                    &[],
                )
                .await
                .unwrap();
            (
                row.get::<_, bool>(0),
                row.get::<_, bool>(1),
                row.get::<_, i32>(2),
            )
        };
        assert_eq!(valid(client).await, (false, true, 3));
        drop(store);

        let store = PostgresStore::open(&url).await.unwrap();
        let known = i32::try_from(MIGRATIONS.len()).unwrap();
        assert_eq!(
            valid(store.relaxed.get().await.unwrap()).await,
            (true, false, known)
        );
        assert_eq!(store.depth().await.unwrap().dead, 50);
        drop(store);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    /// Instances starting together on an empty database: one migrates,
    /// the others wait for the lock (polling: a session blocked on it
    /// would hold a snapshot the concurrent index build waits for), and
    /// every version is applied once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_starting_together_migrate_once() {
        let Some((admin, schema, url)) = test_schema("together").await else {
            return;
        };
        let starting: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PostgresStore::open(&url).await })
            })
            .collect();
        let mut stores = Vec::new();
        for start in starting {
            stores.push(start.await.unwrap().unwrap());
        }
        let client = stores[0].relaxed.get().await.unwrap();
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM wechat_push_schema ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let known = i32::try_from(MIGRATIONS.len()).unwrap();
        assert_eq!(versions, (1..=known).collect::<Vec<_>>());
        drop((client, stores));
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_for_the_driver() {
        let plain = "postgres://u:p@h:5432/db?options=-c%20statement_timeout%3D5s";
        assert_eq!(tls_parameters(plain).unwrap(), (plain.to_owned(), None));
        let (url, root) = tls_parameters(
            "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@h/db?sslmode=require");
        assert_eq!(root, Some(std::path::PathBuf::from("/etc/ca x.pem")));
        let (url, root) = tls_parameters("postgresql://h/db?sslrootcert=/ca.pem").unwrap();
        assert_eq!((url.as_str(), root.is_some()), ("postgresql://h/db", true));
    }
}
