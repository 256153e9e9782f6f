#!/usr/bin/env python3
"""onnxruntime's logits for the model parity tests.

Usage: ort_ref.py MODEL INPUT OUTPUT MEAN STD
INPUT: "N C H W\\n" + float32 raw (values 0..255, RGB); MEAN/STD: comma-separated per channel.
OUTPUT: "N K\\n" + float32 raw logits.
"""
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, inp, out, mean, std = sys.argv[1:6]
    with open(inp, "rb") as f:
        dims = [int(v) for v in f.readline().split()]
        x = np.frombuffer(f.read(), np.float32).reshape(dims)
    mean = np.array([float(v) for v in mean.split(",")], np.float32).reshape(1, -1, 1, 1)
    std = np.array([float(v) for v in std.split(",")], np.float32).reshape(1, -1, 1, 1)
    x = ((x - mean) / std).astype(np.float32)
    opts = ort.SessionOptions()
    # Plain fp32 kernels, no graph rewrites that change rounding, so the reference is the ONNX.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float32)
    with open(out, "wb") as f:
        f.write(f"{y.shape[0]} {y.shape[1]}\n".encode())
        f.write(y.tobytes())
    print(ort.__version__)


if __name__ == "__main__":
    main()
