#!/usr/bin/env python3
"""YOLOX's post-processing, written with numpy and OpenCV, for the PostProcYolox test, as YOLOX's
demo runs it on its ONNX export: the head ("A C" then A*C floats, one row per anchor: box in grid
units, objectness, class scores) decoded over the grids of an NET×NET input at strides 8, 16,
32 (centre (x + gx)·s, size exp(w)·s), each anchor's best class and objectness × its score,
anchors at or above CONF, cv2.dnn.NMSBoxesBatched at IOU (class-aware), at most MAX_DET, the
boxes divided by the resize's SCALE and clipped to the H×W photo. Writes one
"x1 y1 x2 y2 score class" line per detection, best first, to OUT.

Usage: yolox_ref.py HEAD NET SCALE H W CONF IOU MAX_DET OUT
"""
import sys

import cv2
import numpy as np


def main():
    head, net, scale, h, w, conf, iou, max_det, out = sys.argv[1:10]
    net, scale, h, w = int(net), float(scale), float(h), float(w)
    conf, iou, max_det = float(conf), float(iou), int(max_det)
    words = open(head).read().split()
    a, c = int(words[0]), int(words[1])
    t = np.array(words[2:], np.float32).reshape(a, c)
    grids, strides = [], []
    for s in (8, 16, 32):
        n = net // s
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    grid = np.concatenate(grids).astype(np.float32)
    stride = np.concatenate(strides).astype(np.float32)
    xy = (t[:, :2] + grid) * stride
    wh = np.exp(t[:, 2:4]) * stride
    cls = t[:, 5:].argmax(1)
    score = t[:, 4] * t[:, 5:].max(1)
    keep = score >= conf
    x1 = xy[keep, 0] - wh[keep, 0] / 2
    y1 = xy[keep, 1] - wh[keep, 1] / 2
    x2 = xy[keep, 0] + wh[keep, 0] / 2
    y2 = xy[keep, 1] + wh[keep, 1] / 2
    rows = []
    if keep.any():
        idx = cv2.dnn.NMSBoxesBatched(
            np.stack([x1, y1, x2 - x1, y2 - y1], 1).tolist(),
            score[keep].tolist(), cls[keep].tolist(), -1.0, iou)
        for i in [int(i) for i in np.array(idx).reshape(-1)][:max_det]:
            box = [x1[i] / scale, y1[i] / scale, x2[i] / scale, y2[i] / scale]
            box = [min(max(float(v), 0.0), w if j % 2 == 0 else h) for j, v in enumerate(box)]
            rows.append(box + [float(score[keep][i]), int(cls[keep][i])])
    open(out, "w").write("\n".join(" ".join(str(v) for v in r) for r in rows) + "\n")
    print(cv2.__version__)


if __name__ == "__main__":
    main()
