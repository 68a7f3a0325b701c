//! The worker pool: takes stored pushes and runs the handler, after the
//! push has been acknowledged.
//!
//! A dispatcher claims due pushes from the store (new ones, retries whose time
//! has come, and pushes whose claim lapsed because a process died) under a
//! lease, and runs each on a bounded number of tasks. Success marks the push
//! done; failure schedules a retry with exponential backoff and jitter, or
//! after `max_attempts` marks it dead with its last error. On shutdown
//! in-flight handlers get a grace period; those still running are given back
//! to the inbox unhandled.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit};
use tracing::Instrument;

use crate::clock::{now_ms, now_secs, Millis};
use crate::config::{AppKind, InboxConfig};
use crate::handler::{HandlerError, Push, SharedHandler};
use crate::lease::{Filled, Slots, Stop};
use crate::metrics::{self, Metrics};
use crate::outbox::PASSIVE_SOURCE;
use crate::protocol::message::Message;
use crate::reply::PassiveReply;
use crate::store::AnswerStatus;
use crate::store::{Claim, Inserted, NewPush, Status, Store, StoreError, StoredPush};

/// What handles pushes under one configuration: replaced whole when the
/// configuration is reloaded, while a push already being handled keeps
/// the one it started with.
pub(crate) struct Handling {
    /// The handler (the rules, forwarding, a library user's own).
    pub(crate) handler: SharedHandler,
    /// Each app's kind, by appid.
    pub(crate) kinds: HashMap<String, AppKind>,
}

/// The [`Handling`] in force.
#[derive(Clone)]
pub(crate) struct CurrentHandling(Arc<RwLock<Arc<Handling>>>);

impl CurrentHandling {
    pub(crate) fn new(handling: Handling) -> Self {
        CurrentHandling(Arc::new(RwLock::new(Arc::new(handling))))
    }

    /// The one in force now.
    pub(crate) fn get(&self) -> Arc<Handling> {
        // A writer never panics while holding the lock (it only swaps an Arc).
        match self.0.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Put `handling` in force for pushes handled from now on.
    pub(crate) fn replace(&self, handling: Handling) {
        let new = Arc::new(handling);
        match self.0.write() {
            Ok(mut current) => *current = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

/// What the pool needs, shared with the server's fast path.
#[derive(Clone)]
pub struct Processor {
    /// The store pushes are claimed from and their outcomes recorded in.
    pub store: Arc<dyn Store>,
    /// What handles pushes, and each app's kind.
    pub(crate) handling: CurrentHandling,
    /// Retry and timeout settings.
    pub config: InboxConfig,
    /// Where outcomes are counted (`wechat_push_handled_total`, …), for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Pushes handled without a reply, to be marked done in batches.
    pub completions: mpsc::Sender<Claim>,
    /// How long the server holds a push's answer for a passive reply.
    pub reply_budget: Duration,
}

impl Processor {
    /// Handle one claimed push and record the outcome in the store.
    /// `message` is the push already parsed, when the caller has it (saves
    /// parsing it again). `reply_to` is the push's HTTP answer, held open
    /// for a passive reply: the rendered reply is sent there if the handler
    /// gives one and the answer is still waiting for it.
    pub async fn process(
        &self,
        stored: StoredPush,
        message: Option<Message>,
        reply_to: Option<oneshot::Sender<Vec<u8>>>,
    ) {
        self.process_with_slot(stored, message, None, reply_to)
            .await;
    }

    /// As [`Processor::process`], freeing the worker `slot` as soon as the
    /// handler returns: recording the outcome waits for a commit, and the
    /// next push need not wait for it.
    async fn process_with_slot(
        &self,
        stored: StoredPush,
        message: Option<Message>,
        slot: Option<Slot>,
        reply_to: Option<oneshot::Sender<Vec<u8>>>,
    ) {
        // Debug, like the server's `push` span: failures below name their
        // push themselves.
        let span = tracing::debug_span!(
            "handle",
            appid = %stored.appid,
            dedup_key = %stored.dedup_key,
            attempt = stored.attempts
        );
        self.process_in_span(stored, message, slot, reply_to)
            .instrument(span)
            .await
    }

    async fn process_in_span(
        &self,
        stored: StoredPush,
        message: Option<Message>,
        slot: Option<Slot>,
        reply_to: Option<oneshot::Sender<Vec<u8>>>,
    ) {
        let id = stored.id;
        let claim = stored.claim();
        let appid = stored.appid.clone();
        let parsed = match message {
            Some(m) => Ok(m),
            None => Message::from_stored(stored.format, &stored.body),
        };
        let message = match parsed {
            Ok(m) => m,
            Err(e) => {
                self.finish_failed(
                    claim,
                    &appid,
                    stored.dedup_key.as_str(),
                    e.to_string(),
                    None,
                )
                .await;
                return;
            }
        };
        let handling = self.handling.get();
        let push = Push {
            appid: appid.clone(),
            app_kind: handling
                .kinds
                .get(&appid)
                .copied()
                .unwrap_or(AppKind::MiniProgram),
            id,
            message,
            attempt: stored.attempts,
        };
        let outcome =
            tokio::time::timeout(self.config.handler_timeout, handling.handler.handle(&push)).await;
        drop(slot);
        let waiting = reply_to.is_some();
        let outcome = match outcome {
            Ok(Ok(Some(reply))) => {
                let rendered = reply
                    .render_for(&push.message, now_secs(), stored.format)
                    .into_bytes();
                // Durable before it leaves: WeChat's retry of this push must
                // get the same reply. (A reply that then misses its answer
                // stays stored: WeChat retries only a push whose answer it
                // did not get, and then the reply is the answer it wanted.)
                match self
                    .store
                    .complete(vec![(claim, Some(rendered.clone()))], now_ms())
                    .await
                {
                    Ok(0) => {
                        tracing::warn!(%appid, dedup_key = %stored.dedup_key, "push handled, but its lease ran out and another worker has claimed it since: that worker's outcome stands")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(%appid, dedup_key = %stored.dedup_key, error = %e, "push handled, but marking it done failed; it will be handled again")
                    }
                }
                let delivered = reply_to.is_some_and(|tx| tx.send(rendered).is_ok());
                self.passive_reply_sent(&handling, &push, claim, &reply, delivered, waiting)
                    .await
                    .map(|()| true)
            }
            Ok(Ok(None)) => Ok(false),
            Ok(Err(e)) => Err(e),
            Err(elapsed) => Err(HandlerError::caused_by(
                format!("handler timed out after {:?}", self.config.handler_timeout),
                elapsed,
            )),
        };
        match outcome {
            Ok(completed) => {
                // Pushes without a reply are marked done in batches.
                if !completed && self.completions.send(claim).await.is_err() {
                    if let Err(e) = self.store.complete(vec![(claim, None)], now_ms()).await {
                        tracing::error!(%appid, dedup_key = %stored.dedup_key, error = %e, "push handled, but marking it done failed; it will be handled again");
                    }
                }
                self.metrics
                    .inc(metrics::HANDLED, &[("appid", &appid), ("outcome", "done")]);
            }
            Err(e) => {
                let retry = e
                    .is_retryable()
                    .then(|| self.retry_at(stored.attempts))
                    .flatten();
                self.finish_failed(
                    claim,
                    &appid,
                    stored.dedup_key.as_str(),
                    crate::display_chain(&e),
                    retry,
                )
                .await;
            }
        }
    }

    /// Record a passive reply among the push's answers (source `passive`):
    /// sent when it rode on the push's answer; otherwise missed, after the
    /// handler answered some other way ([`Handler::reply_missed`]), with
    /// what it did. An error (the store, or the handler's fallback) fails
    /// the handling, to be retried.
    async fn passive_reply_sent(
        &self,
        handling: &Handling,
        push: &Push,
        claim: Claim,
        reply: &PassiveReply,
        delivered: bool,
        waiting: bool,
    ) -> Result<(), HandlerError> {
        let outcome = if delivered {
            None
        } else {
            // A failure from here on is retried: the push is handled again.
            let why = if waiting {
                format!(
                    "missed: not ready while the push's answer was held (server.reply_budget, {:?})",
                    self.reply_budget
                )
            } else {
                "missed: no answer was held open for it (a retry, or a push answered at once)"
                    .to_owned()
            };
            let instead = handling.handler.reply_missed(push, reply).await?;
            // It went another way (or none): WeChat's retry must not carry it too.
            self.store
                .forget_reply(claim)
                .await
                .map_err(|e| HandlerError::caused_by("cannot forget the missed reply", e))?;
            tracing::warn!(appid = %push.appid, push = %push.id, msg_type = reply.msg_type(), %why, %instead, "passive reply missed its answer");
            Some(format!("{why}; {instead}"))
        };
        let body = serde_json::Value::Object(reply.to_fields(
            &push.message.from_user,
            &push.message.to_user,
            now_secs(),
        ))
        .to_string();
        let recorded = self
            .store
            .record_answers(
                push.id,
                PASSIVE_SOURCE.to_owned(),
                vec![(reply.msg_type().to_owned(), body)],
                now_ms(),
            )
            .await
            .map_err(|e| HandlerError::caused_by("cannot record the passive reply", e))?;
        for record in recorded
            .iter()
            .filter(|r| r.status == AnswerStatus::Pending)
        {
            self.store
                .mark_answer(
                    record.id,
                    if outcome.is_some() {
                        AnswerStatus::Failed
                    } else {
                        AnswerStatus::Sent
                    },
                    outcome.clone(),
                    now_ms(),
                )
                .await
                .map_err(|e| HandlerError::caused_by("cannot record the passive reply", e))?;
        }
        Ok(())
    }

    async fn finish_failed(
        &self,
        claim: Claim,
        appid: &str,
        dedup_key: &str,
        error: String,
        retry_at: Option<Millis>,
    ) {
        self.metrics
            .inc(metrics::HANDLER_FAILURES, &[("appid", appid)]);
        let outcome = if retry_at.is_some() { "retry" } else { "dead" };
        self.metrics
            .inc(metrics::HANDLED, &[("appid", appid), ("outcome", outcome)]);
        match retry_at {
            Some(at) => {
                tracing::warn!(%appid, %dedup_key, %error, retry_in_ms = at - now_ms(), "handler failed; will retry")
            }
            None => tracing::error!(%appid, %dedup_key, %error, "handler failed; push is dead"),
        }
        match self.store.fail(claim, error, retry_at, now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%appid, %dedup_key, "the push's lease ran out and another worker has claimed it since: its outcome stands, this failure is not recorded")
            }
            Err(e) => {
                tracing::error!(%appid, %dedup_key, error = %e, "cannot record the failure; the lease will bring the push back")
            }
        }
    }

    /// When to retry after `attempts` attempts, or `None` when out of attempts.
    fn retry_at(&self, attempts: u32) -> Option<Millis> {
        if attempts >= self.config.max_attempts {
            return None;
        }
        let delay = backoff(&self.config, attempts, jitter());
        Some(now_ms() + delay)
    }
}

/// The delay before retry number `attempts`: `base × 2^(attempts-1)`, capped,
/// scaled by `jitter` (0.8 to 1.2) so that retries of many pushes spread out.
pub fn backoff(config: &InboxConfig, attempts: u32, jitter: f64) -> Duration {
    let exp = 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    let raw = config.backoff_base.as_secs_f64() * exp;
    Duration::from_secs_f64(raw.min(config.backoff_max.as_secs_f64()) * jitter)
}

/// A random factor from 0.8 to 1.2, so that retries of many pushes (or
/// deliveries) spread out instead of arriving together.
pub(crate) fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    0.8 + 0.4 * f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// What became of a push the server received ([`Pool::accept`]).
#[derive(Debug)]
pub enum Accepted {
    /// New, and stored durably: handled after the answer (or being
    /// handled, its passive reply too late or none).
    Stored,
    /// New, stored, and handled in time: its passive reply, rendered and
    /// not yet sealed.
    Replied(Vec<u8>),
    /// A retry of a push stored before: where it is, and the passive reply
    /// it got, if any (a retry gets the same answer).
    Duplicate {
        /// Where the stored push is.
        status: Status,
        /// Its passive reply, rendered and not sealed.
        reply: Option<Vec<u8>>,
    },
}

/// A worker slot: while it is held, its push counts as in flight.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    claim: Option<Claim>,
    in_flight: Arc<Mutex<HashSet<Claim>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let (Some(claim), Ok(mut set)) = (self.claim, self.in_flight.lock()) {
            set.remove(&claim);
        }
    }
}

/// How long a push stored claimed waits for a worker slot that other
/// pushes took during its insert, before going back to the inbox.
const MAX_SLOT_WAIT: Duration = Duration::from_millis(250);

/// The workers: at most `inbox.workers` handlers at once, started by the
/// server (a push it stored already claimed while a slot was free: no claim
/// statement, no second parse) and by `Pool::run` (pushes claimed from the
/// store: stored while all slots were busy, retries, pushes of other
/// instances or of a process that died). A push no handler takes is stored
/// done and never reaches them.
#[derive(Clone)]
pub struct Pool {
    processor: Processor,
    /// Told when a push is stored for the pool to claim.
    notify: Arc<Notify>,
    slots: Slots,
    in_flight: Arc<Mutex<HashSet<Claim>>>,
    /// Set when the drain begins: a push still waiting for a slot then goes
    /// back to the inbox instead of starting (the drain gives it back too).
    stopping: Arc<AtomicBool>,
}

impl Pool {
    /// A pool of `processor.config.workers` slots.
    pub fn new(processor: Processor) -> Self {
        let size = processor.config.workers;
        Pool {
            processor,
            notify: Arc::new(Notify::new()),
            slots: Slots::new(size),
            in_flight: Arc::default(),
            stopping: Arc::default(),
        }
    }

    /// What runs the handler.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// Store a push the server received and decide its answer; `message`
    /// is `new`'s body, typed.
    ///
    /// With a free slot the push is stored already claimed and handled
    /// straight from here (no claim statement, no second parse). When the
    /// handler may give a passive reply ([`crate::Handler::may_reply_passively`]),
    /// the push is handled now and the answer waits for the reply within
    /// `server.reply_budget`. A push the handler would do nothing with
    /// ([`crate::Handler::handles`]) is stored done and not run. Otherwise
    /// the pool claims it later.
    ///
    /// # Errors
    /// [`StoreError`] when the push could not be stored: it must not be
    /// acknowledged (WeChat retries it).
    pub async fn accept(&self, new: NewPush, message: Message) -> Result<Accepted, StoreError> {
        let processor = &self.processor;
        let workers = processor.config.workers > 0;
        let appid = new.appid.as_str();
        let handling = processor.handling.get();
        let wait_for_reply = workers && handling.handler.may_reply_passively(appid, &message);
        // A push the handler would do nothing with is stored done: claimed,
        // run and marked done it cost a quarter of the CPU of each push at
        // concurrency 64 (88-108 µs a push against 64-77 µs with no workers,
        // 2026-12-02), for the same end. One it may reply to is run whatever
        // `handles` says.
        let handled = workers && !wait_for_reply && !handling.handler.handles(appid, &message);
        drop(handling);
        // A free slot now means the push is stored claimed and handled from
        // here. The slot itself is taken after the insert: held across it,
        // slots counted inserts waiting for their commit, not handlers, and
        // with a store a round trip away (PostgreSQL) most pushes were
        // stored pending while the handlers sat idle, each then costing a
        // claim statement (two instances on one PostgreSQL fell behind one).
        let hand_off = !wait_for_reply && !handled && workers && self.slots.available() > 0;
        let now = new.received_at_ms;
        let claim_until = (wait_for_reply || hand_off).then_some(now + processor.config.lease);
        let new = Arc::new(new);
        let inserted = if handled {
            processor.store.insert_handled(new.clone()).await?
        } else {
            processor.store.insert(new.clone(), claim_until).await?
        };
        let claim = match inserted {
            Inserted::New(claim) => claim,
            Inserted::Duplicate { reply, status, .. } => {
                return Ok(Accepted::Duplicate { status, reply })
            }
        };
        if handled {
            processor.metrics.inc(
                metrics::HANDLED,
                &[("appid", &new.appid), ("outcome", "done")],
            );
            return Ok(Accepted::Stored);
        }
        if claim_until.is_none() {
            self.notify.notify_one();
            return Ok(Accepted::Stored);
        }
        // The store has let go of it by now: taken back, not copied.
        let new = Arc::try_unwrap(new).unwrap_or_else(|shared| (*shared).clone());
        let stored = StoredPush {
            id: claim.id,
            fence: claim.fence,
            appid: new.appid,
            dedup_key: new.dedup_key,
            kind: new.kind,
            from: new.from_user,
            create_time: new.create_time,
            status: Status::Working,
            attempts: 1,
            received_at: now,
            finished_at: None,
            last_error: None,
            format: new.format,
            body: new.body,
            reply: None,
        };
        if hand_off {
            match self.try_slot() {
                Some(slot) => self.start(slot, stored, Some(message)),
                // Other pushes took the free slots during the insert: this
                // one waits a moment for the next, claimed; then (or when
                // a shutdown has begun, or its lease would no longer cover
                // a handler's run) it goes back to the inbox, for this or
                // another instance to claim.
                None => {
                    let claim = stored.claim();
                    self.track(claim);
                    let pool = self.clone();
                    let lease_left = claim_until
                        .map_or(0, |until| until - now_ms())
                        .saturating_sub(
                            i64::try_from(processor.config.handler_timeout.as_millis())
                                .unwrap_or(i64::MAX),
                        );
                    let patience = MAX_SLOT_WAIT.min(Duration::from_millis(
                        u64::try_from(lease_left).unwrap_or(0),
                    ));
                    tokio::spawn(
                        async move {
                            match tokio::time::timeout(patience, pool.slots.acquire()).await {
                                Ok(Some(permit)) if !pool.stopping.load(Ordering::SeqCst) => {
                                    pool.start(pool.slot(permit), stored, Some(message));
                                }
                                _ => {
                                    pool.untrack(claim);
                                    if let Err(e) = pool.processor.store.release(vec![claim]).await
                                    {
                                        tracing::warn!(appid = %stored.appid, dedup_key = %stored.dedup_key, error = %e, "cannot give a push back to the inbox; its lease will run out instead");
                                    }
                                    pool.notify.notify_one();
                                }
                            }
                        }
                        .in_current_span(),
                    );
                }
            }
            return Ok(Accepted::Stored);
        }
        // The handler may answer with a passive reply: handle the push
        // now, and answer with the reply if it comes within the budget.
        let (tx, mut rx) = oneshot::channel();
        let processor = processor.clone();
        let budget = processor.reply_budget;
        // As when the server's `push` span was at `info`: the lines of a
        // handler whose reply is awaited (the library's, and a library
        // user's own) carry the push's appid and dedup key.
        let (appid, dedup_key) = (stored.appid.clone(), stored.dedup_key.clone());
        let span = tracing::info_span!("reply", %appid, %dedup_key);
        tokio::spawn(
            async move {
                processor.process(stored, Some(message), Some(tx)).await;
            }
            .instrument(span),
        );
        // A reply sent is a reply received: the worker learns from the
        // send whether it rode on this answer (see `Processor::process`),
        // so the channel is closed before giving up on it, and a reply
        // sent in between is still taken.
        let reply = match tokio::time::timeout(budget, &mut rx).await {
            Ok(reply) => reply.ok(),
            Err(_) => {
                rx.close();
                let late = rx.try_recv().ok();
                if late.is_none() {
                    tracing::warn!(%appid, %dedup_key, "handler exceeded the reply budget; answered without a reply");
                }
                late
            }
        };
        Ok(reply.map_or(Accepted::Stored, Accepted::Replied))
    }

    /// A free slot, if any.
    fn try_slot(&self) -> Option<Slot> {
        let permit = self.slots.try_acquire()?;
        Some(self.slot(permit))
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            _permit: permit,
            claim: None,
            in_flight: self.in_flight.clone(),
        }
    }

    /// Count `claim` as in flight: given back to the inbox if a shutdown's
    /// grace runs out before it is finished.
    fn track(&self, claim: Claim) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.insert(claim);
        }
    }

    fn untrack(&self, claim: Claim) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(&claim);
        }
    }

    /// Handle a claimed push on `slot`, in a task of its own.
    pub fn start(&self, mut slot: Slot, push: StoredPush, message: Option<Message>) {
        self.track(push.claim());
        slot.claim = Some(push.claim());
        let processor = self.processor.clone();
        tokio::spawn(async move {
            processor
                .process_with_slot(push, message, Some(slot), None)
                .await;
        });
    }

    /// Claim work from the store until `stop` gives a deadline, then wait
    /// for in-flight handlers until it and give back the rest.
    pub(crate) async fn run(self, mut shutdown: Stop) {
        let notify = self.notify.clone();
        let cfg = self.processor.config.clone();
        if cfg.workers == 0 {
            tracing::info!("inbox.workers = 0: pushes are stored, handled elsewhere");
            return;
        }
        let mut poll = tokio::time::interval(cfg.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Claim at start-up: pushes left by a previous run may be waiting.
        let mut claim_now = true;
        loop {
            if shutdown.borrow().is_some() {
                break;
            }
            if !claim_now {
                // The store is asked only when told there is work there, or
                // now and then for retries and other instances' pushes.
                tokio::select! {
                    _ = shutdown.changed() => continue,
                    _ = notify.notified() => {}
                    _ = poll.tick() => {}
                }
            }
            // Wait for a free slot before claiming, so claims never sit idle.
            let first = tokio::select! {
                p = self.slots.acquire() => match p { Some(p) => p, None => break },
                _ = shutdown.changed() => continue,
            };
            let now = now_ms();
            let lease_until = now + cfg.lease;
            let store = &self.processor.store;
            let filled = self
                .slots
                .fill(
                    Some(first),
                    |limit| store.claim(now, lease_until, limit),
                    |push, permit| self.start(self.slot(permit), push, None),
                )
                .await;
            // A full batch: more may be due, so claim again as soon as slots free up.
            claim_now = match filled {
                Ok(filled) => filled == Filled::Full,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim pushes");
                    false
                }
            };
        }
        let deadline = shutdown.borrow().unwrap_or_else(tokio::time::Instant::now);
        self.drain(deadline).await;
    }

    /// Wait for in-flight handlers within the grace period; give back the rest.
    async fn drain(&self, deadline: tokio::time::Instant) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.slots.drain(deadline).await {
            return;
        }
        let unfinished: Vec<Claim> = self
            .in_flight
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        tracing::warn!(
            count = unfinished.len(),
            "handlers still running at shutdown; giving their pushes back to the inbox"
        );
        if let Err(e) = self.processor.store.release(unfinished).await {
            tracing::error!(error = %e, "cannot release unfinished pushes; their leases will expire instead");
        }
    }
}

/// Mark handled pushes done, many per statement: while one batch waits for
/// its commit the next gathers. Runs until `finish` fires, then flushes.
pub async fn complete_batches(
    store: Arc<dyn Store>,
    mut completions: mpsc::Receiver<Claim>,
    mut finish: watch::Receiver<bool>,
) {
    let mut batch: Vec<(Claim, Option<Vec<u8>>)> = Vec::new();
    loop {
        let finishing = tokio::select! {
            id = completions.recv() => match id {
                Some(id) => {
                    batch.push((id, None));
                    false
                }
                None => true,
            },
            _ = finish.changed() => true,
        };
        while batch.len() < 4096 {
            match completions.try_recv() {
                Ok(id) => batch.push((id, None)),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let handled = batch.len();
            match complete_retrying(store.as_ref(), std::mem::take(&mut batch)).await {
                Ok(done) if done < handled => tracing::warn!(
                    stale = handled - done,
                    "pushes handled after their leases ran out and claimed by another worker since: that worker's outcome stands"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot mark pushes done; their leases will bring them back"),
            }
        }
        if finishing {
            return;
        }
    }
}

/// Mark `batch` done, trying again a few times over about three seconds
/// when the store fails: a push whose mark is lost is handled a second
/// time once its lease runs out (`inbox.lease`, a minute by default), so a
/// moment's trouble with the database is worth waiting out.
async fn complete_retrying(
    store: &dyn Store,
    batch: Vec<(Claim, Option<Vec<u8>>)>,
) -> Result<usize, StoreError> {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        match store.complete(batch.clone(), now_ms()).await {
            Err(e) if tries < 5 => {
                tracing::warn!(error = %e, tries, "cannot mark pushes done yet; trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            outcome => return outcome,
        }
    }
}

/// Prune handled pushes older than the retention period, now and then.
pub async fn prune(
    store: Arc<dyn Store>,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        let cutoff = now_ms() - retention;
        match store.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned handled pushes past retention"),
            Err(e) => tracing::warn!(error = %e, "cannot prune"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut c = Config::from_toml("").unwrap().inbox;
        c.backoff_base = Duration::from_secs(1);
        c.backoff_max = Duration::from_secs(60);
        let d: Vec<u64> = (1..=8).map(|a| backoff(&c, a, 1.0).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(&c, 3, 0.8), Duration::from_secs_f64(3.2));
        assert_eq!(backoff(&c, u32::MAX, 1.0), Duration::from_secs(60));
    }
}
