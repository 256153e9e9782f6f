#!/usr/bin/env python3
"""OpenCV's affine warp for the parity test: each image decoded by cv2.imdecode(IMREAD_COLOR);
for each matrix (six numbers on a line of MATRICES, row-major 2×3, taking the photo's pixels to
the output's), cv2.warpAffine(img, M, (W, H), flags=INTER_LINEAR) with the default constant
border of 0. Writes NAME.decoded and NAME.mK (raw u8 with an "H W C" line).

Usage: warp_affine_ref.py OUT_DIR MATRICES H W IMAGE...
"""
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from opencv_ref import dump  # noqa: E402


def main():
    out = Path(sys.argv[1])
    lines = Path(sys.argv[2]).read_text().splitlines()
    h, w = int(sys.argv[3]), int(sys.argv[4])
    for img_path in sys.argv[5:]:
        img = cv2.imdecode(np.frombuffer(Path(img_path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        name = Path(img_path).name
        dump(out / f"{name}.decoded", img)
        for k, line in enumerate(lines):
            m = np.array([float(v) for v in line.split()], np.float64).reshape(2, 3)
            dump(out / f"{name}.m{k}", cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR))
    print(cv2.__version__)


if __name__ == "__main__":
    main()
