use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters recorded at the hand-off points (dispatch and instance completion).
pub struct NodeMetrics {
    /// Instances built and serving (a failed rebuild after a panic lowers it).
    pub instances: AtomicU64,
    items: AtomicU64,
    batches: AtomicU64,
    queue_wait_us: AtomicU64,
    busy_us: AtomicU64,
    /// Index = batch size.
    batch_sizes: Vec<AtomicU64>,
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
}

impl NodeMetrics {
    pub fn new(max_batch: usize) -> Self {
        NodeMetrics {
            instances: AtomicU64::new(0),
            items: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            queue_wait_us: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
            batch_sizes: (0..=max_batch).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record_wait(&self, wait: Duration) {
        self.queue_wait_us
            .fetch_add(wait.as_micros() as u64, Relaxed);
    }

    pub fn record_batch(&self, size: usize) {
        self.items.fetch_add(size as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        if let Some(slot) = self.batch_sizes.get(size) {
            slot.fetch_add(1, Relaxed);
        }
    }

    pub fn record_busy(&self, busy: Duration) {
        self.busy_us.fetch_add(busy.as_micros() as u64, Relaxed);
    }

    pub fn snapshot(&self, name: &str, queue_len: usize) -> NodeStats {
        NodeStats {
            name: name.to_string(),
            queue_len,
            instances: self.instances.load(Relaxed),
            items: self.items.load(Relaxed),
            batches: self.batches.load(Relaxed),
            queue_wait_us: self.queue_wait_us.load(Relaxed),
            busy_us: self.busy_us.load(Relaxed),
            batch_sizes: self.batch_sizes.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }
}
