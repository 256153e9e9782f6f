"""Prints an exported model's nodes with their inferred output shapes (onnx.shape_inference),
from node FROM to node TO: how the exporter wrote a block the GPU engine refuses.
usage: inspect_onnx.py MODEL.onnx [FROM] [TO]"""
import sys

import onnx
from onnx import shape_inference

m = shape_inference.infer_shapes(onnx.load(sys.argv[1]))
lo, hi = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (0, 10**9)
shapes = {}
for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
    dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    shapes[v.name] = dims
inits = {t.name: list(t.dims) for t in m.graph.initializer}
for i, n in enumerate(m.graph.node):
    if lo <= i <= hi:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute
                 if a.name in ("perm", "axis", "axes", "keepdims", "epsilon", "to", "split")}
        ins = [f"{x}{inits.get(x, shapes.get(x, ''))}" for x in n.input]
        print(i, n.op_type, ins, "->", [f"{o}{shapes.get(o, '')}" for o in n.output], attrs or "")
