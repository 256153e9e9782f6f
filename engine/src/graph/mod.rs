//! The node graph: `next` edges, entry points, fan-out and the `map` joins that close them,
//! `MapReduce` nodes and their sub-graphs, and the `map`s that read earlier nodes, validated
//! once at load time.

use std::collections::HashMap;

use crate::config::{Config, Filter, MapEntry, NodeConfig};
use crate::error::ConfigError;

#[derive(Debug)]
pub struct GraphNode {
    pub name: String,
    pub next: Vec<usize>,
    pub filter: Filter,
    pub map: Vec<MapEntry>,
    /// The node each `map` entry reads, by index (resolved once, not per item).
    pub map_sources: Vec<usize>,
    /// For a fan-out node, the join node where its branches meet.
    pub join: Option<usize>,
    /// Set on a `MapReduce` node: it runs no backend of its own.
    pub mapreduce: Option<MapReduce>,
    /// The node's `map` reads earlier nodes on the item's way (it is not a join).
    pub path_map: bool,
    /// Keys whose values an item keeps as it leaves this node, for a later node's `map`.
    pub keep: Vec<String>,
    /// The most nodes an item passes through before this one, from an entry (0 for an entry).
    pub level: usize,
}

/// Where a node's work sits in the pipeline: `level` (its `GraphNode::level`) of `deepest`
/// (the largest level in the graph). GPU streams take their priority from it (`gpu::priority`).
/// A backend built outside a pipeline is at `Stage::default()`, level 0 of 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stage {
    pub level: usize,
    pub deepest: usize,
}

/// `backend = "MapReduce"`: each item splits into one child per element of its `split` key,
/// the children run through the sub-graph that starts at `jump`, and their `merge` keys are
/// gathered back into the item as lists, in order.
#[derive(Debug)]
pub struct MapReduce {
    pub jump: usize,
    pub split: String,
    pub merge: Vec<String>,
}

/// The backend name of a `MapReduce` node.
pub const MAP_REDUCE: &str = "MapReduce";

#[derive(Debug)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    /// Nodes no `next` points to, in file order.
    pub entries: Vec<usize>,
    index: HashMap<String, usize>,
}

fn err(node: &NodeConfig, key: &str, expected: String) -> ConfigError {
    node.params
        .error(key, node.params.raw(key).unwrap_or_default(), expected)
}

impl Graph {
    /// `Config::parse` has already checked that every name exists.
    pub fn build(config: &Config) -> Result<Graph, ConfigError> {
        let index: HashMap<String, usize> = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut nodes: Vec<GraphNode> = config
            .nodes
            .iter()
            .map(|n| GraphNode {
                name: n.name.clone(),
                next: n.next.iter().map(|x| index[x]).collect(),
                filter: n.filter,
                map: n.map.clone(),
                map_sources: n.map.iter().map(|e| index[&e.source]).collect(),
                join: None,
                mapreduce: None,
                path_map: false,
                keep: Vec::new(),
                level: 0,
            })
            .collect();
        check_cycles(config, &nodes)?;
        for (i, cfg) in config.nodes.iter().enumerate() {
            nodes[i].mapreduce = map_reduce(cfg, &index)?;
        }
        check_sub_graphs(config, &nodes)?;

        // Every edge an item can take: `next`, a `MapReduce` node's `jump`, a `Jump` backend's.
        let mut edges: Vec<(usize, usize)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.next.iter().map(move |&x| (i, x)))
            .collect();
        // A sub-graph's first node is reached by its `MapReduce` node or `Jump`, not by requests
        // that name no node.
        for (i, cfg) in config.nodes.iter().enumerate() {
            if let Some(mr) = &nodes[i].mapreduce {
                edges.push((i, mr.jump));
            }
            let mut exprs = Vec::new();
            cfg.backend.walk(&mut exprs);
            for e in exprs.iter().filter(|e| e.name == "Jump") {
                for target in e.args.iter().filter_map(|t| index.get(&t.name)) {
                    edges.push((i, *target));
                }
            }
        }
        let mut has_parent = vec![false; nodes.len()];
        for &(_, x) in &edges {
            has_parent[x] = true;
        }
        let entries: Vec<usize> = (0..nodes.len()).filter(|&i| !has_parent[i]).collect();
        if entries.is_empty() {
            let first = &config.nodes[0];
            return Err(err(
                first,
                "next",
                "a node that no `next`, `jump` or `Jump` leads to, where requests enter".into(),
            ));
        }
        check_model_names(config, &entries)?;

        let mut joined = vec![false; nodes.len()];
        for f in 0..nodes.len() {
            if nodes[f].next.len() < 2 {
                continue;
            }
            let cfg = &config.nodes[f];
            let mut join = None;
            let mut preds = Vec::new();
            for &branch in &nodes[f].next {
                let (mut prev, mut cur) = (f, branch);
                loop {
                    if !nodes[cur].map.is_empty() {
                        break;
                    }
                    match nodes[cur].next.as_slice() {
                        [] => {
                            return Err(err(cfg, "next", format!(
                                "fan-out branches that meet again at a node with `map`; the branch through [{}] ends without one",
                                nodes[cur].name
                            )))
                        }
                        [one] => (prev, cur) = (cur, *one),
                        _ => {
                            return Err(err(cfg, "next", format!(
                                "one level of fan-out; [{}] fans out again inside a branch",
                                nodes[cur].name
                            )))
                        }
                    }
                }
                if join.is_some_and(|j| j != cur) {
                    return Err(err(
                        cfg,
                        "next",
                        "fan-out branches that all meet at the same `map` node".into(),
                    ));
                }
                join = Some(cur);
                preds.push(nodes[prev].name.clone());
            }
            let j = join.unwrap_or(f);
            for entry in &nodes[j].map {
                if !preds.contains(&entry.source) {
                    return Err(err(
                        &config.nodes[j],
                        "map",
                        format!(
                            "sources that are the last nodes of the branches from [{}] ({})",
                            nodes[f].name,
                            preds.join(", ")
                        ),
                    ));
                }
            }
            nodes[f].join = Some(j);
            joined[j] = true;
        }
        // Any other `map` reads nodes the item went through before: those nodes keep the
        // values it names.
        for j in 0..nodes.len() {
            if nodes[j].map.is_empty() || joined[j] {
                continue;
            }
            let before = ancestors(&nodes, j);
            let sources = nodes[j].map_sources.clone();
            for (entry, source) in nodes[j].map.clone().into_iter().zip(sources) {
                if !before.contains(&source) {
                    let names: Vec<&str> = before.iter().map(|&a| nodes[a].name.as_str()).collect();
                    return Err(err(
                        &config.nodes[j],
                        "map",
                        format!(
                            "sources that come before [{}] on an item's way ({}); [{}] does not \
                             (or join fan-out branches here)",
                            nodes[j].name,
                            if names.is_empty() {
                                "none".into()
                            } else {
                                names.join(", ")
                            },
                            entry.source
                        ),
                    ));
                }
                if !nodes[source].keep.contains(&entry.from) {
                    nodes[source].keep.push(entry.from.clone());
                }
            }
            nodes[j].path_map = true;
        }
        // Longest paths: relaxing every edge once per node is enough where there is no cycle
        // (`next` has none, checked above), and bounds the work where a `Jump` leads back.
        for _ in 0..nodes.len() {
            let mut changed = false;
            for &(p, x) in &edges {
                if nodes[x].level < nodes[p].level + 1 {
                    nodes[x].level = nodes[p].level + 1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Ok(Graph {
            nodes,
            entries,
            index,
        })
    }

    /// Node `i`'s place in the pipeline.
    pub fn stage(&self, i: usize) -> Stage {
        Stage {
            level: self.nodes[i].level,
            deepest: self.nodes.iter().map(|n| n.level).max().unwrap_or(0),
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The nodes from which an item can reach node `i`: along `next`, and from a `MapReduce`
    /// node into its sub-graph.
    pub fn ancestors(&self, i: usize) -> Vec<usize> {
        ancestors(&self.nodes, i)
    }
}

/// `model_name` only on entry nodes (requests name a model to enter there), and the entry
/// nodes' models (`model_name`, else the node's name) all named differently.
fn check_model_names(config: &Config, entries: &[usize]) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, node) in config.nodes.iter().enumerate() {
        let entry = entries.contains(&i);
        if node.model_name.is_some() && !entry {
            return Err(err(
                node,
                "model_name",
                format!(
                    "`model_name` on an entry node only; items reach [{}] from other nodes",
                    node.name
                ),
            ));
        }
        if !entry {
            continue;
        }
        let name = node.model_name.as_deref().unwrap_or(&node.name);
        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
            return Err(err(
                node,
                "model_name",
                format!(
                    "entry nodes whose models are named differently; [{other}] serves the model \
                     `{name}` too"
                ),
            ));
        }
        seen.push((name, &node.name));
    }
    Ok(())
}

/// Whether node `p` hands items to node `n`: `next`, or a `MapReduce` node's `jump`.
fn feeds(p: &GraphNode, n: usize) -> bool {
    p.next.contains(&n) || p.mapreduce.as_ref().is_some_and(|m| m.jump == n)
}

fn ancestors(nodes: &[GraphNode], i: usize) -> Vec<usize> {
    let mut seen = vec![false; nodes.len()];
    let mut stack = vec![i];
    while let Some(n) = stack.pop() {
        for (p, node) in nodes.iter().enumerate() {
            if feeds(node, n) && !seen[p] {
                seen[p] = true;
                stack.push(p);
            }
        }
    }
    seen[i] = false;
    (0..seen.len()).filter(|&p| seen[p]).collect()
}

/// The `MapReduce` settings of a node whose backend is `MapReduce`; an error where the name
/// is nested in another backend or a key is missing.
fn map_reduce(
    cfg: &NodeConfig,
    index: &HashMap<String, usize>,
) -> Result<Option<MapReduce>, ConfigError> {
    let mut exprs = Vec::new();
    cfg.backend.walk(&mut exprs);
    let top = cfg.backend.name == MAP_REDUCE;
    if exprs
        .iter()
        .skip(usize::from(top))
        .any(|e| e.name == MAP_REDUCE)
        || (top && !cfg.backend.args.is_empty())
    {
        return Err(err(
            cfg,
            "backend",
            "`MapReduce` alone (`backend = \"MapReduce\"`, with `jump`, `split` and `merge`): \
             it is the pipeline's fan-out, not a backend to compose"
                .into(),
        ));
    }
    if !top {
        return Ok(None);
    }
    let required = |key: &str, what: &str| match cfg.params.raw(key).map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(err(
            cfg,
            key,
            format!("{what} (a `MapReduce` node needs `{key}`)"),
        )),
    };
    let jump_name = required(
        "jump",
        "the node its children enter, the start of a sub-graph",
    )?;
    let jump = *index.get(&jump_name).ok_or_else(|| {
        let mut names: Vec<&str> = index.keys().map(String::as_str).collect();
        names.sort_unstable();
        err(
            cfg,
            "jump",
            format!("the name of a node (nodes: {})", names.join(", ")),
        )
    })?;
    let split = required(
        "split",
        "the key whose list or tensor rows become the children",
    )?;
    let split = crate::item::canonical_key(&split).to_string();
    required(
        "merge",
        "the keys gathered from the children, `\"result\"` or `\"result,score\"`",
    )?;
    let merge = cfg
        .params
        .list("merge")
        .iter()
        .map(|k| crate::item::canonical_key(k).to_string())
        .collect();
    Ok(Some(MapReduce { jump, split, merge }))
}

/// A `MapReduce` node's sub-graph (the nodes reachable from its `jump`) must not lead back to
/// it or hold another `MapReduce` node, and a `MapReduce` node takes its items from a `next`.
fn check_sub_graphs(config: &Config, nodes: &[GraphNode]) -> Result<(), ConfigError> {
    for (m, node) in nodes.iter().enumerate() {
        let Some(mr) = &node.mapreduce else { continue };
        let mut seen = vec![false; nodes.len()];
        let mut stack = vec![mr.jump];
        seen[mr.jump] = true;
        while let Some(n) = stack.pop() {
            if n == m || nodes[n].mapreduce.is_some() {
                return Err(err(
                    &config.nodes[m],
                    "jump",
                    format!(
                        "a sub-graph without `MapReduce` nodes; [{}], reached from [{}], is one",
                        nodes[n].name, nodes[mr.jump].name
                    ),
                ));
            }
            for &x in &nodes[n].next {
                if !seen[x] {
                    seen[x] = true;
                    stack.push(x);
                }
            }
        }
        if !nodes.iter().any(|p| p.next.contains(&m)) {
            return Err(err(
                &config.nodes[m],
                "backend",
                "a `MapReduce` node that an earlier node's `next` leads to (it splits what that \
                 node made)"
                    .into(),
            ));
        }
    }
    Ok(())
}

fn check_cycles(config: &Config, nodes: &[GraphNode]) -> Result<(), ConfigError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; nodes.len()];
    // Iterative DFS: a config is user input, so no recursion depth it can choose.
    for start in 0..nodes.len() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Open;
        while let Some(&mut (n, ref mut child)) = stack.last_mut() {
            if let Some(&next) = nodes[n].next.get(*child) {
                *child += 1;
                match mark[next] {
                    Mark::Open => {
                        let at = stack.iter().position(|&(s, _)| s == next).unwrap_or(0);
                        let mut path: Vec<&str> = stack[at..]
                            .iter()
                            .map(|&(s, _)| nodes[s].name.as_str())
                            .collect();
                        path.push(&nodes[next].name);
                        return Err(err(
                            &config.nodes[n],
                            "next",
                            format!("no cycles between nodes; found {}", path.join(" -> ")),
                        ));
                    }
                    Mark::New => {
                        mark[next] = Mark::Open;
                        stack.push((next, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[n] = Mark::Done;
                stack.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn graph(text: &str) -> Graph {
        let config = Config::parse(text, Path::new("test.toml")).unwrap();
        Graph::build(&config).unwrap()
    }

    fn levels(g: &Graph) -> Vec<(&str, usize)> {
        g.nodes.iter().map(|n| (n.name.as_str(), n.level)).collect()
    }

    #[test]
    fn a_node_is_as_deep_as_its_longest_way_from_an_entry() {
        // a → b → d and a → c → d: d joins the fan-out, one level below both branches.
        let g = graph(
            r#"
[a]
backend = "Identity"
next = "b,c"
[b]
backend = "Identity"
next = "d"
[c]
backend = "Identity"
next = "d"
[d]
backend = "Identity"
map = "b[result:x],c[result:y]"
"#,
        );
        assert_eq!(levels(&g), [("a", 0), ("b", 1), ("c", 1), ("d", 2)]);
        assert_eq!(
            g.stage(3),
            Stage {
                level: 2,
                deepest: 2
            }
        );
        assert_eq!(
            g.stage(0),
            Stage {
                level: 0,
                deepest: 2
            }
        );
    }

    fn graph_error(text: &str) -> String {
        let config = Config::parse(text, Path::new("test.toml")).unwrap();
        Graph::build(&config).unwrap_err().to_string()
    }

    #[test]
    fn model_names_are_for_entry_nodes_and_differ() {
        let e = graph_error(
            "[a]\nbackend = \"Identity\"\nnext = \"b\"\n[b]\nbackend = \"Identity\"\nmodel_name = \"m\"\n",
        );
        assert!(e.contains("on an entry node only"), "{e}");
        let e = graph_error(
            "[a]\nbackend = \"Identity\"\nmodel_name = \"b\"\n[b]\nbackend = \"Identity\"\n",
        );
        assert!(e.contains("[a] serves the model `b` too"), "{e}");
        // Two entry nodes of one `model_name`: the later is refused, named with the key.
        let config = Config::parse(
            "[a]\nbackend = \"Identity\"\nmodel_name = \"m\"\n[b]\nbackend = \"Identity\"\nmodel_name = \"m\"\n",
            Path::new("test.toml"),
        )
        .unwrap();
        let e = Graph::build(&config).unwrap_err();
        assert_eq!(e.node.as_deref(), Some("b"));
        assert_eq!(e.key.as_deref(), Some("model_name"));
        assert!(e.expected.contains("[a] serves the model `m` too"), "{e}");
        let g = graph("[a]\nbackend = \"Identity\"\nmodel_name = \"resnet50\"\n");
        assert_eq!(g.entries, [0]);
    }

    #[test]
    fn a_sub_graph_lies_below_its_map_reduce_node() {
        let g = graph(
            r#"
[detect]
backend = "Identity"
next = "boxes"
[boxes]
backend = "MapReduce"
split = "data"
jump = "crop"
merge = "result"
[crop]
backend = "Identity"
next = "classify"
[classify]
backend = "Identity"
"#,
        );
        assert_eq!(
            levels(&g),
            [("detect", 0), ("boxes", 1), ("crop", 2), ("classify", 3)]
        );
        assert_eq!(g.entries, [0]);
    }
}
