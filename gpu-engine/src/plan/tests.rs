//! Import, folding, fusion and layouts, checked against the CPU engine (tract) on small ONNX
//! graphs written here, in both storage layouts (NHWC as fp16 runs, row-major as fp32 runs).

use tract_onnx::pb;

use super::host_kernels::HostKernels;
use super::reference::{self, rel_l2};
use super::*;
use onnx_front::modelgen::{
    self, attr_float as float, attr_int as int, attr_ints as ints, attr_text as text, noise,
    Graph as G,
};

/// The reference the plans are checked against: tract, the CPU engine's runtime, on the
/// model at `path` read through the same front-end, at the input's shape.
fn tract(path: &std::path::Path, dims: &[usize], x: &[f32]) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let mut proto = onnx_front::read(path, &mut |_| {}).unwrap();
    onnx_front::fold_float_constants(&mut proto);
    let model = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .and_then(|m| m.with_input_fact(0, f32::fact(dims).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("tract: {e:?}"));
    let input = Tensor::from_shape(dims, x).unwrap();
    let out = model.run(tvec!(input.into())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Builds the plan in both layouts, runs it on the host and compares with tract; returns the
/// channels-last plan.
fn check(g: &G, y: &str, tol: f64) -> Plan {
    let model = g.model(y);
    // One folder per call: tests run in parallel threads of one process, and two graphs may
    // share an output name and a node count (a shared folder was removed under the other).
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tp-plan-{}-{y}-{n}", std::process::id()));
    let path = dir.join("m.onnx");
    modelgen::write(&model, &path).unwrap();
    let plan = compare(&model, &path, [g.c, g.h, g.w], 2, tol);
    let _ = std::fs::remove_dir_all(dir);
    plan
}

/// `model` (saved at `path`) on `n` items of `chw` through the plan on the host in both
/// layouts, against tract; returns the channels-last plan.
fn compare(
    model: &pb::ModelProto,
    path: &std::path::Path,
    chw: [usize; 3],
    n: usize,
    tol: f64,
) -> Plan {
    let [c, h, w] = chw;
    let x = noise(n * c * h * w, 99);
    let want = tract(path, &[n, c, h, w], &x);
    assert!(
        want.iter().any(|v| v.abs() > 1e-3),
        "the reference output is all but zero: the comparison would prove nothing"
    );
    let mut last = None;
    for channels_last in [true, false] {
        let plan = build(model, channels_last).unwrap_or_else(|e| panic!("{e}"));
        let got = reference::run(&plan, &x, n);
        assert_eq!(got.len(), want.len(), "channels_last {channels_last}");
        assert!(got.iter().all(|v| v.is_finite()), "unwritten output");
        let err = rel_l2(&got, &want);
        assert!(
            err < tol,
            "channels_last {channels_last}: relative L2 {err}"
        );
        last.get_or_insert(plan);
    }
    last.unwrap()
}

#[test]
fn resnet50_fuses_into_54_convs_and_two_pools() {
    let plan = build(&modelgen::resnet50(modelgen::RESNET50_SEED), true).unwrap();
    let convs: Vec<&ConvStep> = plan.convs().collect();
    // 53 convolutions + the classifier as a 1×1 convolution; every BN, Add and Relu fused.
    assert_eq!(convs.len(), 54);
    assert_eq!(
        plan.steps.len(),
        56,
        "{:#?}",
        plan.steps.iter().map(Step::kind).collect::<Vec<_>>()
    );
    assert_eq!(convs.iter().filter(|c| c.residual.is_some()).count(), 16);
    assert_eq!(
        convs.iter().filter(|c| c.act == Unary::Relu).count(),
        16 * 3 + 1
    );
    assert_eq!(plan.input_padded_c, 8);
    assert_eq!(convs[0].cin, 8);
    assert_eq!(plan.values[plan.output].dims, vec![1000]);
    let (slots, slot_of) = plan.slots();
    assert!(slots.len() <= 5, "{slots:?}");
    for s in &plan.steps {
        for i in s.inputs() {
            assert_ne!(slot_of[i], slot_of[s.output()]);
        }
    }
}

#[test]
fn the_tiny_cnn_computes_what_the_onnx_computes() {
    let proto = modelgen::tiny_cnn(modelgen::TINY_SEED);
    let dir = std::env::temp_dir().join(format!("tp-plan-tiny-{}", std::process::id()));
    let path = dir.join("tiny.onnx");
    modelgen::write(&proto, &path).unwrap();
    let n = 3;
    let x = noise(n * 3 * 224 * 224, 11);
    let want = tract(&path, &[n, 3, 224, 224], &x);
    for cl in [true, false] {
        let plan = build(&proto, cl).unwrap();
        assert!(plan.convs().any(|c| c.residual.is_some()));
        let err = rel_l2(&reference::run(&plan, &x, n), &want);
        assert!(err < 1e-5, "relative L2 {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The generated detector with YOLOv8's output layout (a reshape to `[batch, 7, 81]`, a split
/// into boxes and scores, sigmoids, a concat) plans in both layouts and computes what tract does.
#[test]
fn the_tiny_yolo_computes_what_the_onnx_computes() {
    let proto = modelgen::tiny_yolo();
    let dir = std::env::temp_dir().join(format!("tp-plan-yolo-{}", std::process::id()));
    let path = dir.join("tiny_yolo.onnx");
    modelgen::write(&proto, &path).unwrap();
    let n = 2;
    let x: Vec<f32> = noise(n * 3 * 64 * 64, 5).iter().map(|v| v.abs()).collect();
    let want = tract(&path, &[n, 3, 64, 64], &x);
    assert_eq!(want.len(), n * 7 * 81);
    for cl in [true, false] {
        let plan = build(&proto, cl).unwrap();
        assert_eq!(plan.values[plan.output].dims, vec![7, 81]);
        let err = rel_l2(&reference::run(&plan, &x, n), &want);
        assert!(err < 1e-5, "channels-last {cl}: relative L2 {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unsupported_op_is_named_with_its_node_and_the_supported_list() {
    let mut g = G::new(3, 8, 8);
    let y = g.op("Hardmax", &["x"], vec![]);
    let err = build(&g.model(&y), true).unwrap_err().to_string();
    assert!(err.contains("Hardmax `Hardmax_0`"), "{err}");
    assert!(
        err.contains("not supported") && err.contains("LayerNormalization"),
        "{err}"
    );
}

#[test]
fn identity_over_weights_and_constant_nodes_fold_away() {
    // What PyTorch's exporter writes for shared weights: Identity over an initializer, and
    // a Constant node feeding an Add.
    let mut g = G::new(8, 6, 6);
    let w = g.weight(&[8, 8, 3, 3], 0.3);
    let wi = g.op("Identity", &[&w], vec![]);
    let c = g.op("Conv", &["x", &wi], vec![ints("pads", &[1, 1, 1, 1])]);
    let k = g.nodes.len();
    g.nodes.push(pb::NodeProto {
        name: "cst".into(),
        op_type: "Constant".into(),
        output: vec![format!("t{k}")],
        attribute: vec![pb::AttributeProto {
            name: "value_float".into(),
            r#type: pb::attribute_proto::AttributeType::Float as i32,
            f: 0.25,
            ..Default::default()
        }],
        ..Default::default()
    });
    let kk = format!("t{k}");
    let y = g.op("Add", &[&c, &kk], vec![]);
    let d = g.op("Dropout", &[&y], vec![]);
    let plan = check(&g, &d, 1e-5);
    assert_eq!(plan.steps.len(), 2, "conv + add: {:?}", plan.steps);
}

#[test]
fn shape_arithmetic_folds_with_a_symbolic_batch() {
    // shufflenet's channel shuffle as the exporter writes it: the batch size read with Shape
    // and Gather, the target assembled with Unsqueeze and Concat.
    let mut g = G::new(8, 4, 4);
    let x = g.conv("x", 8, 8, 1, 1, 1);
    let s = g.op("Shape", &[&x], vec![]);
    let zero = g.init_i(&[0]);
    let n = g.op("Gather", &[&s, &zero], vec![int("axis", 0)]);
    let rest = g.init_i(&[2, 4, 4, 4]);
    let target = g.op("Concat", &[&n, &rest], vec![int("axis", 0)]);
    let r = g.op("Reshape", &[&x, &target], vec![]);
    let t = g.op("Transpose", &[&r], vec![ints("perm", &[0, 2, 1, 3, 4])]);
    let back = g.init_i(&[-1, 8, 4, 4]);
    let y = g.op("Reshape", &[&t, &back], vec![]);
    let z = g.conv(&y, 8, 8, 3, 1, 1);
    check(&g, &z, 1e-5);
}

/// The plan's elementwise steps and copies, in order.
fn maps(plan: &Plan) -> Vec<&MapStep> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Map(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The channel shuffle of `x` (`[c, h, w]`) in `g` groups, as torchvision's
/// `channel_shuffle` exports: Reshape to `[N, g, c/g, h, w]`, Transpose, Reshape back; each
/// target either a constant or, as PyTorch's exporter writes it, the batch read from the
/// input's Shape and concatenated with the rest just before the Reshape that takes it.
fn channel_shuffle(g: &mut G, x: &str, [groups, c, h, w]: [i64; 4], exported: bool) -> String {
    let target = |g: &mut G, of: &str, rest: &[i64]| {
        if !exported {
            return g.init_i(&[&[0], rest].concat());
        }
        let s = g.op("Shape", &[of], vec![]);
        let zero = g.init_i(&[0]);
        let n = g.op("Gather", &[&s, &zero], vec![int("axis", 0)]);
        let rest = g.init_i(rest);
        g.op("Concat", &[&n, &rest], vec![int("axis", 0)])
    };
    let to = target(g, x, &[groups, c / groups, h, w]);
    let r = g.op("Reshape", &[x, &to], vec![]);
    let t = g.op("Transpose", &[&r], vec![ints("perm", &[0, 2, 1, 3, 4])]);
    // The exporter reads the batch of both targets from `x.size()`, taken before the Reshape.
    let back = target(g, x, &[-1, h, w]);
    g.op("Reshape", &[&t, &back], vec![])
}

#[test]
fn shufflenet_units_copy_each_part_once_from_the_concat() {
    // Two of ShuffleNet v2's stride-1 units: chunk, a branch on one half, concat, shuffle.
    for exported in [false, true] {
        let mut g = G::new(16, 5, 5);
        let mut x = g.conv("x", 16, 16, 1, 1, 1);
        for _ in 0..2 {
            let half = g.init_i(&[8, 8]);
            let parts = g.op_n("Split", &[&x, &half], vec![int("axis", 1)], 2);
            let a = g.conv(&parts[1], 8, 8, 1, 1, 1);
            let b = g.conv(&a, 8, 8, 3, 1, 8);
            let cat = g.op("Concat", &[&parts[0], &b], vec![int("axis", 1)]);
            x = channel_shuffle(&mut g, &cat, [2, 16, 5, 5], exported);
        }
        let y = g.conv(&x, 16, 4, 3, 1, 1);
        let plan = check(&g, &y, 1e-5);
        // Per unit: the two parts of the second split read the concat shuffled, and the concat's
        // first part is copied in; nothing goes through a row-major or transposed copy.
        let map_steps = maps(&plan);
        let shuffled = map_steps.iter().filter(|m| m.shuffle.is_some()).count();
        assert_eq!(shuffled, 3, "{map_steps:#?}");
        assert!(
            map_steps.iter().all(|m| m.perm_a.is_none()),
            "{map_steps:#?}"
        );
    }
}

#[test]
fn a_channel_shuffle_read_by_other_ops_is_copied_once() {
    // The shuffle read by a convolution and a split of uneven groups: copied once, shuffled.
    for split in [None, Some([3i64, 5])] {
        let mut g = G::new(8, 4, 4);
        let x = g.conv("x", 8, 8, 1, 1, 1);
        let s = channel_shuffle(&mut g, &x, [2, 8, 4, 4], split.is_some());
        let y = match split {
            None => g.conv(&s, 8, 8, 3, 1, 1),
            Some(sizes) => {
                let sz = g.init_i(&sizes);
                let p = g.op_n("Split", &[&s, &sz], vec![int("axis", 1)], 2);
                g.op("Concat", &[&p[1], &p[0]], vec![int("axis", 1)])
            }
        };
        let plan = check(&g, &y, 1e-5);
        let shuffled = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Map(m) if m.shuffle.is_some()))
            .count();
        assert_eq!(shuffled, 1, "{:#?}", plan.steps);
    }
}

#[test]
fn a_shuffle_like_transpose_reshaped_elsewhere_is_built_as_written() {
    // Reshape to [N, g, C/g, H, W] and the Transpose, but the Reshape back goes to
    // [N, C, H·W]: not a channel shuffle, so the two are built as they are.
    let mut g = G::new(8, 4, 4);
    let x = g.conv("x", 8, 8, 1, 1, 1);
    let to = g.init_i(&[-1, 2, 4, 4, 4]);
    let r = g.op("Reshape", &[&x, &to], vec![]);
    let t = g.op("Transpose", &[&r], vec![ints("perm", &[0, 2, 1, 3, 4])]);
    let back = g.init_i(&[0, 8, 16]);
    let y = g.op("Reshape", &[&t, &back], vec![]);
    let plan = check(&g, &y, 1e-5);
    assert!(
        plan.steps
            .iter()
            .all(|s| !matches!(s, Step::Map(m) if m.shuffle.is_some())),
        "{:#?}",
        plan.steps
    );
}

#[test]
fn a_reshape_that_moves_the_batch_is_refused_clearly() {
    let mut g = G::new(8, 4, 4);
    let t = g.init_i(&[-1, 4, 4]);
    let y = g.op("Reshape", &["x", &t], vec![]);
    let err = build(&g.model(&y), true).unwrap_err().to_string();
    assert!(err.contains("moves the batch dimension"), "{err}");
}

#[test]
fn grouped_and_depthwise_convolutions() {
    let mut g = G::new(8, 9, 9);
    let a = g.conv("x", 8, 16, 3, 2, 2);
    let b = g.conv(&a, 16, 16, 3, 1, 16);
    check(&g, &b, 1e-5);
}

/// googlenet's and squeezenet's pool: 3×3, stride 2, ceil_mode (14 → 7, not 6).
fn ceil_max_pool(g: &mut G, x: &str) -> String {
    g.op(
        "MaxPool",
        &[x],
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("strides", &[2, 2]),
            int("ceil_mode", 1),
        ],
    )
}

#[test]
fn concat_of_branches_and_ceil_mode_max_pool() {
    // squeezenet's fire module and googlenet's pools.
    let mut g = G::new(8, 14, 14);
    let p = ceil_max_pool(&mut g, "x");
    let a = g.conv(&p, 8, 4, 1, 1, 1);
    let b = g.conv(&p, 8, 6, 3, 1, 1);
    let r = g.op("Relu", &[&b], vec![]);
    let c = g.op("Concat", &[&a, &r], vec![int("axis", 1)]);
    let plan = check(&g, &c, 1e-5);
    assert_eq!(plan.values[plan.output].dims, vec![10, 7, 7]);
}

#[test]
fn average_pools_with_and_without_padding_counted() {
    for include in [0, 1] {
        let mut g = G::new(4, 7, 7);
        let p = g.op(
            "AveragePool",
            &["x"],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                int("count_include_pad", include),
            ],
        );
        check(&g, &p, 1e-5);
    }
}

#[test]
fn squeeze_excitation_silu_hardswish_and_hardsigmoid() {
    // efficientnet / mobilenet_v3: global pool → conv → SiLU → conv → sigmoid → channel Mul.
    let mut g = G::new(8, 6, 6);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let s = g.op("Sigmoid", &[&x], vec![]);
    let silu = g.op("Mul", &[&x, &s], vec![]);
    let pool = g.op("GlobalAveragePool", &[&silu], vec![]);
    let r = g.conv(&pool, 8, 4, 1, 1, 1);
    let hs = g.op("HardSwish", &[&r], vec![]);
    let e = g.conv(&hs, 4, 8, 1, 1, 1);
    let gate = g.op(
        "HardSigmoid",
        &[&e],
        vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
    );
    let y = g.op("Mul", &[&silu, &gate], vec![]);
    let plan = check(&g, &y, 1e-5);
    // SiLU rides in its convolution's epilogue; HardSwish and HardSigmoid stay steps.
    let acts: Vec<Unary> = plan.convs().map(|c| c.act).collect();
    assert_eq!(acts, [Unary::Swish, Unary::Identity, Unary::Identity]);
}

#[test]
fn a_depthwise_convolution_takes_any_activation_into_its_epilogue() {
    // mobilenetv3: depthwise → HardSwish, and a dense convolution → HardSwish beside it (cuDNN's
    // graph API fuses no HardSwish: that one stays a step).
    let mut g = G::new(8, 6, 6);
    let d = g.conv("x", 8, 8, 3, 1, 8);
    let hs = g.op("HardSwish", &[&d], vec![]);
    let e = g.conv(&hs, 8, 8, 1, 1, 1);
    let y = g.op("HardSwish", &[&e], vec![]);
    let plan = check(&g, &y, 1e-5);
    let acts: Vec<Unary> = plan.convs().map(|c| c.act).collect();
    assert_eq!(acts, [Unary::HardSwish, Unary::Identity]);
    assert_eq!(
        plan.steps.len(),
        3,
        "{:?}",
        plan.steps.iter().map(Step::kind).collect::<Vec<_>>()
    );
}

#[test]
fn fp16_storage_emulation_rounds_weights_and_steps_but_depthwise_filters() {
    let mut g = G::new(8, 6, 6);
    let d = g.conv("x", 8, 8, 3, 1, 8);
    let e = g.conv(&d, 8, 16, 3, 1, 1);
    let model = g.model(&e);
    let plan = build(&model, true).unwrap();
    let n = 2;
    let x = noise(n * 8 * 6 * 6, 5);
    let want = reference::run(&plan, &x, n);
    let mut steps = Vec::new();
    let got = reference::run_fp16(&plan, &x, n, Some(&mut |i, v| steps.push((i, v))));
    let err = rel_l2(&got, &want);
    // fp16 storage: a few units of 2^-11 relative, never zero, never more than a few 1e-3.
    assert!(err > 1e-5 && err < 5e-3, "relative L2 {err}");
    assert_eq!(steps.len(), plan.steps.len());
    for (_, v) in &steps {
        assert!(
            v.iter().all(|&a| reference::to_fp16(a) == a),
            "a step's output not rounded"
        );
    }
    // The depthwise step alone: its filters exact, its input and output rounded.
    let depthwise: Vec<f32> = {
        let mut first = None;
        reference::run_traced(
            &plan,
            &x.iter().map(|&v| reference::to_fp16(v)).collect::<Vec<_>>(),
            n,
            &mut |i, v| {
                if i == 0 {
                    first = Some(v)
                }
            },
        );
        first.unwrap().into_iter().map(reference::to_fp16).collect()
    };
    assert_eq!(steps[0].1, depthwise);
}

#[test]
fn relu6_with_bounds_from_later_constant_nodes_is_fused_into_its_conv() {
    // mobilenet_v2 as exported: Conv → Clip whose min/max are Constant nodes written after
    // the Conv.
    let mut g = G::new(8, 5, 5);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let mut bounds = Vec::new();
    for v in [0.0f32, 0.5] {
        let k = g.nodes.len();
        g.nodes.push(pb::NodeProto {
            name: format!("cst{k}"),
            op_type: "Constant".into(),
            output: vec![format!("t{k}")],
            attribute: vec![pb::AttributeProto {
                name: "value_float".into(),
                r#type: pb::attribute_proto::AttributeType::Float as i32,
                f: v,
                ..Default::default()
            }],
            ..Default::default()
        });
        bounds.push(format!("t{k}"));
    }
    let y = g.op("Clip", &[&x, &bounds[0], &bounds[1]], vec![]);
    let plan = check(&g, &y, 1e-5);
    assert_eq!(plan.steps.len(), 1);
    assert_eq!(
        plan.convs().next().map(|c| (c.act, c.act_p)),
        Some((Unary::Clip, [0.0, 0.5]))
    );
}

#[test]
fn reduce_mean_clip_and_broadcast_constants() {
    // mnasnet's ReduceMean head; a per-channel constant scale (convnext's layer scale).
    let mut g = G::new(8, 5, 5);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let scale = g.weight(&[8, 1, 1], 1.0);
    let m = g.op("Mul", &[&x, &scale], vec![]);
    let lo = g.init_f(&[], vec![0.0]);
    let hi = g.init_f(&[], vec![6.0]);
    let c = g.op("Clip", &[&m, &lo, &hi], vec![]);
    let y = g.op(
        "ReduceMean",
        &[&c],
        vec![ints("axes", &[2, 3]), int("keepdims", 0)],
    );
    let plan = check(&g, &y, 1e-5);
    assert_eq!(plan.values[plan.output].dims, vec![8]);
}

/// The dynamo exporter's global average pool (squeeze-excitation blocks, classifier heads):
/// ReduceMean over axes `[-1, -2]`, planned as the same step as `[2, 3]` (the engine runs
/// that one on cuDNN's pooling).
#[test]
fn a_reduce_over_the_axes_in_any_order_is_one_step_over_them_in_order() {
    let mut g = G::new(8, 5, 5);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let y = g.op(
        "ReduceMean",
        &[&x],
        vec![ints("axes", &[-1, -2]), int("keepdims", 1)],
    );
    let plan = check(&g, &y, 1e-5);
    let axes: Vec<&Vec<usize>> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Reduce(r) => Some(&r.axes),
            _ => None,
        })
        .collect();
    assert_eq!(axes, [&vec![2, 3]]);
}

#[test]
fn flatten_of_a_map_keeps_nchw_order_into_the_classifier() {
    // vgg / alexnet: Flatten of [C, H, W] then Linear: the map's memory read as one vector
    // (NHWC in fp16, the weights permuted to match), one 1×1 convolution, nothing copied.
    let mut g = G::new(8, 3, 3);
    let x = g.conv("x", 8, 6, 3, 1, 1);
    let f = g.op("Flatten", &[&x], vec![int("axis", 1)]);
    let w = g.weight(&[10, 54], 0.2);
    let b = g.weight(&[10], 0.1);
    let y = g.op("Gemm", &[&f, &w, &b], vec![int("transB", 1)]);
    let plan = check(&g, &y, 1e-5);
    assert_eq!(plan.steps.len(), 2, "{:#?}", plan.steps);
    let dense = plan.convs().last().map(|c| (c.kernel, c.cin, c.cout));
    assert_eq!(dense, Some(([1, 1], 54, 10)));
    // A flatten read by something else than a dense layer is materialised in NCHW order.
    let mut g = G::new(8, 3, 3);
    let x = g.conv("x", 8, 6, 3, 1, 1);
    let f = g.op("Flatten", &[&x], vec![int("axis", 1)]);
    let y = g.op("Softmax", &[&f], vec![int("axis", 1)]);
    check(&g, &y, 1e-5);
}

#[test]
fn dense_block_batch_norm_relu_conv_concat() {
    // densenet: BN → ReLU → conv on a concatenation.
    let mut g = G::new(8, 5, 5);
    let a = g.conv("x", 8, 4, 3, 1, 1);
    let cat = g.op("Concat", &["x", &a], vec![int("axis", 1)]);
    let sc = g.weight(&[12], 1.0);
    let bi = g.weight(&[12], 0.5);
    let mean = g.weight(&[12], 0.2);
    let var: Vec<f32> = noise(12, 5).iter().map(|v| v.abs() + 0.5).collect();
    let var = g.init_f(&[12], var);
    let bn = g.op("BatchNormalization", &[&cat, &sc, &bi, &mean, &var], vec![]);
    let r = g.op("Relu", &[&bn], vec![]);
    let y = g.conv(&r, 12, 4, 1, 1, 1);
    check(&g, &y, 1e-5);
}

#[test]
fn convnext_block_layer_norm_linear_gelu_and_permutes() {
    let mut g = G::new(8, 4, 4);
    let x = g.conv("x", 8, 8, 7, 1, 8);
    let p = g.op("Transpose", &[&x], vec![ints("perm", &[0, 2, 3, 1])]);
    let sc = g.weight(&[8], 1.0);
    let bi = g.weight(&[8], 0.2);
    let ln = g.op(
        "LayerNormalization",
        &[&p, &sc, &bi],
        vec![int("axis", -1), float("epsilon", 1e-6)],
    );
    let w1 = g.weight(&[8, 16], 0.3);
    let b1 = g.weight(&[16], 0.1);
    let m1 = g.op("MatMul", &[&ln, &w1], vec![]);
    let a1 = g.op("Add", &[&m1, &b1], vec![]);
    // GELU as the exporter writes it: x · 0.5 · (1 + erf(x / √2)).
    let sq = g.init_f(&[], vec![std::f32::consts::SQRT_2]);
    let d = g.op("Div", &[&a1, &sq], vec![]);
    let e = g.op("Erf", &[&d], vec![]);
    let one = g.init_f(&[], vec![1.0]);
    let e1 = g.op("Add", &[&e, &one], vec![]);
    let m = g.op("Mul", &[&a1, &e1], vec![]);
    let half = g.init_f(&[], vec![0.5]);
    let gelu = g.op("Mul", &[&m, &half], vec![]);
    let w2 = g.weight(&[16, 8], 0.3);
    let b2 = g.weight(&[8], 0.1);
    let m2 = g.op("MatMul", &[&gelu, &w2], vec![]);
    let a2 = g.op("Add", &[&m2, &b2], vec![]);
    let back = g.op("Transpose", &[&a2], vec![ints("perm", &[0, 3, 1, 2])]);
    // The layer scale, [C, 1, 1] on the NCHW map.
    let gamma = g.weight(&[8, 1, 1], 0.5);
    let scaled = g.op("Mul", &[&gamma, &back], vec![]);
    let y = g.op("Add", &[&scaled, &x], vec![]);
    let plan = check(&g, &y, 1e-5);
    // Channels-last: the linear layers are 1×1 convolutions; the first with its bias and
    // the five-node GELU, the second with its bias, the layer scale (in its weights) and the
    // residual: no elementwise step left.
    let convs: Vec<&ConvStep> = plan.convs().collect();
    assert_eq!(convs.len(), 3, "{:#?}", plan.steps);
    assert_eq!(convs[1].act, Unary::Gelu);
    assert!(convs[2].residual.is_some());
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Map(_))));
    // Row-major: the products on cuBLAS, the bias add and GELU one elementwise step.
    let rm = build(&g.model(&y), false).unwrap();
    assert!(rm
        .steps
        .iter()
        .any(|s| matches!(s, Step::Map(m) if m.binary == Binary::Add && m.unary == Unary::Gelu)));
    assert!(!rm
        .steps
        .iter()
        .any(|s| matches!(s, Step::Map(m) if m.unary == Unary::Erf)));
    // The two permutes between NCHW and NHWC move no data in channels-last storage.
    assert_eq!(
        plan.steps
            .iter()
            .filter(|s| matches!(s, Step::Map(m) if m.perm_a.is_some()))
            .count(),
        0
    );
}

#[test]
fn batched_matmul_softmax_and_split() {
    // attention's shape: q · kᵀ, softmax over the last axis, · v, on [N, T, D] tensors.
    let mut g = G::new(6, 4, 4);
    let t = tokens(&mut g);
    let split = g.init_i(&[2, 2, 2]);
    let qkv = g.op_n("Split", &[&t, &split], vec![int("axis", 2)], 3);
    let kt = g.op("Transpose", &[&qkv[1]], vec![ints("perm", &[0, 2, 1])]);
    let att = g.op("MatMul", &[&qkv[0], &kt], vec![]);
    let sm = g.op("Softmax", &[&att], vec![int("axis", -1)]);
    let y = g.op("MatMul", &[&sm, &qkv[2]], vec![]);
    let (st, en, ax) = (g.init_i(&[1]), g.init_i(&[9]), g.init_i(&[1]));
    let sl = g.op("Slice", &[&y, &st, &en, &ax], vec![]);
    check(&g, &sl, 1e-5);
}

#[test]
fn a_class_token_expanded_to_the_batch_and_concatenated() {
    // ViT's `class_token.expand(n, -1, -1)` as the exporter writes it: the target from Shape,
    // `Where(Equal(shape, -1), 1, shape)`, then Expand and Concat along the tokens.
    let mut g = G::new(4, 2, 2);
    let x = g.conv("x", 4, 4, 1, 1, 1);
    let t = g.init_i(&[0, 4, 4]);
    let r = g.op("Reshape", &[&x, &t], vec![]);
    let p = g.op("Transpose", &[&r], vec![ints("perm", &[0, 2, 1])]);
    let token = g.weight(&[1, 1, 4], 1.0);
    let s = g.op("Shape", &[&x], vec![]);
    let (z, one) = (g.init_i(&[0]), g.init_i(&[1]));
    let n = g.op("Slice", &[&s, &z, &one], vec![]);
    let minus = g.init_i(&[-1, -1]);
    let shape = g.op("Concat", &[&n, &minus], vec![int("axis", 0)]);
    let m1 = g.init_i(&[-1]);
    let eq = g.op("Equal", &[&shape, &m1], vec![]);
    let ones = g.init_i(&[1, 1, 1]);
    let fixed = g.op("Where", &[&eq, &ones, &shape], vec![]);
    let e = g.op("Expand", &[&token, &fixed], vec![]);
    let y = g.op("Concat", &[&e, &p], vec![int("axis", 1)]);
    let plan = check(&g, &y, 1e-5);
    assert_eq!(plan.values[plan.output].dims, vec![5, 4]);
}

/// `nn.MultiheadAttention(batch_first=True)` on `[N, L, E]` as PyTorch's TorchScript exporter
/// writes it for ViT: the sequence-first kernel between two transposes, head reshapes whose
/// targets come from `Shape`, the packed projection split by Unsqueeze/Transpose/Squeeze/Gather,
/// the output flattened to `[L·N, E]` for a Gemm.
/// `gained`: an elementwise Mul and Sub between the attention and its output projection.
fn torch_attention(g: &mut G, x: &str, e: usize, heads: usize, gained: bool) -> String {
    let d = e / heads;
    let t = g.op("Transpose", &[x], vec![ints("perm", &[1, 0, 2])]);
    let w = g.weight(&[e, 3 * e], 0.3);
    let b = g.weight(&[3 * e], 0.1);
    let mm = g.op("MatMul", &[&t, &w], vec![]);
    let proj = g.op("Add", &[&b, &mm], vec![]);
    // unflatten(-1, (3, E)) with the leading dims read from the tensor.
    let s = g.op("Shape", &[&proj], vec![]);
    let (z, one) = (g.init_i(&[0]), g.init_i(&[1]));
    let s_l = g.op("Gather", &[&s, &z], vec![int("axis", 0)]);
    let s_n = g.op("Gather", &[&s, &one], vec![int("axis", 0)]);
    let three_e = g.init_i(&[3, e as i64]);
    let target = g.op("Concat", &[&s_l, &s_n, &three_e], vec![int("axis", 0)]);
    let r = g.op("Reshape", &[&proj, &target], vec![]);
    let u = g.op("Unsqueeze", &[&r, &z], vec![]);
    let tr = g.op("Transpose", &[&u], vec![ints("perm", &[3, 1, 2, 0, 4])]);
    let m2 = g.init_i(&[-2]);
    let sq = g.op("Squeeze", &[&tr, &m2], vec![]);
    let h = g.init_i(&[heads as i64]);
    let nh = g.op("Mul", &[&s_n, &h], vec![]);
    let dd = g.init_i(&[d as i64]);
    let hd = g.init_i(&[heads as i64]);
    let to_heads = g.op("Concat", &[&s_l, &nh, &dd], vec![int("axis", 0)]);
    let to_batch = g.op("Concat", &[&s_n, &hd, &s_l, &dd], vec![int("axis", 0)]);
    let mut qkv = Vec::new();
    for k in 0..3 {
        let idx = g.scalar_i(k);
        let p = g.op("Gather", &[&sq, &idx], vec![int("axis", 0)]);
        let p = g.op("Reshape", &[&p, &to_heads], vec![]);
        let p = g.op("Transpose", &[&p], vec![ints("perm", &[1, 0, 2])]);
        qkv.push(g.op("Reshape", &[&p, &to_batch], vec![]));
    }
    // scaled_dot_product_attention's export: both operands scaled by √scale.
    let sc = g.init_f(&[], vec![(1.0 / (d as f32).sqrt()).sqrt()]);
    let q = g.op("Mul", &[&qkv[0], &sc], vec![]);
    let kt = g.op("Transpose", &[&qkv[1]], vec![ints("perm", &[0, 1, 3, 2])]);
    let kt = g.op("Mul", &[&kt, &sc], vec![]);
    let att = g.op("MatMul", &[&q, &kt], vec![]);
    let att = g.op("Softmax", &[&att], vec![int("axis", -1)]);
    let o = g.op("MatMul", &[&att, &qkv[2]], vec![]);
    let o = g.op("Transpose", &[&o], vec![ints("perm", &[2, 0, 1, 3])]);
    let flat = g.init_i(&[-1, e as i64]);
    let mut o = g.op("Reshape", &[&o, &flat], vec![]);
    if gained {
        // An elementwise constant across a dim whose storage axes are apart (heads, head
        // dim), and one with the constant first.
        let gain = g.weight(&[e], 1.0);
        o = g.op("Mul", &[&o, &gain], vec![]);
        let half = g.init_f(&[1], vec![0.5]);
        o = g.op("Sub", &[&half, &o], vec![]);
    }
    let wo = g.weight(&[e, e], 0.3);
    let bo = g.weight(&[e], 0.1);
    let o = g.op("Gemm", &[&o, &wo, &bo], vec![int("transB", 1)]);
    let st = g.op("Shape", &[&t], vec![]);
    let o = g.op("Reshape", &[&o, &st], vec![]);
    g.op("Transpose", &[&o], vec![ints("perm", &[1, 0, 2])])
}

/// `[N, c, h, w]` → tokens `[N, h·w, c]` after a 1×1 convolution, as ViT's patch embedding.
fn tokens(g: &mut G) -> String {
    let (c, hw) = (g.c, g.h * g.w);
    let x = g.conv("x", c, c, 1, 1, 1);
    let s = g.init_i(&[0, c as i64, hw as i64]);
    let r = g.op("Reshape", &[&x, &s], vec![]);
    g.op("Transpose", &[&r], vec![ints("perm", &[0, 2, 1])])
}

/// The patch embedding's reshape and transpose read the channels-last map in place; where the
/// reshaped map has another reader too (here a mean over its positions), the map is copied to
/// row-major for that reader and transposed from there, as any other reshape and transpose.
#[test]
fn tokens_of_a_channels_last_map_in_place_unless_the_flat_map_is_read_too() {
    for shared in [false, true] {
        let mut g = G::new(8, 2, 3);
        let (c, hw) = (g.c, g.h * g.w);
        let x = g.conv("x", c, c, 1, 1, 1);
        let s = g.init_i(&[0, c as i64, hw as i64]);
        let r = g.op("Reshape", &[&x, &s], vec![]);
        let t = g.op("Transpose", &[&r], vec![ints("perm", &[0, 2, 1])]);
        let w = g.weight(&[c, 5], 0.3);
        let mut y = g.op("MatMul", &[&t, &w], vec![]);
        if shared {
            let m = g.op(
                "ReduceMean",
                &[&r],
                vec![ints("axes", &[2]), int("keepdims", 0)],
            );
            let one = g.init_i(&[1]);
            let m = g.op("Unsqueeze", &[&m, &one], vec![]);
            let wm = g.weight(&[c, 5], 0.3);
            let m = g.op("MatMul", &[&m, &wm], vec![]);
            y = g.op("Add", &[&y, &m], vec![]);
        }
        let plan = check(&g, &y, 1e-5);
        let copies = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Map(m) if m.b.is_none() && m.unary == Unary::Identity))
            .count();
        // Shared: the row-major copy the mean reads, and the transpose of it into tokens.
        assert_eq!(copies, 2 * shared as usize, "{:#?}", plan.steps);
    }
}

#[test]
fn torch_multi_head_attention_with_the_batch_moved_and_back() {
    // ViT's shape in small: 8 channels on a 2 × 3 map → 6 tokens of 8, 2 heads of 4.
    let mut g = G::new(8, 2, 3);
    let tokens = tokens(&mut g);
    let a = torch_attention(&mut g, &tokens, 8, 2, true);
    let y = g.op("Add", &[&a, &tokens], vec![]);
    // x[:, 0]: the class token's row, then the head.
    let z = g.scalar_i(0);
    let cls = g.op("Gather", &[&y, &z], vec![int("axis", 1)]);
    let wh = g.weight(&[5, 8], 0.3);
    let bh = g.weight(&[5], 0.1);
    let out = g.op("Gemm", &[&cls, &wh, &bh], vec![int("transB", 1)]);
    let plan = check(&g, &out, 1e-5);
    assert_eq!(plan.values[plan.output].dims, vec![5]);
    // Reordering copies: q, k, v into the batch-first head layout, and the attention's output
    // before its Gemm (its rows are not contiguous); the tokens are the channels-last map
    // itself, the transposes, reshapes and constants in between move nothing, and kᵀ and the
    // scales of q and kᵀ are folded into the scores' product.
    let copies = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Map(m) if m.perm_a.is_some()))
        .count();
    assert_eq!(copies, 4, "{:#?}", plan.steps);
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Map(m) if m.a == Operand::Value(1))),
        "the convolution's map is read in place: {:#?}",
        plan.steps
    );
    let scaled = |s: &Step| matches!(s, Step::MatMul(m) if m.b_trans && m.alpha != 1.0);
    assert_eq!(plan.steps.iter().filter(|s| scaled(s)).count(), 1);
}

/// A ViT exported by PyTorch itself (`tests/fixtures/onnx/make_tiny_vit.py`): the
/// real exporter's attention, class token and shape arithmetic, on 3 items.
#[test]
fn a_vision_transformer_as_pytorch_exports_it() {
    use prost::Message;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/tiny_vit.onnx");
    let model = pb::ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let plan = compare(&model, &path, [3, 32, 32], 3, 1e-5);
    assert_eq!(plan.values[plan.output].dims, vec![10]);
    // The patch embedding, the head, and per layer (2) the four linear layers as 1×1
    // convolutions: qkv and its bias; the output projection (a Gemm on moved rows) with the
    // residual Add after the rows are batch first again; the MLP's GELU; its second layer
    // with the residual.
    let convs: Vec<&ConvStep> = plan.convs().collect();
    assert_eq!(convs.len(), 10);
    assert_eq!(convs.iter().filter(|c| c.act == Unary::Gelu).count(), 2);
    assert_eq!(convs.iter().filter(|c| c.residual.is_some()).count(), 4);
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::MatMul(m) if matches!(m.b, Operand::Const(_)))));
    // Row-major (fp32) plans keep cuBLAS's products.
    let rm = build(&model, false).unwrap();
    assert_eq!(rm.convs().count(), 2);
}

#[test]
fn a_batch_merged_into_another_dim_is_refused_where_it_is_used() {
    let mut g = G::new(8, 4, 4);
    let t = g.init_i(&[-1, 4, 4]);
    let r = g.op("Reshape", &["x", &t], vec![]);
    let y = g.op("Softmax", &[&r], vec![int("axis", 0)]);
    let err = build(&g.model(&y), true).unwrap_err().to_string();
    assert!(
        err.contains("Softmax `Softmax_1`") && err.contains("[8N, 4, 4]"),
        "{err}"
    );
    assert!(err.contains("batch dimension has moved"), "{err}");
}

#[test]
fn slots_never_share_memory_between_live_values() {
    let plan = build(&modelgen::tiny_cnn(modelgen::TINY_SEED), true).unwrap();
    let (_, slot_of) = plan.slots();
    for s in &plan.steps {
        for i in s.inputs() {
            assert_ne!(slot_of[i], slot_of[s.output()]);
        }
    }
}

#[test]
fn a_linear_map_view_addresses_exactly_what_the_strided_walk_does() {
    // The kernels skip the index arithmetic for views marked linear: they must agree.
    let mut plans = vec![
        build(&modelgen::tiny_cnn(modelgen::TINY_SEED), true).unwrap(),
        build(&modelgen::tiny_cnn(modelgen::TINY_SEED), false).unwrap(),
    ];
    let mut g = G::new(8, 6, 6);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let s = g.op("Sigmoid", &[&x], vec![]);
    let p = g.op("GlobalAveragePool", &[&s], vec![]);
    let m = g.op("Mul", &[&x, &p], vec![]);
    let t = g.op("Transpose", &[&m], vec![ints("perm", &[0, 2, 3, 1])]);
    let y = g.op("Relu", &[&t], vec![]);
    for cl in [true, false] {
        plans.push(build(&g.model(&y), cl).unwrap());
    }
    let (mut linear, mut vector) = (0, 0);
    for plan in &plans {
        for step in &plan.steps {
            if let Step::Map(m) = step {
                for (n, bytes) in [(1, 2), (3, 2), (1, 4), (3, 4)] {
                    let l = view::map(plan, m, n, bytes).unwrap();
                    for (bit, v) in [(1, l.a), (2, l.b), (4, l.y)] {
                        if l.linear & bit != 0 {
                            linear += 1;
                            assert!((0..l.y.len()).all(|i| v.at(i) == v.offset + i as i64));
                        }
                        if l.vec > 1 {
                            vector += 1;
                            check_chunks(&v, l.vec as usize, l.y.len());
                        }
                    }
                }
            }
        }
    }
    assert!(linear > 0, "no view was marked linear");
    assert!(vector > 0, "no step was marked for 16-byte chunks");
}

/// What the kernels assume of a view walked in chunks of `k`: each chunk is `k` consecutive
/// elements starting on a multiple of `k` (a dense operand), or one element (a broadcast).
fn check_chunks(v: &view::View, k: usize, len: usize) {
    assert_eq!(len % k, 0);
    let s = v.strides[view::RANK - 1];
    for e in (0..len).step_by(k) {
        let base = v.at(e);
        assert!(
            s == 0 || base % k as i64 == 0,
            "chunk at {e} starts at {base}"
        );
        for j in 0..k {
            assert_eq!(
                v.at(e + j),
                base + j as i64 * s,
                "element {} of {v:?}",
                e + j
            );
        }
    }
}

/// GELU as PyTorch's exporter writes it: `x · (1 + erf(x / √2)) · 0.5`.
fn gelu(g: &mut G, x: &str) -> String {
    let sq = g.init_f(&[], vec![std::f32::consts::SQRT_2]);
    let d = g.op("Div", &[x, &sq], vec![]);
    let e = g.op("Erf", &[&d], vec![]);
    let one = g.init_f(&[], vec![1.0]);
    let e1 = g.op("Add", &[&e, &one], vec![]);
    let m = g.op("Mul", &[x, &e1], vec![]);
    let half = g.init_f(&[], vec![0.5]);
    g.op("Mul", &[&m, &half], vec![])
}

#[test]
fn a_gelu_chain_on_its_own_is_one_step() {
    let mut g = G::new(8, 4, 4);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let y = gelu(&mut g, &x);
    let plan = check(&g, &y, 1e-5);
    // In the convolution's epilogue (cuDNN's GELU_FWD or ours).
    assert_eq!(plan.steps.len(), 1);
    assert!(matches!(&plan.steps[0], Step::Conv(c) if c.act == Unary::Gelu));
}

#[test]
fn the_elementwise_and_pooling_kernels_compute_what_the_plan_means() {
    // Every Map (broadcast, transpose, concat, slice, copies between layouts) and Pool of
    // these graphs runs through kernels.cu compiled for the host; the result must match tract
    // and the host reference in both layouts.
    let k = HostKernels::load();
    let mut graphs = Vec::new();
    let mut g = G::new(8, 14, 14);
    let p = ceil_max_pool(&mut g, "x");
    let a = g.conv(&p, 8, 4, 1, 1, 1);
    let b = g.op(
        "AveragePool",
        &[&p],
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            int("count_include_pad", 0),
        ],
    );
    let c = g.op("Concat", &[&a, &b], vec![int("axis", 1)]);
    let scale = g.weight(&[12, 1, 1], 1.0);
    let m = g.op("Mul", &[&c, &scale], vec![]);
    let e = g.op("Erf", &[&m], vec![]);
    let t = g.op("Transpose", &[&e], vec![ints("perm", &[0, 3, 1, 2])]);
    let split = g.init_i(&[6, 6]);
    let parts = g.op_n("Split", &[&t, &split], vec![int("axis", 2)], 2);
    let y = g.op("Sub", &[&parts[1], &parts[0]], vec![]);
    graphs.push((g, y));
    let mut g = G::new(6, 5, 5);
    let x0 = g.conv("x", 6, 6, 3, 1, 1);
    let x = gelu(&mut g, &x0);
    let hs = g.op("HardSwish", &[&x], vec![]);
    let r = g.init_i(&[0, 6, 25]);
    let v = g.op("Reshape", &[&hs, &r], vec![]);
    let sm = g.op("Sigmoid", &[&v], vec![]);
    graphs.push((g, sm));
    // Bias adds, residuals and head reorders along whole 16-byte rows: the chunked path.
    let mut g = G::new(8, 2, 3);
    let tokens = tokens(&mut g);
    let a = torch_attention(&mut g, &tokens, 8, 2, true);
    let y = g.op("Add", &[&a, &tokens], vec![]);
    graphs.push((g, y));
    for (g, y) in &graphs {
        let model = g.model(y);
        let n = 2;
        let x = noise(n * g.c * g.h * g.w, 7);
        for cl in [true, false] {
            let plan = build(&model, cl).unwrap();
            assert!(plan.steps.iter().any(|s| matches!(s, Step::Map(_))));
            let want = reference::run(&plan, &x, n);
            let got = reference::run_with(&plan, &x, n, Some(&k));
            assert!(got.iter().all(|v| v.is_finite()), "unwritten output");
            let err = rel_l2(&got, &want);
            assert!(err < 1e-6, "channels_last {cl}: relative L2 {err}");
        }
    }
    assert!(k.chunked.get() > 0, "no map ran in 16-byte chunks");
    check(&graphs[0].0, &graphs[0].1, 1e-5);
}

#[test]
fn concat_copies_every_part_in_one_launch_per_32_parts() {
    // Along channels (parts of 8 and 4: whole and partial 16-byte chunks), along H and W of
    // NHWC maps, along the token axis of row-major tensors, and 35 parts (two launches).
    let k = HostKernels::load();
    let mut g = G::new(8, 4, 6);
    let a = g.conv("x", 8, 8, 1, 1, 1);
    let b = g.conv("x", 8, 4, 3, 1, 1);
    // One channel: in NHWC its channel stride ties its W stride (both 1).
    let one = g.conv("x", 8, 1, 1, 1, 1);
    let c = g.op("Concat", &[&a, &b, &one, &a], vec![int("axis", 1)]);
    let h = g.op("Concat", &[&c, &c], vec![int("axis", 2)]);
    let w = g.op("Concat", &[&h, &h, &h], vec![int("axis", 3)]);
    let r = g.init_i(&[0, 21, 144]);
    let t = g.op("Reshape", &[&w, &r], vec![]);
    let many: Vec<&str> = std::iter::repeat_n(t.as_str(), 35).collect();
    let y = g.op("Concat", &many, vec![int("axis", 1)]);
    let plan = check(&g, &y, 1e-6);
    let concats: Vec<&ConcatStep> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Concat(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(concats.len(), 5, "{:#?}", plan.steps);
    assert_eq!(concats[4].at, 32 * 21);
    let model = g.model(&y);
    let n = 2;
    let x = noise(n * g.c * g.h * g.w, 5);
    for cl in [true, false] {
        let plan = build(&model, cl).unwrap();
        let want = reference::run(&plan, &x, n);
        let got = reference::run_with(&plan, &x, n, Some(&k));
        assert!(got.iter().all(|v| v.is_finite()), "unwritten output");
        let err = rel_l2(&got, &want);
        assert!(err < 1e-7, "channels_last {cl}: relative L2 {err}");
    }
    assert!(k.chunked.get() > 0, "no concat ran in 16-byte chunks");
}

#[test]
fn an_add_folds_into_the_step_that_computes_its_operand() {
    // densenet's pre-activation BatchNorm on a concatenation (x · s, then + t and ReLU) and a
    // transformer's bias then residual: each pair one step; a sum read twice stays two. On
    // 8 + 8 channels of 4 × 4 (16-byte chunks) and 8 + 5 of 3 × 5 (one element per thread).
    let k = HostKernels::load();
    for (cout, h, w) in [(8, 4, 4), (5, 3, 5)] {
        let c = 8 + cout;
        let mut g = G::new(8, h, w);
        let a = g.conv("x", 8, cout, 3, 1, 1);
        let cat = g.op("Concat", &["x", &a], vec![int("axis", 1)]);
        let s = g.weight(&[c, 1, 1], 1.0);
        let t = g.weight(&[c, 1, 1], 0.5);
        let m = g.op("Mul", &[&cat, &s], vec![]);
        let bn = g.op("Add", &[&m, &t], vec![]);
        let r = g.op("Relu", &[&bn], vec![]);
        let tok = g.init_i(&[0, c as i64, (h * w) as i64]);
        let x = g.op("Reshape", &[&r, &tok], vec![]);
        let wt = g.weight(&[h * w, h * w], 0.3);
        let bias = g.weight(&[h * w], 0.1);
        let mm = g.op("MatMul", &[&x, &wt], vec![]);
        let biased = g.op("Add", &[&mm, &bias], vec![]);
        let res = g.op("Add", &[&x, &biased], vec![]);
        // A sum with a second reader: its Add is not folded away.
        let twice = g.op("Add", &[&res, &x], vec![]);
        let y = g.op("Mul", &[&twice, &res], vec![]);
        let cl_plan = check(&g, &y, 1e-5);
        // Channels-last: the product is a 1×1 convolution with the bias and the residual in
        // its epilogue; BN's Add folded as below.
        let cl_maps = maps(&cl_plan);
        assert_eq!(cl_maps.iter().filter(|m| m.c.is_some()).count(), 1);
        assert_eq!(cl_maps.len(), 4, "{:#?}", cl_plan.steps);
        assert!(cl_plan
            .convs()
            .any(|c| c.name.starts_with("MatMul") && c.residual.is_some()));
        let plan = build(&g.model(&y), false).unwrap();
        let folded: Vec<&MapStep> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Map(m) if m.c.is_some() => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(folded.len(), 2, "{:#?}", plan.steps);
        assert!(folded[0].binary == Binary::Mul && folded[0].unary == Unary::Relu);
        assert_eq!(folded[1].binary, Binary::Add);
        // Row-major (the products on cuBLAS): BN, bias + residual, the sum read twice, the Mul.
        let maps = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Map(_)))
            .count();
        assert_eq!(maps, 4, "{:#?}", plan.steps);
        // The same through kernels.cu compiled for the host, in both layouts.
        let model = g.model(&y);
        let n = 2;
        let input = noise(n * g.c * g.h * g.w, 3);
        for cl in [true, false] {
            let plan = build(&model, cl).unwrap();
            let want = reference::run(&plan, &input, n);
            let got = reference::run_with(&plan, &input, n, Some(&k));
            let err = rel_l2(&got, &want);
            assert!(
                err < 1e-6,
                "{cout} channels, channels_last {cl}: relative L2 {err}"
            );
        }
    }
}

#[test]
fn attention_with_heads_of_16_is_one_step_reading_the_projection() {
    for gained in [true, false] {
        // 6 tokens of 32, 2 heads of 16: a head size the fused kernel takes.
        let mut g = G::new(32, 2, 3);
        let tokens = tokens(&mut g);
        let a = torch_attention(&mut g, &tokens, 32, 2, gained);
        let y = g.op("Add", &[&a, &tokens], vec![]);
        let z = g.scalar_i(0);
        let cls = g.op("Gather", &[&y, &z], vec![int("axis", 1)]);
        let wh = g.weight(&[5, 32], 0.3);
        let bh = g.weight(&[5], 0.1);
        let out = g.op("Gemm", &[&cls, &wh, &bh], vec![int("transB", 1)]);
        // `check` runs both layouts against tract: the fused step (fp16's layout) and the
        // products and Softmax it replaces (fp32's).
        let plan = check(&g, &out, 1e-5);
        let steps: Vec<String> = plan
            .steps
            .iter()
            .map(|s| match s {
                Step::Map(m) => format!("map {:?} {:?} -> {}", m.a, m.perm_a, m.output),
                Step::Attention(a) => format!("attention {a:?}"),
                other => format!("{} -> {}", other.kind(), other.output()),
            })
            .collect();
        let fused: Vec<&AttentionStep> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Attention(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(fused.len(), 1, "{steps:#?}");
        let a = fused[0];
        assert_eq!((a.heads, a.lq, a.lk, a.d), (2, 6, 6, 16));
        // q, k and v are read from one value (the packed projection's memory), 32 apart.
        assert_eq!(a.q.value, a.k.value);
        assert_eq!(a.k.value, a.v.value);
        assert_eq!((a.k.offset - a.q.offset, a.v.offset - a.k.offset), (32, 32));
        assert!(!plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Row(_) | Step::MatMul(_))));
        // Of the five reordering copies, q's, k's and v's are gone, and so is the output's
        // into token order where nothing stands between it and the projection (the attention
        // writes there itself, rows of heads · 16 apart), and so is the tokens' (the
        // channels-last map is the tokens); left is, after the Mul and Sub, the copy before the
        // Gemm.
        let copies = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Map(m) if m.perm_a.is_some()))
            .count();
        assert_eq!(copies, if gained { 1 } else { 0 }, "{steps:#?}");
        if !gained {
            assert_eq!((a.o.row, a.o.head), (32, 16), "{steps:#?}");
        }
        let fp32 = build(&g.model(&out), false).unwrap();
        assert!(!fp32.steps.iter().any(|s| matches!(s, Step::Attention(_))));
    }
}

/// docs/config.md lists the ops from the same table the builder dispatches through, between
/// its `gpu-ops` markers (line breaks there are free).
#[test]
fn the_docs_list_the_ops_the_builder_dispatches() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    let docs = std::fs::read_to_string(&path).unwrap();
    let (start, end) = ("<!-- gpu-ops -->", "<!-- /gpu-ops -->");
    let listed = docs
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(list, _)| list.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("{} has no {start} … {end} block", path.display()));
    assert_eq!(
        listed,
        build::supported(),
        "update docs/config.md's op list"
    );
}

/// The item number as the dynamo exporter writes `as_strided` after an adaptive average pool
/// (torchvision's ConvNeXt): `Range(0, N, 1) · C`, unsqueezed, plus the offsets of one item's
/// values and zeros, indexing the flattened batch. `offsets` in order is a reshape.
fn as_strided(g: &mut G, x: &str, c: usize, offsets: &[i64]) -> String {
    let pooled = g.op(
        "ReduceMean",
        &[x],
        vec![ints("axes", &[-1, -2]), int("keepdims", 1)],
    );
    let all = g.init_i(&[-1]);
    let flat = g.op("Reshape", &[&pooled, &all], vec![]);
    let shape = g.op("Shape", &[x], vec![int("start", 0), int("end", 1)]);
    let n = g.op("Squeeze", &[&shape], vec![]);
    let (zero, one, stride) = (g.scalar_i(0), g.scalar_i(1), g.scalar_i(c as i64));
    let items = g.op("Range", &[&zero, &n, &one], vec![]);
    let starts = g.op("Mul", &[&items, &stride], vec![]);
    let axes = g.init_i(&[1, 2, 3]);
    let starts = g.op("Unsqueeze", &[&starts, &axes], vec![]);
    let offsets = g.init_i(offsets);
    if let Some(t) = g.inits.last_mut() {
        t.dims = vec![c as i64, 1, 1];
    }
    let idx = g.op("Add", &[&starts, &offsets], vec![]);
    let zeros = g.init_i(&[0]);
    if let Some(t) = g.inits.last_mut() {
        t.dims = vec![1, 1];
    }
    let idx = g.op("Add", &[&idx, &zeros], vec![]);
    g.op("Gather", &[&flat, &idx], vec![int("axis", 0)])
}

#[test]
fn as_strided_over_the_item_number_is_a_reshape() {
    let mut g = G::new(8, 4, 4);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let offsets: Vec<i64> = (0..8).collect();
    let y = as_strided(&mut g, &x, 8, &offsets);
    let f = g.op("Flatten", &[&y], vec![int("axis", 1)]);
    let w = g.weight(&[5, 8], 0.3);
    let z = g.op("Gemm", &[&f, &w], vec![int("transB", 1)]);
    let plan = check(&g, &z, 1e-5);
    // The Gather moved nothing: no copy between the pool and the dense layer.
    assert!(maps(&plan).is_empty(), "{:#?}", plan.steps);
}

#[test]
fn item_number_indices_that_read_other_values_are_refused() {
    let mut g = G::new(8, 4, 4);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let reversed: Vec<i64> = (0..8).rev().collect();
    let y = as_strided(&mut g, &x, 8, &reversed);
    let err = build(&g.model(&y), true).unwrap_err().to_string();
    assert!(err.contains("Gather `Gather_"), "{err}");
    assert!(
        err.contains("each item reads its own values in order"),
        "{err}"
    );

    // The item number where no rule follows it (a Softmax over it).
    let mut g = G::new(8, 4, 4);
    let shape = g.op("Shape", &["x"], vec![int("start", 0), int("end", 1)]);
    let n = g.op("Squeeze", &[&shape], vec![]);
    let (zero, one) = (g.scalar_i(0), g.scalar_i(1));
    let items = g.op("Range", &[&zero, &n, &one], vec![]);
    let y = g.op("Softmax", &[&items], vec![]);
    let err = build(&g.model(&y), true).unwrap_err().to_string();
    assert!(
        err.contains("Softmax `Softmax_") && err.contains("item number"),
        "{err}"
    );
}

/// A Reshape whose target holds the traced batch of 1 (the dynamo exporter writes ViT's
/// attention reshapes so when given `dynamic_axes` alone): the importer says the file runs
/// only with a batch of 1, and how to export it instead. (The CPU engine's side:
/// engine/tests/cpu_engine_graphs.rs.)
#[test]
fn a_batch_fixed_by_the_exporter_is_named() {
    let (g, y) = modelgen::batch_fixed_at_one();
    let model = g.model(&y);
    let err = build(&model, true).unwrap_err().to_string();
    assert!(err.contains("Reshape `Reshape_"), "{err}");
    assert!(err.contains("the exporter fixed the batch at 1"), "{err}");
}

/// The activations timm's and torchvision's models export beyond ReLU (each with ONNX's
/// attributes), the tanh GELU, Log, and PRelu with a slope per channel: against tract, and
/// through kernels.cu compiled for the host against the reference, in both layouts.
#[test]
fn activations_and_prelu_match_tract_and_the_host_kernels() {
    let mut g = G::new(8, 5, 5);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let softplus = g.op("Softplus", &[&x], vec![]);
    let slope = g.weight(&[8, 1, 1], 0.5);
    let mut parts = vec![
        g.op("LeakyRelu", &[&x], vec![float("alpha", 0.2)]),
        g.op("Elu", &[&x], vec![float("alpha", 0.7)]),
        g.op("Selu", &[&x], vec![]),
        // tract 0.23 leaves α out of Celu's negative side (onnxruntime has it): compared at
        // α = 1, where the two agree.
        g.op("Celu", &[&x], vec![float("alpha", 1.0)]),
        g.op("Softsign", &[&x], vec![]),
        g.op("Mish", &[&x], vec![]),
        g.op("ThresholdedRelu", &[&x], vec![float("alpha", 0.3)]),
        g.op("Gelu", &[&x], vec![text("approximate", "tanh")]),
        g.op("Log", &[&softplus], vec![]),
        g.op("PRelu", &[&x, &slope], vec![]),
    ];
    parts.push(softplus);
    let mut y = parts[0].clone();
    for p in &parts[1..] {
        y = g.op("Add", &[&y, p], vec![]);
    }
    let plan = check(&g, &y, 1e-5);
    let mut unaries: Vec<Unary> = maps(&plan).iter().map(|m| m.unary).collect();
    unaries.dedup();
    for u in [
        Unary::LeakyRelu,
        Unary::Mish,
        Unary::GeluTanh,
        Unary::Log,
        Unary::Selu,
    ] {
        assert!(unaries.contains(&u), "{u:?} not planned: {unaries:?}");
    }
    assert!(maps(&plan).iter().any(|m| m.binary == Binary::PRelu));
    host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 3);
}

/// The exact GELU as one node (opset 20, as the dynamo exporter writes ConvNeXt's and ViT's
/// MLPs) goes into the epilogue of the convolution before it, as the TorchScript exporter's
/// erf chain does; the tanh approximation stays its own step.
#[test]
fn a_gelu_node_fuses_into_the_convolution_before_it() {
    let mut g = G::new(8, 5, 5);
    let x = g.conv("x", 8, 8, 1, 1, 1);
    let y = g.op("Gelu", &[&x], vec![]);
    let plan = check(&g, &y, 1e-5);
    assert_eq!(plan.steps.len(), 1, "{:#?}", plan.steps);
    assert_eq!(plan.convs().next().map(|c| c.act), Some(Unary::Gelu));

    let mut g = G::new(8, 5, 5);
    let x = g.conv("x", 8, 8, 1, 1, 1);
    let y = g.op("Gelu", &[&x], vec![text("approximate", "tanh")]);
    let plan = check(&g, &y, 1e-5);
    assert_eq!(plan.steps.len(), 2, "{:#?}", plan.steps);
    assert_eq!(plan.convs().next().map(|c| c.act), Some(Unary::Identity));
}

/// GELU's tanh approximation as the TorchScript exporter writes it (nine nodes; the cube as
/// `x · (x · x)` or as `Pow(x, 3)`): one step, against tract and through kernels.cu compiled
/// for the host.
#[test]
fn the_exporters_tanh_gelu_chain_is_one_step() {
    for pow in [false, true] {
        let mut g = G::new(8, 5, 5);
        let x = g.conv("x", 8, 8, 3, 1, 1);
        let cube = if pow {
            let three = g.init_f(&[], vec![3.0]);
            g.op("Pow", &[&x, &three], vec![])
        } else {
            let sq = g.op("Mul", &[&x, &x], vec![]);
            g.op("Mul", &[&x, &sq], vec![])
        };
        let c0 = g.init_f(&[], vec![0.044715]);
        let m = g.op("Mul", &[&c0, &cube], vec![]);
        let a = g.op("Add", &[&x, &m], vec![]);
        let c1 = g.init_f(&[], vec![0.797_884_6]);
        let m = g.op("Mul", &[&c1, &a], vec![]);
        let t = g.op("Tanh", &[&m], vec![]);
        let one = g.init_f(&[], vec![1.0]);
        let a = g.op("Add", &[&one, &t], vec![]);
        let m = g.op("Mul", &[&x, &a], vec![]);
        let half = g.init_f(&[], vec![0.5]);
        let y = g.op("Mul", &[&half, &m], vec![]);
        let plan = check(&g, &y, 1e-5);
        assert_eq!(plan.steps.len(), 2, "{:#?}", plan.steps);
        assert_eq!(maps(&plan)[0].unary, Unary::GeluTanh);
        host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 2);
    }
}

/// ConvNeXt V2's global response norm takes an L2 norm over the map (`ReduceL2`, opset 18
/// with the axes as an input, as the dynamo exporter writes it, here as the attribute of
/// opset 17); L1 and the sum of squares are the same sum of another function.
#[test]
fn l1_l2_and_sum_square_reductions() {
    let mut g = G::new(8, 5, 5);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let l2 = g.op(
        "ReduceL2",
        &[&x],
        vec![ints("axes", &[2, 3]), int("keepdims", 1)],
    );
    let scaled = g.op("Div", &[&x, &l2], vec![]);
    let l1 = g.op(
        "ReduceL1",
        &[&scaled],
        vec![ints("axes", &[1]), int("keepdims", 1)],
    );
    let ss = g.op(
        "ReduceSumSquare",
        &[&x],
        vec![ints("axes", &[-1]), int("keepdims", 0)],
    );
    let flat_ss = g.op("Flatten", &[&ss], vec![int("axis", 1)]);
    let flat_l1 = g.op("Flatten", &[&l1], vec![int("axis", 1)]);
    let y = g.op("Concat", &[&flat_ss, &flat_l1], vec![int("axis", 1)]);
    let plan = check(&g, &y, 1e-5);
    // Each is one reduce step that squares or takes the magnitude as it sums: no elementwise
    // step of the whole map before it.
    let kinds: Vec<ReduceKind> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Reduce(r) => Some(r.kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [ReduceKind::L2, ReduceKind::L1, ReduceKind::SumSquare]
    );
    let maps = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Map(m) if m.binary == Binary::Mul || m.unary == Unary::Abs))
        .count();
    assert_eq!(maps, 0, "{:#?}", plan.steps);
}

/// A GroupNorm of one group over a map of 9,216 values (PoolFormer's, both as the dynamo
/// exporter writes it, an InstanceNormalization of `[N, 1, C·H·W]` between Reshapes, and as
/// GroupNormalization): each row is reduced in chunks across many warps, not by one warp.
/// The first, with PoolFormer's per-channel scale and shift after it, runs on the
/// channels-last map where it is: no copy into row order and back, and the scale folded into
/// the product with the inverse deviation, two passes over the map. Against tract, and
/// through kernels.cu compiled for the host.
#[test]
fn long_rows_are_normalised_in_chunks() {
    let mut g = G::new(16, 24, 24);
    let x = g.conv("x", 16, 16, 3, 1, 1);
    let shift = g.init_f(&[16, 1, 1], vec![3.0; 16]);
    let x = g.op("Add", &[&x, &shift], vec![]);
    let one_group = g.init_i(&[0, 1, -1]);
    let r = g.op("Reshape", &[&x, &one_group], vec![]);
    let (one, zero) = (g.init_f(&[1], vec![1.0]), g.init_f(&[1], vec![0.0]));
    let n = g.op("InstanceNormalization", &[&r, &one, &zero], vec![]);
    let back = g.init_i(&[0, 16, 24, 24]);
    let n = g.op("Reshape", &[&n, &back], vec![]);
    let (w, b) = (g.weight(&[16, 1, 1], 0.5), g.weight(&[16, 1, 1], 0.2));
    let n = g.op("Mul", &[&n, &w], vec![]);
    let n = g.op("Add", &[&n, &b], vec![]);
    let first = g.op("Relu", &[&n], vec![]);
    let (gs, gb) = (g.weight(&[1], 0.5), g.weight(&[1], 0.2));
    let y = g.op(
        "GroupNormalization",
        &[&first, &gs, &gb],
        vec![int("num_groups", 1), float("epsilon", 1e-5)],
    );
    let plan = check(&g, &y, 1e-5);
    // The steps over the whole map: the shift before the first norm; that norm's centring,
    // then its normalisation with the scale, shift and ReLU; the GroupNormalization's copy
    // into row order, centring, division, and its own scale and shift.
    let whole = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Map(_)) && plan.values[s.output()].len() == 16 * 24 * 24)
        .count();
    assert_eq!(whole, 1 + 2 + 4, "{:#?}", plan.steps);
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Row(_))),
        "{:#?}",
        plan.steps
    );
    let partials = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Reduce(r) if r.axes == [3]))
        .count();
    assert_eq!(partials, 4, "two norms, each a mean and a variance");
    host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 2);
}

/// InstanceNormalization with its per-channel scale and shift; PoolFormer's GroupNorm of one
/// group as the dynamo exporter writes it (Reshape to `[N, 1, −1]`, InstanceNormalization with
/// scale 1 and shift 0, Reshape back, then the affine); GroupNormalization (opset 18, scale and
/// shift per group); Flatten at axes other than 1; a Pad of zero width.
#[test]
fn instance_and_group_norms_flatten_and_empty_pads() {
    let mut g = G::new(8, 5, 5);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let (scale, shift) = (g.weight(&[8], 0.5), g.weight(&[8], 0.3));
    let inorm = g.op(
        "InstanceNormalization",
        &[&x, &scale, &shift],
        vec![float("epsilon", 1e-5)],
    );
    let one_group = g.init_i(&[0, 1, -1]);
    let r = g.op("Reshape", &[&inorm, &one_group], vec![]);
    let (one, zero) = (g.init_f(&[1], vec![1.0]), g.init_f(&[1], vec![0.0]));
    let gn1 = g.op("InstanceNormalization", &[&r, &one, &zero], vec![]);
    let back = g.init_i(&[0, 8, 5, 5]);
    let gn1 = g.op("Reshape", &[&gn1, &back], vec![]);
    let (gs, gb) = (g.weight(&[4], 0.5), g.weight(&[4], 0.2));
    let gn = g.op(
        "GroupNormalization",
        &[&gn1, &gs, &gb],
        vec![int("num_groups", 4), float("epsilon", 1e-5)],
    );
    let pads = g.init_i(&[0; 8]);
    let padded = g.op("Pad", &[&gn, &pads], vec![]);
    let flat2 = g.op("Flatten", &[&padded], vec![int("axis", 2)]);
    let back = g.init_i(&[-1, 200]);
    let y = g.op("Reshape", &[&flat2, &back], vec![]);
    let plan = check(&g, &y, 1e-5);
    let norms = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Row(_)))
        .count();
    assert_eq!(norms, 3);

    let mut g = G::new(8, 2, 2);
    let pads = g.init_i(&[0, 0, 1, 1, 0, 0, 1, 1]);
    let y = g.op("Pad", &["x", &pads], vec![text("mode", "reflect")]);
    let err = build(&g.model(&y), true).unwrap_err().to_string();
    assert!(
        err.contains("Pad `Pad_0`") && err.contains("mode \"reflect\""),
        "{err}"
    );
}

/// HRNet's fusion layers: `interpolate(scale_factor = 2 or 4, mode = "nearest")` exported as
/// Resize with scales (and the same with sizes), added to a finer branch; a bilinear Resize is
/// refused by name.
#[test]
fn nearest_resize_by_whole_factors() {
    let mut g = G::new(8, 8, 8);
    let fine = g.conv("x", 8, 8, 3, 1, 1);
    let coarse = g.conv(&fine, 8, 8, 3, 2, 1);
    let coarser = g.conv(&coarse, 8, 8, 3, 2, 1);
    let scales = g.init_f(&[4], vec![1.0, 1.0, 2.0, 2.0]);
    let nearest = || {
        vec![
            text("mode", "nearest"),
            text("coordinate_transformation_mode", "asymmetric"),
            text("nearest_mode", "floor"),
        ]
    };
    let up2 = g.op("Resize", &[&coarse, "", &scales], nearest());
    let sizes = g.init_i(&[2, 8, 8, 8]);
    let up4 = g.op("Resize", &[&coarser, "", "", &sizes], nearest());
    let sum = g.op("Add", &[&fine, &up2], vec![]);
    let sum = g.op("Add", &[&sum, &up4], vec![]);
    let y = g.conv(&sum, 8, 4, 3, 1, 1);
    check(&g, &y, 1e-5);

    let mut g = G::new(8, 4, 4);
    let scales = g.init_f(&[4], vec![1.0, 1.0, 2.0, 2.0]);
    let y = g.op("Resize", &["x", "", &scales], vec![text("mode", "linear")]);
    let err = build(&g.model(&y), true).unwrap_err().to_string();
    assert!(
        err.contains("Resize `Resize_0`") && err.contains("mode \"linear\""),
        "{err}"
    );
}

/// timm's attention: qkv reshaped to `[N, L, 3, H, d]`, permuted to `[3, N, H, L, d]`, q, k
/// and v unbound by Slices of width 1 (the dynamo exporter) or one Split (TorchScript), each
/// part squeezed.
#[test]
fn timm_attention_unbinds_q_k_v_from_the_moved_batch() {
    for by_split in [false, true] {
        let (e, heads) = (8usize, 2usize);
        let d = e / heads;
        let mut g = G::new(8, 2, 3);
        let tokens = tokens(&mut g);
        let l = (g.h * g.w) as i64;
        let w = g.weight(&[e, 3 * e], 0.3);
        let qkv = g.op("MatMul", &[&tokens, &w], vec![]);
        let split = g.init_i(&[-1, l, 3, heads as i64, d as i64]);
        let qkv = g.op("Reshape", &[&qkv, &split], vec![]);
        let qkv = g.op("Transpose", &[&qkv], vec![ints("perm", &[2, 0, 3, 1, 4])]);
        let axis0 = g.init_i(&[0]);
        let unbound: Vec<String> = if by_split {
            let sizes = g.init_i(&[1, 1, 1]);
            g.op_n("Split", &[&qkv, &sizes], vec![int("axis", 0)], 3)
        } else {
            (0..3)
                .map(|k| {
                    let (s, t) = (g.init_i(&[k]), g.init_i(&[k + 1]));
                    g.op("Slice", &[&qkv, &s, &t, &axis0], vec![])
                })
                .collect()
        };
        let parts: Vec<String> = unbound
            .iter()
            .map(|p| g.op("Squeeze", &[p, &axis0], vec![]))
            .collect();
        let kt = g.op("Transpose", &[&parts[1]], vec![ints("perm", &[0, 1, 3, 2])]);
        let scores = g.op("MatMul", &[&parts[0], &kt], vec![]);
        let p = g.op("Softmax", &[&scores], vec![int("axis", -1)]);
        let o = g.op("MatMul", &[&p, &parts[2]], vec![]);
        let o = g.op("Transpose", &[&o], vec![ints("perm", &[0, 2, 1, 3])]);
        let back = g.init_i(&[-1, l, e as i64]);
        let o = g.op("Reshape", &[&o, &back], vec![]);
        let y = g.op("Add", &[&o, &tokens], vec![]);
        check(&g, &y, 1e-5);
    }
}

/// TF-style "same" padding (timm's `tf_` models, MaxViT): convolutions padded on one side,
/// on the model input and inside; a constant Pad with its value; through the reference and
/// through kernels.cu compiled for the host.
#[test]
fn one_sided_conv_padding_and_constant_pads() {
    let mut g = G::new(3, 8, 8);
    let one_sided = |g: &mut G, x: &str, cin: usize, cout: usize| {
        let w = g.weight(&[cout, cin, 3, 3], 0.3);
        g.op(
            "Conv",
            &[x, &w],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[0, 0, 1, 1]),
            ],
        )
    };
    let a = one_sided(&mut g, "x", 3, 8);
    let b = one_sided(&mut g, &a, 8, 8);
    let pads = g.init_i(&[0, 0, 1, 2, 0, 0, 2, 1]);
    let value = g.init_f(&[], vec![0.5]);
    let p = g.op("Pad", &[&b, &pads, &value], vec![]);
    let y = g.conv(&p, 8, 4, 3, 1, 1);
    let plan = check(&g, &y, 1e-5);
    host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 5);
    // Each padding writes its border slab by slab and copies its input once, every padded
    // axis at once: the two one-sided convolutions two slabs and a copy each, the Pad four
    // slabs and a copy; nothing fills a whole map.
    let maps: Vec<&MapStep> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Map(m) => Some(m),
            _ => None,
        })
        .collect();
    let fills = maps.iter().filter(|m| matches!(m.a, Operand::Const(_)));
    assert!(fills.clone().all(|m| m.region.len() == 1), "{maps:#?}");
    assert_eq!(fills.count(), 2 + 2 + 4);
    let middles: Vec<usize> = maps
        .iter()
        .filter(|m| matches!(m.a, Operand::Value(_)) && !m.region.is_empty())
        .map(|m| m.region.len())
        .collect();
    assert_eq!(middles, [2, 2, 2]);
}

/// LeViT's BatchNorm1d on its tokens: `[N, L, C]` flattened to `[N·L, C]`, normalised, and
/// shaped back.
#[test]
fn batch_norm_of_tokens_with_the_batch_merged() {
    let mut g = G::new(8, 2, 3);
    let tokens = tokens(&mut g);
    let flat = g.init_i(&[-1, 8]);
    let rows = g.op("Reshape", &[&tokens, &flat], vec![]);
    let (scale, bias) = (g.weight(&[8], 0.5), g.weight(&[8], 0.2));
    let mean = g.weight(&[8], 0.1);
    let var = g.init_f(&[8], (0..8).map(|v| 0.5 + v as f32 * 0.1).collect());
    let bn = g.op(
        "BatchNormalization",
        &[&rows, &scale, &bias, &mean, &var],
        vec![float("epsilon", 1e-5)],
    );
    let back = g.init_i(&[-1, (g.h * g.w) as i64, 8]);
    let y = g.op("Reshape", &[&bn, &back], vec![]);
    let y = g.op("Add", &[&y, &tokens], vec![]);
    check(&g, &y, 1e-5);
}

/// `model` on 2 items of `[c, h, w]` noise through kernels.cu compiled for the host against
/// the reference executor, in both layouts.
fn host_kernels_match(model: &pb::ModelProto, [c, h, w]: [usize; 3], seed: u32) {
    let k = HostKernels::load();
    let input = noise(2 * c * h * w, seed);
    for cl in [true, false] {
        let plan = build(model, cl).unwrap();
        let want = reference::run(&plan, &input, 2);
        let got = reference::run_with(&plan, &input, 2, Some(&k));
        assert!(got.iter().all(|v| v.is_finite()), "unwritten output");
        let err = rel_l2(&got, &want);
        assert!(err < 1e-6, "channels_last {cl}: relative L2 {err}");
    }
}

/// ECA's channel attention (timm's NFNets): the pooled channels as a 1-D sequence through a
/// `Conv1d`, a sigmoid, and back onto the map, there as it is or expanded to the map's shape
/// first (`x * y.expand_as(x)`, as timm writes it: the Mul broadcasts the gate itself, and the
/// plans are step for step the same); and a strided 1-D convolution padded on one side, with
/// groups.
#[test]
fn one_dimensional_convolutions() {
    let plans: Vec<Plan> = [false, true]
        .into_iter()
        .map(|expand| {
            let mut g = G::new(8, 2, 5);
            let x = g.conv("x", 8, 8, 3, 1, 1);
            let pooled = g.op("GlobalAveragePool", &[&x], vec![]);
            let seq = g.init_i(&[-1, 1, 8]);
            let seq = g.op("Reshape", &[&pooled, &seq], vec![]);
            let w = g.weight(&[1, 1, 3], 0.5);
            let attn = g.op(
                "Conv",
                &[&seq, &w],
                vec![ints("kernel_shape", &[3]), ints("pads", &[1, 1])],
            );
            let attn = g.op("Sigmoid", &[&attn], vec![]);
            let back = g.init_i(&[-1, 8, 1, 1]);
            let mut attn = g.op("Reshape", &[&attn, &back], vec![]);
            if expand {
                let like_x = g.init_i(&[1, 8, 2, 5]);
                attn = g.op("Expand", &[&attn, &like_x], vec![]);
            }
            let scaled = g.op("Mul", &[&x, &attn], vec![]);
            let rows = g.init_i(&[0, 8, 10]);
            let rows = g.op("Reshape", &[&scaled, &rows], vec![]);
            let (w, b) = (g.weight(&[4, 4, 3], 0.3), g.weight(&[4], 0.1));
            let y = g.op(
                "Conv",
                &[&rows, &w, &b],
                vec![
                    ints("kernel_shape", &[3]),
                    ints("strides", &[2]),
                    ints("pads", &[0, 1]),
                    int("group", 2),
                ],
            );
            let plan = check(&g, &y, 1e-5);
            assert_eq!(plan.values[plan.output].dims, vec![4, 5]);
            plan
        })
        .collect();
    let shape = |p: &Plan| -> Vec<(&'static str, Vec<usize>, usize)> {
        p.steps
            .iter()
            .map(|s| (s.kind(), s.inputs(), s.output()))
            .collect()
    };
    assert_eq!(shape(&plans[0]), shape(&plans[1]));
}

/// Swin's shifted-window attention on `[N, 4, 4, 8]` tokens, windows of 2×2: partitioned to
/// `[N·4, 4, 8]`, q, k and v unbound from `[3, N·4, 2, 4, 4]` (Gather, as TorchScript writes
/// `unbind`; Split and Squeeze, as the dynamo exporter does), `q · kᵀ` of two moved tensors,
/// the relative-position bias, the shift mask over `[N, 4 windows, …]`, the Softmax of moved
/// scores, the product with v and the windows merged back. The qkv storage has 8 axes
/// (`[N, 2, 2, 2, 2, 3, 2, 4]`): the copies out of it are walked with their contiguous dims
/// merged. Through the reference and kernels.cu compiled for the host.
#[test]
fn window_attention_with_the_batch_merged_into_the_windows() {
    for by_split in [false, true] {
        let (c, heads, win) = (8usize, 2i64, 2i64);
        let d = c as i64 / heads;
        let mut g = G::new(c, 4, 4);
        let x = g.conv("x", c, c, 1, 1, 1);
        let nhwc = g.op("Transpose", &[&x], vec![ints("perm", &[0, 2, 3, 1])]);
        let blocks = g.init_i(&[-1, 2, win, 2, win, c as i64]);
        let w = g.op("Reshape", &[&nhwc, &blocks], vec![]);
        let w = g.op("Transpose", &[&w], vec![ints("perm", &[0, 1, 3, 2, 4, 5])]);
        let windows = g.init_i(&[-1, win * win, c as i64]);
        let w = g.op("Reshape", &[&w, &windows], vec![]);
        let qkv_w = g.weight(&[c, 3 * c], 0.3);
        let qkv = g.op("MatMul", &[&w, &qkv_w], vec![]);
        let split = g.init_i(&[-1, win * win, 3, heads, d]);
        let qkv = g.op("Reshape", &[&qkv, &split], vec![]);
        let qkv = g.op("Transpose", &[&qkv], vec![ints("perm", &[2, 0, 3, 1, 4])]);
        let axis0 = g.init_i(&[0]);
        let [q, k, v]: [String; 3] = if by_split {
            let sizes = g.init_i(&[1, 1, 1]);
            let parts = g.op_n("Split", &[&qkv, &sizes], vec![int("axis", 0)], 3);
            let sq: Vec<String> = parts
                .iter()
                .map(|p| g.op("Squeeze", &[p, &axis0], vec![]))
                .collect();
            sq.try_into().unwrap()
        } else {
            [0, 1, 2].map(|j| {
                let at = g.scalar_i(j);
                g.op("Gather", &[&qkv, &at], vec![int("axis", 0)])
            })
        };
        let scale = g.init_f(&[], vec![0.5]);
        let q = g.op("Mul", &[&q, &scale], vec![]);
        let kt = g.op("Transpose", &[&k], vec![ints("perm", &[0, 1, 3, 2])]);
        let scores = g.op("MatMul", &[&q, &kt], vec![]);
        let bias = g.weight(&[1, heads as usize, 4, 4], 0.5);
        let scores = g.op("Add", &[&scores, &bias], vec![]);
        let per_image = g.init_i(&[-1, 4, heads, 4, 4]);
        let scores = g.op("Reshape", &[&scores, &per_image], vec![]);
        let mask = g.weight(&[4, 1, 4, 4], 1.0);
        let scores = g.op("Add", &[&scores, &mask], vec![]);
        let back = g.init_i(&[-1, heads, 4, 4]);
        let scores = g.op("Reshape", &[&scores, &back], vec![]);
        let p = g.op("Softmax", &[&scores], vec![int("axis", -1)]);
        let o = g.op("MatMul", &[&p, &v], vec![]);
        let o = g.op("Transpose", &[&o], vec![ints("perm", &[0, 2, 1, 3])]);
        let o = g.op("Reshape", &[&o, &windows], vec![]);
        let proj = g.weight(&[c, c], 0.3);
        let o = g.op("MatMul", &[&o, &proj], vec![]);
        let o = g.op("Reshape", &[&o, &blocks], vec![]);
        let o = g.op("Transpose", &[&o], vec![ints("perm", &[0, 1, 3, 2, 4, 5])]);
        let image = g.init_i(&[-1, 4, 4, c as i64]);
        let o = g.op("Reshape", &[&o, &image], vec![]);
        let o = g.op("Add", &[&o, &nhwc], vec![]);
        let y = g.op("Transpose", &[&o], vec![ints("perm", &[0, 3, 1, 2])]);
        check(&g, &y, 1e-5);
        host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 7);
    }
}

/// Slices with steps: LeViT's subsampling attention takes every other token of its grid
/// (`x.view(N, H, W, C)[:, ::2, ::2]`), EVA's rotary embedding the even and odd channels of
/// each head (`x[..., ::2]`, `x[..., 1::2]`) of a tensor whose batch has moved; here also a
/// step along the channels of an NCHW map, stored NHWC in fp16 plans. Through the reference
/// and kernels.cu compiled for the host.
#[test]
fn slices_with_steps_on_maps_tokens_and_moved_heads() {
    let mut g = G::new(8, 6, 6);
    let x = g.conv("x", 8, 8, 1, 1, 1);
    let (s, e, ax, st) = (
        g.init_i(&[1]),
        g.init_i(&[i64::MAX]),
        g.init_i(&[1]),
        g.init_i(&[3]),
    );
    let every_third = g.op("Slice", &[&x, &s, &e, &ax, &st], vec![]);
    let nhwc = g.op("Transpose", &[&x], vec![ints("perm", &[0, 2, 3, 1])]);
    let (s2, e2, ax2, st2) = (
        g.init_i(&[0, 0]),
        g.init_i(&[6, 6]),
        g.init_i(&[1, 2]),
        g.init_i(&[2, 2]),
    );
    let sub = g.op("Slice", &[&nhwc, &s2, &e2, &ax2, &st2], vec![]);
    let heads = g.init_i(&[-1, 9, 2, 4]);
    let h = g.op("Reshape", &[&sub, &heads], vec![]);
    let h = g.op("Transpose", &[&h], vec![ints("perm", &[0, 2, 1, 3])]);
    let merged = g.init_i(&[-1, 9, 4]);
    let h = g.op("Reshape", &[&h, &merged], vec![]);
    let (z, big, last, two) = (
        g.init_i(&[0]),
        g.init_i(&[i64::MAX]),
        g.init_i(&[-1]),
        g.init_i(&[2]),
    );
    let one = g.init_i(&[1]);
    let even = g.op("Slice", &[&h, &z, &big, &last, &two], vec![]);
    let odd = g.op("Slice", &[&h, &one, &big, &last, &two], vec![]);
    let rot = g.op("Sub", &[&even, &odd], vec![]);
    let back = g.init_i(&[-1, 2, 9, 2]);
    let rot = g.op("Reshape", &[&rot, &back], vec![]);
    let flat = g.init_i(&[0, -1]);
    let a = g.op("Reshape", &[&rot, &flat], vec![]);
    let b = g.op("Reshape", &[&every_third, &flat], vec![]);
    let y = g.op("Concat", &[&a, &b], vec![int("axis", 1)]);
    check(&g, &y, 1e-5);
    host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 11);
}

/// ConvNeXt V2's global response norm as TorchScript (`x + (w · (x · n) · 1 + b)`) and the
/// dynamo exporter (`x + (w · (x · n) + b)`) write it: one pass over the map, the scalings on
/// the 8 values of `n`. Through the reference and kernels.cu compiled for the host.
#[test]
fn a_response_norm_is_one_pass_over_the_map() {
    for torchscript in [true, false] {
        let mut g = G::new(8, 4, 4);
        let x = g.conv("x", 8, 8, 1, 1, 1);
        let l2 = g.op(
            "ReduceL2",
            &[&x],
            vec![ints("axes", &[2, 3]), int("keepdims", 1)],
        );
        let mean = g.op(
            "ReduceMean",
            &[&l2],
            vec![ints("axes", &[1]), int("keepdims", 1)],
        );
        let eps = g.init_f(&[], vec![1e-6]);
        let mean = g.op("Add", &[&mean, &eps], vec![]);
        let n = g.op("Div", &[&l2, &mean], vec![]);
        let t = g.op("Mul", &[&x, &n], vec![]);
        let (w, b) = (g.weight(&[1, 8, 1, 1], 0.5), g.weight(&[1, 8, 1, 1], 0.2));
        let u = g.op("Mul", &[&w, &t], vec![]);
        let v = if torchscript {
            let one = g.init_f(&[], vec![1.0]);
            let u = g.op("Mul", &[&u, &one], vec![]);
            g.op("Add", &[&u, &b], vec![])
        } else {
            g.op("Add", &[&u, &b], vec![])
        };
        let y = g.op("Add", &[&x, &v], vec![]);
        let y = g.conv(&y, 8, 4, 1, 1, 1);
        let plan = check(&g, &y, 1e-5);
        host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 5);
        let map_sized = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Map(_)) && plan.values[s.output()].dims == [8, 4, 4])
            .count();
        assert_eq!(map_sized, 1, "{:#?}", plan.steps);
    }
}

/// A patch embedding (kernel = stride = 8, no padding) on the model input (3 channels, stored
/// padded to 8 in the fp16 plan) and on a map inside the model: a copy of the patches and a
/// 1×1 convolution each, not a convolution with an 8 × 8 kernel. Through the reference and
/// kernels.cu compiled for the host.
#[test]
fn patch_embeddings_are_a_copy_and_a_product() {
    let mut g = G::new(3, 32, 32);
    let patch = |g: &mut G, x: &str, cin: usize, cout: usize| {
        let (w, b) = (g.weight(&[cout, cin, 8, 8], 0.1), g.weight(&[cout], 0.1));
        g.op(
            "Conv",
            &[x, &w, &b],
            vec![ints("kernel_shape", &[8, 8]), ints("strides", &[8, 8])],
        )
    };
    let a = patch(&mut g, "x", 3, 16);
    let m = g.conv(&a, 16, 8, 1, 1, 1);
    let scales = g.init_f(&[4], vec![1.0, 1.0, 8.0, 8.0]);
    let m = g.op("Resize", &[&m, "", &scales], vec![]);
    let b = patch(&mut g, &m, 8, 16);
    let y = g.op("Add", &[&a, &b], vec![]);
    let plan = check(&g, &y, 1e-5);
    host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 5);
    let kernels: Vec<[usize; 2]> = plan.convs().map(|c| c.kernel).collect();
    assert_eq!(kernels, [[1, 1]; 3], "{:#?}", plan.steps);
    let fp32 = build(&g.model(&y), false).unwrap();
    assert_eq!(fp32.convs().filter(|c| c.kernel == [8, 8]).count(), 2);
}

/// A normalisation over the whole item whose row is read as a row too (here shifted in row
/// order before going back to the map, and reshaped to another shape): the normalised map is
/// copied into row order for those readers, and the results are those of tract.
#[test]
fn a_whole_item_norm_read_as_a_row() {
    for shifted in [false, true] {
        let mut g = G::new(16, 24, 24);
        let x = g.conv("x", 16, 16, 3, 1, 1);
        let one_group = g.init_i(&[0, 1, -1]);
        let r = g.op("Reshape", &[&x, &one_group], vec![]);
        let (one, zero) = (g.init_f(&[1], vec![0.7]), g.init_f(&[1], vec![0.1]));
        let mut n = g.op("InstanceNormalization", &[&r, &one, &zero], vec![]);
        if shifted {
            let ramp = g.init_f(
                &[1, 1, 16 * 24 * 24],
                (0..9216).map(|v| v as f32 * 1e-4).collect(),
            );
            n = g.op("Add", &[&n, &ramp], vec![]);
        }
        let back = g.init_i(&[0, 16, 24, 24]);
        let map = g.op("Reshape", &[&n, &back], vec![]);
        let rows = g.init_i(&[0, 16, 576]);
        let rows = g.op("Reshape", &[&n, &rows], vec![]);
        let pooled = g.op(
            "ReduceMean",
            &[&rows],
            vec![ints("axes", &[2]), int("keepdims", 1)],
        );
        let axis = g.init_i(&[3]);
        let pooled = g.op("Unsqueeze", &[&pooled, &axis], vec![]);
        let y = g.op("Add", &[&map, &pooled], vec![]);
        check(&g, &y, 1e-5);
        host_kernels_match(&g.model(&y), [g.c, g.h, g.w], 2);
    }
}
