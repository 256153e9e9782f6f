"""Our fp16 error beside PyTorch's over several weight seeds, emulated on the CPU (no GPU).

usage: fp16_seeds.py FP16_ERROR_BIN WORKDIR SEEDS MODEL [MODEL ...]

On random weights, a network's fp16 error is the rounding of its weights and activations
amplified by the network, and which engine comes out ahead on one draw of the weights is
itself a draw. This runs, for each MODEL (torchvision's name or `timm:NAME`) and each seed
0..SEEDS-1 (seed 0: the coverage check's own weights): the model built and calibrated as
fp16_emulation.py does, exported by the TorchScript exporter into WORKDIR, and then
- PyTorch's fp16 as fp16_emulation.py emulates it (its `.half()` module: weights and every
  module's output rounded),
- ours: the engine's plan of the exported file with fp16 storage
  (`cargo build --release -p gpu-engine --example fp16_error`, FP16_ERROR_BIN),
both against the fp32 model on the photos of benches/imgs, and prints one line per seed with
both errors and their ratio, then the median ratio per model.
"""
import os
import re
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fp16_emulation as fe  # noqa: E402
from export_models import export  # noqa: E402


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__.split("\n\n")[1])
    binary, work, seeds, models = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    x = fe.photos()
    inputs = os.path.join(work, "photos.f32")
    x.numpy().astype("<f4").tofile(inputs)
    for name in models:
        ratios = []
        for seed in range(seeds):
            net = fe.model(name, seed)
            with torch.no_grad():
                ref = net(x)
            theirs = fe.rel(fe.emulate(net, x), ref)
            path = os.path.join(work, f"{name.split(':')[-1]}-{seed}.onnx")
            export(net, torch.randn(1, *x.shape[1:]), path, "torchscript")
            out = subprocess.run([binary, path, inputs], check=True, capture_output=True,
                                 text=True).stdout
            m = re.search(r"items: ([0-9.e+-]+)", out)
            if not m:
                sys.exit(f"{binary}: no error in its output: {out!r}")
            ours = float(m.group(1))
            ratios.append(ours / theirs)
            print(f"{name} seed {seed}: PyTorch {theirs:.2e}, ours {ours:.2e}, "
                  f"ratio {ours / theirs:.2f}", flush=True)
        print(f"{name}: median ratio {statistics.median(ratios):.2f} over {seeds} seeds "
              f"(max {max(ratios):.2f}, min {min(ratios):.2f})", flush=True)


if __name__ == "__main__":
    main()
