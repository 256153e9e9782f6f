//! One node at run time: its bounded queue, its batcher thread and its instance threads
//! (docs/architecture.md#the-engine-items-backends-scheduler). Routing between nodes lives in
//! `pipeline`, which this module reaches only through the two traits below (`Queued`, `Flow`):
//! the scheduler knows when an item was queued and when it must be gone, not what a request is.

pub(crate) mod deadlines;
pub mod decision;
mod metrics;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{NodeConfig, Profile};
use crate::error::RequestError;
use crate::sync::lock;
pub use decision::{decide, Decision};
pub use metrics::{NodeMetrics, NodeStats, TimeHistogramSnapshot, TIME_BOUNDS};

/// An item in a node's queue, as the scheduler sees it.
pub(crate) trait Queued: Send {
    /// When it entered the queue it is in.
    fn enqueued(&self) -> Instant;
    fn set_enqueued(&mut self, at: Instant);
    /// When its request must be answered.
    fn deadline(&self) -> Instant;
    /// The error it fails with when it times out at node `node`.
    fn timeout_error(&self, node: &str) -> RequestError;
    /// Whether the item's request no longer wants it (answered already, or a sibling of a
    /// `MapReduce` child failed): it is dropped instead of run.
    fn cancelled(&self) -> bool {
        false
    }
}

/// What a node's queue asks of the pipeline around it.
pub(crate) trait Flow {
    type Task: Queued;
    /// An item of a request being admitted has reached its entry node's queue (or was refused
    /// there): it no longer counts as arriving.
    fn item_entered(&self);
    /// How many items may still reach a node whose ancestors are `upstream` (adaptive
    /// batching: a partial batch waits only for items that can come).
    fn may_arrive(&self, upstream: &[usize]) -> usize;
    /// The item failed in this node's queue (expired, or the instance it was given to is gone).
    fn fail(&self, task: Self::Task, error: RequestError);
}

/// A task the queue would not take, handed back with the reason (boxed: this is the rare path).
pub(crate) type Refused<T> = Box<(T, RequestError)>;

/// What one run of the decision took off the queue.
struct Pumped<T> {
    /// Batches for instances.
    ready: Vec<(usize, Vec<T>)>,
    /// Items whose deadline passed while they waited.
    expired: Vec<T>,
    /// When to look again with nothing new: a batching timeout or a deadline.
    timer: Option<Duration>,
}

pub(crate) enum Work<T> {
    Batch(Vec<T>),
    Stop,
}

struct NodeState<T> {
    queue: VecDeque<T>,
    idle: Vec<bool>,
    closed: bool,
    /// While the batcher sleeps: until when (`None`: until woken). `None` while it runs.
    batcher_sleeps: Option<Option<Instant>>,
}

pub(crate) struct NodeRuntime<T> {
    pub name: String,
    profiles: Vec<Profile>,
    batching_timeout: Duration,
    queue_timeout: Option<Duration>,
    pub capacity: usize,
    state: Mutex<NodeState<T>>,
    /// The batcher waits here for items and idle instances.
    wake_batcher: Condvar,
    /// Upstream instances wait here for room in a full queue.
    room: Condvar,
    senders: Vec<Sender<Work<T>>>,
    pub metrics: NodeMetrics,
    /// Items this node holds: queued, or in a batch an instance runs (counted out just before
    /// they move on), so that the nodes after it know what may still reach them.
    held: AtomicUsize,
    /// The nodes from which items can reach this one (`Pipeline::build` sets them).
    upstream: Vec<usize>,
}

impl<T: Queued> NodeRuntime<T> {
    /// The runtime and the receiving ends of its instances' work channels.
    pub fn new(cfg: &NodeConfig) -> (NodeRuntime<T>, Vec<Receiver<Work<T>>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..cfg.instance_num)
            .map(|_| std::sync::mpsc::channel())
            .unzip();
        let rt = NodeRuntime {
            name: cfg.name.clone(),
            profiles: cfg.profiles.clone(),
            batching_timeout: cfg.batching_timeout,
            queue_timeout: cfg.timeout,
            capacity: cfg.queue_size,
            state: Mutex::new(NodeState {
                queue: VecDeque::new(),
                // Instances count as busy until they have built their backend.
                idle: vec![false; cfg.instance_num],
                closed: false,
                batcher_sleeps: None,
            }),
            wake_batcher: Condvar::new(),
            room: Condvar::new(),
            senders,
            metrics: NodeMetrics::new(cfg.max_batch()),
            held: AtomicUsize::new(0),
            upstream: Vec::new(),
        };
        (rt, receivers)
    }

    /// The nodes items reach this one from (its ancestors in the graph).
    pub fn set_upstream(&mut self, nodes: Vec<usize>) {
        self.upstream = nodes;
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// `n` items left this node (handed on, finished or failed).
    pub fn release(&self, n: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| {
                Some(h.saturating_sub(n))
            });
    }

    pub fn queue_len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    pub fn has_room(&self, n: usize) -> bool {
        lock(&self.state).queue.len() + n <= self.capacity
    }

    /// Admission: refuses at once when the queue is full. The item stops counting as arriving
    /// (`Flow::item_entered`) under the queue's lock, so that no decision sees it neither
    /// queued nor arriving (a request's last item would go in a batch of its own).
    pub fn try_push<F: Flow<Task = T>>(&self, flow: &F, mut task: T) -> Result<(), Refused<T>> {
        let mut st = lock(&self.state);
        flow.item_entered();
        if st.closed {
            return Err(Box::new((task, RequestError::ShuttingDown)));
        }
        if st.queue.len() >= self.capacity {
            let e = RequestError::Overloaded {
                node: self.name.clone(),
                capacity: self.capacity,
            };
            return Err(Box::new((task, e)));
        }
        task.set_enqueued(Instant::now());
        st.queue.push_back(task);
        self.held.fetch_add(1, Ordering::SeqCst);
        self.pump_and_dispatch(flow, st);
        Ok(())
    }

    /// Between nodes: waits for room (back-pressure) until the item's deadline.
    pub fn push_wait<F: Flow<Task = T>>(&self, flow: &F, mut task: T) -> Result<(), Refused<T>> {
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return Err(Box::new((task, RequestError::ShuttingDown)));
            }
            if st.queue.len() < self.capacity {
                break;
            }
            let now = Instant::now();
            let deadline = task.deadline();
            if now >= deadline {
                let e = task.timeout_error(&self.name);
                return Err(Box::new((task, e)));
            }
            st = crate::sync::wait_timeout(&self.room, st, deadline - now);
        }
        task.set_enqueued(Instant::now());
        st.queue.push_back(task);
        self.held.fetch_add(1, Ordering::SeqCst);
        self.pump_and_dispatch(flow, st);
        Ok(())
    }

    pub fn set_idle<F: Flow<Task = T>>(&self, flow: &F, instance: usize) {
        let mut st = lock(&self.state);
        st.idle[instance] = true;
        if st.closed {
            // The batcher exits once the queue is drained; let it look.
            self.wake_batcher.notify_one();
        }
        self.pump_and_dispatch(flow, st);
    }

    /// Stops admitting; queued items are still served.
    pub fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        self.wake_batcher.notify_all();
        self.room.notify_all();
    }

    /// When `task` must have left this node's queue: its request's deadline, or the node's
    /// `timeout` after it was queued, whichever comes first.
    fn deadline(&self, task: &T) -> Instant {
        let node = self.queue_timeout.map(|t| task.enqueued() + t);
        node.map_or(task.deadline(), |d| d.min(task.deadline()))
    }

    /// Takes every batch the decision allows now off the queue, and the items at its front
    /// whose deadline has passed (every instance may be busy: they must not wait for one).
    /// Returns them, and how long until a partial batch's timeout or the front item's
    /// deadline, if the queue is not empty.
    fn pump<F: Flow<Task = T>>(&self, flow: &F, st: &mut NodeState<T>) -> Pumped<T> {
        let mut out = Pumped {
            ready: Vec::new(),
            expired: Vec::new(),
            timer: None,
        };
        loop {
            let now = Instant::now();
            // Deadlines follow arrival (one request timeout, one node timeout), so the expired
            // items are at the front; a later one that expires first fails at its dispatch.
            while st.queue.front().is_some_and(|t| now >= self.deadline(t)) {
                out.expired.extend(st.queue.pop_front());
            }
            let oldest = st.queue.front().map_or(Duration::ZERO, |t| {
                now.saturating_duration_since(t.enqueued())
            });
            let expiry = st
                .queue
                .front()
                .map(|t| self.deadline(t).saturating_duration_since(now));
            match decide(
                st.queue.len(),
                oldest,
                self.batching_timeout,
                flow.may_arrive(&self.upstream),
                &self.profiles,
                &st.idle,
            ) {
                Decision::Dispatch { instance, count } => {
                    st.idle[instance] = false;
                    out.ready
                        .push((instance, st.queue.drain(..count).collect()));
                }
                Decision::WaitFor(d) => {
                    out.timer = Some(expiry.map_or(d, |e| e.min(d)));
                    return out;
                }
                Decision::Wait => {
                    out.timer = expiry;
                    return out;
                }
            }
        }
    }

    /// Whoever changes the queue or frees an instance runs the decision at once, so an item
    /// goes straight to an instance without waking a batcher thread; the batcher thread only
    /// serves timeouts (`batching_timeout`, and deadlines of items that wait).
    fn pump_and_dispatch<F: Flow<Task = T>>(&self, flow: &F, mut st: MutexGuard<'_, NodeState<T>>) {
        let pumped = self.pump(flow, &mut st);
        // Wake the batcher only when it would sleep past the new timer (a queue that waits
        // for busy instances must not cost a wake-up per item).
        if let (Some(d), Some(until)) = (pumped.timer, st.batcher_sleeps) {
            if until.is_none_or(|t| t > Instant::now() + d) {
                self.wake_batcher.notify_one();
            }
        }
        if !pumped.ready.is_empty() || !pumped.expired.is_empty() {
            self.hand_out(flow, st, pumped);
        }
    }

    /// Releases the lock (room was made: pushers may go on), then fails the expired items
    /// and gives each batch to its instance.
    fn hand_out<F: Flow<Task = T>>(
        &self,
        flow: &F,
        st: MutexGuard<'_, NodeState<T>>,
        pumped: Pumped<T>,
    ) {
        self.room.notify_all();
        drop(st);
        for task in pumped.expired {
            let e = task.timeout_error(&self.name);
            self.release(1);
            flow.fail(task, e);
        }
        let now = Instant::now();
        for (instance, batch) in pumped.ready {
            self.dispatch(flow, instance, batch, now);
        }
    }

    /// The batcher loop: dispatches partial batches when their timeout comes. Returns once
    /// closed and drained, after telling every instance to stop.
    pub fn run_batcher<F: Flow<Task = T>>(&self, flow: &F) {
        let mut st = lock(&self.state);
        loop {
            if st.closed && st.queue.is_empty() {
                break;
            }
            let pumped = self.pump(flow, &mut st);
            let timer = pumped.timer;
            if !pumped.ready.is_empty() || !pumped.expired.is_empty() {
                self.hand_out(flow, st, pumped);
                st = lock(&self.state);
                continue;
            }
            st.batcher_sleeps = Some(timer.map(|d| Instant::now() + d));
            st = match timer {
                Some(d) => crate::sync::wait_timeout(&self.wake_batcher, st, d),
                None => crate::sync::wait(&self.wake_batcher, st),
            };
            st.batcher_sleeps = None;
        }
        drop(st);
        for s in &self.senders {
            let _ = s.send(Work::Stop);
        }
    }

    fn dispatch<F: Flow<Task = T>>(&self, flow: &F, instance: usize, batch: Vec<T>, now: Instant) {
        let mut live = Vec::with_capacity(batch.len());
        for task in batch {
            if now >= self.deadline(&task) {
                let e = task.timeout_error(&self.name);
                self.release(1);
                flow.fail(task, e);
            } else if task.cancelled() {
                self.release(1);
                flow.fail(task, RequestError::Cancelled);
            } else {
                self.metrics
                    .record_wait(now.saturating_duration_since(task.enqueued()));
                live.push(task);
            }
        }
        if live.is_empty() {
            self.set_idle(flow, instance);
            return;
        }
        self.metrics.record_batch(live.len());
        if let Err(std::sync::mpsc::SendError(Work::Batch(tasks))) =
            self.senders[instance].send(Work::Batch(live))
        {
            self.release(tasks.len());
            for t in tasks {
                flow.fail(t, RequestError::ShuttingDown);
            }
        }
    }

    pub fn stats(&self) -> NodeStats {
        self.metrics.snapshot(&self.name, self.queue_len())
    }
}

#[cfg(test)]
mod tests {
    //! The node's queue alone, against a fake pipeline: the two traits are all it needs.
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[derive(Debug)]
    struct Item {
        id: usize,
        enqueued: Instant,
        deadline: Instant,
    }

    impl Queued for Item {
        fn enqueued(&self) -> Instant {
            self.enqueued
        }
        fn set_enqueued(&mut self, at: Instant) {
            self.enqueued = at;
        }
        fn deadline(&self) -> Instant {
            self.deadline
        }
        fn timeout_error(&self, node: &str) -> RequestError {
            RequestError::Timeout {
                node: node.into(),
                waited_ms: 0,
            }
        }
    }

    #[derive(Default)]
    struct Fake {
        entered: AtomicUsize,
        failed: Mutex<Vec<(usize, RequestError)>>,
    }

    impl Flow for Fake {
        type Task = Item;
        fn item_entered(&self) {
            self.entered.fetch_add(1, Ordering::SeqCst);
        }
        fn may_arrive(&self, _: &[usize]) -> usize {
            0
        }
        fn fail(&self, task: Item, error: RequestError) {
            lock(&self.failed).push((task.id, error));
        }
    }

    fn node(toml: &str) -> (NodeRuntime<Item>, Vec<Receiver<Work<Item>>>) {
        let config = Config::parse(toml, Path::new("t.toml")).unwrap();
        NodeRuntime::new(&config.nodes[0])
    }

    fn item(id: usize, deadline: Instant) -> Item {
        Item {
            id,
            enqueued: Instant::now(),
            deadline,
        }
    }

    #[test]
    fn queued_items_go_to_an_idle_instance_in_one_batch_and_expired_ones_fail_through_the_flow() {
        let (rt, rx) = node("[n]\nbackend = \"Identity\"\nmax = 4\nqueue_size = 3\n");
        let flow = Fake::default();
        let later = Instant::now() + Duration::from_secs(10);
        // The instance is busy (not yet idle): items queue, the fourth is refused.
        for id in 0..3 {
            assert!(rt.try_push(&flow, item(id, later)).is_ok());
        }
        let refused = rt.try_push(&flow, item(3, later)).unwrap_err();
        assert!(matches!(
            refused.1,
            RequestError::Overloaded { capacity: 3, .. }
        ));
        assert_eq!(flow.entered.load(Ordering::SeqCst), 4);
        assert_eq!(rt.held(), 3);
        // Idle: the three go out together, in order.
        rt.set_idle(&flow, 0);
        match rx[0].try_recv() {
            Ok(Work::Batch(b)) => assert_eq!(b.iter().map(|t| t.id).collect::<Vec<_>>(), [0, 1, 2]),
            _ => panic!("no batch"),
        }
        // The instance is busy again: an item whose deadline has passed fails at the next
        // decision instead of waiting for it.
        rt.try_push(&flow, item(4, Instant::now())).unwrap();
        rt.try_push(&flow, item(5, later)).unwrap();
        let failed = lock(&flow.failed);
        assert_eq!(failed.len(), 1);
        assert!(matches!(&failed[0], (4, RequestError::Timeout { node, .. }) if node == "n"));
        assert_eq!(rt.queue_len(), 1);
    }

    #[test]
    fn a_closed_node_refuses_and_its_batcher_stops_every_instance() {
        let (rt, rx) = node("[n]\nbackend = \"Identity\"\ninstance_num = 2\n");
        let flow = Fake::default();
        rt.close();
        let later = Instant::now() + Duration::from_secs(10);
        let refused = rt.try_push(&flow, item(0, later)).unwrap_err();
        assert!(matches!(refused.1, RequestError::ShuttingDown));
        rt.run_batcher(&flow);
        for r in &rx {
            assert!(matches!(r.try_recv(), Ok(Work::Stop)));
        }
    }
}
