//! How a step addresses memory at batch size `n`: strided views (dims and element strides,
//! rank ≤ 6, right-aligned) of its operands in their storage layouts. The GPU executor passes
//! these to its kernels by value; the tests' reference executor walks the same views on the
//! host, so the layout rules are checked on every machine.

use super::{
    Binary, ConcatStep, MapStep, MatMulStep, Operand, Plan, PoolStep, ReduceStep, RowStep, Unary,
    CONCAT_MAX_PARTS,
};

pub const RANK: usize = 6;

/// Why a step cannot be addressed at a batch size. The builder makes plans these never
/// happen for, so one means a fault in the plan (the message says where).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a tensor of rank {0} (the GPU engine handles up to {RANK})")]
    Rank(usize),
    #[error("dimension {0} too large")]
    DimTooLarge(usize),
    #[error("{from:?} does not broadcast to {to:?}")]
    Broadcast { from: Vec<usize>, to: Vec<usize> },
    #[error("a product of {a:?} and {b:?}: inner dims {k} and {bk}")]
    InnerDims {
        a: Vec<usize>,
        b: Vec<usize>,
        k: usize,
        bk: usize,
    },
    #[error("a concat of {0} elements")]
    ConcatTooLong(usize),
    #[error("a concat of {0} parts")]
    ConcatParts(usize),
    #[error("concat axis out of range")]
    ConcatAxis,
    #[error(
        "a channel shuffle of {groups} groups over {len} of {full} elements from {start} (each a \
         multiple of the groups)"
    )]
    Shuffle {
        len: usize,
        full: usize,
        start: usize,
        groups: usize,
    },
    #[error("concat part {part:?} (strides {strides:?}) is not stored as the output {out:?} ({out_strides:?})")]
    ConcatLayout {
        part: Vec<usize>,
        strides: Vec<i64>,
        out: Vec<usize>,
        out_strides: Vec<i64>,
    },
}

/// A strided view in elements. Leading unused dims are 1 with stride 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub dims: [i32; RANK],
    pub strides: [i64; RANK],
    pub offset: i64,
}

impl View {
    pub fn new(dims: &[usize], strides: &[i64], offset: i64) -> Result<View, LayoutError> {
        if dims.len() > RANK || strides.len() != dims.len() {
            return Err(LayoutError::Rank(dims.len()));
        }
        let mut v = View {
            dims: [1; RANK],
            strides: [0; RANK],
            offset,
        };
        let at = RANK - dims.len();
        for (i, (&d, &s)) in dims.iter().zip(strides).enumerate() {
            v.dims[at + i] = i32::try_from(d).map_err(|_| LayoutError::DimTooLarge(d))?;
            v.strides[at + i] = if d == 1 { 0 } else { s };
        }
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element offset of the `i`-th element in row-major order of `dims`.
    pub fn at(&self, mut i: usize) -> i64 {
        let mut off = self.offset;
        for k in (0..RANK).rev() {
            let d = self.dims[k] as usize;
            off += (i % d) as i64 * self.strides[k];
            i /= d;
        }
        off
    }
}

/// Full dims (batch first) and element strides of value `v` at batch `n`.
pub fn value_layout(plan: &Plan, v: usize, n: usize) -> (Vec<usize>, Vec<i64>) {
    let val = &plan.values[v];
    let full: Vec<usize> = std::iter::once(n).chain(val.dims.iter().copied()).collect();
    let strides = match (val.channels_last, val.dims.as_slice()) {
        (true, [c, h, w]) => {
            let (c, h, w) = (*c as i64, *h as i64, *w as i64);
            vec![c * h * w, 1, w * c, c]
        }
        _ => row_major(&full),
    };
    (full, strides)
}

pub fn row_major(dims: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as i64;
    }
    s
}

fn operand_layout(plan: &Plan, o: Operand, n: usize) -> (Vec<usize>, Vec<i64>) {
    match o {
        Operand::Value(v) => value_layout(plan, v, n),
        Operand::Const(c) => {
            let d = plan.consts[c].dims.clone();
            let s = row_major(&d);
            (d, s)
        }
    }
}

/// The strides of `dims`/`strides` broadcast (right-aligned) onto `out`: 0 where it repeats.
fn broadcast_strides(
    dims: &[usize],
    strides: &[i64],
    out: &[usize],
) -> Result<Vec<i64>, LayoutError> {
    let refused = || LayoutError::Broadcast {
        from: dims.to_vec(),
        to: out.to_vec(),
    };
    if dims.len() > out.len() {
        return Err(refused());
    }
    let pad = out.len() - dims.len();
    let mut s = vec![0i64; out.len()];
    for i in 0..dims.len() {
        s[pad + i] = match (dims[i], out[pad + i]) {
            (a, b) if a == b => strides[i],
            (1, _) => 0,
            _ => return Err(refused()),
        };
    }
    Ok(s)
}

/// `dims` with the dims of 1 dropped and each dim merged into the one before it where every
/// operand walks the two as one (the outer stride is the inner one times the inner dim), the
/// operands' `strides` to match; the elements keep their order. A step over more than RANK
/// dims (window attention's partitions: `[N, 8, 8, 7, 7, 3, heads, d]`) then fits a View.
fn coalesce(dims: &mut Vec<usize>, strides: &mut [&mut Vec<i64>]) {
    let mut out_d: Vec<usize> = Vec::new();
    let mut out_s: Vec<Vec<i64>> = vec![Vec::new(); strides.len()];
    for k in 0..dims.len() {
        if dims[k] == 1 {
            continue;
        }
        let d = dims[k] as i64;
        let merge = !out_d.is_empty()
            && strides
                .iter()
                .zip(&out_s)
                .all(|(s, o)| o.last() == Some(&(s[k] * d)));
        for (s, o) in strides.iter().zip(out_s.iter_mut()) {
            match o.last_mut() {
                Some(last) if merge => *last = s[k],
                _ => o.push(s[k]),
            }
        }
        match out_d.last_mut() {
            Some(last) if merge => *last *= dims[k],
            _ => out_d.push(dims[k]),
        }
    }
    if out_d.is_empty() {
        out_d.push(1);
        out_s.iter_mut().for_each(|o| o.push(0));
    }
    *dims = out_d;
    for (s, o) in strides.iter_mut().zip(out_s) {
        **s = o;
    }
}

/// The same views with their dims reordered so that the last one (`y`) is walked in storage
/// order (largest stride first): neighbouring threads then touch neighbouring memory, whatever
/// the layout.
fn storage_order<const K: usize>(views: [View; K]) -> [View; K] {
    let y = views[K - 1];
    let mut order: Vec<usize> = (0..RANK).collect();
    order.sort_by_key(|&k| {
        (
            std::cmp::Reverse(if y.dims[k] == 1 {
                i64::MAX
            } else {
                y.strides[k]
            }),
            k,
        )
    });
    views.map(|v| {
        let mut out = v;
        for (to, &from) in order.iter().enumerate() {
            out.dims[to] = v.dims[from];
            out.strides[to] = v.strides[from];
        }
        out
    })
}

/// Whether a view's elements are contiguous in row-major order of its dims.
fn dense(v: &View) -> bool {
    let mut expect = 1i64;
    for k in (0..RANK).rev() {
        if v.dims[k] != 1 {
            if v.strides[k] != expect {
                return false;
            }
            expect *= v.dims[k] as i64;
        }
    }
    true
}

/// One elementwise launch. `linear`: bit 0 (`a`), 1 (`b`), 2 (`y`) set where that view is the
/// region itself, dense in storage order, so element `i` is at `offset + i` (no index
/// arithmetic: the common case of whole tensors in one layout).
#[derive(Clone, Copy, Debug)]
pub struct MapLaunch {
    pub a: View,
    pub b: View,
    /// The added operand (`a`'s view again when the step has none: `has_c` says).
    pub c: View,
    pub has_c: bool,
    pub y: View,
    pub linear: u32,
    /// Elements per thread: 1, or the 16 bytes' worth of `vector_width`.
    pub vec: u32,
    pub binary: Binary,
    pub unary: Unary,
    pub p0: f32,
    pub p1: f32,
}

/// `16 / elem_bytes` where each thread can move 16 bytes of every operand at once: the
/// region's innermost dim is whole chunks, dense in `y` and dense or broadcast in `a` (and `b`,
/// `c`), and every row of a dense operand starts on a chunk. 1 otherwise.
fn vector_width(a: &View, b: Option<&View>, c: Option<&View>, y: &View, elem_bytes: usize) -> u32 {
    let k = (16 / elem_bytes.max(1)) as i64;
    let inner = RANK - 1;
    let aligned =
        |v: &View| v.offset % k == 0 && (0..inner).all(|d| v.dims[d] == 1 || v.strides[d] % k == 0);
    let fits = |v: &View| match v.strides[inner] {
        1 => aligned(v),
        0 => true,
        _ => false,
    };
    let whole = (y.dims[inner] as i64) % k == 0 && y.strides[inner] == 1 && aligned(y);
    if k > 1 && whole && fits(a) && b.is_none_or(fits) && c.is_none_or(fits) {
        k as u32
    } else {
        1
    }
}

/// The launch of a map step at batch `n`, for elements of `elem_bytes` bytes.
pub fn map(
    plan: &Plan,
    m: &MapStep,
    n: usize,
    elem_bytes: usize,
) -> Result<MapLaunch, LayoutError> {
    let (mut region, mut ys) = value_layout(plan, m.output, n);
    let mut offset = 0;
    for &(axis, off, len) in &m.region {
        region[axis] = len;
        offset += off as i64 * ys[axis];
    }
    let (mut ad, mut ast) = operand_layout(plan, m.a, n);
    let mut a_off = 0;
    if let Some((axis, g)) = m.shuffle {
        let start = m.a_slice.map_or(0, |(_, s, _)| s);
        let (l, full) = (region[axis], ad[axis]);
        // A plain copy along one axis (MapStep::shuffle): the split region would not line up
        // with another operand's broadcast, nor a slice along another axis.
        let plain = m.perm_a.is_none()
            && m.b.is_none()
            && m.c.is_none()
            && m.a_slice.is_none_or(|(a, _, step)| a == axis && step == 1);
        if g == 0
            || !l.is_multiple_of(g)
            || !full.is_multiple_of(g)
            || !start.is_multiple_of(g)
            || !plain
        {
            return Err(LayoutError::Shuffle {
                len: l,
                full,
                start,
                groups: g,
            });
        }
        // Element c = g·i + j of the shuffled axis is a's j·(full/g) + start/g + i: the axis
        // read as [l/g, g], which both views can express.
        region.splice(axis..=axis, [l / g, g]);
        ys.splice(axis..=axis, [ys[axis] * g as i64, ys[axis]]);
        ad.splice(axis..=axis, [l / g, g]);
        a_off = (start / g) as i64 * ast[axis];
        ast.splice(axis..=axis, [ast[axis], ast[axis] * (full / g) as i64]);
    } else {
        if let Some((axis, start, step)) = m.a_slice {
            a_off = start as i64 * ast[axis];
            ad[axis] = region[axis];
            ast[axis] *= step as i64;
        }
        if let Some(p) = &m.perm_a {
            ad = p.iter().map(|&i| ad[i]).collect();
            ast = p.iter().map(|&i| ast[i]).collect();
        }
    }
    let mut a_s = broadcast_strides(&ad, &ast, &region)?;
    let other = |o: Option<Operand>| -> Result<Option<Vec<i64>>, LayoutError> {
        o.map(|o| {
            let (d, s) = operand_layout(plan, o, n);
            broadcast_strides(&d, &s, &region)
        })
        .transpose()
    };
    let (mut b_s, mut c_s) = (other(m.b)?, other(m.c)?);
    if region.len() > RANK {
        let mut all: Vec<&mut Vec<i64>> = vec![&mut ys, &mut a_s];
        all.extend(b_s.as_mut());
        all.extend(c_s.as_mut());
        coalesce(&mut region, &mut all);
    }
    let y = View::new(&region, &ys, offset)?;
    let mut a = View::new(&region, &a_s, 0)?;
    a.offset = a_off;
    let b = match b_s {
        Some(s) => View::new(&region, &s, 0)?,
        None => a,
    };
    let c = match c_s {
        Some(s) => View::new(&region, &s, 0)?,
        None => a,
    };
    let [a, b, c, y] = storage_order([a, b, c, y]);
    let dense = dense(&y);
    let same =
        |v: &View| dense && (0..RANK).all(|k| y.dims[k] == 1 || v.strides[k] == y.strides[k]);
    let linear =
        same(&a) as u32 | (same(&b) as u32) << 1 | (dense as u32) << 2 | (same(&c) as u32) << 3;
    let uses_b = m.binary != Binary::First;
    let has_c = m.c.is_some();
    let vec = vector_width(
        &a,
        uses_b.then_some(&b),
        has_c.then_some(&c),
        &y,
        elem_bytes,
    );
    Ok(MapLaunch {
        a,
        b,
        c,
        has_c,
        y,
        linear,
        vec,
        binary: m.binary,
        unary: m.unary,
        p0: m.p0,
        p1: m.p1,
    })
}

/// The tile side of kernels.cu's `transpose_*`.
pub const TRANSPOSE_TILE: usize = 32;

/// A copy run as kernels.cu's tiled transpose: dim `d0` is dense in the source, `d1` in the
/// destination; `outer` / `outer_y` address a tile's origin for each outer index (the launch's
/// views with both tile dims set to 1).
#[derive(Clone, Copy, Debug)]
pub struct TransposeLaunch {
    pub outer: View,
    pub outer_y: View,
    pub d0: u32,
    pub d1: u32,
    pub a0: i64,
    pub a1: i64,
    pub y0: i64,
    pub y1: i64,
    pub tiles0: u32,
    pub tiles1: u32,
}

impl TransposeLaunch {
    pub fn blocks(&self) -> usize {
        self.outer.len() * self.tiles0 as usize * self.tiles1 as usize
    }
}

/// A map launch (in storage order) as a tiled transpose, when it is a plain copy whose source
/// is strided along the destination's dense innermost dim and dense along another: the
/// element-per-thread kernel then reads one element per 32-byte sector (NHWC ↔ NCHW copies,
/// ShuffleNet's channel shuffles).
pub fn transpose(l: &MapLaunch) -> Option<TransposeLaunch> {
    if l.binary != Binary::First || l.unary != Unary::Identity || l.has_c {
        return None;
    }
    let inner = RANK - 1;
    let a_inner = l.a.strides[inner];
    if l.y.strides[inner] != 1 || a_inner == 1 || a_inner == 0 {
        return None;
    }
    let d0 = (0..inner).find(|&k| l.a.strides[k] == 1 && l.a.dims[k] > 1)?;
    let (n0, n1) = (l.y.dims[d0] as u32, l.y.dims[inner] as u32);
    // Below these a tile is mostly idle threads.
    if n0 < 8 || n1 < 4 {
        return None;
    }
    let flat = |v: &View| {
        let mut o = *v;
        for k in [d0, inner] {
            o.dims[k] = 1;
            o.strides[k] = 0;
        }
        o
    };
    let tile = TRANSPOSE_TILE as u32;
    Some(TransposeLaunch {
        outer: flat(&l.a),
        outer_y: flat(&l.y),
        d0: n0,
        d1: n1,
        a0: l.a.strides[d0],
        a1: a_inner,
        y0: l.y.strides[d0],
        y1: 1,
        tiles0: n0.div_ceil(tile),
        tiles1: n1.div_ceil(tile),
    })
}

/// One reduction: output element `o` reads `x.at(outer.at(o)) + inner.at(j)` for every `j`.
/// Blocks of `REDUCE_BLOCK` threads, `group` of them per output (a power of two); `adjacent`:
/// a block's outputs are its fastest-varying threads (the elements are far apart in memory and
/// neighbouring outputs are neighbours, as a sum over H and W of an NHWC map), else an output's
/// threads are.
#[derive(Clone, Copy, Debug)]
pub struct ReduceLaunch {
    pub outer: View,
    pub inner: View,
    pub y: View,
    pub group: usize,
    pub adjacent: bool,
}

pub const REDUCE_BLOCK: usize = 256;

/// Elements per thread the reduce kernel aims at: enough to keep its loads in flight, few
/// enough that a short batch still spreads over the GPU.
const REDUCE_PER_THREAD: usize = 32;

/// Threads per output for outputs of `count` elements: about `REDUCE_PER_THREAD` elements each,
/// a power of two up to a whole block.
pub fn reduce_group(count: usize) -> usize {
    let mut group = 1;
    while group < REDUCE_BLOCK && group * REDUCE_PER_THREAD < count {
        group *= 2;
    }
    group
}

impl ReduceLaunch {
    /// Blocks the launch takes.
    pub fn blocks(&self) -> usize {
        self.y.len().div_ceil(REDUCE_BLOCK / self.group)
    }
}

pub fn reduce(plan: &Plan, r: &ReduceStep, n: usize) -> Result<ReduceLaunch, LayoutError> {
    let (xd, xs) = value_layout(plan, r.input, n);
    let (yd, ys) = value_layout(plan, r.output, n);
    let inner_d: Vec<usize> = (0..xd.len())
        .map(|i| if r.axes.contains(&i) { xd[i] } else { 1 })
        .collect();
    let [outer, y] = storage_order([View::new(&yd, &xs, 0)?, View::new(&yd, &ys, 0)?]);
    // The reduced dims merged where their strides allow (H and W of an NHWC map are one dim of
    // H·W, C apart): the kernel then finds an element without divisions.
    let (mut inner_d, mut inner_s) = (inner_d, xs.clone());
    coalesce(&mut inner_d, &mut [&mut inner_s]);
    let inner = View::new(&inner_d, &inner_s, 0)?;
    let min_inner = (0..RANK)
        .filter(|&k| inner.dims[k] > 1)
        .map(|k| inner.strides[k].abs())
        .min()
        .unwrap_or(1);
    let adjacent = min_inner > 1;
    let mut group = reduce_group(inner.len());
    // Outputs side by side only coalesce a warp's loads when the warp spans several of them:
    // where there are outputs enough to keep the GPU busy (64 Ki threads), fewer threads per
    // output, down to 8 (32 outputs a block).
    while adjacent && group > 8 && y.len() * group / 2 >= 1 << 16 {
        group /= 2;
    }
    Ok(ReduceLaunch {
        outer,
        inner,
        y,
        group,
        adjacent,
    })
}

/// One operation along an axis: row `o` starts at `x.at(o)` / `y.at(o)` and has `len`
/// elements `x_stride` / `y_stride` apart.
#[derive(Clone, Copy, Debug)]
pub struct RowLaunch {
    pub x: View,
    pub y: View,
    pub len: usize,
    pub x_stride: i64,
    pub y_stride: i64,
}

pub fn row(plan: &Plan, r: &RowStep, n: usize) -> Result<RowLaunch, LayoutError> {
    let (mut xd, xs) = value_layout(plan, r.input, n);
    let (_, ys) = value_layout(plan, r.output, n);
    let len = xd[r.axis];
    xd[r.axis] = 1;
    Ok(RowLaunch {
        x: View::new(&xd, &xs, 0)?,
        y: View::new(&xd, &ys, 0)?,
        len,
        x_stride: xs[r.axis],
        y_stride: ys[r.axis],
    })
}

/// The dense row kernel's shape for a row launch over elements of `esize` bytes: `(chunks,
/// group)`, each row held by `group` lanes of `chunks` 16-byte chunks each, or None when the
/// rows are strided, not a whole number of chunks, start off a chunk boundary, or are longer
/// than 128 chunks (the strided kernel takes those). Device addresses are checked at launch.
pub fn row_dense_shape(l: &RowLaunch, esize: usize) -> Option<(usize, usize)> {
    let k = (16 / esize) as i64;
    let aligned = |v: &View| {
        v.offset % k == 0
            && v.dims
                .iter()
                .zip(&v.strides)
                .all(|(d, s)| *d <= 1 || s % k == 0)
    };
    if l.x_stride != 1
        || l.y_stride != 1
        || l.len as i64 % k != 0
        || !aligned(&l.x)
        || !aligned(&l.y)
    {
        return None;
    }
    let packs = l.len / k as usize;
    match packs {
        0 => None,
        1..=32 => Some((1, packs.next_power_of_two())),
        33..=128 => Some((packs.div_ceil(32), 32)),
        _ => None,
    }
}

/// Pooling: views over the logical `[N, C, H, W]` input and output.
#[derive(Clone, Copy, Debug)]
pub struct PoolLaunch {
    pub x: View,
    pub y: View,
}

pub fn pool(plan: &Plan, p: &PoolStep, n: usize) -> Result<PoolLaunch, LayoutError> {
    let (xd, xs) = value_layout(plan, p.input, n);
    let (yd, ys) = value_layout(plan, p.output, n);
    Ok(PoolLaunch {
        x: View::new(&xd, &xs, 0)?,
        y: View::new(&yd, &ys, 0)?,
    })
}

/// A (batched) row-major matrix product: `count` products of `[m, k] · [k, p]`, the i-th
/// reading `a + i·a_stride`, `b + i·b_stride` (0: one shared `b`), writing `y + i·y_stride`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMulLaunch {
    pub m: usize,
    pub k: usize,
    pub p: usize,
    pub count: usize,
    pub a_stride: usize,
    pub b_stride: usize,
    pub y_stride: usize,
    pub alpha: f32,
    /// `b` stored `[p, k]` (MatMulStep::b_trans).
    pub b_trans: bool,
}

pub fn matmul(plan: &Plan, mm: &MatMulStep, n: usize) -> Result<MatMulLaunch, LayoutError> {
    let (ad, _) = value_layout(plan, mm.a, n);
    let (bd, _) = operand_layout(plan, mm.b, n);
    let r = ad.len();
    let (m, k) = (ad[r - 2], ad[r - 1]);
    let (bk, p) = if mm.b_trans {
        (bd[bd.len() - 1], bd[bd.len() - 2])
    } else {
        (bd[bd.len() - 2], bd[bd.len() - 1])
    };
    if bk != k {
        return Err(LayoutError::InnerDims {
            a: ad.clone(),
            b: bd.clone(),
            k,
            bk,
        });
    }
    let (alpha, b_trans) = (mm.alpha, mm.b_trans);
    let lead: usize = ad[..r - 2].iter().product();
    let b_lead: usize = bd[..bd.len() - 2].iter().product();
    Ok(if b_lead == 1 {
        // One shared right operand: every leading row of `a` is one big [lead·m, k] matrix.
        MatMulLaunch {
            m: lead * m,
            k,
            p,
            count: 1,
            a_stride: 0,
            b_stride: 0,
            y_stride: 0,
            alpha,
            b_trans,
        }
    } else {
        MatMulLaunch {
            m,
            k,
            p,
            count: lead,
            a_stride: m * k,
            b_stride: k * p,
            y_stride: m * p,
            alpha,
            b_trans,
        }
    })
}

/// Outputs along a row each `depthwise_nhwc` thread computes: kernels.cu's DW_TX.
pub const DEPTHWISE_TX: usize = 4;

/// Whether the split epilogue can run 16 bytes per thread: NHWC with whole chunks of channels,
/// or NCHW with whole chunks of each channel's map (so a chunk has one bias value).
pub fn chunked_epilogue(cout: usize, hw: usize, cl: bool, chunk: usize) -> bool {
    if cl || hw == 1 {
        cout.is_multiple_of(chunk)
    } else {
        hw.is_multiple_of(chunk)
    }
}

/// Threads of a `depthwise_nhwc` launch over `[n, c, oh, ow]`.
pub fn depthwise_nhwc_threads(n: usize, c: usize, oh: usize, ow: usize, chunk: usize) -> usize {
    n * oh * ow.div_ceil(DEPTHWISE_TX) * (c / chunk)
}

/// One ConcatStep at a batch size, in storage order and in elements: output row `o` (of
/// `outer`) is `row` elements long; part `i` is `outer` runs of `starts[i + 1] − starts[i]`
/// elements, copied to `base + starts[i]` of each row.
#[derive(Clone, Debug, PartialEq)]
pub struct ConcatLaunch {
    pub outer: usize,
    pub row: usize,
    pub base: usize,
    pub starts: Vec<usize>,
    /// The largest unit the copy may move: a 16-byte chunk where every run, the row and the
    /// base are whole chunks, else 1 element.
    pub vec: usize,
}

impl ConcatLaunch {
    /// Elements written.
    pub fn len(&self) -> usize {
        self.outer * self.starts.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `concat_*` kernels' arguments for parts at `ptrs`, in units of `unit` elements (1
    /// or `vec`): the parts, the row length, the base, and the threads (one per unit).
    pub fn args(
        &self,
        ptrs: &[u64],
        unit: usize,
    ) -> Result<(ConcatArgs, u32, u32, u32), LayoutError> {
        let u32_of = |v: usize| u32::try_from(v).map_err(|_| LayoutError::ConcatTooLong(v));
        if ptrs.len() + 1 != self.starts.len() || ptrs.len() > CONCAT_MAX_PARTS {
            return Err(LayoutError::ConcatParts(ptrs.len()));
        }
        let mut args = ConcatArgs {
            src: [0; CONCAT_MAX_PARTS],
            start: [0; CONCAT_MAX_PARTS + 1],
            parts: ptrs.len() as i32,
        };
        args.src[..ptrs.len()].copy_from_slice(ptrs);
        for (i, &s) in self.starts.iter().enumerate() {
            args.start[i] = u32_of(s / unit)?;
        }
        let units = self.len() / unit;
        Ok((
            args,
            u32_of(self.row / unit)?,
            u32_of(self.base / unit)?,
            u32_of(units)?,
        ))
    }
}

/// A ConcatStep's parts as the `concat_*` kernels take them, by value: kernels.cu's
/// `struct Cat` (CAT_MAX = CONCAT_MAX_PARTS = 32: 256 + 132 + 4 bytes, 8-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConcatArgs {
    pub src: [u64; CONCAT_MAX_PARTS],
    pub start: [u32; CONCAT_MAX_PARTS + 1],
    pub parts: i32,
}

pub fn concat(
    plan: &Plan,
    c: &ConcatStep,
    n: usize,
    elem_bytes: usize,
) -> Result<ConcatLaunch, LayoutError> {
    let (yd, ys) = value_layout(plan, c.output, n);
    // The output's storage order: its full axes by decreasing stride (a dense value; size-1
    // axes left out, the builder makes sure the concat axis is not one).
    let mut y_order: Vec<usize> = (0..yd.len())
        .filter(|&k| yd[k] > 1 || k == c.axis)
        .collect();
    y_order.sort_by_key(|&k| std::cmp::Reverse(ys[k]));
    let pos = y_order
        .iter()
        .position(|&k| k == c.axis)
        .ok_or(LayoutError::ConcatAxis)?;
    let outer: usize = y_order[..pos].iter().map(|&k| yd[k]).product();
    let inner = ys[c.axis] as usize;
    let row = yd[c.axis] * inner;
    let mut starts = vec![0];
    for &p in &c.parts {
        // The part must be dense in the output's storage order. Checked axis by axis rather
        // than by sorting its own strides: a part whose concat axis is 1 long ties that axis's
        // stride with another's, and a sort would put it in either place.
        let (pd, ps) = value_layout(plan, p, n);
        let mut expect = 1i64;
        let mut packed = true;
        for &k in y_order.iter().rev() {
            packed &= pd[k] == 1 || ps[k] == expect;
            expect *= pd[k] as i64;
        }
        let others_one = (0..pd.len()).all(|k| y_order.contains(&k) || pd[k] == 1);
        if !packed || !others_one {
            return Err(LayoutError::ConcatLayout {
                part: pd,
                strides: ps,
                out: yd,
                out_strides: ys,
            });
        }
        starts.push(starts[starts.len() - 1] + pd[c.axis] * inner);
    }
    let base = c.at * inner;
    let k = 16 / elem_bytes;
    let fits = |v: usize| v.is_multiple_of(k);
    let vec = if fits(row) && fits(base) && starts.iter().all(|&s| fits(s)) {
        k
    } else {
        1
    };
    Ok(ConcatLaunch {
        outer,
        row,
        base,
        starts,
        vec,
    })
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalescing_merges_only_dims_every_operand_walks_as_one() {
        // y [2, 3, 4] row-major; a broadcast over the first dim: dims 1 and 2 merge for both,
        // dim 0 merges for y alone, so it stays; the dim of 1 goes.
        let mut dims = vec![2, 1, 3, 4];
        let (mut y, mut a) = (vec![12, 12, 4, 1], vec![0, 0, 4, 1]);
        coalesce(&mut dims, &mut [&mut y, &mut a]);
        assert_eq!((dims, y, a), (vec![2, 12], vec![12, 1], vec![0, 1]));
        // A transposed read keeps its dims apart.
        let mut dims = vec![3, 4];
        let (mut y, mut a) = (vec![4, 1], vec![1, 3]);
        coalesce(&mut dims, &mut [&mut y, &mut a]);
        assert_eq!((dims, y, a), (vec![3, 4], vec![4, 1], vec![1, 3]));
        // All dims of 1: one dim of 1 is left.
        let mut dims = vec![1, 1];
        let mut y = vec![1, 1];
        coalesce(&mut dims, &mut [&mut y]);
        assert_eq!((dims, y), (vec![1], vec![0]));
    }
}
