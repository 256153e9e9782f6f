#!/usr/bin/env python3
"""OpenCV's perspective crop for the parity test, as TorchPipe's PerspectiveTransformMat does it:
each image decoded by cv2.imdecode(IMREAD_COLOR); for each quadrilateral (x0 y0 x1 y1 x2 y2 x3 y3
on a line of QUADS), the width the first edge's length and the height the last edge's, each
truncated, cv2.getPerspectiveTransform from the four points to that rectangle's corners, and
cv2.warpPerspective(..., flags=INTER_LINEAR) with the default constant border of 0. Writes
NAME.decoded and NAME.qK (raw u8 with an "H W C" line).

Usage: perspective_ref.py OUT_DIR QUADS IMAGE...
"""
import math
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from opencv_ref import dump  # noqa: E402


def main():
    out = Path(sys.argv[1])
    quads = [[float(v) for v in line.split()] for line in Path(sys.argv[2]).read_text().splitlines()]
    for img_path in sys.argv[3:]:
        img = cv2.imdecode(np.frombuffer(Path(img_path).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        name = Path(img_path).name
        dump(out / f"{name}.decoded", img)
        for k, q in enumerate(quads):
            p = np.array(q, np.float32).reshape(4, 2)
            w = int(math.hypot(q[0] - q[2], q[1] - q[3]))
            h = int(math.hypot(q[0] - q[6], q[1] - q[7]))
            rect = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
            m = cv2.getPerspectiveTransform(p, rect)
            dump(out / f"{name}.q{k}", cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR))
    print(cv2.__version__)


if __name__ == "__main__":
    main()
