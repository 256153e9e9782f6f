//! The plan executed on the host in f32, through the same views (and so the same storage
//! layouts) the GPU executor uses, with the kernels' formulas: the tests compare it with the
//! CPU engine on small graphs and on exported models, which checks import, folding, fusion and
//! the layout rules without a GPU. Slow (plain loops): for tests and tools, not for serving.

use super::view::{self, View};
use super::{Binary, Operand, Plan, PoolKind, PoolStep, ReduceKind, RowKind, Step, Unary};

pub fn erf(x: f32) -> f32 {
    // Abramowitz–Stegun 7.1.26 is too coarse for a 1e-5 check; use the series / continued
    // fraction through f64's libm-quality exp.
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

pub fn unary(u: Unary, x: f32, p0: f32, p1: f32) -> f32 {
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let softplus = |v: f32| if v > 20.0 { v } else { v.exp().ln_1p() };
    match u {
        Unary::Identity => x,
        Unary::Relu => x.max(0.0),
        Unary::Sigmoid => sig(x),
        Unary::HardSigmoid => (p0 * x + p1).clamp(0.0, 1.0),
        Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Unary::Swish => x * sig(x),
        Unary::Erf => erf(x),
        Unary::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        Unary::Sqrt => x.sqrt(),
        Unary::Clip => x.max(p0).min(p1),
        Unary::Exp => x.exp(),
        Unary::Tanh => x.tanh(),
        Unary::Neg => -x,
        Unary::Reciprocal => 1.0 / x,
        Unary::Abs => x.abs(),
        Unary::LeakyRelu => {
            if x >= 0.0 {
                x
            } else {
                p0 * x
            }
        }
        Unary::Elu => {
            if x > 0.0 {
                x
            } else {
                p0 * x.exp_m1()
            }
        }
        Unary::Selu => p1 * if x > 0.0 { x } else { p0 * x.exp_m1() },
        Unary::Celu => x.max(0.0) + (p0 * (x / p0).exp_m1()).min(0.0),
        Unary::Softplus => softplus(x),
        Unary::Softsign => x / (1.0 + x.abs()),
        Unary::Mish => x * softplus(x).tanh(),
        Unary::GeluTanh => 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh()),
        Unary::Log => x.ln(),
        Unary::ThresholdedRelu => {
            if x > p0 {
                x
            } else {
                0.0
            }
        }
        Unary::Rsqrt => 1.0 / x.sqrt(),
    }
}

pub fn binary(b: Binary, x: f32, y: f32) -> f32 {
    match b {
        Binary::First => x,
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
        Binary::Pow => x.powf(y),
        Binary::Max => x.max(y),
        Binary::Min => x.min(y),
        Binary::PRelu => {
            if x < 0.0 {
                x * y
            } else {
                x
            }
        }
    }
}

/// The GPU kernels compiled for the host (the tests' `HostKernels`): when given, elementwise,
/// pooling and concat steps run through them instead of this file's loops.
pub trait Kernels {
    /// `[a, b, c]`: the operands (`a` again where the step has no `b` or `c`).
    fn map(&self, l: &view::MapLaunch, operands: [*const f32; 3], y: *mut f32);
    fn pool(&self, p: &PoolStep, l: &view::PoolLaunch, cl: bool, x: *const f32, y: *mut f32);
    fn concat(&self, l: &view::ConcatLaunch, parts: &[*const f32], y: *mut f32);
}

/// Runs `plan` on `input` (`[n, c, h, w]`, already normalised); returns the output in its
/// logical row-major order.
pub fn run(plan: &Plan, input: &[f32], n: usize) -> Vec<f32> {
    run_with(plan, input, n, None)
}

/// `run`, with the kernels of `k` for the steps they cover.
pub fn run_with(plan: &Plan, input: &[f32], n: usize, k: Option<&dyn Kernels>) -> Vec<f32> {
    execute(plan, input, n, k, false, None)
}

/// `x` rounded to the nearest fp16 value (overflow to ±inf), as the fp16 engine stores it.
pub fn to_fp16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// The fp16 engine's storage emulated: the plan's weights (but depthwise filters) and
/// constants, the input and every step's output rounded to fp16, each step computing in f32 from them as the engine's kernels
/// and fp16 libraries do (f32 accumulation). What is left between this and the device is the
/// order of accumulation and the libraries' own algorithms; what it shows without a GPU is how
/// much of a model's fp16 error the plan's storage points and fusions make. `after(i, values)`,
/// when given, sees every step's output in logical order.
pub fn run_fp16(
    plan: &Plan,
    input: &[f32],
    n: usize,
    after: Option<&mut dyn FnMut(usize, Vec<f32>)>,
) -> Vec<f32> {
    let mut p = plan.clone();
    for c in &mut p.consts {
        c.data.iter_mut().for_each(|v| *v = to_fp16(*v));
    }
    for step in &mut p.steps {
        // Depthwise filters stay f32 on our kernels (kernels.cu says why).
        if let Step::Conv(c) = step {
            if !c.is_depthwise() {
                c.weight.iter_mut().for_each(|v| *v = to_fp16(*v));
                c.bias.iter_mut().for_each(|v| *v = to_fp16(*v));
            }
        }
    }
    let x: Vec<f32> = input.iter().map(|&v| to_fp16(v)).collect();
    execute(&p, &x, n, None, true, after)
}

/// `run` with every step's output seen by `after` in logical order (for comparing two runs
/// step by step).
pub fn run_traced(
    plan: &Plan,
    input: &[f32],
    n: usize,
    after: &mut dyn FnMut(usize, Vec<f32>),
) -> Vec<f32> {
    execute(plan, input, n, None, false, Some(after))
}

fn logical(plan: &Plan, slot: &[f32], value: usize, n: usize) -> Vec<f32> {
    let (d, s) = view::value_layout(plan, value, n);
    let v = View::new(&d, &s, 0).unwrap();
    (0..v.len()).map(|i| slot[v.at(i) as usize]).collect()
}

fn execute(
    plan: &Plan,
    input: &[f32],
    n: usize,
    k: Option<&dyn Kernels>,
    fp16: bool,
    mut after: Option<&mut dyn FnMut(usize, Vec<f32>)>,
) -> Vec<f32> {
    let (sizes, slot_of) = plan.slots();
    let mut slots: Vec<Vec<f32>> = sizes.iter().map(|s| vec![f32::NAN; s * n]).collect();
    let [c, h, w] = plan.input;
    // Value 0: the input in its layout, padding channels zero.
    let (d0, s0) = view::value_layout(plan, 0, n);
    let v0 = View::new(&d0, &s0, 0).unwrap();
    for i in 0..v0.len() {
        let (b, rest) = (i / (d0[1] * h * w), i % (d0[1] * h * w));
        let (ch, p) = (rest / (h * w), rest % (h * w));
        let x = if ch < c {
            input[(b * c + ch) * h * w + p]
        } else {
            0.0
        };
        slots[slot_of[0]][v0.at(i) as usize] = x;
    }
    for (index, step) in plan.steps.iter().enumerate() {
        let out_slot = slot_of[step.output()];
        match step {
            Step::Map(m) if k.is_some() => {
                let l = view::map(plan, m, n, 4).unwrap();
                let ptr = |o: Operand| -> *const f32 {
                    match o {
                        Operand::Value(v) => slots[slot_of[v]].as_ptr(),
                        Operand::Const(c) => plan.consts[c].data.as_ptr(),
                    }
                };
                let pa = ptr(m.a);
                let (pb, pc) = (m.b.map_or(pa, ptr), m.c.map_or(pa, ptr));
                let py = slots[out_slot].as_mut_ptr();
                if let Some(k) = k {
                    k.map(&l, [pa, pb, pc], py);
                }
            }
            Step::Concat(c) if k.is_some() => {
                let l = view::concat(plan, c, n, 4).unwrap();
                let parts: Vec<*const f32> = c
                    .parts
                    .iter()
                    .map(|&p| slots[slot_of[p]].as_ptr())
                    .collect();
                let py = slots[out_slot].as_mut_ptr();
                if let Some(k) = k {
                    k.concat(&l, &parts, py);
                }
            }
            Step::Concat(c) => {
                // Element by element in logical order, each part into its region.
                let (yd, ys) = view::value_layout(plan, c.output, n);
                let mut at = c.at;
                let mut out = std::mem::take(&mut slots[out_slot]);
                for &p in &c.parts {
                    let (pd, ps) = view::value_layout(plan, p, n);
                    let mut region = yd.clone();
                    region[c.axis] = pd[c.axis];
                    let yv = View::new(&region, &ys, at as i64 * ys[c.axis]).unwrap();
                    let pv = View::new(&pd, &ps, 0).unwrap();
                    for j in 0..pv.len() {
                        out[yv.at(j) as usize] = slots[slot_of[p]][pv.at(j) as usize];
                    }
                    at += pd[c.axis];
                }
                slots[out_slot] = out;
            }
            Step::Pool(p) if k.is_some() => {
                let l = view::pool(plan, p, n).unwrap();
                let px = slots[slot_of[p.input]].as_ptr();
                let py = slots[out_slot].as_mut_ptr();
                if let Some(k) = k {
                    k.pool(p, &l, plan.values[p.output].channels_last, px, py);
                }
            }
            Step::Map(m) => {
                let l = view::map(plan, m, n, 4).unwrap();
                let mut out = std::mem::take(&mut slots[out_slot]);
                for i in 0..l.y.len() {
                    let rd = |o: Operand, off: i64| {
                        read_operand(plan, &slots, &out, out_slot, &slot_of, o, off)
                    };
                    let a = rd(m.a, l.a.at(i));
                    let b = m.b.map_or(0.0, |b| rd(b, l.b.at(i)));
                    let c = m.c.map_or(0.0, |c| rd(c, l.c.at(i)));
                    let v = binary(m.binary, a, b) + c;
                    out[l.y.at(i) as usize] = unary(m.unary, v, m.p0, m.p1);
                }
                slots[out_slot] = out;
            }
            Step::Conv(cv) => {
                let (xd, xs) = view::value_layout(plan, cv.input, n);
                let (yd, ys) = view::value_layout(plan, cv.output, n);
                let [_, xh, xw] = plan.values[cv.input].chw().unwrap();
                let [_, yh, yw] = plan.values[cv.output].chw().unwrap();
                let xv = |b: usize, ch: usize, y: usize, x: usize| -> usize {
                    let s = pad4(&xs);
                    (b as i64 * s[0] + ch as i64 * s[1] + y as i64 * s[2] + x as i64 * s[3])
                        as usize
                };
                let yv = |b: usize, ch: usize, y: usize, x: usize| -> usize {
                    let s = pad4(&ys);
                    (b as i64 * s[0] + ch as i64 * s[1] + y as i64 * s[2] + x as i64 * s[3])
                        as usize
                };
                let _ = (xd, yd);
                let xin = slots[slot_of[cv.input]].clone();
                let res = cv.residual.map(|r| slots[slot_of[r]].clone());
                let mut y = std::mem::take(&mut slots[out_slot]);
                let cin_g = cv.cin / cv.groups;
                let cout_g = cv.cout / cv.groups;
                for b in 0..n {
                    for o in 0..cv.cout {
                        let g = o / cout_g;
                        for oy in 0..yh {
                            for ox in 0..yw {
                                let mut acc = cv.bias[o];
                                for ci in 0..cin_g {
                                    let ic = g * cin_g + ci;
                                    for ky in 0..cv.kernel[0] {
                                        let iy = (oy * cv.stride[0] + ky * cv.dilation[0]) as isize
                                            - cv.pad[0] as isize;
                                        if iy < 0 || iy >= xh as isize {
                                            continue;
                                        }
                                        for kx in 0..cv.kernel[1] {
                                            let ix = (ox * cv.stride[1] + kx * cv.dilation[1])
                                                as isize
                                                - cv.pad[1] as isize;
                                            if ix < 0 || ix >= xw as isize {
                                                continue;
                                            }
                                            let wv = cv.weight[((o * cin_g + ci) * cv.kernel[0]
                                                + ky)
                                                * cv.kernel[1]
                                                + kx];
                                            acc += wv * xin[xv(b, ic, iy as usize, ix as usize)];
                                        }
                                    }
                                }
                                let at = yv(b, o, oy, ox);
                                if let Some(r) = &res {
                                    acc += r[at];
                                }
                                y[at] = unary(cv.act, acc, cv.act_p[0], cv.act_p[1]);
                            }
                        }
                    }
                }
                slots[out_slot] = y;
            }
            Step::Pool(p) => {
                let l = view::pool(plan, p, n).unwrap();
                let xin = slots[slot_of[p.input]].clone();
                let mut y = std::mem::take(&mut slots[out_slot]);
                let (ih, iw) = (l.x.dims[4] as isize, l.x.dims[5] as isize);
                for i in 0..l.y.len() {
                    let oy = (i / l.y.dims[5] as usize) % l.y.dims[4] as usize;
                    let ox = i % l.y.dims[5] as usize;
                    let nc = i / (l.y.dims[4] as usize * l.y.dims[5] as usize);
                    let base = l.x.at(nc * (ih * iw) as usize);
                    let y0 = (oy * p.stride[0]) as isize - p.pad_begin[0] as isize;
                    let x0 = (ox * p.stride[1]) as isize - p.pad_begin[1] as isize;
                    let (mut acc, mut cnt, mut area) = (
                        if p.kind == PoolKind::Max {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        },
                        0usize,
                        0usize,
                    );
                    for ky in 0..p.kernel[0] as isize {
                        for kx in 0..p.kernel[1] as isize {
                            let (yy, xx) = (y0 + ky, x0 + kx);
                            if yy < ih + p.pad_end[0] as isize && xx < iw + p.pad_end[1] as isize {
                                area += 1;
                            }
                            if yy < 0 || xx < 0 || yy >= ih || xx >= iw {
                                continue;
                            }
                            let v = xin[(base
                                + yy as i64 * l.x.strides[4]
                                + xx as i64 * l.x.strides[5])
                                as usize];
                            cnt += 1;
                            acc = if p.kind == PoolKind::Max {
                                acc.max(v)
                            } else {
                                acc + v
                            };
                        }
                    }
                    let div = match p.kind {
                        PoolKind::Max => 1.0,
                        PoolKind::AvgIncludePad => area.max(1) as f32,
                        PoolKind::AvgExcludePad => cnt.max(1) as f32,
                    };
                    y[l.y.at(i) as usize] = acc / div;
                }
                slots[out_slot] = y;
            }
            Step::Reduce(r) => {
                let l = view::reduce(plan, r, n).unwrap();
                let xin = slots[slot_of[r.input]].clone();
                let mut y = std::mem::take(&mut slots[out_slot]);
                let count = l.inner.len();
                for o in 0..l.y.len() {
                    let base = l.outer.at(o);
                    let mut acc = match r.kind {
                        ReduceKind::Max => f32::NEG_INFINITY,
                        ReduceKind::Min => f32::INFINITY,
                        _ => 0.0,
                    };
                    for j in 0..count {
                        let v = xin[(base + l.inner.at(j)) as usize];
                        acc = match r.kind {
                            ReduceKind::Max => acc.max(v),
                            ReduceKind::Min => acc.min(v),
                            ReduceKind::Rms | ReduceKind::SumSquare | ReduceKind::L2 => acc + v * v,
                            ReduceKind::L1 => acc + v.abs(),
                            ReduceKind::Mean | ReduceKind::Sum => acc + v,
                        };
                    }
                    match r.kind {
                        ReduceKind::Mean => acc /= count as f32,
                        ReduceKind::Rms => acc = (acc / count as f32).sqrt(),
                        ReduceKind::L2 => acc = acc.sqrt(),
                        _ => {}
                    }
                    y[l.y.at(o) as usize] = acc;
                }
                slots[out_slot] = y;
            }
            Step::Row(r) => {
                let l = view::row(plan, r, n).unwrap();
                let xin = slots[slot_of[r.input]].clone();
                let y = &mut slots[out_slot];
                for o in 0..l.x.len() {
                    let (xb, yb) = (l.x.at(o), l.y.at(o));
                    let row: Vec<f32> = (0..l.len)
                        .map(|k| xin[(xb + k as i64 * l.x_stride) as usize])
                        .collect();
                    let out: Vec<f32> = match &r.kind {
                        RowKind::Softmax | RowKind::LogSoftmax => {
                            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                            let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
                            row.iter()
                                .map(|v| {
                                    if matches!(r.kind, RowKind::Softmax) {
                                        (v - m).exp() / s
                                    } else {
                                        v - m - s.ln()
                                    }
                                })
                                .collect()
                        }
                        RowKind::LayerNorm { scale, bias, eps } => {
                            let mean = row.iter().sum::<f32>() / l.len as f32;
                            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
                                / l.len as f32;
                            let inv = 1.0 / (var + eps).sqrt();
                            row.iter()
                                .enumerate()
                                .map(|(k, v)| {
                                    (v - mean) * inv * plan.consts[*scale].data[k]
                                        + bias.map_or(0.0, |b| plan.consts[b].data[k])
                                })
                                .collect()
                        }
                    };
                    for (k, v) in out.into_iter().enumerate() {
                        y[(yb + k as i64 * l.y_stride) as usize] = v;
                    }
                }
            }
            Step::Attention(at) => {
                let get = |x: &super::HeadView| slots[slot_of[x.value]].clone();
                let (q, k, v) = (get(&at.q), get(&at.k), get(&at.v));
                let y = &mut slots[out_slot];
                let base = |x: &super::HeadView, b: usize, h: usize, i: usize| -> usize {
                    (x.offset + b as i64 * x.batch + h as i64 * x.head + i as i64 * x.row) as usize
                };
                for b in 0..n {
                    for h in 0..at.heads {
                        for i in 0..at.lq {
                            let qi = base(&at.q, b, h, i);
                            let s: Vec<f32> = (0..at.lk)
                                .map(|j| {
                                    let kj = base(&at.k, b, h, j);
                                    at.alpha * (0..at.d).map(|e| q[qi + e] * k[kj + e]).sum::<f32>()
                                })
                                .collect();
                            let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                            let p: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
                            let sum: f32 = p.iter().sum();
                            let oi = base(&at.o, b, h, i);
                            for e in 0..at.d {
                                let acc: f32 =
                                    (0..at.lk).map(|j| p[j] * v[base(&at.v, b, h, j) + e]).sum();
                                y[oi + e] = acc / sum;
                            }
                        }
                    }
                }
            }
            Step::MatMul(mm) => {
                let l = view::matmul(plan, mm, n).unwrap();
                let a = slots[slot_of[mm.a]].clone();
                let b: Vec<f32> = match mm.b {
                    Operand::Value(v) => slots[slot_of[v]].clone(),
                    Operand::Const(k) => plan.consts[k].data.clone(),
                };
                let y = &mut slots[out_slot];
                for c in 0..l.count {
                    for i in 0..l.m {
                        for j in 0..l.p {
                            let mut acc = 0.0;
                            for k in 0..l.k {
                                let bi = if l.b_trans { j * l.k + k } else { k * l.p + j };
                                acc += a[c * l.a_stride + i * l.k + k] * b[c * l.b_stride + bi];
                            }
                            y[c * l.y_stride + i * l.p + j] = l.alpha * acc;
                        }
                    }
                }
            }
        }
        if fp16 {
            // The whole slot: what this step did not write keeps its value (rounding is
            // idempotent, NaN stays NaN).
            slots[out_slot].iter_mut().for_each(|v| *v = to_fp16(*v));
        }
        if let Some(f) = after.as_mut() {
            f(index, logical(plan, &slots[out_slot], step.output(), n));
        }
    }
    logical(plan, &slots[slot_of[plan.output]], plan.output, n)
}

/// Reads an operand while the output slot is taken out of `slots` (a step may read the slot
/// it writes only through a different region, as Concat's parts never overlap).
fn read_operand(
    plan: &Plan,
    slots: &[Vec<f32>],
    out: &[f32],
    out_slot: usize,
    slot_of: &[usize],
    o: Operand,
    off: i64,
) -> f32 {
    match o {
        Operand::Value(v) if slot_of[v] == out_slot => out[off as usize],
        Operand::Value(v) => slots[slot_of[v]][off as usize],
        Operand::Const(k) => plan.consts[k].data[off as usize],
    }
}

fn pad4(s: &[i64]) -> [i64; 4] {
    match s {
        [a, b, c, d] => [*a, *b, *c, *d],
        [a, b] => [*a, *b, 0, 0],
        _ => [0; 4],
    }
}

/// The relative L2 distance of `a` from the reference `b`: `‖a − b‖ / ‖b‖`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}
