//! One node at run time: its bounded queue, its batcher thread and its instance threads
//! (docs/architecture.md#the-engine-items-backends-scheduler). Routing between nodes lives in `pipeline`.

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
use crate::pipeline::{Shared, Task};
use crate::sync::lock;
pub use decision::{decide, Decision};
pub use metrics::{NodeMetrics, NodeStats, TimeHistogramSnapshot, TIME_BOUNDS};

/// A task the queue would not take, handed back with the reason (boxed: this is the rare path).
pub(crate) type Refused = Box<(Task, RequestError)>;

/// What one run of the decision took off the queue.
#[derive(Default)]
struct Pumped {
    /// Batches for instances.
    ready: Vec<(usize, Vec<Task>)>,
    /// Items whose deadline passed while they waited.
    expired: Vec<Task>,
    /// When to look again with nothing new: a batching timeout or a deadline.
    timer: Option<Duration>,
}

pub(crate) enum Work {
    Batch(Vec<Task>),
    Stop,
}

struct NodeState {
    queue: VecDeque<Task>,
    idle: Vec<bool>,
    closed: bool,
    /// While the batcher sleeps: until when (`None`: until woken). `None` while it runs.
    batcher_sleeps: Option<Option<Instant>>,
}

pub(crate) struct NodeRuntime {
    pub name: String,
    profiles: Vec<Profile>,
    batching_timeout: Duration,
    queue_timeout: Option<Duration>,
    pub capacity: usize,
    state: Mutex<NodeState>,
    /// The batcher waits here for items and idle instances.
    wake_batcher: Condvar,
    /// Upstream instances wait here for room in a full queue.
    room: Condvar,
    senders: Vec<Sender<Work>>,
    pub metrics: NodeMetrics,
    /// Items this node holds: queued, or in a batch an instance runs (counted out just before
    /// they move on), so that the nodes after it know what may still reach them.
    held: AtomicUsize,
    /// The nodes from which items can reach this one (`Pipeline::build` sets them).
    upstream: Vec<usize>,
}

impl NodeRuntime {
    /// The runtime and the receiving ends of its instances' work channels.
    pub fn new(cfg: &NodeConfig) -> (NodeRuntime, Vec<Receiver<Work>>) {
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
    /// (`Shared::item_entered`) under the queue's lock, so that no decision sees it neither
    /// queued nor arriving (a request's last item would go in a batch of its own).
    pub fn try_push(&self, shared: &Shared, mut task: Task) -> Result<(), Refused> {
        let mut st = lock(&self.state);
        shared.item_entered();
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
        task.enqueued = Instant::now();
        st.queue.push_back(task);
        self.held.fetch_add(1, Ordering::SeqCst);
        self.pump_and_dispatch(shared, st);
        Ok(())
    }

    /// Between nodes: waits for room (back-pressure) until the item's deadline.
    pub fn push_wait(&self, shared: &Shared, mut task: Task) -> Result<(), Refused> {
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return Err(Box::new((task, RequestError::ShuttingDown)));
            }
            if st.queue.len() < self.capacity {
                break;
            }
            let now = Instant::now();
            if now >= task.deadline {
                let e = task.timeout_error(&self.name);
                return Err(Box::new((task, e)));
            }
            st = crate::sync::wait_timeout(&self.room, st, task.deadline - now);
        }
        task.enqueued = Instant::now();
        st.queue.push_back(task);
        self.held.fetch_add(1, Ordering::SeqCst);
        self.pump_and_dispatch(shared, st);
        Ok(())
    }

    pub fn set_idle(&self, shared: &Shared, instance: usize) {
        let mut st = lock(&self.state);
        st.idle[instance] = true;
        if st.closed {
            // The batcher exits once the queue is drained; let it look.
            self.wake_batcher.notify_one();
        }
        self.pump_and_dispatch(shared, st);
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
    fn deadline(&self, task: &Task) -> Instant {
        let node = self.queue_timeout.map(|t| task.enqueued + t);
        node.map_or(task.deadline, |d| d.min(task.deadline))
    }

    /// Takes every batch the decision allows now off the queue, and the items at its front
    /// whose deadline has passed (every instance may be busy: they must not wait for one).
    /// Returns them, and how long until a partial batch's timeout or the front item's
    /// deadline, if the queue is not empty.
    fn pump(&self, shared: &Shared, st: &mut NodeState) -> Pumped {
        let mut out = Pumped::default();
        loop {
            let now = Instant::now();
            // Deadlines follow arrival (one request timeout, one node timeout), so the expired
            // items are at the front; a later one that expires first fails at its dispatch.
            while st.queue.front().is_some_and(|t| now >= self.deadline(t)) {
                out.expired.extend(st.queue.pop_front());
            }
            let oldest = st.queue.front().map_or(Duration::ZERO, |t| {
                now.saturating_duration_since(t.enqueued)
            });
            let expiry = st
                .queue
                .front()
                .map(|t| self.deadline(t).saturating_duration_since(now));
            match decide(
                st.queue.len(),
                oldest,
                self.batching_timeout,
                shared.may_arrive(&self.upstream),
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
    fn pump_and_dispatch(&self, shared: &Shared, mut st: MutexGuard<'_, NodeState>) {
        let pumped = self.pump(shared, &mut st);
        // Wake the batcher only when it would sleep past the new timer (a queue that waits
        // for busy instances must not cost a wake-up per item).
        if let (Some(d), Some(until)) = (pumped.timer, st.batcher_sleeps) {
            if until.is_none_or(|t| t > Instant::now() + d) {
                self.wake_batcher.notify_one();
            }
        }
        if !pumped.ready.is_empty() || !pumped.expired.is_empty() {
            self.hand_out(shared, st, pumped);
        }
    }

    /// Releases the lock (room was made: pushers may go on), then fails the expired items
    /// and gives each batch to its instance.
    fn hand_out(&self, shared: &Shared, st: MutexGuard<'_, NodeState>, pumped: Pumped) {
        self.room.notify_all();
        drop(st);
        for task in pumped.expired {
            let e = task.timeout_error(&self.name);
            self.release(1);
            shared.fail(task, e);
        }
        let now = Instant::now();
        for (instance, batch) in pumped.ready {
            self.dispatch(shared, instance, batch, now);
        }
    }

    /// The batcher loop: dispatches partial batches when their timeout comes. Returns once
    /// closed and drained, after telling every instance to stop.
    pub fn run_batcher(&self, shared: &Shared) {
        let mut st = lock(&self.state);
        loop {
            if st.closed && st.queue.is_empty() {
                break;
            }
            let pumped = self.pump(shared, &mut st);
            let timer = pumped.timer;
            if !pumped.ready.is_empty() || !pumped.expired.is_empty() {
                self.hand_out(shared, st, pumped);
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

    fn dispatch(&self, shared: &Shared, instance: usize, batch: Vec<Task>, now: Instant) {
        let mut live = Vec::with_capacity(batch.len());
        for task in batch {
            if now >= self.deadline(&task) {
                let e = task.timeout_error(&self.name);
                self.release(1);
                shared.fail(task, e);
            } else {
                self.metrics
                    .record_wait(now.saturating_duration_since(task.enqueued));
                live.push(task);
            }
        }
        if live.is_empty() {
            self.set_idle(shared, instance);
            return;
        }
        self.metrics.record_batch(live.len());
        if let Err(std::sync::mpsc::SendError(Work::Batch(tasks))) =
            self.senders[instance].send(Work::Batch(live))
        {
            self.release(tasks.len());
            for t in tasks {
                shared.fail(t, RequestError::ShuttingDown);
            }
        }
    }

    pub fn stats(&self) -> NodeStats {
        self.metrics.snapshot(&self.name, self.queue_len())
    }
}
