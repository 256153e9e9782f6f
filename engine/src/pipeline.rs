//! A running pipeline: requests in, items routed node to node, answers out (docs/architecture.md#the-engine-items-backends-scheduler).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{Backend, InitContext, Registry, SharedCache};
use crate::config::{Config, Filter};
use crate::error::{ConfigError, EngineError, RequestError};
use crate::graph::Graph;
use crate::item::Item;
use crate::scheduler::deadlines::Deadlines;
use crate::scheduler::{NodeRuntime, NodeStats, Work};

#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// A request not answered by then fails with `Timeout`.
    pub request_timeout: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            request_timeout: Duration::from_secs(10),
        }
    }
}

pub type Outcome = Result<Item, RequestError>;
type Callback = Box<dyn FnOnce(Vec<Outcome>) + Send>;

pub(crate) struct RequestState {
    slots: Mutex<Vec<Option<Outcome>>>,
    remaining: AtomicUsize,
    done: Mutex<Option<Callback>>,
    started: Instant,
    shared: Weak<Shared>,
    /// Per item, the node it entered last (usize::MAX before any), for the error of a request
    /// that expires while an instance holds the item.
    at_node: Vec<AtomicUsize>,
}

impl RequestState {
    /// The callback (None once the request was answered) and the outcomes so far, taken
    /// together.
    fn take_answer(&self) -> (Option<Callback>, Vec<Option<Outcome>>) {
        let mut slots = crate::sync::lock(&self.slots);
        let callback = crate::sync::lock(&self.done).take();
        let taken = if callback.is_some() {
            std::mem::take(&mut *slots)
        } else {
            Vec::new()
        };
        (callback, taken)
    }

    /// The deadline passed with items still inside (running in an instance that has not
    /// returned: waiting ones fail in their queue): answers now, with what is done and
    /// `Timeout` for the rest; the late items' outcomes are dropped when they come.
    fn expire(&self) {
        let (Some(callback), slots) = self.take_answer() else {
            return;
        };
        let shared = self.shared.upgrade();
        let node = |i: usize| {
            let n = self.at_node[i].load(Ordering::SeqCst);
            match &shared {
                Some(s) if n < s.graph.nodes.len() => s.graph.nodes[n].name.clone(),
                _ => "?".into(),
            }
        };
        let waited_ms = self.started.elapsed().as_millis() as u64;
        let results = slots
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.unwrap_or_else(|| {
                    Err(RequestError::Timeout {
                        node: node(i),
                        waited_ms,
                    })
                })
            })
            .collect();
        callback(results);
    }
}

/// Where fan-out branches of one item meet again.
struct JoinState {
    node: usize,
    /// Each branch's outcome with the node it arrived from.
    slots: Mutex<Vec<Option<BranchOutcome>>>,
    remaining: AtomicUsize,
}

type BranchOutcome = Result<(usize, Item), RequestError>;

struct Branch {
    join: Arc<JoinState>,
    index: usize,
}

/// An item in flight with what the scheduler needs to know about it.
pub(crate) struct Task {
    pub item: Item,
    req: Arc<RequestState>,
    index: usize,
    pub enqueued: Instant,
    pub deadline: Instant,
    branch: Option<Branch>,
}

impl Task {
    pub fn timeout_error(&self, node: &str) -> RequestError {
        RequestError::Timeout {
            node: node.to_string(),
            waited_ms: self.req.started.elapsed().as_millis() as u64,
        }
    }
}

pub(crate) struct Shared {
    graph: Graph,
    nodes: Vec<NodeRuntime>,
    options: PipelineOptions,
    accepting: AtomicBool,
    in_flight: AtomicUsize,
    /// Items of requests being admitted, not yet in their entry node's queue.
    entering: AtomicUsize,
    /// Every admitted request, expired at its deadline if still unanswered.
    deadlines: Deadlines<RequestState>,
}

/// A cheap handle for backends that submit work themselves (`Jump`). It does not keep the
/// pipeline alive.
#[derive(Clone)]
pub struct PipelineHandle(Weak<Shared>);

impl PipelineHandle {
    /// A handle to no pipeline: every `run` answers `ShuttingDown`.
    pub fn detached() -> Self {
        PipelineHandle(Weak::new())
    }

    /// Runs items and waits for all of them; bypasses the admission gate so that work already
    /// accepted can finish during shutdown.
    pub fn run(&self, items: Vec<Item>) -> Result<Vec<Outcome>, RequestError> {
        let shared = self.0.upgrade().ok_or(RequestError::ShuttingDown)?;
        let (tx, rx) = std::sync::mpsc::channel();
        shared.submit(
            items,
            Box::new(move |out| {
                let _ = tx.send(out);
            }),
        )?;
        drop(shared);
        rx.recv().map_err(|_| RequestError::ShuttingDown)
    }
}

impl Shared {
    /// An item of a request being admitted has reached its entry node's queue (or was refused
    /// there): it no longer counts as arriving.
    pub(crate) fn item_entered(&self) {
        self.entering.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many items may still reach a node whose ancestors are `upstream`: those being
    /// admitted and those the ancestors hold (the scheduler's adaptive batching).
    pub(crate) fn may_arrive(&self, upstream: &[usize]) -> usize {
        self.entering.load(Ordering::SeqCst)
            + upstream
                .iter()
                .map(|&a| self.nodes[a].held())
                .sum::<usize>()
    }

    fn submit(self: &Arc<Self>, items: Vec<Item>, done: Callback) -> Result<(), RequestError> {
        let mut entries = Vec::with_capacity(items.len());
        for item in &items {
            let entry = match &item.node_name {
                Some(name) => self
                    .graph
                    .index_of(name)
                    .ok_or_else(|| RequestError::UnknownNode(name.clone()))?,
                None => match self.graph.entries.as_slice() {
                    [one] => *one,
                    many => {
                        let names: Vec<_> = many
                            .iter()
                            .map(|&i| self.graph.nodes[i].name.as_str())
                            .collect();
                        return Err(RequestError::Other(format!(
                            "this pipeline has several entry nodes ({}); the request must name one (node_name)",
                            names.join(", ")
                        )));
                    }
                },
            };
            entries.push(entry);
        }
        for &e in &entries {
            let n = entries.iter().filter(|&&x| x == e).count();
            if !self.nodes[e].has_room(n) {
                return Err(RequestError::Overloaded {
                    node: self.nodes[e].name.clone(),
                    capacity: self.nodes[e].capacity,
                });
            }
        }
        if items.is_empty() {
            done(Vec::new());
            return Ok(());
        }
        let now = Instant::now();
        let req = Arc::new(RequestState {
            slots: Mutex::new((0..items.len()).map(|_| None).collect()),
            remaining: AtomicUsize::new(items.len()),
            done: Mutex::new(Some(done)),
            started: now,
            shared: Arc::downgrade(self),
            at_node: (0..items.len())
                .map(|_| AtomicUsize::new(usize::MAX))
                .collect(),
        });
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let deadline = now + self.options.request_timeout;
        self.deadlines.add(deadline, &req);
        // The first items of a request wait (up to their timeout) for the rest to form a batch.
        self.entering.fetch_add(items.len(), Ordering::SeqCst);
        for (index, (item, entry)) in items.into_iter().zip(entries).enumerate() {
            // `try_push` takes the item off `entering` under the node's lock, as it queues it.
            let task = Task {
                item,
                req: req.clone(),
                index,
                enqueued: now,
                deadline,
                branch: None,
            };
            req.at_node[index].store(entry, Ordering::SeqCst);
            if let Err(refused) = self.nodes[entry].try_push(self, task) {
                let (task, e) = *refused;
                self.complete(task, Err(e));
            }
        }
        Ok(())
    }

    fn complete(&self, task: Task, outcome: Outcome) {
        let req = task.req;
        {
            // Empty once the request expired (answered at its deadline): the outcome is late.
            let mut slots = crate::sync::lock(&req.slots);
            if let Some(slot) = slots.get_mut(task.index) {
                *slot = Some(outcome);
            }
        }
        if req.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The callback and the slots are taken together under the slots' lock, as `expire`
            // takes them: whichever answers the request answers it with every outcome.
            let (callback, slots) = req.take_answer();
            if let Some(cb) = callback {
                cb(slots
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Err(RequestError::Other("item lost".into()))))
                    .collect());
            }
            if let Some(shared) = req.shared.upgrade() {
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// The item failed: it ends here (or, inside a fan-out branch, fails its join).
    pub(crate) fn fail(&self, mut task: Task, error: RequestError) {
        match task.branch.take() {
            Some(branch) => self.arrive(task, branch, Err(error)),
            None => self.complete(task, Err(error)),
        }
    }

    /// The item leaves the graph at `node` (its end, or a Break/SerialSkip).
    fn finish(&self, mut task: Task, node: usize) {
        if let Some(branch) = task.branch.take() {
            let e = RequestError::Other(format!(
                "fan-out branch ended at node [{}] before reaching its join",
                self.graph.nodes[node].name
            ));
            return self.arrive(task, branch, Err(e));
        }
        if task.item.result.is_some() {
            let item = std::mem::take(&mut task.item);
            self.complete(task, Ok(item));
        } else {
            let reason = task.item.error.take().unwrap_or_else(|| "no result".into());
            let e = RequestError::NoResult {
                node: self.graph.nodes[node].name.clone(),
                reason,
            };
            self.complete(task, Err(e));
        }
    }

    /// The item has been through `node`: it moves on, one by one, towards `next`.
    fn after_node(&self, task: Task, node: usize) {
        let next = &self.graph.nodes[node].next;
        match next.as_slice() {
            [] => self.finish(task, node),
            [one] => self.deliver(task, *one, node),
            many => {
                let join = Arc::new(JoinState {
                    node: self.graph.nodes[node].join.unwrap_or(node),
                    slots: Mutex::new((0..many.len()).map(|_| None).collect()),
                    remaining: AtomicUsize::new(many.len()),
                });
                for (index, &to) in many.iter().enumerate() {
                    let branch_task = Task {
                        item: task.item.clone(),
                        req: task.req.clone(),
                        index: task.index,
                        enqueued: task.enqueued,
                        deadline: task.deadline,
                        branch: Some(Branch {
                            join: join.clone(),
                            index,
                        }),
                    };
                    self.deliver(branch_task, to, node);
                }
            }
        }
    }

    /// Hands an item that left `from` to node `to`, through `to`'s filter.
    fn deliver(&self, mut task: Task, to: usize, from: usize) {
        if let Some(branch) = task.branch.take() {
            if branch.join.node == to {
                return self.arrive(task, branch, Ok(from));
            }
            task.branch = Some(branch);
        }
        let item = &mut task.item;
        match self.graph.nodes[to].filter {
            Filter::Swap => match item.result.take() {
                Some(result) => {
                    item.data = result;
                    item.error = None;
                    self.enqueue(task, to);
                }
                None => {
                    let reason = item.error.take().unwrap_or_else(|| "no result".into());
                    let e = RequestError::NoResult {
                        node: self.graph.nodes[from].name.clone(),
                        reason,
                    };
                    self.fail(task, e);
                }
            },
            Filter::Run => self.enqueue(task, to),
            Filter::Skip => self.after_node(task, to),
            Filter::SerialSkip | Filter::Break => self.finish(task, to),
            Filter::Error => {
                let e = RequestError::Filtered(self.graph.nodes[to].name.clone());
                self.fail(task, e)
            }
            Filter::Or => {
                if item.result.is_some() {
                    self.after_node(task, to);
                } else {
                    item.error = None;
                    self.enqueue(task, to);
                }
            }
        }
    }

    fn enqueue(&self, task: Task, node: usize) {
        task.req.at_node[task.index].store(node, Ordering::SeqCst);
        if let Err(refused) = self.nodes[node].push_wait(self, task) {
            let (task, e) = *refused;
            self.fail(task, e);
        }
    }

    /// A branch reaches its join; the last one to arrive builds the joined item per `map`.
    fn arrive(&self, mut task: Task, branch: Branch, outcome: Result<usize, RequestError>) {
        let join = branch.join;
        let item = std::mem::take(&mut task.item);
        {
            let mut slots = crate::sync::lock(&join.slots);
            slots[branch.index] = Some(outcome.map(|from| (from, item)));
        }
        if join.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let slots = std::mem::take(&mut *crate::sync::lock(&join.slots));
        let mut arrived = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot {
                Some(Ok(x)) => arrived.push(x),
                Some(Err(e)) => return self.complete(task, Err(e)),
                None => return self.complete(task, Err(RequestError::Other("branch lost".into()))),
            }
        }
        let node = &self.graph.nodes[join.node];
        let mut joined = Item::default();
        for (_, item) in &arrived {
            joined.node_name.clone_from(&item.node_name);
            joined
                .extras
                .extend(item.extras.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for entry in &node.map {
            let source = arrived
                .iter()
                .find(|(from, _)| self.graph.nodes[*from].name == entry.source)
                .and_then(|(_, item)| item.get(&entry.from));
            match source {
                Some(value) => joined.set(&entry.to, value.clone()),
                None => {
                    let e = RequestError::NoResult {
                        node: entry.source.clone(),
                        reason: format!("`{}` needed by the map of [{}]", entry.from, node.name),
                    };
                    return self.complete(task, Err(e));
                }
            }
        }
        task.item = joined;
        self.enqueue(task, join.node);
    }
}

/// A loaded, running pipeline. Dropping it shuts it down.
pub struct Pipeline {
    shared: Arc<Shared>,
    config: Arc<Config>,
    threads: Vec<Worker>,
}

impl Pipeline {
    /// Loads a TOML with every backend of this build and default options.
    pub fn from_toml(path: &Path) -> Result<Pipeline, EngineError> {
        let config = Config::load(path)?;
        Pipeline::build(
            config,
            Registry::with_defaults(),
            PipelineOptions::default(),
        )
    }

    /// What `build` checks before it starts anything: the graph (`next`, cycles, entries),
    /// every node's backend expression against `registry` (names, with did-you-mean), every
    /// key against the scheduling keys and the keys of the node's backends (did-you-mean), and
    /// every value against what its backend takes.
    pub fn check(config: &Config, registry: &Registry) -> Result<(), EngineError> {
        Self::checked_graph(config, registry).map(|_| ())
    }

    fn checked_graph(config: &Config, registry: &Registry) -> Result<Graph, EngineError> {
        let graph = Graph::build(config)?;
        for node in &config.nodes {
            registry.check(&node.backend, &node.params)?;
        }
        registry.check_keys(config)?;
        for node in &config.nodes {
            registry.check_settings(&node.backend, &node.params)?;
        }
        Ok(graph)
    }

    /// Validates the graph and every backend name, then builds each node's instances on their
    /// own threads and waits until all are ready (or one failed).
    pub fn build(
        config: Config,
        registry: Registry,
        options: PipelineOptions,
    ) -> Result<Pipeline, EngineError> {
        let graph = Self::checked_graph(&config, &registry)?;
        let mut nodes = Vec::with_capacity(config.nodes.len());
        let mut receivers = Vec::with_capacity(config.nodes.len());
        for (i, node) in config.nodes.iter().enumerate() {
            let (mut rt, rx) = NodeRuntime::new(node);
            rt.set_upstream(ancestors(&graph, i));
            nodes.push(rt);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            graph,
            nodes,
            options,
            accepting: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            entering: AtomicUsize::new(0),
            deadlines: Deadlines::start(|r: Arc<RequestState>| r.expire())
                .map_err(|e| EngineError::Io(format!("cannot start a thread: {e}")))?,
        });
        let config = Arc::new(config);
        let registry = Arc::new(registry);
        let mut pipeline = Pipeline {
            shared: shared.clone(),
            config: config.clone(),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut expected = 0;
        for (n, rxs) in receivers.into_iter().enumerate() {
            let cache = Arc::new(SharedCache::default());
            for (instance, rx) in rxs.into_iter().enumerate() {
                let released = Arc::new(AtomicBool::new(false));
                let spawn = Instance {
                    shared: shared.clone(),
                    config: config.clone(),
                    registry: registry.clone(),
                    cache: cache.clone(),
                    node: n,
                    instance,
                    released: released.clone(),
                };
                let ready = ready_tx.clone();
                let name = format!("{}#{instance}", config.nodes[n].name);
                let handle = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || spawn.run(rx, ready))
                    .map_err(|e| EngineError::Io(format!("cannot start a thread: {e}")))?;
                pipeline.threads.push(Worker {
                    handle,
                    released: Some(released),
                });
                expected += 1;
            }
            let batcher_shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{}-batcher", config.nodes[n].name))
                .spawn(move || batcher_shared.nodes[n].run_batcher(&batcher_shared))
                .map_err(|e| EngineError::Io(format!("cannot start a thread: {e}")))?;
            pipeline.threads.push(Worker {
                handle,
                released: None,
            });
        }
        drop(ready_tx);
        for _ in 0..expected {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(EngineError::Io(
                        "an instance thread died while starting".into(),
                    ))
                }
            }
        }
        Ok(pipeline)
    }

    /// Submits a request of one or more items; `done` receives one outcome per item, in order,
    /// once all have completed. An `Err` here means the request was not admitted at all.
    pub fn submit(
        &self,
        items: Vec<Item>,
        done: impl FnOnce(Vec<Outcome>) + Send + 'static,
    ) -> Result<(), RequestError> {
        if !self.shared.accepting.load(Ordering::SeqCst) {
            return Err(RequestError::ShuttingDown);
        }
        self.shared.submit(items, Box::new(done))
    }

    /// Runs a request and waits for it.
    pub fn run(&self, items: Vec<Item>) -> Result<Vec<Outcome>, RequestError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(items, move |out| {
            let _ = tx.send(out);
        })?;
        rx.recv().map_err(|_| RequestError::ShuttingDown)
    }

    pub fn handle(&self) -> PipelineHandle {
        PipelineHandle(Arc::downgrade(&self.shared))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn entry_nodes(&self) -> Vec<&str> {
        self.shared
            .graph
            .entries
            .iter()
            .map(|&i| self.shared.graph.nodes[i].name.as_str())
            .collect()
    }

    pub fn stats(&self) -> Vec<NodeStats> {
        self.shared.nodes.iter().map(|n| n.stats()).collect()
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Stops admitting, waits up to `grace` for admitted requests to be answered, then stops
    /// every thread.
    pub fn shutdown(&mut self, grace: Duration) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        let until = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        for node in &self.shared.nodes {
            node.close();
        }
        // Instances stop after their current batch. One that does not return (a hung backend)
        // is left behind after a further second rather than holding the shutdown forever.
        let until = until.max(Instant::now()) + STOP_WAIT;
        let waiting = |w: &Worker| !w.handle.is_finished() && !w.releasing();
        while self.threads.iter().any(waiting) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Those past their last batch are freeing what they hold: a GPU decoder's nvJPEG states
        // and pinned buffers for every batch size took longer than the second above on the
        // H200, and were reported as hung.
        let until = Instant::now() + RELEASE_WAIT;
        let freeing = |w: &Worker| !w.handle.is_finished() && w.releasing();
        while self.threads.iter().any(freeing) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        for w in self.threads.drain(..) {
            let name = w.handle.thread().name().unwrap_or("?").to_string();
            if w.handle.is_finished() {
                if let Err(p) = w.handle.join() {
                    tracing::error!(thread = %name, "panicked while stopping: {}", panic_text(&p));
                }
            } else if w.releasing() {
                tracing::warn!(
                    thread = %name,
                    "an instance is still releasing its resources after {RELEASE_WAIT:?}; \
                     leaving it to finish"
                );
            } else {
                tracing::warn!(thread = %name, "an instance did not stop; leaving it running");
            }
        }
    }
}

/// How long shutdown waits for instances to finish their batch once their queues are closed.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// How long it then waits for those past their last batch to drop their backend.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A pipeline thread, and for an instance, whether it has left its last batch behind and is
/// dropping its backend.
struct Worker {
    handle: JoinHandle<()>,
    released: Option<Arc<AtomicBool>>,
}

impl Worker {
    fn releasing(&self) -> bool {
        self.released
            .as_ref()
            .is_some_and(|r| r.load(Ordering::SeqCst))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let grace = self.shared.options.request_timeout;
        self.shutdown(grace);
    }
}

/// One instance thread: builds its backend on itself (so thread-bound resources such as a GPU
/// context belong to it), then serves batches.
struct Instance {
    shared: Arc<Shared>,
    config: Arc<Config>,
    registry: Arc<Registry>,
    cache: Arc<SharedCache>,
    node: usize,
    instance: usize,
    /// Set once the instance serves no more batches (then it drops its backend).
    released: Arc<AtomicBool>,
}

impl Instance {
    fn build(&self) -> Result<Box<dyn Backend>, ConfigError> {
        let node = &self.config.nodes[self.node];
        let handle = PipelineHandle(Arc::downgrade(&self.shared));
        let ctx = InitContext {
            node,
            expr: &node.backend,
            registry: &self.registry,
            instance: self.instance,
            profile: &node.profiles[self.instance],
            device: node.device_of(self.instance),
            shared: &self.cache,
            pipeline: &handle,
            stream_scope: None,
        };
        self.registry.build(&ctx)
    }

    fn run(self, rx: Receiver<Work>, ready: std::sync::mpsc::Sender<Result<(), EngineError>>) {
        let name = self.config.nodes[self.node].name.clone();
        let built = catch_unwind(AssertUnwindSafe(|| self.build()));
        let rt = &self.shared.nodes[self.node];
        let mut backend = match built {
            Ok(Ok(b)) => {
                // Idle before ready: a request sent the moment the pipeline is built must see
                // every instance (bucketing would send it to whichever had registered).
                rt.metrics.instances.fetch_add(1, Ordering::SeqCst);
                rt.set_idle(&self.shared, self.instance);
                let _ = ready.send(Ok(()));
                b
            }
            Ok(Err(e)) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
            Err(p) => {
                let _ = ready.send(Err(EngineError::Instance {
                    node: name,
                    instance: self.instance,
                    reason: format!("panicked: {}", panic_text(&p)),
                }));
                return;
            }
        };
        drop(ready);
        while let Ok(Work::Batch(mut tasks)) = rx.recv() {
            let started = Instant::now();
            let mut items: Vec<Item> = tasks
                .iter_mut()
                .map(|t| {
                    let mut item = std::mem::take(&mut t.item);
                    item.error = None;
                    item
                })
                .collect();
            let outcome = catch_unwind(AssertUnwindSafe(|| backend.forward(&mut items)));
            rt.metrics.record_busy(started.elapsed());
            // Counted out before they move on: the next node must not wait for items it has.
            rt.release(tasks.len());
            match outcome {
                Ok(Ok(())) => {
                    for (mut task, item) in tasks.into_iter().zip(items) {
                        task.item = item;
                        self.shared.after_node(task, self.node);
                    }
                }
                Ok(Err(e)) => {
                    for task in tasks {
                        let err = RequestError::Backend {
                            node: name.clone(),
                            reason: e.to_string(),
                        };
                        self.shared.fail(task, err);
                    }
                }
                Err(p) => {
                    let reason = format!("panicked: {}", panic_text(&p));
                    // Counted out while rebuilding, back in once rebuilt.
                    rt.metrics.instances.fetch_sub(1, Ordering::SeqCst);
                    tracing::error!(node = %name, instance = self.instance, "{reason}; rebuilding the instance");
                    for task in tasks {
                        let err = RequestError::Backend {
                            node: name.clone(),
                            reason: reason.clone(),
                        };
                        self.shared.fail(task, err);
                    }
                    match catch_unwind(AssertUnwindSafe(|| self.build())) {
                        Ok(Ok(b)) => {
                            backend = b;
                            rt.metrics.instances.fetch_add(1, Ordering::SeqCst);
                            tracing::info!(node = %name, instance = self.instance, "instance rebuilt");
                        }
                        _ => {
                            tracing::error!(node = %name, instance = self.instance, "rebuild failed; the node runs with one instance fewer");
                            self.released.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
            rt.set_idle(&self.shared, self.instance);
        }
        self.released.store(true, Ordering::SeqCst);
        drop(backend);
    }
}

/// The nodes from which an item can reach node `i` along `next` (the graph has no cycles).
fn ancestors(graph: &Graph, i: usize) -> Vec<usize> {
    let mut seen = vec![false; graph.nodes.len()];
    let mut stack = vec![i];
    while let Some(n) = stack.pop() {
        for (p, node) in graph.nodes.iter().enumerate() {
            if node.next.contains(&n) && !seen[p] {
                seen[p] = true;
                stack.push(p);
            }
        }
    }
    seen[i] = false;
    (0..seen.len()).filter(|&p| seen[p]).collect()
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
