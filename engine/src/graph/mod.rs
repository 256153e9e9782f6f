//! The node graph: `next` edges, entry points, fan-out and the `map` joins that close them,
//! validated once at load time.

use std::collections::HashMap;

use crate::config::{Config, Filter, MapEntry, NodeConfig};
use crate::error::ConfigError;

#[derive(Debug)]
pub struct GraphNode {
    pub name: String,
    pub next: Vec<usize>,
    pub filter: Filter,
    pub map: Vec<MapEntry>,
    /// For a fan-out node, the join node where its branches meet.
    pub join: Option<usize>,
}

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
                join: None,
            })
            .collect();
        check_cycles(config, &nodes)?;

        let mut has_parent = vec![false; nodes.len()];
        for n in &nodes {
            for &x in &n.next {
                has_parent[x] = true;
            }
        }
        let entries: Vec<usize> = (0..nodes.len()).filter(|&i| !has_parent[i]).collect();

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
        for (j, n) in nodes.iter().enumerate() {
            if !n.map.is_empty() && !joined[j] {
                return Err(err(
                    &config.nodes[j],
                    "map",
                    "`map` only on a node where fan-out branches (`next = \"a,b\"`) meet".into(),
                ));
            }
        }
        Ok(Graph {
            nodes,
            entries,
            index,
        })
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
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
