//! `MapReduce`'s registration: its keys, for the load-time key check and docs/config.md. The
//! node itself runs in the pipeline's routing (one child per element of `split`, gathered
//! back by `merge`), so it has no backend to build.

use crate::backend::keys::{key, Key};
use crate::backend::{Backend, InitContext};
use crate::error::ConfigError;

pub const KEYS: &[Key] = &[
    key(
        "jump",
        "a node's name",
        "required",
        "MapReduce: the first node of the sub-graph each child runs through",
    ),
    key(
        "split",
        "a key",
        "required",
        "MapReduce: the key whose list elements or tensor rows become the children, each \
         under the same key",
    ),
    key(
        "merge",
        "keys, `\"result,score\"`",
        "required",
        "MapReduce: the children's keys gathered back into the item as lists, in order",
    ),
];

/// Reached only when `MapReduce` is nested in another backend, which the graph refuses first.
pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Err(ctx.params().error(
        "backend",
        ctx.params().raw("backend").unwrap_or_default(),
        "`MapReduce` alone as a node's backend",
    ))
}
