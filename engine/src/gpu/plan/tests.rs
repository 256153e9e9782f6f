use super::*;
use crate::backends::model::CpuModel;
use crate::item::Tensor;
use crate::modelgen;

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Inputs in the range a normalised image has, never zeros.
fn input(n: usize, len: usize, seed: u32) -> Vec<f32> {
    (0..n * len)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (h % 4001) as f32 / 1000.0 - 2.0
        })
        .collect()
}

#[test]
fn resnet50_fuses_into_54_convs_and_two_pools() {
    let plan = build(&modelgen::resnet50(modelgen::RESNET50_SEED)).unwrap();
    let convs: Vec<&ConvStep> = plan.convs().collect();
    // 53 convolutions + the classifier as a 1×1 convolution; every BN, Add and Relu fused.
    assert_eq!(convs.len(), 54);
    assert_eq!(
        plan.steps.len(),
        56,
        "{:#?}",
        plan.steps.iter().map(|s| s.output()).collect::<Vec<_>>()
    );
    assert_eq!(convs.iter().filter(|c| c.residual.is_some()).count(), 16);
    assert_eq!(convs.iter().filter(|c| c.relu).count(), 16 * 3 + 1);
    assert_eq!(plan.input_padded_c, 8);
    assert_eq!(convs[0].cin, 8);
    assert_eq!(
        plan.values[plan.output],
        Shape {
            c: 1000,
            h: 1,
            w: 1
        }
    );
    let (slots, slot_of) = plan.slots();
    assert!(slots.len() <= 5, "{slots:?}");
    // A step never writes the slot it reads.
    for s in &plan.steps {
        for i in s.inputs() {
            assert_ne!(slot_of[i], slot_of[s.output()]);
        }
    }
}

#[test]
fn folded_plan_computes_what_the_onnx_computes() {
    let dir = std::env::temp_dir().join(format!("tp-plan-{}", std::process::id()));
    let path = dir.join("tiny.onnx");
    let proto = modelgen::tiny_cnn(modelgen::TINY_SEED);
    modelgen::write(&proto, &path).unwrap();
    let cpu = CpuModel::load(&path).unwrap();
    let plan = build(&proto).unwrap();
    // The tiny model's stem and its first block read the padded input / share a residual.
    assert!(plan.convs().any(|c| c.residual.is_some()));
    let n = 3;
    let x = input(n, 3 * 224 * 224, 11);
    let want = cpu
        .run(Tensor::new(vec![n, 3, 224, 224], x.clone()))
        .unwrap()
        .data;
    let got = run_reference(&plan, &x, n);
    assert_eq!(got.len(), want.len());
    let err = rel_l2(&got, &want);
    assert!(err < 1e-5, "relative L2 {err}");
    let _ = std::fs::remove_dir_all(dir);
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        name: format!("{op}_{output}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn with_nodes(extra: Vec<pb::NodeProto>) -> pb::ModelProto {
    let mut m = modelgen::tiny_cnn(modelgen::TINY_SEED);
    let g = m.graph.as_mut().unwrap();
    // Re-route the output through the extra nodes: output_node reads `x`, extra nodes read it.
    let last = g.node.pop().unwrap();
    let mut prev = last.input[0].clone();
    for mut n in extra {
        n.input[0] = prev;
        prev = n.output[0].clone();
        g.node.push(n);
    }
    g.node.push(pb::NodeProto {
        input: vec![prev],
        ..last
    });
    m
}

#[test]
fn an_unsupported_op_is_named_with_its_node() {
    let m = with_nodes(vec![node("Sigmoid", &["?"], "s")]);
    let err = build(&m).unwrap_err();
    assert!(
        err.contains("Sigmoid") && err.contains("Sigmoid_s"),
        "{err}"
    );
    assert!(err.contains("not supported"), "{err}");
}

#[test]
fn softmax_and_clip_run_as_their_own_steps() {
    let mut clip = node("Clip", &["?"], "c");
    clip.attribute.push(pb::AttributeProto {
        name: "max".into(),
        f: 0.5,
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        ..Default::default()
    });
    clip.attribute.push(pb::AttributeProto {
        name: "min".into(),
        f: -0.5,
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        ..Default::default()
    });
    let m = with_nodes(vec![clip, node("Softmax", &["?"], "p")]);
    let plan = build(&m).unwrap();
    let tail: Vec<&Step> = plan.steps.iter().rev().take(2).collect();
    assert!(matches!(tail[0], Step::Softmax { .. }));
    assert!(matches!(tail[1], Step::Clamp { lo, hi, .. } if *lo == -0.5 && *hi == 0.5));
    let x = input(2, 3 * 224 * 224, 5);
    let y = run_reference(&plan, &x, 2);
    for row in y.chunks(10) {
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-5);
    }
}

#[test]
fn spatial_flatten_is_refused() {
    let mut m = modelgen::tiny_cnn(modelgen::TINY_SEED);
    let g = m.graph.as_mut().unwrap();
    let gap = g
        .node
        .iter()
        .position(|n| n.op_type == "GlobalAveragePool")
        .unwrap();
    let src = g.node.remove(gap).input[0].clone();
    let flat = g.node.iter_mut().find(|n| n.op_type == "Flatten").unwrap();
    flat.input[0] = src;
    let err = build(&m).unwrap_err();
    assert!(err.contains("flattening a spatial tensor"), "{err}");
}
