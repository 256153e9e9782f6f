#!/usr/bin/env python3
"""configs/yolo.toml's pipeline written with OpenCV, numpy and onnxruntime, for the end-to-end
detection test: each photo decoded by cv2.imdecode, letterboxed onto 64×64 with 114
(letterbox_ref.py), converted to RGB, divided by 255, run through the ONNX model by
onnxruntime, and post-processed as yolo_ref.py does (conf 0.25, IoU 0.7, at most 300).
Writes NAME.det per photo: one "x1 y1 x2 y2 score class" line per detection, best first.

Usage: yolo_pipeline_ref.py MODEL OUT_DIR IMAGE...
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
from letterbox_ref import letterbox  # noqa: E402
from yolo_ref import postprocess  # noqa: E402


def main():
    model, out = sys.argv[1], Path(sys.argv[2])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for path in sys.argv[3:]:
        img = cv2.imdecode(np.frombuffer(Path(path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        canvas, scale, left, top = letterbox(img, 64, 64, 114, True)
        x = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1) / 255.0
        (y,) = session.run(None, {name: x[None]})
        h, w = img.shape[:2]
        rows = postprocess(y[0], scale, left, top, h, w, 0.25, 0.7, 300)
        text = "".join(" ".join(str(v) for v in r) + "\n" for r in rows)
        (out / (Path(path).name + ".det")).write_text(text)
    print(ort.__version__)


if __name__ == "__main__":
    main()
