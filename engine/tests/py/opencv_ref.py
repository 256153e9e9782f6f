#!/usr/bin/env python3
"""OpenCV's own results for the parity tests: for each image, cv2.imdecode(IMREAD_COLOR) and
cv2.resize(INTER_LINEAR) to each requested size, written as raw u8 with a one-line header.

Usage: opencv_ref.py OUT_DIR SIZES IMAGE... (SIZES like 224x224,100x37 as HxW)
"""
import sys
from pathlib import Path

import cv2
import numpy as np


def dump(path, arr):
    h, w, c = arr.shape
    with open(path, "wb") as f:
        f.write(f"{h} {w} {c}\n".encode())
        f.write(np.ascontiguousarray(arr).tobytes())


def main():
    out = Path(sys.argv[1])
    sizes = [tuple(int(v) for v in s.split("x")) for s in sys.argv[2].split(",")]
    for img_path in sys.argv[3:]:
        data = np.frombuffer(Path(img_path).read_bytes(), np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        name = Path(img_path).name
        dump(out / f"{name}.decoded", img)
        for h, w in sizes:
            dump(out / f"{name}.{h}x{w}", cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))
    print(cv2.__version__)


if __name__ == "__main__":
    main()
