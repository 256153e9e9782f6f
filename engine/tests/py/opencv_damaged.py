#!/usr/bin/env python3
"""OpenCV's outcome for each file of the damaged-JPEG corpus (decode_damaged.rs):
cv2.imdecode(IMREAD_COLOR) written as OUT_DIR/<name>.decoded (raw u8 with a one-line header,
as opencv_ref.py writes it), or OUT_DIR/<name>.refused when it returns no image.

Usage: opencv_damaged.py OUT_DIR FILE...
"""
import sys
from pathlib import Path

import cv2
import numpy as np


def main():
    out = Path(sys.argv[1])
    for path in sys.argv[2:]:
        name = Path(path).name
        img = cv2.imdecode(np.frombuffer(Path(path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            (out / f"{name}.refused").write_bytes(b"")
            continue
        h, w, c = img.shape
        with open(out / f"{name}.decoded", "wb") as f:
            f.write(f"{h} {w} {c}\n".encode())
            f.write(np.ascontiguousarray(img).tobytes())
    print(cv2.__version__)


if __name__ == "__main__":
    main()
