//! An item's way through the graph: admission into its entry node, `next` and the filters
//! after each node, fan-out and join, and the answer once every item of a request is done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::request::{Branch, JoinState, RequestState, Task};
use super::Shared;
use crate::backend::{Done, PipelineHandle, Submit};
use crate::config::Filter;
use crate::error::RequestError;
use crate::item::Item;
use crate::item::Outcome;
use crate::scheduler::Flow;

impl Flow for Shared {
    type Task = Task;

    /// An item of a request being admitted has reached its entry node's queue (or was refused
    /// there): it no longer counts as arriving.
    fn item_entered(&self) {
        self.entering.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many items may still reach a node whose ancestors are `upstream`: those being
    /// admitted and those the ancestors hold (the scheduler's adaptive batching).
    fn may_arrive(&self, upstream: &[usize]) -> usize {
        self.entering.load(Ordering::SeqCst)
            + upstream
                .iter()
                .map(|&a| self.nodes[a].held())
                .sum::<usize>()
    }

    fn fail(&self, task: Task, error: RequestError) {
        Shared::fail(self, task, error)
    }
}

impl Submit for Shared {
    fn submit(self: Arc<Self>, items: Vec<Item>, done: Done) -> Result<(), RequestError> {
        self.admit(items, done)
    }
}

impl Shared {
    /// The handle this pipeline's backends get (`Jump`): it submits here without keeping the
    /// pipeline alive.
    pub(super) fn handle(self: &Arc<Self>) -> PipelineHandle {
        let me: Weak<dyn Submit> = Arc::downgrade(self) as Weak<dyn Submit>;
        PipelineHandle::new(me)
    }

    pub(super) fn admit(
        self: &Arc<Self>,
        items: Vec<Item>,
        done: Done,
    ) -> Result<(), RequestError> {
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
            if let Err(refused) = self.nodes[entry].try_push(&**self, task) {
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
    pub(super) fn after_node(&self, task: Task, node: usize) {
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
