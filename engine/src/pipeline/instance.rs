//! One instance of a node: a thread that builds its backend, then runs the batches the node's
//! scheduler gives it, failing a batch whose backend errs or panics (and rebuilding the
//! backend after a panic).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use super::request::Task;
use super::Shared;
use crate::backend::{Backend, InitContext, Registry, SharedCache, Takes};
use crate::config::Config;
use crate::error::{ConfigError, EngineError, RequestError};
use crate::item::Item;
use crate::scheduler::Work;

/// One instance thread: builds its backend on itself (so thread-bound resources such as a GPU
/// context belong to it), then serves batches.
pub(super) struct Instance {
    pub(super) shared: Arc<Shared>,
    pub(super) config: Arc<Config>,
    pub(super) registry: Arc<Registry>,
    pub(super) cache: Arc<SharedCache>,
    pub(super) node: usize,
    pub(super) instance: usize,
    /// Set once the instance serves no more batches (then it drops its backend).
    pub(super) released: Arc<AtomicBool>,
}

impl Instance {
    fn build(&self) -> Result<Box<dyn Backend>, ConfigError> {
        let node = &self.config.nodes[self.node];
        let handle = self.shared.handle();
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
            stage: self.shared.graph.stage(self.node),
        };
        self.registry.build(&ctx)
    }

    pub(super) fn run(
        self,
        rx: Receiver<Work<Task>>,
        ready: std::sync::mpsc::Sender<Result<(usize, Takes), EngineError>>,
    ) {
        let name = self.config.nodes[self.node].name.clone();
        let built = catch_unwind(AssertUnwindSafe(|| self.build()));
        let rt = &self.shared.nodes[self.node];
        let mut backend = match built {
            Ok(Ok(b)) => {
                // Idle before ready: a request sent the moment the pipeline is built must see
                // every instance (bucketing would send it to whichever had registered).
                rt.metrics.instances.fetch_add(1, Ordering::SeqCst);
                rt.set_idle(&*self.shared, self.instance);
                let _ = ready.send(Ok((self.node, b.takes())));
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
            rt.set_idle(&*self.shared, self.instance);
        }
        self.released.store(true, Ordering::SeqCst);
        drop(backend);
    }
}

pub(super) fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
