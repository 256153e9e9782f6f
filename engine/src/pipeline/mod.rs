//! A running pipeline: requests in, items routed node to node, answers out
//! (docs/architecture.md#the-engine-items-backends-scheduler). A request's state and its items
//! in flight are in `request`, the routing of an item from node to node in `routing`, an
//! instance's thread in `instance`; this file builds the nodes and their threads and stops them.

mod instance;
mod request;
mod routing;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::backend::PipelineHandle;
use crate::backend::{Registry, SharedCache, Takes};
use crate::config::Config;
use crate::error::{EngineError, RequestError};
use crate::graph::Graph;
use crate::item::Item;
pub use crate::item::Outcome;
use crate::scheduler::deadlines::Deadlines;
use crate::scheduler::{NodeRuntime, NodeStats};
use instance::{panic_text, Instance};
use request::{RequestState, Task};

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

pub(crate) struct Shared {
    graph: Graph,
    nodes: Vec<NodeRuntime<Task>>,
    options: PipelineOptions,
    accepting: AtomicBool,
    in_flight: AtomicUsize,
    /// Items of requests being admitted, not yet in their entry node's queue.
    entering: AtomicUsize,
    /// Every admitted request, expired at its deadline if still unanswered.
    deadlines: Deadlines<RequestState>,
}

/// A loaded, running pipeline. Dropping it shuts it down.
pub struct Pipeline {
    shared: Arc<Shared>,
    config: Arc<Config>,
    threads: Vec<Worker>,
    /// What each node's backend reads from an item (`Backend::takes`), by node index.
    takes: Vec<Takes>,
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
            rt.set_upstream(graph.ancestors(i));
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
            takes: vec![Takes::Any; config.nodes.len()],
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut expected = 0;
        for (n, rxs) in receivers.into_iter().enumerate() {
            // A `MapReduce` node runs in the routing (`routing::fan_out`): no instances.
            if shared.graph.nodes[n].mapreduce.is_some() {
                continue;
            }
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
                .spawn(move || batcher_shared.nodes[n].run_batcher(&*batcher_shared))
                .map_err(|e| EngineError::Io(format!("cannot start a thread: {e}")))?;
            pipeline.threads.push(Worker {
                handle,
                released: None,
            });
        }
        drop(ready_tx);
        for _ in 0..expected {
            match ready_rx.recv() {
                Ok(Ok((node, takes))) => pipeline.takes[node] = takes,
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
        self.shared.admit(items, Box::new(done))
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
        self.shared.handle()
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

    /// What node `node`'s backend reads from an item's `data`; `Any` for a node not in the
    /// pipeline.
    pub fn takes(&self, node: &str) -> Takes {
        self.config
            .nodes
            .iter()
            .position(|n| n.name == node)
            .map_or(Takes::Any, |i| self.takes[i].clone())
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
