//! The batching decision as a pure function of the queue and the instances, so tests can
//! drive it with a fake clock.

use std::time::Duration;

use crate::config::Profile;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Give the first `count` queued items to `instance`.
    Dispatch { instance: usize, count: usize },
    /// Nothing to do before this much time passes (unless an item or an instance arrives).
    WaitFor(Duration),
    /// Nothing to do until an item arrives or an instance becomes idle.
    Wait,
}

/// `queued` items wait, the oldest for `oldest_age`; `upstream` more can still reach the node
/// (items being submitted, or queued or running at a node before it). A batch goes out as soon
/// as it is as large as the largest idle instance takes; a partial batch waits only while
/// `upstream` items may still join it and at most one idle instance would take it, and never
/// past `batching_timeout` (adaptive batching: a lone request is not held for a batch that
/// cannot fill, nor a batch while instances stand idle). It then goes to the idle instance
/// whose [min, max] range fits it most tightly. If only a busy instance fits, it waits for that
/// one (bucketing).
pub fn decide(
    queued: usize,
    oldest_age: Duration,
    batching_timeout: Duration,
    upstream: usize,
    profiles: &[Profile],
    idle: &[bool],
) -> Decision {
    if queued == 0 {
        return Decision::Wait;
    }
    let idle_ids = || (0..profiles.len()).filter(|&i| idle[i]);
    let Some(largest) = idle_ids().max_by_key(|&i| (profiles[i].max, usize::MAX - i)) else {
        return Decision::Wait;
    };
    let best_max = profiles[largest].max;
    if queued >= best_max {
        return Decision::Dispatch {
            instance: largest,
            count: best_max,
        };
    }
    // Spare capacity: with two idle instances that take this batch, an item arriving later
    // still finds one at once, so holding this batch would only add its wait to its latency.
    let spare = idle_ids().filter(|&i| profiles[i].fits(queued)).count() >= 2;
    if upstream > 0 && oldest_age < batching_timeout && !spare {
        return Decision::WaitFor(batching_timeout - oldest_age);
    }
    if let Some(i) = idle_ids()
        .filter(|&i| profiles[i].fits(queued))
        .min_by_key(|&i| (profiles[i].max, i))
    {
        return Decision::Dispatch {
            instance: i,
            count: queued,
        };
    }
    if profiles.iter().any(|p| p.fits(queued)) {
        return Decision::Wait;
    }
    // Below every instance's `min` (config validation keeps a min-1 instance, so this is only
    // reachable with hand-made profiles): the smallest profile takes it rather than starve it.
    let i = idle_ids()
        .min_by_key(|&i| (profiles[i].min, i))
        .unwrap_or(largest);
    Decision::Dispatch {
        instance: i,
        count: queued.min(profiles[i].max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(min: usize, max: usize) -> Profile {
        Profile {
            min,
            max,
            item_shape: None,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_batch_goes_at_once_never_above_max() {
        let profiles = [p(1, 4)];
        assert_eq!(
            decide(10, Duration::ZERO, 5 * MS, 1, &profiles, &[true]),
            Decision::Dispatch {
                instance: 0,
                count: 4
            }
        );
        assert_eq!(
            decide(4, Duration::ZERO, 5 * MS, 1, &profiles, &[true]),
            Decision::Dispatch {
                instance: 0,
                count: 4
            }
        );
    }

    #[test]
    fn partial_batch_waits_for_the_timeout_then_goes() {
        let profiles = [p(1, 4)];
        assert_eq!(
            decide(2, 2 * MS, 5 * MS, 1, &profiles, &[true]),
            Decision::WaitFor(3 * MS)
        );
        assert_eq!(
            decide(2, 5 * MS, 5 * MS, 1, &profiles, &[true]),
            Decision::Dispatch {
                instance: 0,
                count: 2
            }
        );
        // Zero timeout: no waiting at all.
        assert_eq!(
            decide(1, Duration::ZERO, Duration::ZERO, 1, &profiles, &[true]),
            Decision::Dispatch {
                instance: 0,
                count: 1
            }
        );
    }

    #[test]
    fn a_partial_batch_waits_only_for_the_last_idle_instance() {
        let profiles = [p(1, 4), p(1, 4), p(1, 4)];
        // Two idle instances take it: it goes at once, though more items are on their way
        // (the next finds the other idle instance).
        assert_eq!(
            decide(
                1,
                Duration::ZERO,
                5 * MS,
                3,
                &profiles,
                &[true, false, true]
            ),
            Decision::Dispatch {
                instance: 0,
                count: 1
            }
        );
        // The last idle instance: it waits for the items on their way, up to the timeout.
        assert_eq!(
            decide(1, MS, 5 * MS, 3, &profiles, &[false, false, true]),
            Decision::WaitFor(4 * MS)
        );
        // Two idle instances, but only one whose range takes 5: that one waits to fill.
        let buckets = [p(1, 4), p(5, 8), p(1, 4)];
        assert_eq!(
            decide(5, MS, 5 * MS, 2, &buckets, &[true, true, true]),
            Decision::WaitFor(4 * MS)
        );
    }

    #[test]
    fn a_partial_batch_that_nothing_can_join_goes_at_once() {
        let profiles = [p(1, 4)];
        // One item, nothing upstream: no waiting for a batch that cannot fill.
        assert_eq!(
            decide(1, Duration::ZERO, 5 * MS, 0, &profiles, &[true]),
            Decision::Dispatch {
                instance: 0,
                count: 1
            }
        );
        // The same item while three more are on their way: it waits for them, no longer than
        // the timeout.
        assert_eq!(
            decide(1, MS, 5 * MS, 3, &profiles, &[true]),
            Decision::WaitFor(4 * MS)
        );
        assert_eq!(
            decide(1, 5 * MS, 5 * MS, 3, &profiles, &[true]),
            Decision::Dispatch {
                instance: 0,
                count: 1
            }
        );
        // Nothing upstream but every instance busy: the queue waits for an instance.
        assert_eq!(
            decide(2, Duration::ZERO, 5 * MS, 0, &profiles, &[false]),
            Decision::Wait
        );
        // A burst that fills a batch goes whole, whatever is upstream.
        assert_eq!(
            decide(6, Duration::ZERO, 5 * MS, 0, &profiles, &[true]),
            Decision::Dispatch {
                instance: 0,
                count: 4
            }
        );
    }

    #[test]
    fn nothing_goes_without_an_idle_instance() {
        assert_eq!(
            decide(9, 9 * MS, MS, 1, &[p(1, 4)], &[false]),
            Decision::Wait
        );
        assert_eq!(
            decide(0, 9 * MS, MS, 1, &[p(1, 4)], &[true]),
            Decision::Wait
        );
    }

    #[test]
    fn bucketing_picks_the_fitting_instance() {
        let profiles = [p(1, 4), p(5, 8)];
        // 6 items after the timeout fit only the [5, 8] instance.
        assert_eq!(
            decide(6, 9 * MS, MS, 1, &profiles, &[true, true]),
            Decision::Dispatch {
                instance: 1,
                count: 6
            }
        );
        // 2 items fit only the [1, 4] instance.
        assert_eq!(
            decide(2, 9 * MS, MS, 1, &profiles, &[true, true]),
            Decision::Dispatch {
                instance: 0,
                count: 2
            }
        );
        // 2 items, the small instance busy: wait for it rather than break the big one's min.
        assert_eq!(
            decide(2, 9 * MS, MS, 1, &profiles, &[false, true]),
            Decision::Wait
        );
        // 9 items: a full batch for the largest idle instance.
        assert_eq!(
            decide(9, Duration::ZERO, MS, 1, &profiles, &[true, true]),
            Decision::Dispatch {
                instance: 1,
                count: 8
            }
        );
        // Same ranges, tightest fit first.
        let profiles = [p(1, 8), p(1, 2)];
        assert_eq!(
            decide(2, 9 * MS, MS, 1, &profiles, &[true, true]),
            Decision::Dispatch {
                instance: 1,
                count: 2
            }
        );
    }
}
