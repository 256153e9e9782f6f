//! Float-valued nodes over constants evaluated before the CPU engine reads the graph. tract
//! translates some ops only when their parameters are initializers. NFNet's weight
//! standardisation (`F.batch_norm` over the convolution's own weights, in training mode) shows
//! both forms: the dynamo exporter writes a BatchNormalization whose mean and variance are
//! ReduceMeans of the reshaped weights (tract: "Params are not const"), the TorchScript exporter
//! one with the training mode's three outputs (tract: "Wrong number of outputs. Op says 1, node
//! says 3"). Every node whose inputs are all known and whose result is a float tensor becomes an
//! initializer (`fold::eval`, the evaluator the GPU importer folds with); integer results
//! (shape arithmetic) are left to tract, which keeps the batch symbolic.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

use super::fold::{self, Folded};

/// Folds the graph's float-valued constant nodes into initializers; returns how many nodes
/// went. A graph holding float tensors other than f32 (fp16, double) is left as it is: the
/// evaluator computes in f32, and an initializer of another type than the node wrote would
/// not type-check.
pub fn fold_float_constants(proto: &mut pb::ModelProto) -> usize {
    use pb::tensor_proto::DataType as D;
    let Some(g) = proto.graph.as_mut() else {
        return 0;
    };
    let f32_only = |t: &pb::TensorProto| {
        !matches!(
            D::try_from(t.data_type),
            Ok(D::Float16 | D::Double | D::Bfloat16)
        )
    };
    let constant_tensors = g
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .flat_map(|n| n.attribute.iter().filter_map(|a| a.t.as_ref()));
    if !g.initializer.iter().chain(constant_tensors).all(f32_only) {
        return 0;
    }
    let mut known: HashMap<String, Folded> = g
        .initializer
        .iter()
        .filter_map(|t| fold::tensor(t).ok().map(|f| (t.name.clone(), f)))
        .collect();
    let mut gone = vec![false; g.node.len()];
    for (k, node) in g.node.iter().enumerate() {
        // A cast's result type is the node's to say; tract reads it as written.
        if matches!(node.op_type.as_str(), "Cast" | "CastLike") {
            continue;
        }
        let inputs: Option<Vec<Option<&Folded>>> = node
            .input
            .iter()
            .map(|x| {
                if x.is_empty() {
                    Some(None)
                } else {
                    known.get(x).map(Some)
                }
            })
            .collect();
        let Some(inputs) = inputs else { continue };
        let Ok(Some(f)) = fold::eval(node, &inputs, &|_| None) else {
            continue;
        };
        let Some(out) = node.output.first() else {
            continue;
        };
        // Only a node whose other outputs nothing reads can go (BatchNormalization's training
        // statistics, as the TorchScript exporter writes them, are read by nobody).
        gone[k] = matches!(f, Folded::Float(_));
        known.insert(out.clone(), f);
    }
    let read: HashSet<&str> = g
        .node
        .iter()
        .zip(&gone)
        .filter(|(_, &g)| !g)
        .flat_map(|(n, _)| n.input.iter().map(String::as_str))
        .chain(g.output.iter().map(|o| o.name.as_str()))
        .collect();
    for (n, g) in g.node.iter().zip(gone.iter_mut()) {
        if *g
            && n.output
                .iter()
                .skip(1)
                .any(|o| !o.is_empty() && read.contains(o.as_str()))
        {
            *g = false;
        }
    }
    let mut new_inits = Vec::new();
    for (n, &g) in g.node.iter().zip(&gone) {
        let out = &n.output[0];
        if g && read.contains(out.as_str()) {
            if let Some(Folded::Float(c)) = known.get(out) {
                new_inits.push(pb::TensorProto {
                    name: out.clone(),
                    dims: c.dims.iter().map(|&d| d as i64).collect(),
                    data_type: D::Float as i32,
                    float_data: c.data.clone(),
                    ..Default::default()
                });
            }
        }
    }
    let count = gone.iter().filter(|&&g| g).count();
    let mut flags = gone.into_iter();
    g.node.retain(|_| !flags.next().unwrap_or(false));
    g.initializer.extend(new_inits);
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn init(name: &str, dims: &[i64], data: Vec<f32>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: data,
            ..Default::default()
        }
    }

    #[test]
    fn float_nodes_over_constants_become_initializers_and_the_rest_stay() {
        let mut proto = pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![
                    node("Mul", &["w", "w"], &["w2"]),
                    node("Add", &["w2", "w"], &["w3"]),
                    node("Add", &["x", "w3"], &["y"]),
                    // A float node whose second output someone reads stays whole.
                    node("Split", &["w"], &["s0", "s1"]),
                    node("Add", &["y", "s1"], &["z"]),
                ],
                initializer: vec![init("w", &[2], vec![1.0, 2.0])],
                output: vec![pb::ValueInfoProto {
                    name: "z".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(fold_float_constants(&mut proto), 2);
        let g = proto.graph.as_ref().unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Add", "Split", "Add"]);
        // Only what a remaining node reads is written: w3, not w2.
        let w3 = g.initializer.iter().find(|t| t.name == "w3").unwrap();
        assert_eq!(w3.float_data, vec![2.0, 6.0]);
        assert!(g.initializer.iter().all(|t| t.name != "w2"));
    }

    #[test]
    fn a_graph_with_fp16_weights_is_left_as_it_is() {
        let mut w = init("w", &[2], vec![]);
        w.data_type = pb::tensor_proto::DataType::Float16 as i32;
        w.raw_data = vec![0, 60, 0, 64];
        let mut proto = pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![node("Mul", &["w", "w"], &["y"])],
                initializer: vec![w],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(fold_float_constants(&mut proto), 0);
        assert_eq!(proto.graph.unwrap().node.len(), 1);
    }
}
