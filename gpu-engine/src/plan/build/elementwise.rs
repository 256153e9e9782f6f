//! Elementwise ops: activations with their attributes, Clip, the broadcasting binaries, and the
//! fusions they allow (Sigmoid · x as SiLU, the exporter's erf GELU chain, ReLU after a Mul).

use super::*;

/// The elementwise functions of one tensor, with their parameters from the node's attributes
/// (ONNX's defaults where absent); `None` for any other op.
pub(super) fn activation_of(node: &pb::NodeProto) -> Option<Result<(Unary, f32, f32), NodeError>> {
    let f = |name: &str, default: f32| attr_float(node, name, default);
    let (unary, p0, p1) = match node.op_type.as_str() {
        "Relu" => (Unary::Relu, 0.0, 0.0),
        "Sigmoid" => (Unary::Sigmoid, 0.0, 0.0),
        "HardSigmoid" => (Unary::HardSigmoid, f("alpha", 0.2), f("beta", 0.5)),
        "HardSwish" => (Unary::HardSwish, 0.0, 0.0),
        "Erf" => (Unary::Erf, 0.0, 0.0),
        "Sqrt" => (Unary::Sqrt, 0.0, 0.0),
        "Exp" => (Unary::Exp, 0.0, 0.0),
        "Tanh" => (Unary::Tanh, 0.0, 0.0),
        "Neg" => (Unary::Neg, 0.0, 0.0),
        "Reciprocal" => (Unary::Reciprocal, 0.0, 0.0),
        "Abs" => (Unary::Abs, 0.0, 0.0),
        "LeakyRelu" => (Unary::LeakyRelu, f("alpha", 0.01), 0.0),
        "Elu" => (Unary::Elu, f("alpha", 1.0), 0.0),
        "Selu" => (Unary::Selu, f("alpha", 1.673_263_2), f("gamma", 1.050_701)),
        "Celu" => (Unary::Celu, f("alpha", 1.0), 0.0),
        "Softplus" => (Unary::Softplus, 0.0, 0.0),
        "Softsign" => (Unary::Softsign, 0.0, 0.0),
        "Mish" => (Unary::Mish, 0.0, 0.0),
        "Log" => (Unary::Log, 0.0, 0.0),
        "ThresholdedRelu" => (Unary::ThresholdedRelu, f("alpha", 1.0), 0.0),
        "Gelu" => {
            let approx = attr(node, "approximate")
                .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                .unwrap_or_default();
            match approx.as_str() {
                "" | "none" => (Unary::Gelu, 0.0, 0.0),
                "tanh" => (Unary::GeluTanh, 0.0, 0.0),
                _ => return Some(Err(NodeError::GeluApproximate(approx))),
            }
        }
        _ => return None,
    };
    Some(Ok((unary, p0, p1)))
}

pub(super) const OPS: &[(&str, Lower)] = &[
    ("Relu", |b, i| b.activation(i)),
    ("Sigmoid", |b, i| b.sigmoid(i)),
    ("HardSigmoid", |b, i| b.activation(i)),
    ("HardSwish", |b, i| b.activation(i)),
    ("Erf", |b, i| b.activation(i)),
    ("Gelu", |b, i| b.activation(i)),
    ("Sqrt", |b, i| b.activation(i)),
    ("Exp", |b, i| b.activation(i)),
    ("Tanh", |b, i| b.activation(i)),
    ("Neg", |b, i| b.activation(i)),
    ("Reciprocal", |b, i| b.activation(i)),
    ("Abs", |b, i| b.activation(i)),
    ("LeakyRelu", |b, i| b.activation(i)),
    ("Elu", |b, i| b.activation(i)),
    ("Selu", |b, i| b.activation(i)),
    ("Celu", |b, i| b.activation(i)),
    ("Softplus", |b, i| b.activation(i)),
    ("Softsign", |b, i| b.activation(i)),
    ("Mish", |b, i| b.activation(i)),
    ("Log", |b, i| b.activation(i)),
    ("ThresholdedRelu", |b, i| b.activation(i)),
    ("Clip", |b, i| b.clip(i)),
    ("Add", |b, i| b.binary(i, Binary::Add)),
    ("Sub", |b, i| b.binary(i, Binary::Sub)),
    ("Mul", |b, i| b.binary(i, Binary::Mul)),
    ("Div", |b, i| b.div(i)),
    ("Pow", |b, i| b.binary(i, Binary::Pow)),
    ("Max", |b, i| b.binary(i, Binary::Max)),
    ("Min", |b, i| b.binary(i, Binary::Min)),
    ("PRelu", |b, i| b.binary(i, Binary::PRelu)),
];

impl Builder<'_> {
    /// An elementwise function of one tensor (`activation_of`).
    fn activation(&mut self, i: usize) -> R<()> {
        let Some(a) = activation_of(&self.nodes[i]) else {
            let op = self.nodes[i].op_type.clone();
            return Err(self.err(i, NodeError::UnsupportedOp(op)));
        };
        let (unary, p0, p1) = a.map_err(|e| self.err(i, e))?;
        self.unary(i, unary, p0, p1)
    }

    fn unary(&mut self, i: usize, unary: Unary, p0: f32, p1: f32) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let cl = self.values[x].channels_last;
        let out = self.out(i)?;
        let output = self.define(&out, dims, cl);
        self.map(MapStep {
            unary,
            p0,
            p1,
            ..MapStep::copy(x, output)
        });
        Ok(())
    }

    /// Sigmoid, or SiLU when its only reader multiplies it by its own input.
    fn sigmoid(&mut self, i: usize) -> R<()> {
        let out = self.out(i)?;
        let x_name = self.input(i, 0)?;
        if let Some(m) = self.sole_consumer(&out, "Mul") {
            let node = &self.nodes[m];
            if node.input.len() == 2 && node.input.iter().any(|n| n == x_name) {
                self.done[m] = true;
                let x = self.value(i, 0)?;
                let dims = self.values[x].dims.clone();
                let cl = self.values[x].channels_last;
                let mo = self.out(m)?;
                let output = self.define(&mo, dims, cl);
                self.map(MapStep {
                    unary: Unary::Swish,
                    ..MapStep::copy(x, output)
                });
                return Ok(());
            }
        }
        self.unary(i, Unary::Sigmoid, 0.0, 0.0)
    }

    fn clip(&mut self, i: usize) -> R<()> {
        let (lo, hi) = self.clip_bounds(i)?;
        self.unary(i, Unary::Clip, lo, hi)
    }

    pub(super) fn clip_bounds(&self, i: usize) -> R<(f32, f32)> {
        let node = &self.nodes[i];
        let bound = |k: usize, attr_name: &str, default: f32| -> R<f32> {
            match node.input.get(k).filter(|n| !n.is_empty()) {
                Some(_) => match self.floats(i, k)?.as_slice() {
                    [v] => Ok(*v),
                    _ => Err(self.err(i, NodeError::ClipBounds)),
                },
                None => Ok(attr_float(node, attr_name, default)),
            }
        };
        Ok((
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        ))
    }

    fn div(&mut self, i: usize) -> R<()> {
        // The start of a GELU chain on a tensor nothing absorbed: one step.
        let x = self.input(i, 0)?.to_string();
        if let (Some(&v), Some((nodes, y))) = (self.value_of.get(&x), self.gelu_chain(&x)) {
            let dims = self.values[v].dims.clone();
            let cl = self.values[v].channels_last;
            for k in nodes {
                self.done[k] = true;
            }
            let output = self.define(&y, dims, cl);
            self.map(MapStep {
                unary: Unary::Gelu,
                ..MapStep::copy(v, output)
            });
            return Ok(());
        }
        self.binary(i, Binary::Div)
    }

    fn binary(&mut self, i: usize, binary: Binary) -> R<()> {
        if let Some((nodes, y)) = self.gelu_tanh_chain(i) {
            let x = self.value(i, 0)?;
            for k in nodes {
                self.done[k] = true;
            }
            let (dims, cl) = (self.values[x].dims.clone(), self.values[x].channels_last);
            let output = self.define(&y, dims, cl);
            self.map(MapStep {
                unary: Unary::GeluTanh,
                ..MapStep::copy(x, output)
            });
            return Ok(());
        }
        let a = self.operand(i, 0)?;
        let b = self.operand(i, 1)?;
        let (ad, bd) = (self.full_dims(a), self.full_dims(b));
        let full = fold::broadcast(&ad, &bd).map_err(|e| self.err(i, e))?;
        if full.first() != Some(&BATCH) {
            return Err(self.err(i, NodeError::BroadcastChangesBatch { a: ad, b: bd }));
        }
        let dims: Dims = full[1..].to_vec();
        // The output takes the layout of an operand of its own shape.
        let cl = [a, b].iter().any(|o| match o {
            Operand::Value(v) => self.values[*v].dims == dims && self.values[*v].channels_last,
            Operand::Const(_) => false,
        });
        let (out, unary) = self.absorb_relu(self.out(i)?)?;
        let output = self.define(&out, dims, cl);
        self.map(MapStep {
            a,
            perm_a: None,
            a_slice: None,
            shuffle: None,
            b: Some(b),
            binary,
            unary,
            p0: 0.0,
            p1: 0.0,
            output,
            region: Vec::new(),
            c: None,
        });
        Ok(())
    }

    /// GELU's tanh approximation as PyTorch's TorchScript exporter writes it (timm's MaxViT,
    /// nine nodes each), from node `i`, the start of the cube of its input `x`:
    /// `0.5 · (x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))))`, the cube `Mul(x, Mul(x, x))` or
    /// `Pow(x, 3)`. Returns the chain's nodes and its output: one step instead of nine.
    fn gelu_tanh_chain(&self, i: usize) -> Option<(Vec<usize>, String)> {
        /// What a link of the chain reads besides its predecessor's output.
        enum With {
            X,
            Scalar(f64),
            Nothing,
        }
        let n = &self.nodes[i];
        let x = n.input.first()?.as_str();
        let out = |k: usize| self.nodes[k].output.first().map(String::as_str);
        let mut chain = vec![i];
        match n.op_type.as_str() {
            "Mul" if n.input.len() == 2 && n.input[1] == x => {
                let m = self.sole_consumer(out(i)?, "Mul")?;
                (self.other_input(m, out(i)?)? == x).then(|| chain.push(m))?;
            }
            "Pow" if self.is_scalar(n.input.get(1)?, 3.0) => {}
            _ => return None,
        }
        let links = [
            ("Mul", With::Scalar(0.044715)),
            ("Add", With::X),
            ("Mul", With::Scalar((2.0 / std::f64::consts::PI).sqrt())),
            ("Tanh", With::Nothing),
            ("Add", With::Scalar(1.0)),
            ("Mul", With::X),
            ("Mul", With::Scalar(0.5)),
        ];
        for (op, with) in links {
            let from = out(*chain.last()?)?;
            let next = self.sole_consumer(from, op)?;
            let ok = match with {
                With::Nothing => true,
                With::X => self.other_input(next, from)? == x,
                With::Scalar(v) => self.is_scalar(self.other_input(next, from)?, v),
            };
            ok.then(|| chain.push(next))?;
        }
        let y = out(*chain.last()?)?.to_string();
        Some((chain, y))
    }

    /// GELU as PyTorch's exporter writes it, read from its input `x`:
    /// `Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)`. Returns the chain's nodes and its output.
    pub(super) fn gelu_chain(&self, x: &str) -> Option<(Vec<usize>, String)> {
        if self.graph_outputs.contains(x) {
            return None;
        }
        let readers = self.consumers.get(x)?;
        let [r0, r1] = readers[..] else {
            return None;
        };
        let (div, mul1) = if self.nodes[r0].op_type == "Div" {
            (r0, r1)
        } else {
            (r1, r0)
        };
        let (d, m1) = (&self.nodes[div], &self.nodes[mul1]);
        let div_ok = d.op_type == "Div"
            && d.input.first().is_some_and(|n| n == x)
            && d.input
                .get(1)
                .is_some_and(|c| self.is_scalar(c, std::f64::consts::SQRT_2));
        if !div_ok || m1.op_type != "Mul" || self.done[div] || self.done[mul1] {
            return None;
        }
        let erf = self.sole_consumer(d.output.first()?, "Erf")?;
        let e_out = self.nodes[erf].output.first()?;
        let add = self.sole_consumer(e_out, "Add")?;
        if !self.is_scalar(self.other_input(add, e_out)?, 1.0) {
            return None;
        }
        let a_out = self.nodes[add].output.first()?;
        if self.sole_consumer(a_out, "Mul") != Some(mul1) || self.other_input(mul1, a_out)? != x {
            return None;
        }
        let m_out = m1.output.first()?;
        let mul2 = self.sole_consumer(m_out, "Mul")?;
        if !self.is_scalar(self.other_input(mul2, m_out)?, 0.5) {
            return None;
        }
        Some((
            vec![div, erf, add, mul1, mul2],
            self.nodes[mul2].output.first()?.clone(),
        ))
    }
}
