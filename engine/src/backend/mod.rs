//! The backend trait, the registry from TOML names to constructors, and the context a
//! constructor gets (docs/architecture.md#the-engine-items-backends-scheduler).

mod handle;
pub mod keys;
mod shared;

use std::collections::BTreeMap;

pub use crate::config::expr::Expr;
use crate::config::{NodeConfig, Params, Profile};
use crate::error::{BackendError, ConfigError};
use crate::item::Item;
pub use handle::PipelineHandle;
pub(crate) use handle::{Done, Submit};
pub use keys::{key, Key};
pub use shared::SharedCache;

/// One stage of work on a batch. Each instance of a node owns its own backend object and calls
/// it from its own thread, so `Send` is enough.
pub trait Backend: Send {
    /// Reads each item's `data` and writes its `result`, or calls `Item::fail` for an item it
    /// cannot handle. An `Err` fails the whole batch.
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError>;

    /// What this backend offers to a fusion with the stage before it in a `Sequential`.
    fn fusable(&self) -> Option<Fusable> {
        None
    }

    /// Absorbs `next`, the following stage of a `Sequential`, when both can run as one
    /// kernel (ResizeTensor then cvtColorTensor; ResizeMat then cvtColorMat, Mat2Tensor);
    /// returns the backend doing both.
    fn fuse(&self, _next: &dyn Backend) -> Option<Box<dyn Backend>> {
        None
    }

    /// What it reads from an item's `data`: what a client sends to an entry node that starts
    /// with it (the Open Inference Protocol's model metadata says so).
    fn takes(&self) -> Takes {
        Takes::Any
    }
}

/// What a backend reads from an item's `data`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Takes {
    /// Encoded image bytes (DecodeMat, DecodeTensor).
    Encoded,
    /// A decoded 3-channel image, rows of BGR pixels as OpenCV decodes one (ResizeMat,
    /// cvtColorMat, UploadMat, …).
    Image,
    /// An f32 tensor of this shape, row-major (TensorrtTensor: one item of its model's input).
    Tensor(Vec<usize>),
    /// Whatever comes (Identity, Sleep, …): the pipeline's entry gets encoded bytes unless the
    /// client sends something else.
    #[default]
    Any,
}

/// A stage that can fold into the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusable {
    /// cvtColorMat: a host image's channel order, to RGB (`rgb`) or BGR.
    MatColor { rgb: bool },
    /// Mat2Tensor: a host image to a CHW f32 tensor.
    MatToTensor,
    /// cvtColorTensor: a GPU image's or tensor's channel order.
    TensorColor { rgb: bool },
}

pub type Constructor = fn(&InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError>;

/// A backend's settings, parsed once from its node's table into typed values: at load time
/// (`Pipeline::check`, so a bad value fails before anything starts, with the file, node, key,
/// value and what was expected) and again to hand them to each instance's constructor.
/// What only the running machine can tell (a GPU present, the model's channel count) stays
/// with the constructor.
pub trait Settings: Sized + 'static {
    /// The keys `parse` reads, besides the scheduling keys every node has.
    const KEYS: &'static [Key];
    fn parse(params: &Params) -> Result<Self, ConfigError>;
}

/// The constructor of a backend with typed settings.
pub type TypedConstructor<S> = fn(&InitContext<'_>, S) -> Result<Box<dyn Backend>, ConfigError>;

type Build = Box<dyn Fn(&InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> + Send + Sync>;

/// What a constructor may look at: its node's settings, its own expression (for composites),
/// the registry (to build inner backends), its instance's batch profile and GPU.
pub struct InitContext<'a> {
    pub node: &'a NodeConfig,
    pub expr: &'a Expr,
    pub registry: &'a Registry,
    pub instance: usize,
    pub profile: &'a Profile,
    /// The GPU this instance runs on (`NodeConfig::device_of`): GPU backends open this one,
    /// CPU backends ignore it.
    pub device: usize,
    /// Objects instances of a node share (a loaded model's weights).
    pub shared: &'a SharedCache,
    pub pipeline: &'a PipelineHandle,
    /// Inside `SyncTensor[...]`: the stream its GPU backends share, waited for once per batch
    /// by the `SyncTensor` (`gpu::scope`). Outside one, each GPU backend waits for its own.
    pub stream_scope: Option<&'a std::sync::Arc<crate::gpu::scope::StreamScope>>,
    /// The node's place in the pipeline, which orders its GPU streams (`gpu::priority`).
    pub stage: crate::graph::Stage,
}

impl<'a> InitContext<'a> {
    pub fn params(&self) -> &Params {
        &self.node.params
    }

    /// Builds an inner backend of a composite, with the same settings.
    pub fn build(&self, inner: &Expr) -> Result<Box<dyn Backend>, ConfigError> {
        let ctx = InitContext {
            expr: inner,
            ..*self
        };
        self.registry.build(&ctx)
    }

    /// Builds every argument of this expression (`Sequential[A,B,C]`).
    pub fn build_args(&self) -> Result<Vec<Box<dyn Backend>>, ConfigError> {
        self.expr.args.iter().map(|e| self.build(e)).collect()
    }

    /// Composites with one inner backend (`SyncTensor[X]`) call this.
    pub fn single_arg(&self) -> Result<&'a Expr, ConfigError> {
        match self.expr.args.as_slice() {
            [one] => Ok(one),
            _ => Err(self.params().error(
                "backend",
                self.params().raw("backend").unwrap_or_default(),
                format!(
                    "`{}` to wrap exactly one backend, as `{}[X]`",
                    self.expr.name, self.expr.name
                ),
            )),
        }
    }

    /// Leaf backends call this: `DecodeMat[X]` is a mistake worth reporting.
    pub fn no_args(&self) -> Result<(), ConfigError> {
        if self.expr.args.is_empty() {
            Ok(())
        } else {
            Err(self.params().error(
                "backend",
                self.params().raw("backend").unwrap_or_default(),
                format!("`{}` takes no inner backends", self.expr.name),
            ))
        }
    }
}

struct Entry {
    build: Build,
    /// Parses the backend's settings and drops them (the load-time check).
    check_settings: fn(&Params) -> Result<(), ConfigError>,
    /// Arguments are node names, not backends (`Jump[node]`).
    args_are_nodes: bool,
    keys: &'static [Key],
}

#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

impl Registry {
    pub fn empty() -> Self {
        Registry::default()
    }

    /// Registers a backend under the name users write, with the keys it reads from its
    /// node's table (besides the scheduling keys every node has). Its constructor reads them
    /// itself, when built; `register_typed` checks them at load time.
    pub fn register(&mut self, name: &str, constructor: Constructor, keys: &'static [Key]) {
        self.entries.insert(
            name.to_string(),
            Entry {
                build: Box::new(constructor),
                check_settings: |_| Ok(()),
                args_are_nodes: false,
                keys,
            },
        );
    }

    /// Registers a backend with typed settings `S`: its keys are `S::KEYS`, a bad value is a
    /// load error, and each instance's constructor is handed the parsed `S`.
    pub fn register_typed<S: Settings>(&mut self, name: &str, constructor: TypedConstructor<S>) {
        self.entries.insert(
            name.to_string(),
            Entry {
                build: Box::new(move |ctx| constructor(ctx, S::parse(ctx.params())?)),
                check_settings: |params| S::parse(params).map(drop),
                args_are_nodes: false,
                keys: S::KEYS,
            },
        );
    }

    /// Registers a backend whose arguments name nodes (`Jump[node]`).
    pub fn register_with_node_args(
        &mut self,
        name: &str,
        constructor: Constructor,
        keys: &'static [Key],
    ) {
        self.entries.insert(
            name.to_string(),
            Entry {
                build: Box::new(constructor),
                check_settings: |_| Ok(()),
                args_are_nodes: true,
                keys,
            },
        );
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The keys backend `name` declares (None: not registered).
    pub fn keys(&self, name: &str) -> Option<&'static [Key]> {
        self.entries.get(name).map(|e| e.keys)
    }

    /// The names of the keys a node running `expr` may set: the scheduling keys and those of
    /// every backend in the expression.
    fn keys_of(&self, expr: &Expr, out: &mut Vec<&'static str>) {
        if let Some(e) = self.entries.get(&expr.name) {
            out.extend(e.keys.iter().map(|k| k.name));
            if !e.args_are_nodes {
                for arg in &expr.args {
                    self.keys_of(arg, out);
                }
            }
        }
    }

    /// Every key of `config` is read by someone: each node's own keys by the scheduler or a
    /// backend of its expression, each global key by the scheduler or some registered backend.
    /// Run after `check` (the backend names are known).
    pub fn check_keys(&self, config: &crate::config::Config) -> Result<(), ConfigError> {
        let scheduling = keys::SCHEDULING.iter().map(|k| k.name);
        let mut everywhere: Vec<&str> = scheduling.clone().collect();
        everywhere.extend(
            self.entries
                .values()
                .flat_map(|e| e.keys.iter().map(|k| k.name)),
        );
        everywhere.sort_unstable();
        everywhere.dedup();
        for key in &config.global_keys {
            if !everywhere.contains(&key.as_str()) {
                let hint = crate::config::suggest::did_you_mean(key, everywhere.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(ConfigError {
                    file: config.file.clone(),
                    node: None,
                    key: Some(key.clone()),
                    value: None,
                    expected: format!(
                        "a key the scheduler or a backend reads{hint}; a global key is a \
                         default for every node"
                    ),
                });
            }
        }
        for node in &config.nodes {
            let mut backend_keys: Vec<&str> = Vec::new();
            self.keys_of(&node.backend, &mut backend_keys);
            let is_scheduling = |k: &str| keys::SCHEDULING.iter().any(|s| s.name == k);
            backend_keys.retain(|k| !is_scheduling(k));
            backend_keys.sort_unstable();
            backend_keys.dedup();
            for key in &node.own_keys {
                if is_scheduling(key) || backend_keys.contains(&key.as_str()) {
                    continue;
                }
                let candidates = scheduling.clone().chain(backend_keys.iter().copied());
                let hint = crate::config::suggest::did_you_mean(key, candidates)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                let theirs = if backend_keys.is_empty() {
                    "none".to_string()
                } else {
                    backend_keys.join(", ")
                };
                return Err(node.params.error(
                    key,
                    node.params.raw(key).unwrap_or_default(),
                    format!(
                        "a key this node reads: {hint}its backends' keys: {theirs}; the \
                         scheduling keys: {}",
                        scheduling.clone().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks every name in `expr` at load time, before any instance is built.
    pub fn check(&self, expr: &Expr, params: &Params) -> Result<(), ConfigError> {
        let entry = self.entries.get(&expr.name).ok_or_else(|| {
            let hint = crate::config::suggest::did_you_mean(&expr.name, self.names())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            let known: Vec<_> = self.names().collect();
            params.error(
                "backend",
                params.raw("backend").unwrap_or_default(),
                format!(
                    "unknown backend `{}`; {hint}known backends: {}",
                    expr.name,
                    known.join(", ")
                ),
            )
        })?;
        if !entry.args_are_nodes {
            for arg in &expr.args {
                self.check(arg, params)?;
            }
        }
        Ok(())
    }

    /// Parses the settings of every backend in `expr` from the node's table, so that a bad
    /// value fails at load time. Run after `check_keys` (a misspelt key is reported as such,
    /// not as the missing key it leaves behind).
    pub fn check_settings(&self, expr: &Expr, params: &Params) -> Result<(), ConfigError> {
        let Some(entry) = self.entries.get(&expr.name) else {
            return Ok(());
        };
        (entry.check_settings)(params)?;
        if !entry.args_are_nodes {
            for arg in &expr.args {
                self.check_settings(arg, params)?;
            }
        }
        Ok(())
    }

    /// Builds a node's backend outside any pipeline: one instance with a batch of one (the
    /// baseline server's single locked model). `Jump` cannot work there.
    pub fn build_detached(&self, node: &NodeConfig) -> Result<Box<dyn Backend>, ConfigError> {
        let cache = SharedCache::default();
        let handle = PipelineHandle::detached();
        let profile = Profile {
            min: 1,
            max: 1,
            item_shape: node.profiles.first().and_then(|p| p.item_shape.clone()),
        };
        let ctx = InitContext {
            node,
            expr: &node.backend,
            registry: self,
            instance: 0,
            profile: &profile,
            device: node.device_of(0),
            shared: &cache,
            pipeline: &handle,
            stream_scope: None,
            stage: crate::graph::Stage::default(),
        };
        self.build(&ctx)
    }

    pub fn build(&self, ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
        self.check(ctx.expr, ctx.params())?;
        match self.entries.get(&ctx.expr.name) {
            Some(entry) => (entry.build)(ctx),
            None => unreachable!("checked above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Value;

    /// Writes its `n` as each item's result.
    struct Count(usize);

    struct CountSettings {
        n: usize,
    }

    impl Settings for CountSettings {
        const KEYS: &'static [Key] = &[key("n", "a non-negative integer", "required", "")];

        fn parse(p: &Params) -> Result<Self, ConfigError> {
            let n = p.usize("n")?.ok_or_else(|| p.error("n", "", "a number"))?;
            Ok(CountSettings { n })
        }
    }

    impl Backend for Count {
        fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
            for item in batch {
                item.result = Some(Value::Text(self.0.to_string()));
            }
            Ok(())
        }
    }

    fn count(_: &InitContext<'_>, s: CountSettings) -> Result<Box<dyn Backend>, ConfigError> {
        Ok(Box::new(Count(s.n)))
    }

    #[test]
    fn a_typed_backend_is_checked_at_load_and_handed_its_settings() {
        let mut r = Registry::empty();
        r.register_typed("Count", count);
        r.register("Seq", |ctx| ctx.build(ctx.single_arg()?), &[]);
        assert_eq!(r.keys("Count"), Some(CountSettings::KEYS));
        let node = |n: &str| {
            let toml = format!("[c]\nbackend = \"Seq[Count]\"\nn = \"{n}\"\n");
            let config = crate::Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
            config.nodes[0].clone()
        };
        let bad = node("many");
        let e = r.check_settings(&bad.backend, &bad.params).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml: node [c], key `n` = \"many\": a non-negative integer"
        );
        let good = node("3");
        r.check_settings(&good.backend, &good.params).unwrap();
        let mut batch = vec![Item::default()];
        r.build_detached(&good)
            .unwrap()
            .forward(&mut batch)
            .unwrap();
        assert!(
            matches!(&batch[0].result, Some(Value::Text(t)) if t == "3"),
            "{:?}",
            batch[0].result
        );
    }
}
