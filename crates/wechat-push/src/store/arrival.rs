//! The first push received at or after a moment, found by bisecting ids.
//!
//! Both stores give ids in arrival order (SQLite's rowid, PostgreSQL's
//! sequence), so the pushes received since a moment are an id range, and
//! its start is found with about twenty primary-key seeks at a million
//! pushes instead of a scan or an index on `received_at`. The search is
//! kept here, without I/O, so that both stores run the same steps: the
//! store reads the table's lowest and highest id, then answers each
//! [`Step::Probe`] with the first push at or after that id.

use crate::clock::Millis;

/// What the search needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The first push whose id is at or after this one: its id and when it
    /// was received, or none when no push has such an id.
    Probe(i64),
    /// The answer: the first id of a push received at or after the moment,
    /// or one past the highest id when none was (0 for an empty table).
    Done(i64),
}

/// The search's state between probes.
///
/// Bisected on id values, not on the ids found: ids have gaps (pruned
/// pushes, and on PostgreSQL sequence values taken by duplicates), and a
/// probe in a gap finds the id after it. Invariant: the first push at or
/// after id `high` arrived at or after `at`; none before id `low` did.
/// Pushes whose arrival order and id order differ (a batch committed a
/// moment late, or instances' clocks) may fall a few milliseconds off the
/// edge.
#[derive(Debug)]
pub(crate) struct FirstIdAt {
    at: Millis,
    low: i64,
    high: i64,
    /// Whether the highest id has been probed: when even it arrived before
    /// `at`, nothing did since.
    checked_highest: bool,
    done: Option<i64>,
}

impl FirstIdAt {
    /// A search between the table's lowest and highest id (`None` for an
    /// empty table).
    pub(crate) fn new(lowest: Option<i64>, highest: Option<i64>, at: Millis) -> Self {
        let (low, high, done) = match (lowest, highest) {
            (Some(low), Some(high)) => (low, high, None),
            _ => (0, 0, Some(0)),
        };
        FirstIdAt {
            at,
            low,
            high,
            checked_highest: false,
            done,
        }
    }

    /// The next step: a probe to answer with [`FirstIdAt::found`], or the
    /// answer.
    pub(crate) fn next(&self) -> Step {
        match self.done {
            Some(id) => Step::Done(id),
            None if !self.checked_highest => Step::Probe(self.high),
            None if self.low < self.high => Step::Probe(self.low + (self.high - self.low) / 2),
            None => Step::Done(self.low),
        }
    }

    /// The answer to [`Step::Probe`]`(probe)`: the first push at or after
    /// that id, as (id, received at). None counts as arriving last: each
    /// probe reads its own snapshot, and pushes pruned since the highest id
    /// was read leave nothing at or after it.
    pub(crate) fn found(&mut self, probe: i64, first: Option<(i64, Millis)>) {
        let (id, received_at) = first.unwrap_or((i64::MAX, Millis(i64::MAX)));
        if !self.checked_highest {
            self.checked_highest = true;
            if received_at < self.at {
                self.done = Some(self.high.saturating_add(1));
            }
            return;
        }
        if received_at >= self.at {
            self.high = probe;
        } else {
            // Past the push found, which may lie beyond a gap; never below
            // the probe, so that every probe narrows the range and the
            // search ends whatever a store answers.
            self.low = id.max(probe).saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search over `pushes` (id, received at), sorted by id.
    fn search(pushes: &[(i64, i64)], at: i64) -> (i64, usize) {
        let (lowest, highest) = (pushes.first().map(|p| p.0), pushes.last().map(|p| p.0));
        search_from(lowest, highest, pushes, at)
    }

    /// Runs the search with the lowest and highest id read beforehand,
    /// probing `pushes` (which may no longer hold them).
    fn search_from(
        lowest: Option<i64>,
        highest: Option<i64>,
        pushes: &[(i64, i64)],
        at: i64,
    ) -> (i64, usize) {
        let mut search = FirstIdAt::new(lowest, highest, Millis(at));
        let mut probes = 0;
        loop {
            match search.next() {
                Step::Done(id) => return (id, probes),
                Step::Probe(id) => {
                    probes += 1;
                    assert!(probes < 100, "the search does not end");
                    let first = pushes
                        .iter()
                        .find(|p| p.0 >= id)
                        .map(|&(id, at)| (id, Millis(at)));
                    search.found(id, first);
                }
            }
        }
    }

    #[test]
    fn an_empty_table_answers_zero_without_a_probe() {
        assert_eq!(search(&[], 5), (0, 0));
    }

    #[test]
    fn finds_the_first_push_at_or_after_the_moment_across_gaps() {
        // Ids with gaps (pruned pushes), times growing with ids.
        let pushes: Vec<(i64, i64)> = (1..=1000)
            .filter(|id| id % 7 != 0 && !(300..400).contains(id))
            .map(|id| (id, id * 10))
            .collect();
        for at in [0, 10, 11, 2990, 3000, 3005, 4000, 4005, 9990, 9999] {
            let expected = pushes
                .iter()
                .find(|p| p.1 >= at)
                .map(|p| p.0)
                .expect("some push is that late");
            let (found, probes) = search(&pushes, at);
            // Any id in the gap before the expected push starts the same range.
            let previous = pushes
                .iter()
                .rev()
                .find(|p| p.0 < expected)
                .map_or(0, |p| p.0);
            assert!(
                (previous + 1..=expected).contains(&found),
                "at {at}: {found}, expected {expected} (or the gap before it)"
            );
            assert!(probes <= 12, "at {at}: {probes} probes for 1,000 ids");
        }
    }

    #[test]
    fn nothing_since_the_moment_answers_past_the_highest_id_after_one_probe() {
        let pushes = [(3, 100), (9, 200)];
        assert_eq!(search(&pushes, 201), (10, 1));
    }

    #[test]
    fn a_moment_before_every_push_answers_the_lowest_id() {
        let pushes = [(3, 100), (9, 200), (12, 300)];
        assert_eq!(search(&pushes, 0).0, 3);
    }

    #[test]
    fn pushes_pruned_during_the_search_count_as_arriving_last() {
        // Lowest 1 and highest 50 were read; by the first probe, every push
        // from 30 on has been pruned.
        let pushes = [(1, 10), (10, 90), (20, 110), (29, 120)];
        let (found, _) = search_from(Some(1), Some(50), &pushes, 100);
        // Not "nothing since" (51): the vanished highest id counted as
        // arriving last, and the search went on below it to the push at 110.
        assert!((11..=20).contains(&found), "{found}");
    }
}
