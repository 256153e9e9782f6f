#!/usr/bin/env python3
"""The YOLOv8 head's post-processing, written with numpy and OpenCV, for the PostProcYoloV8
test: reads a head output ("C A" then C*A floats, row-major) and the letterbox's
"scale ox oy h w", keeps anchors whose best class score is above CONF, suppresses with
cv2.dnn.NMSBoxesBatched at IOU (class-aware), keeps MAX_DET, maps the boxes back
((p - offset) / scale), clips them to the image, and writes one "x1 y1 x2 y2 score class" line
per detection, best first, to OUT.

Usage: yolo_ref.py HEAD LETTERBOX CONF IOU MAX_DET OUT
"""
import sys

import cv2
import numpy as np


def postprocess(t, scale, ox, oy, h, w, conf, iou, max_det):
    """The detections of head output t ([4 + classes, anchors]) as rows x1 y1 x2 y2 score class."""
    scores = t[4:].T
    cls = scores.argmax(1)
    best = scores.max(1)
    keep = best > conf
    cx, cy, bw, bh = (t[i][keep] for i in range(4))
    x1, y1 = cx - bw / 2, cy - bh / 2
    x2, y2 = cx + bw / 2, cy + bh / 2
    if not keep.any():
        return []
    idx = cv2.dnn.NMSBoxesBatched(
        np.stack([x1, y1, x2 - x1, y2 - y1], 1).tolist(),
        best[keep].tolist(),
        cls[keep].tolist(),
        conf,
        iou,
    )
    idx = [int(i) for i in np.array(idx).reshape(-1)][:max_det]
    rows = []
    for i in idx:
        box = [(x1[i] - ox) / scale, (y1[i] - oy) / scale, (x2[i] - ox) / scale, (y2[i] - oy) / scale]
        box = [min(max(float(v), 0.0), w if j % 2 == 0 else h) for j, v in enumerate(box)]
        rows.append(box + [float(best[keep][i]), int(cls[keep][i])])
    return rows


def main():
    head, letterbox, conf, iou, max_det, out = sys.argv[1:7]
    words = open(head).read().split()
    c, a = int(words[0]), int(words[1])
    t = np.array(words[2:], np.float32).reshape(c, a)
    scale, ox, oy, h, w = (float(v) for v in open(letterbox).read().split())
    rows = postprocess(t, scale, ox, oy, h, w, float(conf), float(iou), int(max_det))
    open(out, "w").write("\n".join(" ".join(str(v) for v in r) for r in rows) + "\n")
    print(cv2.__version__)


if __name__ == "__main__":
    main()
