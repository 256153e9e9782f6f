//! The keys a backend reads from its node's table, declared beside its registration, so that
//! a key no backend of a node reads (a typo: `batching_timout`, `resize_hh`) is a load error
//! with a did-you-mean instead of a setting silently ignored. docs/config.md's backend table
//! is tested against these declarations.

/// One key: its name, what it takes, its default, one line of meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub takes: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

pub const fn key(
    name: &'static str,
    takes: &'static str,
    default: &'static str,
    doc: &'static str,
) -> Key {
    Key {
        name,
        takes,
        default,
        doc,
    }
}

/// The keys every node has, read by the scheduler (config/mod.rs `node_config`).
pub const SCHEDULING: &[Key] = &[
    key(
        "backend",
        "a backend expression",
        "required",
        "what the node runs",
    ),
    key(
        "instance_num",
        "1 to 1024",
        "1",
        "instances, each on its own thread",
    ),
    key(
        "device_id",
        "a GPU index, or a list `\"0,1\"`",
        "0",
        "the GPUs of the node's GPU backends, instance i on the (i mod n)-th",
    ),
    key(
        "batching_timeout",
        "milliseconds",
        "0",
        "longest a partial batch waits for more items",
    ),
    key(
        "min",
        "a batch size or shape, `;` per instance",
        "1",
        "smallest batch",
    ),
    key(
        "max",
        "a batch size or shape, `;` per instance",
        "1",
        "largest batch",
    ),
    key(
        "next",
        "node names, comma-separated",
        "none",
        "where items go next",
    ),
    key(
        "map",
        "`a[result:data],…`",
        "none",
        "how fan-out branches join",
    ),
    key(
        "filter",
        "a filter name",
        "swap",
        "what the node does with an arriving item",
    ),
    key(
        "timeout",
        "milliseconds",
        "none",
        "longest an item waits in the queue",
    ),
    key(
        "queue_size",
        "a positive integer",
        "4096",
        "items the queue holds",
    ),
    key(
        "model_name",
        "a name (letters, digits, `_`, `-`, `.`)",
        "the node's name",
        "an entry node's model name in the Open Inference Protocol",
    ),
];
