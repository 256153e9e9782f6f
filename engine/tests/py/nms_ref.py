#!/usr/bin/env python3
"""OpenCV's non-maximum suppression for the NMS test: reads cases written by the test (one
per file: a line "SCORE_THRESHOLD IOU_THRESHOLD", then one box per line "x1 y1 x2 y2 score
class"), runs cv2.dnn.NMSBoxesBatched (class-aware; boxes as x, y, w, h) and writes the kept
indices, best first, to CASE.kept.

Usage: nms_ref.py CASE...
"""
import sys

import cv2
import numpy as np


def main():
    for case in sys.argv[1:]:
        lines = open(case).read().split("\n")
        score_t, iou_t = (float(v) for v in lines[0].split())
        rows = [[float(v) for v in l.split()] for l in lines[1:] if l.strip()]
        if rows:
            a = np.array(rows, np.float64)
            xywh = np.stack([a[:, 0], a[:, 1], a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]], 1)
            kept = cv2.dnn.NMSBoxesBatched(
                xywh.tolist(), a[:, 4].tolist(), a[:, 5].astype(int).tolist(), score_t, iou_t
            )
            kept = [int(k) for k in np.array(kept).reshape(-1)]
        else:
            kept = []
        open(case + ".kept", "w").write(" ".join(map(str, kept)) + "\n")
    print(cv2.__version__)


if __name__ == "__main__":
    main()
