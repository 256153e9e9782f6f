//! Deadlines kept by one thread: at its deadline, `on_expiry` runs for each target still alive.
//! The pipeline registers every request here, so a request is answered by its deadline even
//! when one of its items sits in an instance that never returns (a hung backend): the queues
//! expire the items that wait, this expires the ones that run.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

struct Entry<T> {
    at: Instant,
    /// Registration order: equal deadlines expire first come, first served.
    seq: u64,
    target: Weak<T>,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed: the heap's top is the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct State<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
    stop: bool,
    /// The heap's size after its last compaction: when it has doubled, entries whose target
    /// is gone (answered requests) are dropped, so memory follows what is in flight, not the
    /// request rate times the timeout.
    compacted: usize,
}

/// No compaction below this many entries.
const COMPACT_MIN: usize = 1024;

struct Inner<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

pub(crate) struct Deadlines<T: Send + Sync + 'static> {
    inner: Arc<Inner<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + Sync + 'static> Deadlines<T> {
    pub(crate) fn start(on_expiry: impl Fn(Arc<T>) + Send + 'static) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                seq: 0,
                stop: false,
                compacted: 0,
            }),
            wake: Condvar::new(),
        });
        let i = inner.clone();
        let thread = std::thread::Builder::new()
            .name("deadlines".into())
            .spawn(move || i.run(on_expiry))?;
        Ok(Deadlines {
            inner,
            thread: Some(thread),
        })
    }

    /// `target` expires at `at` unless it has been dropped by then (held weakly).
    pub(crate) fn add(&self, at: Instant, target: &Arc<T>) {
        let mut st = self.inner.lock();
        if st.heap.len() >= COMPACT_MIN.max(2 * st.compacted) {
            st.heap.retain(|e| e.target.strong_count() > 0);
            st.compacted = st.heap.len();
        }
        let seq = st.seq;
        st.seq += 1;
        // Only a new earliest deadline needs the thread to look again.
        let earliest = st.heap.peek().is_none_or(|e| at < e.at);
        st.heap.push(Entry {
            at,
            seq,
            target: Arc::downgrade(target),
        });
        drop(st);
        if earliest {
            self.inner.wake.notify_one();
        }
    }
}

impl<T> Inner<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        crate::sync::lock(&self.state)
    }

    fn run(&self, on_expiry: impl Fn(Arc<T>)) {
        let mut st = self.lock();
        loop {
            if st.stop {
                return;
            }
            let now = Instant::now();
            match st.heap.peek().map(|e| e.at) {
                Some(at) if at <= now => {
                    let e = st.heap.pop();
                    drop(st);
                    if let Some(t) = e.and_then(|e| e.target.upgrade()) {
                        on_expiry(t);
                    }
                    st = self.lock();
                }
                Some(at) => {
                    st = crate::sync::wait_timeout(&self.wake, st, at - now);
                }
                None => st = crate::sync::wait(&self.wake, st),
            }
        }
    }
}

#[cfg(test)]
impl<T: Send + Sync + 'static> Deadlines<T> {
    fn pending(&self) -> usize {
        self.inner.lock().heap.len()
    }
}

impl<T: Send + Sync + 'static> Drop for Deadlines<T> {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // The last owner may be an expiry running on the thread itself: it stops alone.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn targets_expire_in_deadline_order_and_dropped_ones_never() {
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        let d = Deadlines::start(move |t: Arc<&'static str>| {
            let _ = tx.lock().unwrap().send((*t, Instant::now()));
        })
        .unwrap();
        let start = Instant::now();
        let (late, early, gone) = (Arc::new("late"), Arc::new("early"), Arc::new("gone"));
        d.add(start + Duration::from_millis(120), &late);
        d.add(start + Duration::from_millis(40), &early);
        d.add(start + Duration::from_millis(10), &gone);
        drop(gone);
        let (first, at1) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let (second, at2) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((first, second), ("early", "late"));
        assert!(at1 >= start + Duration::from_millis(40));
        assert!(at2 >= start + Duration::from_millis(120));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn answered_targets_do_not_pile_up_until_their_deadline() {
        let d = Deadlines::start(|_: Arc<u32>| {}).unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        let live: Vec<Arc<u32>> = (0..10).map(Arc::new).collect();
        for t in &live {
            d.add(far, t);
        }
        for i in 0..100_000 {
            // Each dropped right away, as an answered request's state is.
            d.add(far, &Arc::new(i));
        }
        assert!(
            d.pending() <= 2 * COMPACT_MIN + 10,
            "{} entries kept",
            d.pending()
        );
    }
}
