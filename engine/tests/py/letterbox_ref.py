#!/usr/bin/env python3
"""OpenCV's letterbox for the parity test: each image decoded by cv2.imdecode(IMREAD_COLOR),
resized by cv2.resize(INTER_LINEAR) to fit HxW keeping its aspect ratio (scale = the smaller
ratio, sides rounded half away from zero as C++'s std::round), pasted onto an HxW canvas of
PAD, centred ("centre") or at the top-left corner ("corner"). Writes NAME.decoded,
NAME.MODE.HxW (raw u8 with an "H W C" line) and NAME.MODE.HxW.txt (scale, offset x, offset y).

Usage: letterbox_ref.py OUT_DIR PAD SIZES IMAGE... (SIZES like 640x640,320x480 as HxW)
"""
import math
import sys
from pathlib import Path

import cv2
import numpy as np


def dump(path, arr):
    h, w, c = arr.shape
    with open(path, "wb") as f:
        f.write(f"{h} {w} {c}\n".encode())
        f.write(np.ascontiguousarray(arr).tobytes())


def half_away(x):
    return int(math.floor(x + 0.5))


def letterbox(img, h, w, pad, centre):
    ih, iw = img.shape[:2]
    scale = min(w / iw, h / ih)
    nh = min(max(half_away(ih * scale), 1), h)
    nw = min(max(half_away(iw * scale), 1), w)
    top, left = ((h - nh) // 2, (w - nw) // 2) if centre else (0, 0)
    canvas = np.full((h, w, 3), pad, np.uint8)
    canvas[top : top + nh, left : left + nw] = cv2.resize(
        img, (nw, nh), interpolation=cv2.INTER_LINEAR
    )
    return canvas, scale, left, top


def main():
    out = Path(sys.argv[1])
    pad = int(sys.argv[2])
    sizes = [tuple(int(v) for v in s.split("x")) for s in sys.argv[3].split(",")]
    for img_path in sys.argv[4:]:
        img = cv2.imdecode(np.frombuffer(Path(img_path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        name = Path(img_path).name
        dump(out / f"{name}.decoded", img)
        for mode in ("centre", "corner"):
            for h, w in sizes:
                canvas, scale, left, top = letterbox(img, h, w, pad, mode == "centre")
                dump(out / f"{name}.{mode}.{h}x{w}", canvas)
                (out / f"{name}.{mode}.{h}x{w}.txt").write_text(f"{scale!r} {left} {top}\n")
    print(cv2.__version__)


if __name__ == "__main__":
    main()
