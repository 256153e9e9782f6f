"""torchvision's GPU JPEG decode (nvJPEG through PyTorch) on the files preprocess-check timed,
at the same node batch sizes, timed the same way (rounds of at least --round-secs, median):
decode alone (the issue's anchor), and decode + bilinear resize to 224 + RGB float (the same
work as our fused node)."""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, ImageReadMode


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--check-json", required=True, help="preprocess-check's JSON (timing_files)")
    p.add_argument("--images", default="benches/imgs")
    p.add_argument("--extra", help="preprocess-check's --extra folder: its files are timed too")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--round-secs", type=float, default=0.5)
    p.add_argument("--json", required=True)
    a = p.parse_args()
    files = json.load(open(a.check_json))["timing_files"]
    dirs = [d for d in (a.images, a.extra) if d]

    def path(name):
        # preprocess-check names each file by its name alone, from --images or --extra.
        for d in dirs:
            if os.path.isfile(os.path.join(d, name)):
                return os.path.join(d, name)
        raise SystemExit(f"{name} (a file preprocess-check timed) is in none of {dirs}")

    datas = [torch.frombuffer(bytearray(open(path(f), "rb").read()), dtype=torch.uint8)
             for f in files]
    out = {"files": files, "torch": torch.__version__, "timings": []}

    def decode(batch):
        imgs = decode_jpeg(batch, mode=ImageReadMode.RGB, device="cuda")
        torch.cuda.synchronize()
        return imgs

    def decode_resize(batch):
        imgs = decode_jpeg(batch, mode=ImageReadMode.RGB, device="cuda")
        res = [F.interpolate(i.unsqueeze(0).float(), size=(224, 224), mode="bilinear",
                             align_corners=False) for i in imgs]
        torch.cuda.synchronize()
        return res

    for n in [int(x) for x in a.batches.split(",")]:
        batch = [datas[i % len(datas)] for i in range(n)]
        row = {"batch": n}
        for label, f in (("decode_only", decode), ("decode_resize", decode_resize)):
            for _ in range(10):
                f(batch)
            rates = []
            for _ in range(a.rounds):
                t0 = time.perf_counter()
                done = 0
                while time.perf_counter() - t0 < a.round_secs:
                    f(batch)
                    done += n
                rates.append(done / (time.perf_counter() - t0))
            rates.sort()
            row[label] = rates[len(rates) // 2]
            print(f"torchvision batch {n:>2} {label}: {row[label]:.0f} images/s", flush=True)
        out["timings"].append(row)
    json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
