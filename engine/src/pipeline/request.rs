//! A request in flight: where its items' outcomes gather and who is told, and each item as
//! the nodes' queues carry it (`Task`), with the fan-out branch or `MapReduce` parent it may
//! belong to.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::Shared;
use crate::backend::Done;
use crate::error::RequestError;
use crate::item::Outcome;
use crate::item::{Item, Value};
use crate::scheduler::Queued;

pub(crate) struct RequestState {
    pub(super) slots: Mutex<Vec<Option<Outcome>>>,
    pub(super) remaining: AtomicUsize,
    pub(super) done: Mutex<Option<Done>>,
    pub(super) started: Instant,
    pub(super) shared: Weak<Shared>,
    /// Per item, the node it entered last (usize::MAX before any), for the error of a request
    /// that expires while an instance holds the item.
    pub(super) at_node: Vec<AtomicUsize>,
    /// Set once the callback is taken: what is still queued for this request is dropped.
    pub(super) answered: AtomicBool,
}

impl RequestState {
    /// The callback (None once the request was answered) and the outcomes so far, taken
    /// together.
    pub(super) fn take_answer(&self) -> (Option<Done>, Vec<Option<Outcome>>) {
        let mut slots = crate::sync::lock(&self.slots);
        let callback = crate::sync::lock(&self.done).take();
        let taken = if callback.is_some() {
            self.answered.store(true, Ordering::SeqCst);
            std::mem::take(&mut *slots)
        } else {
            Vec::new()
        };
        (callback, taken)
    }

    /// The deadline passed with items still inside (running in an instance that has not
    /// returned: waiting ones fail in their queue): answers now, with what is done and
    /// `Timeout` for the rest; the late items' outcomes are dropped when they come.
    pub(super) fn expire(&self) {
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
pub(super) struct JoinState {
    pub(super) node: usize,
    /// Each branch's outcome with the node it arrived from.
    pub(super) slots: Mutex<Vec<Option<BranchOutcome>>>,
    pub(super) remaining: AtomicUsize,
}

pub(super) type BranchOutcome = Result<(usize, Item), RequestError>;

pub(super) struct Branch {
    pub(super) join: Arc<JoinState>,
    pub(super) index: usize,
}

/// Where the children of one item meet again at its `MapReduce` node.
pub(super) struct Gather {
    /// The `MapReduce` node.
    pub(super) node: usize,
    /// The item that was split; taken by whichever ends it (the last child, or the first to
    /// fail).
    pub(super) parent: Mutex<Option<Task>>,
    pub(super) slots: Mutex<Vec<Option<Item>>>,
    pub(super) remaining: AtomicUsize,
    /// A child failed and the parent with it: the other children are dropped.
    pub(super) failed: AtomicBool,
}

pub(super) struct Child {
    pub(super) gather: Arc<Gather>,
    pub(super) index: usize,
}

/// A value an item kept as it left a node, for a later node's `map`.
#[derive(Clone)]
pub(super) struct Kept {
    pub(super) node: usize,
    pub(super) key: String,
    pub(super) value: Value,
}

/// An item in flight with what the scheduler needs to know about it.
pub(crate) struct Task {
    pub(super) item: Item,
    pub(super) req: Arc<RequestState>,
    pub(super) index: usize,
    pub(super) enqueued: Instant,
    pub(super) deadline: Instant,
    pub(super) branch: Option<Branch>,
    pub(super) child: Option<Child>,
    pub(super) kept: Vec<Kept>,
}

impl Queued for Task {
    fn enqueued(&self) -> Instant {
        self.enqueued
    }

    fn set_enqueued(&mut self, at: Instant) {
        self.enqueued = at;
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn cancelled(&self) -> bool {
        self.req.answered.load(Ordering::SeqCst)
            || self
                .child
                .as_ref()
                .is_some_and(|c| c.gather.failed.load(Ordering::SeqCst))
    }

    fn timeout_error(&self, node: &str) -> RequestError {
        RequestError::Timeout {
            node: node.to_string(),
            waited_ms: self.req.started.elapsed().as_millis() as u64,
        }
    }
}
