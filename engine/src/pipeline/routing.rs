//! An item's way through the graph: admission into its entry node, `next` and the filters
//! after each node, fan-out and join, `MapReduce`'s children and their gathering, the values
//! a later `map` reads, and the answer once every item of a request is done.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::request::{Branch, Child, Gather, JoinState, Kept, RequestState, Task};
use super::Shared;
use crate::backend::{Done, PipelineHandle, Submit};
use crate::config::Filter;
use crate::error::RequestError;
use crate::item::{Item, Outcome, Tensor, Value};
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
            if self.graph.nodes[entry].mapreduce.is_some() {
                return Err(RequestError::Other(format!(
                    "node [{}] is a MapReduce node: it splits what the node before it made, so a \
                     request enters before it",
                    self.graph.nodes[entry].name
                )));
            }
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
            answered: AtomicBool::new(false),
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
                child: None,
                kept: Vec::new(),
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
            None => self.end(task, Err(error)),
        }
    }

    /// The item is done: its request's outcome, or a `MapReduce` child's.
    fn end(&self, mut task: Task, outcome: Outcome) {
        match task.child.take() {
            Some(child) => self.gathered(child, outcome),
            None => self.complete(task, outcome),
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
            self.end(task, Ok(item));
        } else {
            let reason = task.item.error.take().unwrap_or_else(|| "no result".into());
            let e = RequestError::NoResult {
                node: self.graph.nodes[node].name.clone(),
                reason,
            };
            self.end(task, Err(e));
        }
    }

    /// The item has been through `node`: it keeps what a later `map` reads of it, and moves
    /// on, one by one, towards `next`.
    pub(super) fn after_node(&self, mut task: Task, node: usize) {
        for key in &self.graph.nodes[node].keep {
            if let Some(value) = task.item.get(key) {
                let value = value.clone();
                task.kept.retain(|k| k.node != node || k.key != *key);
                task.kept.push(Kept {
                    node,
                    key: key.clone(),
                    value,
                });
            }
        }
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
                        child: task.child.as_ref().map(|c| Child {
                            gather: c.gather.clone(),
                            index: c.index,
                        }),
                        kept: task.kept.clone(),
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

    /// Puts an item into `node`'s queue, after the node's `map` of earlier nodes; a `MapReduce`
    /// node splits it instead.
    fn enqueue(&self, mut task: Task, node: usize) {
        let g = &self.graph.nodes[node];
        if g.path_map {
            for (entry, &source) in g.map.iter().zip(&g.map_sources) {
                let kept = task
                    .kept
                    .iter()
                    .find(|k| k.node == source && k.key == entry.from);
                match kept {
                    Some(k) => {
                        let value = k.value.clone();
                        task.item.set(&entry.to, value);
                    }
                    None => {
                        let e = RequestError::NoResult {
                            node: entry.source.clone(),
                            reason: format!(
                                "`{}` needed by the map of [{}]: the item did not pass there, or \
                                 had no `{}` when it left",
                                entry.from, g.name, entry.from
                            ),
                        };
                        return self.fail(task, e);
                    }
                }
            }
        }
        if g.mapreduce.is_some() {
            return self.fan_out(task, node);
        }
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
                Some(Err(e)) => return self.end(task, Err(e)),
                None => return self.end(task, Err(RequestError::Other("branch lost".into()))),
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
        for (entry, &source) in node.map.iter().zip(&node.map_sources) {
            let source = arrived
                .iter()
                .find(|(from, _)| *from == source)
                .and_then(|(_, item)| item.get(&entry.from));
            match source {
                Some(value) => joined.set(&entry.to, value.clone()),
                None => {
                    let e = RequestError::NoResult {
                        node: entry.source.clone(),
                        reason: format!("`{}` needed by the map of [{}]", entry.from, node.name),
                    };
                    return self.end(task, Err(e));
                }
            }
        }
        task.item = joined;
        self.enqueue(task, join.node);
    }

    /// `MapReduce` at `node`: one child per element of the item's `split` key, each a copy of
    /// the item with that element under the key, into the sub-graph at `jump` with the item's
    /// deadline. The item waits in a `Gather` until the last child is back (`gathered`); with
    /// nothing to split it goes on at once, its `merge` keys empty lists.
    fn fan_out(&self, mut task: Task, node: usize) {
        let g = &self.graph.nodes[node];
        let Some(mr) = &g.mapreduce else {
            return self.fail(
                task,
                RequestError::Other(format!("[{}] is not MapReduce", g.name)),
            );
        };
        let parts = match split(task.item.get(&mr.split), &mr.split) {
            Ok(parts) => parts,
            Err(reason) => {
                let e = RequestError::NoResult {
                    node: g.name.clone(),
                    reason,
                };
                return self.fail(task, e);
            }
        };
        if parts.is_empty() {
            for key in &mr.merge {
                task.item.set(key, Value::List(Vec::new()));
            }
            return self.after_node(task, node);
        }
        let gather = Arc::new(Gather {
            node,
            parent: Mutex::new(None),
            slots: Mutex::new((0..parts.len()).map(|_| None).collect()),
            remaining: AtomicUsize::new(parts.len()),
            failed: AtomicBool::new(false),
        });
        let now = Instant::now();
        let children: Vec<Task> = parts
            .into_iter()
            .enumerate()
            .map(|(index, part)| {
                let mut item = Item {
                    data: task.item.data.clone(),
                    result: None,
                    node_name: task.item.node_name.clone(),
                    extras: task.item.extras.clone(),
                    error: None,
                };
                item.set(&mr.split, part);
                Task {
                    item,
                    req: task.req.clone(),
                    index: task.index,
                    enqueued: now,
                    deadline: task.deadline,
                    branch: None,
                    child: Some(Child {
                        gather: gather.clone(),
                        index,
                    }),
                    kept: task.kept.clone(),
                }
            })
            .collect();
        // Parked before the first child can come back.
        *crate::sync::lock(&gather.parent) = Some(task);
        for child in children {
            self.enqueue(child, mr.jump);
        }
    }

    /// A `MapReduce` child is done. The first to fail fails its parent (the others are then
    /// dropped unrun, `Task::cancelled`); the last to succeed gathers every child's `merge`
    /// keys into the parent as lists, in split order, and the parent goes on.
    fn gathered(&self, child: Child, outcome: Outcome) {
        let gather = child.gather;
        let item = match outcome {
            Ok(item) => item,
            Err(e) => {
                gather.failed.store(true, Ordering::SeqCst);
                let parent = crate::sync::lock(&gather.parent).take();
                if let Some(parent) = parent {
                    self.fail(parent, e);
                }
                return;
            }
        };
        crate::sync::lock(&gather.slots)[child.index] = Some(item);
        if gather.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let Some(mut parent) = crate::sync::lock(&gather.parent).take() else {
            return;
        };
        let mut children = std::mem::take(&mut *crate::sync::lock(&gather.slots));
        let node = &self.graph.nodes[gather.node];
        let merge = node.mapreduce.as_ref().map_or(&[][..], |m| &m.merge[..]);
        let n = children.len();
        for key in merge {
            let mut values = Vec::with_capacity(n);
            for (i, slot) in children.iter_mut().enumerate() {
                match slot.as_mut().and_then(|c| take_key(c, key)) {
                    Some(v) => values.push(v),
                    None => {
                        let e = RequestError::NoResult {
                            node: node.name.clone(),
                            reason: format!("child {i} of {n} has no `{key}` to merge"),
                        };
                        return self.fail(parent, e);
                    }
                }
            }
            parent.item.set(key, Value::List(values));
        }
        self.after_node(parent, gather.node);
    }
}

/// What `MapReduce` splits `value` (the item's `key`) into: a list's elements, or a tensor's
/// rows along its first axis (`PostProcYoloV8`'s `[n, 6]` boxes give `n` boxes of `[6]`).
fn split(value: Option<&Value>, key: &str) -> Result<Vec<Value>, String> {
    match value {
        Some(Value::List(values)) => Ok(values.clone()),
        Some(Value::Tensor(t)) if !t.shape.is_empty() => {
            let row_shape = t.shape[1..].to_vec();
            let row: usize = row_shape.iter().product();
            Ok((0..t.shape[0])
                .map(|r| {
                    let data = t.data[r * row..(r + 1) * row].to_vec();
                    Value::Tensor(Tensor::new(row_shape.clone(), data))
                })
                .collect())
        }
        Some(other) => Err(format!(
            "`{key}` holds {}; MapReduce splits a list or a tensor's rows",
            other.kind()
        )),
        None => Err(format!("the item has no `{key}` to split")),
    }
}

/// Moves `key` out of a finished child (its values are not needed after the gather).
fn take_key(item: &mut Item, key: &str) -> Option<Value> {
    match key {
        "data" => Some(std::mem::take(&mut item.data)),
        "result" => item.result.take(),
        other => item.extras.remove(other),
    }
}
