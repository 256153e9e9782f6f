#!/usr/bin/env python3
"""OpenCV's letterbox for the parity test: each image decoded by cv2.imdecode(IMREAD_COLOR),
resized by cv2.resize(INTER_LINEAR) to fit HxW keeping its aspect ratio (scale = the smaller
ratio, sides rounded half away from zero as C++'s std::round), pasted onto an HxW canvas of
PAD, centred ("centre") or at the top-left corner ("corner"); and TorchPipe's ResizePad
("pad"): resized to fill HxW keeping the aspect ratio (the sizes from the f32 aspect ratio, as
TorchPipe computes them), then cv2.copyMakeBorder with PAD on the right and bottom. Writes
NAME.decoded, NAME.MODE.HxW (raw u8 with an "H W C" line) and NAME.MODE.HxW.txt (scale, or the
x and y scales for "pad", offset x, offset y).

Usage: letterbox_ref.py OUT_DIR PAD SIZES IMAGE... (SIZES like 640x640,320x480 as HxW)
"""
import math
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from opencv_ref import dump  # noqa: E402


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


def resize_pad(img, max_h, max_w, pad):
    ih, iw = img.shape[:2]
    ratio = np.float32(iw) / np.float32(ih)
    if np.float32(max_h) * ratio <= np.float32(max_w):
        rh, rw = max_h, min(half_away(float(np.float32(max_h) * ratio)), max_w)
    else:
        rh, rw = min(half_away(float(np.float32(max_w) / ratio)), max_h), max_w
    rh, rw = max(rh, 1), max(rw, 1)
    resized = img if (rh, rw) == (ih, iw) else cv2.resize(
        img, (rw, rh), interpolation=cv2.INTER_LINEAR)
    out = cv2.copyMakeBorder(resized, 0, max_h - rh, 0, max_w - rw, cv2.BORDER_CONSTANT,
                             value=(pad, pad, pad))
    return out, rw / iw, rh / ih


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
        for h, w in sizes:
            canvas, sx, sy = resize_pad(img, h, w, pad)
            dump(out / f"{name}.pad.{h}x{w}", canvas)
            (out / f"{name}.pad.{h}x{w}.txt").write_text(f"{sx!r} {sy!r} 0 0\n")
    print(cv2.__version__)


if __name__ == "__main__":
    main()
