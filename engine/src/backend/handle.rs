//! What a backend may ask of the pipeline it runs in: run items through another part of it and
//! wait (`Jump`). The handle does not keep the pipeline alive, and the backend sees only this
//! interface, not the pipeline's internals.

use std::sync::{Arc, Weak};

use crate::error::RequestError;
use crate::item::{Item, Outcome};

/// The answer to a request: one outcome per item, in order.
pub(crate) type Done = Box<dyn FnOnce(Vec<Outcome>) + Send>;

/// A pipeline that takes requests from its own backends. Implemented by the pipeline.
pub(crate) trait Submit: Send + Sync {
    /// Admits `items` as one request, bypassing the admission gate so that work already
    /// accepted can finish during shutdown; `done` gets their outcomes. An `Err` means the
    /// request was not admitted.
    fn submit(self: Arc<Self>, items: Vec<Item>, done: Done) -> Result<(), RequestError>;
}

/// A cheap handle to the pipeline a backend runs in.
#[derive(Clone)]
pub struct PipelineHandle(Option<Weak<dyn Submit>>);

impl PipelineHandle {
    pub(crate) fn new(pipeline: Weak<dyn Submit>) -> Self {
        PipelineHandle(Some(pipeline))
    }

    /// A handle to no pipeline: every `run` answers `ShuttingDown`.
    pub fn detached() -> Self {
        PipelineHandle(None)
    }

    /// Runs items and waits for all of them.
    pub fn run(&self, items: Vec<Item>) -> Result<Vec<Outcome>, RequestError> {
        let pipeline = self
            .0
            .as_ref()
            .and_then(Weak::upgrade)
            .ok_or(RequestError::ShuttingDown)?;
        let (tx, rx) = std::sync::mpsc::channel();
        // The strong reference goes with `submit`: waiting does not keep the pipeline alive.
        pipeline.submit(
            items,
            Box::new(move |out| {
                let _ = tx.send(out);
            }),
        )?;
        rx.recv().map_err(|_| RequestError::ShuttingDown)
    }
}
