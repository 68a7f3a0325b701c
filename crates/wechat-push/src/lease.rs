//! Leased work in bounded slots: the one claim loop step shared by the
//! worker pool (pushes) and the forwarder (deliveries).
//!
//! Both keep their work in the store and take it with a lease: a claim marks
//! rows as theirs until a time, and a claim that lapses (the process died)
//! lets another instance take the rows again. Both run at most a fixed number
//! of items at once. [`Slots::fill`] claims no more than there are free
//! slots, so that a claimed row never waits for a slot while its lease runs
//! out; [`Slots::drain`] waits for running items at shutdown, within
//! `server.shutdown_grace`.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Whether to stop: `None` while running, then the moment by which running
/// items must be done (`server.shutdown_grace` after the shutdown began,
/// one deadline for connections, handlers and deliveries alike).
pub(crate) type Stop = watch::Receiver<Option<Instant>>;

/// At most `size` items at once.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    semaphore: Arc<Semaphore>,
    size: usize,
}

/// How a [`Slots::fill`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filled {
    /// No slot was free: nothing was claimed.
    Busy,
    /// Fewer items were due than slots were free.
    Partly,
    /// Every free slot was filled: more may be due.
    Full,
}

impl Slots {
    pub(crate) fn new(size: usize) -> Self {
        Slots {
            semaphore: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// A free slot, if any.
    pub(crate) fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }

    /// How many slots are free now.
    pub(crate) fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// The next free slot, waiting for one.
    pub(crate) async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().acquire_owned().await.ok()
    }

    /// Claim as many items as there are free slots (`first`, a slot the
    /// caller holds already, counts as one) with `claim(limit)`, and
    /// `start` each on a slot of its own.
    ///
    /// # Errors
    /// The claim's error; nothing was started.
    pub(crate) async fn fill<T, E, Fut>(
        &self,
        first: Option<OwnedSemaphorePermit>,
        claim: impl FnOnce(usize) -> Fut,
        mut start: impl FnMut(T, OwnedSemaphorePermit),
    ) -> Result<Filled, E>
    where
        Fut: Future<Output = Result<Vec<T>, E>>,
    {
        let limit = usize::from(first.is_some()) + self.semaphore.available_permits();
        if limit == 0 {
            return Ok(Filled::Busy);
        }
        let claimed = claim(limit).await?;
        let full = claimed.len() == limit;
        let mut first = first;
        for item in claimed {
            let permit = match first.take() {
                Some(p) => p,
                // Claimed no more than the free slots: this waits only when
                // another path (the server's fast path) took one meanwhile.
                None => match self.acquire().await {
                    Some(p) => p,
                    None => break,
                },
            };
            start(item, permit);
        }
        Ok(if full { Filled::Full } else { Filled::Partly })
    }

    /// Wait until every slot is free again, until `deadline`; whether they
    /// all came back in time.
    pub(crate) async fn drain(&self, deadline: Instant) -> bool {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        tokio::time::timeout_at(deadline, self.semaphore.acquire_many(all))
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_claim_never_takes_more_than_the_free_slots() {
        let slots = Slots::new(3);
        let held = slots.try_acquire().unwrap();
        let mut asked = 0;
        let mut started = Vec::new();
        let filled = slots
            .fill(
                None,
                |limit| {
                    asked = limit;
                    async move { Ok::<_, ()>((0..limit).collect::<Vec<_>>()) }
                },
                |item, permit| started.push((item, permit)),
            )
            .await
            .unwrap();
        assert_eq!((asked, filled, started.len()), (2, Filled::Full, 2));
        let busy = slots
            .fill(None, |_| async { Ok::<Vec<u8>, ()>(vec![1]) }, |_, _| {})
            .await
            .unwrap();
        assert_eq!(busy, Filled::Busy);
        // The caller's own slot counts.
        let mut more = Vec::new();
        let filled = slots
            .fill(
                Some(held),
                |limit| async move { Ok::<_, ()>(vec![limit]) },
                |item, permit| more.push((item, permit)),
            )
            .await
            .unwrap();
        assert_eq!((filled, more[0].0), (Filled::Full, 1));
        let soon = || Instant::now() + Duration::from_millis(10);
        assert!(!slots.drain(soon()).await);
        drop((started, more));
        assert!(slots.drain(soon()).await);
    }
}
