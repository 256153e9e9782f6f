//! The TorchPipe TOML, parsed once into typed structs (docs/architecture.md#the-configuration).
//!
//! Top-level keys are defaults; each `[node]` table overrides them. Every value is kept as the
//! text the user wrote (numbers and strings alike, as TorchPipe does), and read through typed
//! getters that report the file, node, key and value on failure.

pub mod expr;
mod params;
pub mod suggest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use expr::Expr;
pub use params::{resolve_path, Params};

/// The batch range of one instance: `min`..=`max` items, and, when the profile was written as
/// a shape (`4x3x224x224`), the per-item shape after the batch dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub min: usize,
    pub max: usize,
    pub item_shape: Option<Vec<usize>>,
}

impl Profile {
    pub fn fits(&self, n: usize) -> bool {
        self.min <= n && n <= self.max
    }
}

/// What a node does with an item that arrives (TorchPipe's `filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Default: previous `result` becomes `data`, then run; no result ends the item with an error.
    Swap,
    /// Run on the item as it is.
    Run,
    /// Pass the item to `next` without running this node.
    Skip,
    /// Skip this node and everything after it: the item completes as it is.
    SerialSkip,
    /// Stop here: the item completes as it is (an error if it has no result).
    Break,
    /// Fail the item.
    Error,
    /// Run only if the previous node produced no result (fallback); otherwise pass it on.
    Or,
}

impl Filter {
    pub const NAMES: &'static str = "swap, Run (or Continue), Skip, SerialSkip, Break, Error, or";

    fn parse(s: &str) -> Option<Filter> {
        Some(match s {
            "swap" | "Swap" => Filter::Swap,
            "Run" | "run" | "Continue" | "continue" => Filter::Run,
            "Skip" | "skip" => Filter::Skip,
            "SerialSkip" | "serialskip" | "serial_skip" => Filter::SerialSkip,
            "Break" | "break" => Filter::Break,
            "Error" | "error" => Filter::Error,
            "or" | "Or" => Filter::Or,
            _ => return None,
        })
    }
}

/// One clause of `map = "a[result:data],b[result:data.2]"`: take `from` of the item that
/// arrives from node `source` and store it as `to` of the joined item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub source: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub backend: Expr,
    pub instance_num: usize,
    /// The GPUs the node's instances run on (`device_id`): never empty, no repeats. Instance
    /// `i` runs on `device_ids[i % len]` (`device_of`).
    pub device_ids: Vec<usize>,
    pub batching_timeout: Duration,
    /// One per instance.
    pub profiles: Vec<Profile>,
    pub next: Vec<String>,
    pub map: Vec<MapEntry>,
    pub filter: Filter,
    /// Longest an item may wait in this node's queue; the request deadline applies too.
    pub timeout: Option<Duration>,
    pub queue_size: usize,
    /// An entry node's model name in the Open Inference Protocol (`model_name`); none: the
    /// node's name.
    pub model_name: Option<String>,
    /// Every merged key (globals + node), for the backends' own settings.
    pub params: Params,
    /// The keys written in the node's own table (checked by `Registry::check_keys`).
    pub own_keys: Vec<String>,
}

impl NodeConfig {
    pub fn max_batch(&self) -> usize {
        self.profiles.iter().map(|p| p.max).max().unwrap_or(1)
    }

    /// The GPU instance `instance` runs on: the node's `device_id` list, round robin, so that
    /// `instance_num = 4` with `device_id = "0,1"` puts instances 0 and 2 on GPU 0, 1 and 3
    /// on GPU 1.
    pub fn device_of(&self, instance: usize) -> usize {
        // `device_ids` is never empty when parsed; GPU 0 is the default otherwise too.
        let n = self.device_ids.len().max(1);
        self.device_ids.get(instance % n).copied().unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    /// Nodes in file order.
    pub nodes: Vec<NodeConfig>,
    /// The keys of the global section (defaults for every node).
    pub global_keys: Vec<String>,
}

/// Items a node's queue holds before it pushes back; large enough for bursts of thousands of
/// requests, small enough that a stalled node cannot eat the machine's memory.
pub const DEFAULT_QUEUE_SIZE: usize = 4096;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            node: None,
            key: None,
            value: None,
            expected: format!("a readable TOML file ({e})"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file_err = |expected: String| ConfigError {
            file: path.to_path_buf(),
            node: None,
            key: None,
            value: None,
            expected,
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            file_err(format!("valid TOML: {}", e.to_string().trim()))
        })?;

        let mut globals = BTreeMap::new();
        let mut tables = Vec::new();
        for (key, value) in &table {
            match value {
                toml::Value::Table(t) => tables.push((key.clone(), t)),
                other => {
                    let text = scalar_text(other).ok_or_else(|| ConfigError {
                        file: path.to_path_buf(),
                        node: None,
                        key: Some(key.clone()),
                        value: Some(other.to_string()),
                        expected: "a string or a number".into(),
                    })?;
                    globals.insert(key.clone(), text);
                }
            }
        }
        if tables.is_empty() {
            return Err(file_err(
                "at least one [node] table with a `backend`".into(),
            ));
        }
        if let Some(m) = globals.get("model_name") {
            return Err(ConfigError {
                file: path.to_path_buf(),
                node: None,
                key: Some("model_name".into()),
                value: Some(m.clone()),
                expected: "`model_name` in an entry node's table: it names that node's model, \
                           not the whole file's"
                    .into(),
            });
        }

        let mut nodes = Vec::with_capacity(tables.len());
        for (name, t) in &tables {
            let mut values = globals.clone();
            for (key, value) in t.iter() {
                let text = scalar_text(value).ok_or_else(|| ConfigError {
                    file: path.to_path_buf(),
                    node: Some(name.clone()),
                    key: Some(key.clone()),
                    value: Some(value.to_string()),
                    expected: "a string or a number (nested tables are not node settings)".into(),
                })?;
                values.insert(key.clone(), text);
            }
            let params = Params::new(path, name, values);
            let mut node = node_config(name, params)?;
            node.own_keys = t.keys().cloned().collect();
            nodes.push(node);
        }

        let config = Config {
            file: path.to_path_buf(),
            global_keys: globals.keys().cloned().collect(),
            nodes,
        };
        config.check_next_and_map()?;
        // After the graph checks, so that a misspelt node name is reported before a model path
        // that only exists on the author's machine.
        for node in &config.nodes {
            if node.params.raw("model").is_some() {
                node.params.path("model")?;
            }
        }
        Ok(config)
    }

    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn check_next_and_map(&self) -> Result<(), ConfigError> {
        for node in &self.nodes {
            let others = || {
                self.nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .filter(|n| *n != node.name)
            };
            let unknown = |key: &str, value: &str, wrong: &str| {
                let hint = match suggest::did_you_mean(wrong, others()) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => String::new(),
                };
                let known: Vec<_> = others().collect();
                node.params.error(
                    key,
                    value,
                    format!(
                        "no node is named `{wrong}`{hint} (nodes: {})",
                        known.join(", ")
                    ),
                )
            };
            for next in &node.next {
                if self.node(next).is_none() {
                    let raw = node.params.raw("next").unwrap_or_default();
                    return Err(unknown("next", raw, next));
                }
            }
            for entry in &node.map {
                if self.node(&entry.source).is_none() {
                    let raw = node.params.raw("map").unwrap_or_default();
                    return Err(unknown("map", raw, &entry.source));
                }
            }
            let mut jumps = Vec::new();
            node.backend.walk(&mut jumps);
            for jump in jumps.iter().filter(|e| e.name == "Jump") {
                for target in &jump.args {
                    if self.node(&target.name).is_none() {
                        let raw = node.params.raw("backend").unwrap_or_default();
                        return Err(unknown("backend", raw, &target.name));
                    }
                }
            }
        }
        Ok(())
    }
}

fn scalar_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        // `mean = [123.675, 116.28, 103.53]` reads like the string form.
        toml::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                toml::Value::Integer(i) => Some(i.to_string()),
                toml::Value::Float(f) => Some(f.to_string()),
                toml::Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

fn node_config(name: &str, params: Params) -> Result<NodeConfig, ConfigError> {
    let backend_text = params.raw("backend").ok_or_else(|| {
        params.error(
            "backend",
            "",
            "a backend expression such as `DecodeMat` or `SyncTensor[Sequential[ResizeMat,Mat2Tensor]]`",
        )
    })?;
    let backend = expr::parse(backend_text).map_err(|e| {
        params.error(
            "backend",
            backend_text,
            format!("a backend expression `Name`, `Name[Inner]` or `Name[A,B]` ({e})"),
        )
    })?;
    let instance_num = params.usize_or("instance_num", 1)?;
    if instance_num == 0 || instance_num > 1024 {
        return Err(params.error(
            "instance_num",
            params.raw("instance_num").unwrap_or_default(),
            "an integer from 1 to 1024",
        ));
    }
    let device_ids = device_ids(&params)?;
    let batching_timeout = params.millis_or("batching_timeout", Duration::ZERO)?;
    let timeout = params.millis("timeout")?;
    let queue_size = params.usize_or("queue_size", DEFAULT_QUEUE_SIZE)?;
    if queue_size == 0 {
        return Err(params.error("queue_size", "0", "a positive integer"));
    }
    let profiles = profiles(&params, instance_num)?;
    let model_name = match params.raw("model_name").map(str::trim) {
        None => None,
        Some(m)
            if !m.is_empty()
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            Some(m.to_string())
        }
        Some(m) => {
            return Err(params.error(
                "model_name",
                m,
                "a name of letters, digits, `_`, `-` and `.` (it is a URL's path segment)",
            ))
        }
    };
    let next = params.list("next");
    let filter = match params.raw("filter") {
        None => Filter::Swap,
        Some(text) => Filter::parse(text.trim())
            .ok_or_else(|| params.error("filter", text, format!("one of {}", Filter::NAMES)))?,
    };
    let map = match params.raw("map") {
        None => Vec::new(),
        Some(text) => parse_map(text).ok_or_else(|| {
            params.error(
                "map",
                text,
                "a list like `a[result:data],b[result:data.2,color:color]` (source node[from key:to \
                 key, …])",
            )
        })?,
    };
    Ok(NodeConfig {
        name: name.to_string(),
        backend,
        instance_num,
        device_ids,
        batching_timeout,
        profiles,
        next,
        map,
        filter,
        timeout,
        queue_size,
        model_name,
        params,
        own_keys: Vec::new(),
    })
}

/// `device_id`: one GPU index (`1`) or several (`"0,1"`, or the array `[0, 1]`); GPU 0 when
/// unset. Whether those GPUs exist is checked when a GPU backend opens its device
/// (`gpu_engine::devices::check`): a CPU-only node may name any.
fn device_ids(params: &Params) -> Result<Vec<usize>, ConfigError> {
    let Some(text) = params.raw("device_id") else {
        return Ok(vec![0]);
    };
    let bad = |why: String| {
        params.error(
            "device_id",
            text,
            format!(
                "a GPU index (`device_id = 1`) or a comma-separated list of them \
                 (`device_id = \"0,1\"`), each a non-negative integer, none repeated: {why}"
            ),
        )
    };
    let mut ids: Vec<usize> = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad(if text.trim().is_empty() {
                "found nothing".into()
            } else {
                "found an empty item".into()
            }));
        }
        let id = part
            .parse::<usize>()
            .map_err(|_| bad(format!("`{part}` is not a non-negative integer")))?;
        if ids.contains(&id) {
            return Err(bad(format!("GPU {id} is named twice")));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn parse_map(text: &str) -> Option<Vec<MapEntry>> {
    let mut entries = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let open = rest.find('[')?;
        let close = rest.find(']')?;
        if close < open {
            return None;
        }
        let source = rest[..open].trim();
        if source.is_empty() {
            return None;
        }
        // `a[result:data,color:color]`: several keys of one source.
        for pair in rest[open + 1..close].split(',') {
            let (from, to) = pair.split_once(':')?;
            let (from, to) = (from.trim(), to.trim());
            if from.is_empty() || to.is_empty() {
                return None;
            }
            entries.push(MapEntry {
                source: source.into(),
                from: crate::item::canonical_key(from).into(),
                to: crate::item::canonical_key(to).into(),
            });
        }
        rest = rest[close + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
    }
    (!entries.is_empty()).then_some(entries)
}

/// Per-instance (batch size, item shape) as written in `min` or `max`.
type ProfileParts = Vec<(usize, Option<Vec<usize>>)>;

fn profiles(params: &Params, instance_num: usize) -> Result<Vec<Profile>, ConfigError> {
    let read = |key: &str, default: usize| -> Result<ProfileParts, ConfigError> {
        let Some(text) = params.raw(key) else {
            return Ok(vec![(default, None)]);
        };
        let expected =
            "a batch size or a shape like `4x3x224x224`, one per instance separated by `;`";
        let mut out = Vec::new();
        for part in text.split(';') {
            let dims: Option<Vec<usize>> = part
                .trim()
                .split(['x', 'X'])
                .map(|d| d.trim().parse::<usize>().ok().filter(|&v| v > 0))
                .collect();
            match dims {
                Some(dims) if !dims.is_empty() => {
                    let shape = (dims.len() > 1).then(|| dims[1..].to_vec());
                    out.push((dims[0], shape));
                }
                _ => return Err(params.error(key, text, expected)),
            }
        }
        if out.len() != 1 && out.len() != instance_num {
            return Err(params.error(
                key,
                text,
                format!(
                    "one profile, or one per instance ({instance_num}, from instance_num); found {}",
                    out.len()
                ),
            ));
        }
        Ok(out)
    };
    let mins = read("min", 1)?;
    let maxs = read("max", 1)?;
    let at = |v: &ProfileParts, i: usize| v[if v.len() == 1 { 0 } else { i }].clone();
    let mut profiles = Vec::with_capacity(instance_num);
    for i in 0..instance_num {
        let (min, min_shape) = at(&mins, i);
        let (max, max_shape) = at(&maxs, i);
        if min > max {
            return Err(params.error(
                "min",
                params.raw("min").unwrap_or_default(),
                format!("at most `max` ({max}) for instance {i}"),
            ));
        }
        profiles.push(Profile {
            min,
            max,
            item_shape: max_shape.or(min_shape),
        });
    }
    // A batch smaller than every instance's `min` could never be served.
    if profiles.iter().all(|p| p.min > 1) {
        return Err(params.error(
            "min",
            params.raw("min").unwrap_or_default(),
            "at least one instance with min = 1, so that a lone item can be served",
        ));
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests;
