//! Which stream a worker fetches from first: every queue it serves has one
//! stream per priority, each a *source* with a weight, the queue's weight
//! times 2^priority (1, 2, 4, 8).
//!
//! Each fetch starts with the source a smooth weighted round robin picks
//! (nginx's): every source gains its weight, the one with the most is
//! picked and pays the total. Over every W consecutive fetches (W the sum
//! of all weights) a source of weight w is picked exactly w times, spread
//! out, whatever the others hold. If the picked source is empty, the fetch
//! goes on to the other priorities of the same queue, highest first, then
//! to the other queues by weight. So tasks of the lowest priority of a
//! queue are fetched first at least once every W fetches however many
//! higher ones wait: 15 fetches for a worker of one queue.

use std::sync::Arc;

use crate::orca::{MAX_PRIORITY, queue_stream};
use crate::task::Name;

/// One stream a worker fetches from.
pub(crate) struct Source {
    /// The queue's name.
    pub(crate) queue: Name,
    /// The stream of the queue's tasks of one priority.
    pub(crate) stream: Arc<str>,
    priority: u8,
    weight: i64,
}

/// The sources of some queues with their weights, and whose turn it is.
pub(crate) struct Schedule {
    sources: Vec<Source>,
    credit: Vec<i64>,
    total: i64,
}

impl Schedule {
    /// The sources of `queues`, each with its weight (at least 1).
    pub(crate) fn new(queues: impl IntoIterator<Item = (Name, u32)>) -> Schedule {
        let mut sources = Vec::new();
        for (queue, weight) in queues {
            for priority in 0..=MAX_PRIORITY {
                sources.push(Source {
                    queue: queue.clone(),
                    stream: queue_stream(&queue, priority).into(),
                    priority,
                    weight: i64::from(weight.max(1)) << priority,
                });
            }
        }
        let total = sources.iter().map(|s| s.weight).sum();
        Schedule {
            credit: vec![0; sources.len()],
            sources,
            total,
        }
    }

    pub(crate) fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The order to try the sources in for the next fetch.
    pub(crate) fn next(&mut self) -> Vec<usize> {
        for (credit, source) in self.credit.iter_mut().zip(&self.sources) {
            *credit += source.weight;
        }
        let picked = (0..self.sources.len())
            .max_by_key(|&i| (self.credit[i], std::cmp::Reverse(i)))
            .expect("a worker serves at least one queue");
        self.credit[picked] -= self.total;
        let queue = &self.sources[picked].queue;
        let mut order: Vec<usize> = (0..self.sources.len()).collect();
        order.sort_by_key(|&i| {
            let source = &self.sources[i];
            (
                i != picked,
                source.queue != *queue,
                std::cmp::Reverse(source.priority),
                std::cmp::Reverse(source.weight),
            )
        });
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who is first in each of `n` fetches.
    fn firsts(schedule: &mut Schedule, n: usize) -> Vec<usize> {
        (0..n).map(|_| schedule.next()[0]).collect()
    }

    #[test]
    fn every_source_is_first_its_weight_in_every_round() {
        let mut schedule = Schedule::new([("a".into(), 3), ("b".into(), 1)]);
        let total = 60; // (3 + 1) × (1 + 2 + 4 + 8)
        for _ in 0..5 {
            let round = firsts(&mut schedule, total);
            for (i, source) in schedule.sources().iter().enumerate() {
                let turns = round.iter().filter(|&&first| first == i).count();
                assert_eq!(turns as i64, source.weight, "{}", source.stream);
            }
        }
    }

    #[test]
    fn the_lowest_priority_is_first_once_in_every_fifteen_fetches() {
        let mut schedule = Schedule::new([("q".into(), 1)]);
        let lowest = 0;
        assert_eq!(&*schedule.sources()[lowest].stream, "orca:queue:q");
        let picks = firsts(&mut schedule, 15 * 10);
        for window in picks.chunks(15) {
            assert_eq!(window.iter().filter(|&&i| i == lowest).count(), 1);
        }
    }

    #[test]
    fn an_empty_pick_falls_back_to_its_queue_first_highest_priority_first() {
        let mut schedule = Schedule::new([("a".into(), 1), ("b".into(), 1)]);
        for _ in 0..30 {
            let order = schedule.next();
            let sources = schedule.sources();
            let queue = &sources[order[0]].queue;
            let same: Vec<u8> = order[1..4].iter().map(|&i| sources[i].priority).collect();
            assert!(order[1..4].iter().all(|&i| &sources[i].queue == queue));
            assert!(same.windows(2).all(|w| w[0] > w[1]), "{same:?}");
            assert!(order[4..].iter().all(|&i| &sources[i].queue != queue));
        }
    }
}
