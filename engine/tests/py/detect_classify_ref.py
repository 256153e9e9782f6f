#!/usr/bin/env python3
"""configs/detect_classify.toml's second half written with OpenCV, numpy and onnxruntime, for the
end-to-end test: for each photo, the boxes our pipeline found (NAME.ours, one "x1 y1 x2 y2 score
class" line each) are cut out of the photo decoded by cv2.imdecode (every pixel the box
touches: x1, y1 rounded down, x2, y2 up, clipped to the photo, at least one pixel each way), resized to 224×224 by cv2.resize
(INTER_LINEAR), converted to RGB, normalised with ImageNet's mean and std, and classified by the
ONNX model in onnxruntime; the softmax's arg-max and its probability go to NAME.cls, one
"class probability" line per box.

Usage: detect_classify_ref.py CLASSIFIER OUT_DIR IMAGE...
"""
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

MEAN = np.array([123.675, 116.28, 103.53], np.float32)[:, None, None]
STD = np.array([58.395, 57.120, 57.375], np.float32)[:, None, None]


def crop(img, box):
    h, w = img.shape[:2]

    def side(a, b, n):
        start = min(max(math.floor(a), 0), n - 1)
        return start, min(max(math.ceil(b), start + 1), n)

    x1, x2 = side(box[0], box[2], w)
    y1, y2 = side(box[1], box[3], h)
    return img[y1:y2, x1:x2]


def main():
    model, out = sys.argv[1], Path(sys.argv[2])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for path in sys.argv[3:]:
        stem = Path(path).name
        boxes = [
            [float(v) for v in line.split()]
            for line in (out / (stem + ".ours")).read_text().splitlines()
        ]
        img = cv2.imdecode(np.frombuffer(Path(path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        lines = []
        for box in boxes:
            part = cv2.resize(crop(img, box), (224, 224), interpolation=cv2.INTER_LINEAR)
            x = cv2.cvtColor(part, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)
            (y,) = session.run(None, {name: ((x - MEAN) / STD)[None]})
            e = np.exp(y[0] - y[0].max())
            p = e / e.sum()
            k = int(p.argmax())
            lines.append(f"{k} {p[k]:.9g}\n")
        (out / (stem + ".cls")).write_text("".join(lines))
    print(ort.__version__)


if __name__ == "__main__":
    main()
