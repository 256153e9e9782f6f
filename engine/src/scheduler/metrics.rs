use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds, in seconds, of the time histograms' buckets: 50 µs to 10 s, so that a queue
/// wait of a few microseconds and a stall of a second each land in a bucket of their own.
pub const TIME_BOUNDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// A histogram of durations over TIME_BOUNDS, lock-free.
pub struct TimeHistogram {
    /// Per bucket (not cumulative); the last one is above every bound.
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

/// A snapshot: cumulative counts per bound of TIME_BOUNDS, then the total.
#[derive(Debug, Clone, Default)]
pub struct TimeHistogramSnapshot {
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_s: f64,
}

impl TimeHistogram {
    fn new() -> Self {
        TimeHistogram {
            counts: (0..=TIME_BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = TIME_BOUNDS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(TIME_BOUNDS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn snapshot(&self) -> TimeHistogramSnapshot {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(TIME_BOUNDS.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Relaxed);
            if i < TIME_BOUNDS.len() {
                cumulative.push(total);
            }
        }
        TimeHistogramSnapshot {
            cumulative,
            count: total,
            sum_s: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// Counters recorded at the hand-off points (dispatch and instance completion).
pub struct NodeMetrics {
    /// Instances built and serving (a failed rebuild after a panic lowers it).
    pub instances: AtomicU64,
    items: AtomicU64,
    batches: AtomicU64,
    /// Index = batch size.
    batch_sizes: Vec<AtomicU64>,
    /// Each item's wait in the queue, and each batch's time in `forward` (their sums are the
    /// totals NodeStats reports).
    queue_wait: TimeHistogram,
    run: TimeHistogram,
}

/// A snapshot of one node's counters.
#[derive(Debug, Clone)]
pub struct NodeStats {
    pub name: String,
    pub queue_len: usize,
    pub instances: u64,
    pub items: u64,
    pub batches: u64,
    pub queue_wait_us: u64,
    pub busy_us: u64,
    /// `batch_sizes[n]` = batches of n items.
    pub batch_sizes: Vec<u64>,
    /// Per item: the wait from entering the queue to being handed to an instance.
    pub queue_wait: TimeHistogramSnapshot,
    /// Per batch: the instance's `forward`.
    pub run: TimeHistogramSnapshot,
}

impl NodeMetrics {
    pub fn new(max_batch: usize) -> Self {
        NodeMetrics {
            instances: AtomicU64::new(0),
            items: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_sizes: (0..=max_batch).map(|_| AtomicU64::new(0)).collect(),
            queue_wait: TimeHistogram::new(),
            run: TimeHistogram::new(),
        }
    }

    pub fn record_wait(&self, wait: Duration) {
        self.queue_wait.record(wait);
    }

    pub fn record_batch(&self, size: usize) {
        self.items.fetch_add(size as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        if let Some(slot) = self.batch_sizes.get(size) {
            slot.fetch_add(1, Relaxed);
        }
    }

    pub fn record_busy(&self, busy: Duration) {
        self.run.record(busy);
    }

    pub fn snapshot(&self, name: &str, queue_len: usize) -> NodeStats {
        NodeStats {
            name: name.to_string(),
            queue_len,
            instances: self.instances.load(Relaxed),
            items: self.items.load(Relaxed),
            batches: self.batches.load(Relaxed),
            queue_wait_us: self.queue_wait.sum_us.load(Relaxed),
            busy_us: self.run.sum_us.load(Relaxed),
            batch_sizes: self.batch_sizes.iter().map(|c| c.load(Relaxed)).collect(),
            queue_wait: self.queue_wait.snapshot(),
            run: self.run.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_bucket_and_snapshots_are_cumulative() {
        let h = TimeHistogram::new();
        for us in [10, 50, 51, 3_000, 700_000, 20_000_000] {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.cumulative.len(), TIME_BOUNDS.len());
        // ≤ 50 µs: 10 and 50; ≤ 100 µs: + 51; ≤ 5 ms: + 3 ms; ≤ 1 s: + 0.7 s; 20 s above all.
        let at = |b: f64| s.cumulative[TIME_BOUNDS.iter().position(|&x| x == b).unwrap()];
        assert_eq!(
            (at(0.00005), at(0.0001), at(0.0025), at(0.005)),
            (2, 3, 3, 4)
        );
        assert_eq!((at(0.5), at(1.0), at(10.0)), (4, 5, 5));
        assert!((s.sum_s - 20.703111).abs() < 1e-9, "{}", s.sum_s);
    }
}
