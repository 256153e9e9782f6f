#!/usr/bin/env python3
"""Rebuilds benches/imgs/ from the sample photos inside the scikit-image wheel.

Run once by a developer (the results are committed); needs `pip download scikit-image` and
opencv-python-headless. Usage: make-test-images.py path/to/skimage/data benches/imgs
Each photo is re-encoded as the docs' client does: JPEG quality 95, long side at most 640.
"""
import sys
from pathlib import Path

import cv2
import numpy as np

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg"]


def shrink(img, long_side=640):
    h, w = img.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def main(src: Path, dst: Path):
    dst.mkdir(parents=True, exist_ok=True)
    q95 = [cv2.IMWRITE_JPEG_QUALITY, 95]
    for name in PHOTOS:
        img = shrink(cv2.imread(str(src / name), cv2.IMREAD_COLOR))
        cv2.imwrite(str(dst / (Path(name).stem + ".jpg")), img, q95)
    coffee = shrink(cv2.imread(str(src / "coffee.png"), cv2.IMREAD_COLOR), 320)
    cv2.imwrite(str(dst / "coffee_small.png"), coffee)
    chelsea = shrink(cv2.imread(str(src / "chelsea.png"), cv2.IMREAD_COLOR), 96)
    cv2.imwrite(str(dst / "chelsea_tiny.bmp"), chelsea)
    camera = shrink(cv2.imread(str(src / "camera.png"), cv2.IMREAD_GRAYSCALE))
    cv2.imwrite(str(dst / "camera_gray.jpg"), camera, q95)
    # Odd sizes: a single pixel, and a 1-pixel-wide strip 10000 pixels tall.
    cv2.imwrite(str(dst / "odd_1x1.jpg"), np.full((1, 1, 3), (40, 120, 200), np.uint8), q95)
    strip = np.linspace(0, 255, 10000, dtype=np.float32).reshape(10000, 1, 1)
    strip = np.concatenate([strip, 255 - strip, strip / 2], axis=2).astype(np.uint8)
    cv2.imwrite(str(dst / "odd_1x10000.jpg"), strip, q95)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
