#!/usr/bin/env python3
"""Writes the valid-but-unusual JPEGs of the damaged-JPEG corpus (engine/tests/fixtures/jpeg/)
from a committed photo: a CMYK JPEG (Adobe, inverted, as Photoshop writes them) and a progressive
one. The broken variants (truncated, bad Huffman data, wrong markers, empty) are made by the tests
themselves. Needs Pillow (a developer tool; not needed by the tests). Run from the repo root."""
from PIL import Image

src = Image.open("benches/imgs/rocket.jpg").convert("RGB")
src.convert("CMYK").save("engine/tests/fixtures/jpeg/cmyk.jpg", "JPEG", quality=90)
src.save("engine/tests/fixtures/jpeg/progressive.jpg", "JPEG", quality=90, progressive=True)
