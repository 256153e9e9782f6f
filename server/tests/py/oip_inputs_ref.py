"""The references of the typed-input test (server/tests/oip.rs): each photo as OpenCV decodes it
and as the pipeline's preprocessing would make its model input, and onnxruntime's logits on
that input.

usage: oip_inputs_ref.py MODEL MEAN STD OUTDIR IMAGE...

Writes OUTDIR/pixels-I.npy (cv2.imread: HWC uint8, BGR), OUTDIR/tensor-I.npy (the pixels
resized to 224×224 with cv2.resize's INTER_LINEAR, to RGB, CHW float32 0..255) and
OUTDIR/logits-I.npy (onnxruntime on ((tensor − MEAN) / STD), fp32 kernels, no graph rewrites).
"""
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort

model, mean, std, outdir, images = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
mean = np.array([float(v) for v in mean.split(",")], np.float32).reshape(-1, 1, 1)
std = np.array([float(v) for v in std.split(",")], np.float32).reshape(-1, 1, 1)
opts = ort.SessionOptions()
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
for i, path in enumerate(images):
    pixels = cv2.imread(path, cv2.IMREAD_COLOR)
    tensor = cv2.cvtColor(cv2.resize(pixels, (224, 224), interpolation=cv2.INTER_LINEAR),
                          cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32)
    x = ((tensor - mean) / std).astype(np.float32)[None]
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0][0].astype(np.float32)
    np.save(os.path.join(outdir, f"pixels-{i}.npy"), pixels)
    np.save(os.path.join(outdir, f"tensor-{i}.npy"), tensor)
    np.save(os.path.join(outdir, f"logits-{i}.npy"), logits)
