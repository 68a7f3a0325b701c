//! Acknowledgement latency minute by minute, for the console's chart:
//! this process's last 24 hours, counted in the latency histogram's
//! buckets. A push costs an atomic add (and, once a minute, a lock).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::clock::Millis;

/// Upper bounds of the buckets, in seconds (the last bucket is past them).
pub const BOUNDS: [f64; 14] = super::BUCKETS;

/// Minutes kept: a day.
const KEPT: usize = 24 * 60;

/// Counts in each bucket of [`BOUNDS`], and past the last.
type Counts = [u64; BOUNDS.len() + 1];

/// One span of the series: its start, how many pushes were answered, and
/// the median and 99th percentile of their latency, in milliseconds
/// (estimated within the histogram's buckets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// When the span began.
    pub start: Millis,
    /// Pushes answered in it.
    pub count: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// The minutes counted so far.
#[derive(Debug)]
pub struct AckMinutes {
    /// The minute (ms since the epoch / 60,000) `counting` is for.
    minute: AtomicI64,
    counting: [AtomicU64; BOUNDS.len() + 1],
    past: Mutex<VecDeque<(i64, Counts)>>,
}

impl Default for AckMinutes {
    fn default() -> Self {
        AckMinutes {
            minute: AtomicI64::new(0),
            counting: std::array::from_fn(|_| AtomicU64::new(0)),
            past: Mutex::new(VecDeque::new()),
        }
    }
}

impl AckMinutes {
    /// A push answered `seconds` after it arrived, at `now`.
    pub fn record(&self, now: Millis, seconds: f64) {
        let minute = now.0.div_euclid(60_000);
        // Only forward: after the clock steps back, pushes count into the
        // later minute rather than each taking the lock.
        if minute > self.minute.load(Ordering::Acquire) {
            self.roll(minute);
        }
        let i = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        self.counting[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Close the minute being counted and count `minute`.
    fn roll(&self, minute: i64) {
        let mut past = self
            .past
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counted = self.minute.load(Ordering::Acquire);
        if counted >= minute {
            return; // another thread rolled it
        }
        let counts: Counts = std::array::from_fn(|i| self.counting[i].swap(0, Ordering::Relaxed));
        if counts.iter().any(|c| *c > 0) && counted > 0 {
            past.push_back((counted, counts));
            while past.len() > KEPT {
                past.pop_front();
            }
        }
        self.minute.store(minute, Ordering::Release);
    }

    /// Spans of `per` minutes from `since` to `now`, oldest first; spans
    /// with no push answered are left out. Spans start at multiples of
    /// `per` minutes since the epoch, as the store's arrival counts do.
    pub fn series(&self, since: Millis, now: Millis, per: i64) -> Vec<Span> {
        let per = per.max(1);
        let first = since.0.div_euclid(60_000);
        let mut minutes: Vec<(i64, Counts)> = {
            let past = self
                .past
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            past.iter().filter(|(m, _)| *m >= first).copied().collect()
        };
        let current = self.minute.load(Ordering::Acquire);
        if current >= first && current <= now.0.div_euclid(60_000) {
            let counts: Counts = std::array::from_fn(|i| self.counting[i].load(Ordering::Relaxed));
            minutes.push((current, counts));
        }
        let mut spans: Vec<(i64, Counts)> = Vec::new();
        for (minute, counts) in minutes {
            let span = minute - minute.rem_euclid(per);
            match spans.last_mut() {
                Some((s, total)) if *s == span => {
                    for (t, c) in total.iter_mut().zip(counts) {
                        *t += c;
                    }
                }
                _ => spans.push((span, counts)),
            }
        }
        spans
            .into_iter()
            .filter_map(|(minute, counts)| {
                let count: u64 = counts.iter().sum();
                (count > 0).then(|| Span {
                    start: Millis(minute.saturating_mul(60_000)),
                    count,
                    p50_ms: quantile(&counts, 0.5) * 1000.0,
                    p99_ms: quantile(&counts, 0.99) * 1000.0,
                })
            })
            .collect()
    }
}

/// The `q` quantile of `counts`, in seconds, interpolated within its
/// bucket (past the last bound: the last bound).
fn quantile(counts: &Counts, q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    let rank = q * total as f64;
    let mut below = 0_u64;
    for (i, c) in counts.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let (lo, hi) = (below as f64, (below + c) as f64);
        if *c > 0 && hi >= rank {
            let Some(upper) = BOUNDS.get(i) else {
                return BOUNDS[BOUNDS.len() - 1];
            };
            let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
            return lower + (upper - lower) * ((rank - lo) / (hi - lo)).clamp(0.0, 1.0);
        }
        below += c;
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_kept_apart_and_summed_into_spans() {
        let a = AckMinutes::default();
        let t0 = Millis(1_000 * 60_000);
        // Minute 0: 99 fast (under 0.5 ms), one slow (between 5 and 10 ms).
        for _ in 0..99 {
            a.record(t0, 0.0001);
        }
        a.record(t0, 0.007);
        // Minute 2: ten at 1.5 ms.
        for _ in 0..10 {
            a.record(t0 + std::time::Duration::from_secs(125), 0.0015);
        }
        let now = t0 + std::time::Duration::from_secs(130);
        let by_minute = a.series(t0, now, 1);
        assert_eq!(by_minute.len(), 2);
        assert_eq!((by_minute[0].start, by_minute[0].count), (t0, 100));
        assert!(by_minute[0].p50_ms <= 0.5, "{:?}", by_minute[0]);
        assert!(by_minute[0].p99_ms <= 0.5, "{:?}", by_minute[0]);
        assert_eq!(by_minute[1].count, 10);
        assert!(
            (1.0..=2.0).contains(&by_minute[1].p50_ms),
            "{:?}",
            by_minute[1]
        );
        // One span of five minutes holds both.
        let by_five = a.series(t0, now, 5);
        assert_eq!(by_five.len(), 1);
        assert_eq!(by_five[0].count, 110);
        assert!(by_five[0].p99_ms > 1.0, "{:?}", by_five[0]);
        // Since after them: nothing.
        assert!(a
            .series(now + std::time::Duration::from_secs(60), now, 1)
            .is_empty());
    }
}
