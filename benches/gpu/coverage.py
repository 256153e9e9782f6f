"""The model-coverage check's Python side on the device: exports, onnxruntime, PyTorch.

usage: coverage.py prepare WORKDIR IMGDIR MODEL [MODEL ...]
       coverage.py torch WORKDIR MODEL [MODEL ...]

MODEL as in coverage_models.txt (`resnet50`, `timm:resnet50d`); benches/gpu/coverage.sh drives
both commands and model-check between them.

prepare (CPU only; coverage.sh runs several at once): for each model, seeded weights with
BatchNorm statistics calibrated as zoo.py does (export_models.build), exported by both of
PyTorch's exporters as export_models.py does (WORKDIR/<exporter>/<name>.onnx, the dynamo files
left exactly as written, `.onnx.data` included); the photos of IMGDIR resized to the model's
input (PIL, bilinear) as raw 0..255 pixels, `WORKDIR/<name>.inputs.f32` ([k, C, H, W], what
model-check --inputs reads); onnxruntime's fp32 output on each file for those photos (ImageNet
mean/std, as model-check's defaults apply), `WORKDIR/<exporter>/<name>.ort.f32`, the reference
every engine is judged against; PyTorch's own fp32 output on the CPU, `WORKDIR/<name>.cpu32.f32`
(how far from onnxruntime a correct fp32 engine lands on these weights); the weights,
`WORKDIR/<name>.pt`. Last, `<name>.prep.json`:
input size, each exporter's error and onnxruntime's, if any.

torch (the GPU; coverage.sh alternates it with model-check, so that no two runs share the GPU):
for each model in order, once its prep.json exists: PyTorch's own fp32 and fp16 (channels_last)
output on the same photos and weights (`<name>.torch32.f32`, `<name>.torch16.f32`: PyTorch's
own fp16 error is measured against onnxruntime's fp32 as ours is), and PyTorch's time: fp16,
channels_last, one CUDA graph per batch size (1 and 32), median of rounds of replays between
CUDA events (zoo.time_graph). Writes `<name>.torch.json`, then waits for coverage.sh's
`<name>.checked` before the next model.
"""
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import export_models  # noqa: E402
import zoo  # noqa: E402

warnings.filterwarnings("ignore")

MEAN = np.array([123.675, 116.28, 103.53], np.float32).reshape(1, 3, 1, 1)
STD = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)
EXPORTERS = ("torchscript", "dynamo")
BATCHES = (1, 32)


def name_of(spec):
    return spec.split(":")[-1]


def photos(folder, size):
    from PIL import Image
    c, h, w = size
    out = []
    for f in sorted(os.listdir(folder)):
        if f.lower().rsplit(".", 1)[-1] not in ("jpg", "jpeg", "png", "bmp"):
            continue
        img = Image.open(os.path.join(folder, f)).convert("RGB").resize((w, h), Image.BILINEAR)
        out.append(np.asarray(img, np.float32).transpose(2, 0, 1))
    if c != 3 or not out:
        raise ValueError(f"{folder}: no photos, or a model input of {c} channels")
    return np.stack(out)


def onnxruntime_outputs(path, x):
    """onnxruntime's output for x, and its error at the whole batch if it has one (a file whose
    exporter fixed the batch runs one item at a time: the reference is still taken)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 2
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    try:
        return s.run(None, {name: x})[0], None
    except Exception as e:  # noqa: BLE001 - recorded in the row
        err = f"batch of {len(x)}: {e}"[:600]
    return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]), err


def prepare(work, imgdir, specs):
    torch.set_num_threads(2)
    for spec in specs:
        name = name_of(spec)
        rec = {"model": name, "family": spec.split(":")[0] if ":" in spec else "torchvision",
               "torch": torch.__version__, "exporters": {}}
        t0 = time.time()
        try:
            net = export_models.build(spec).eval()
            size = export_models.input_size(net)
            rec["input"] = list(size)
            rec["bn_calibrated"] = zoo.calibrate(net, torch.device("cpu"), size)
            torch.save(net.state_dict(), f"{work}/{name}.pt")
            x = photos(imgdir, size)
            x.tofile(f"{work}/{name}.inputs.f32")
            rec["photos"] = len(x)
            xn = (x - MEAN) / STD
            # PyTorch's own fp32 on the CPU (no TF32): beside onnxruntime's, how far two
            # correct fp32 engines land apart on these weights.
            with torch.no_grad():
                net(torch.from_numpy(xn)).numpy().astype("<f4").tofile(f"{work}/{name}.cpu32.f32")
            for exporter in EXPORTERS:
                e = rec["exporters"][exporter] = {}
                path = f"{work}/{exporter}/{name}.onnx"
                os.makedirs(os.path.dirname(path), exist_ok=True)
                try:
                    export_models.export(net, torch.randn(1, *size), path, exporter)
                except Exception as err:  # noqa: BLE001 - PyTorch's own error is the row
                    e["export_error"] = f"{type(err).__name__}: {err}"[:600]
                    continue
                try:
                    y, e["onnxruntime_error"] = onnxruntime_outputs(path, xn)
                    y.astype("<f4").tofile(f"{work}/{exporter}/{name}.ort.f32")
                except Exception as err:  # noqa: BLE001
                    e["onnxruntime_error"] = f"{type(err).__name__}: {err}"[:600]
        except Exception as err:  # noqa: BLE001 - every failure is recorded, the rest go on
            rec["error"] = f"{type(err).__name__}: {err}"[:600]
        rec["seconds"] = round(time.time() - t0, 1)
        json.dump(rec, open(f"{work}/{name}.prep.json", "w"), indent=1)
        print("prepared", json.dumps(rec)[:400], flush=True)


def wait_for(path, seconds):
    end = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > end:
            return False
        time.sleep(0.2)
    return True


def torch_side(work, specs):
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    for spec in specs:
        name = name_of(spec)
        if not wait_for(f"{work}/{name}.prep.json", 600):
            return
        prep = json.load(open(f"{work}/{name}.prep.json"))
        rec = {"model": name, "torch": torch.__version__}
        t0 = time.time()
        net = None
        try:
            if "error" in prep:
                raise RuntimeError("not prepared: " + prep["error"])
            net = export_models.build(spec)
            net.load_state_dict(torch.load(f"{work}/{name}.pt"))
            net = net.eval().to(dev)
            x = np.fromfile(f"{work}/{name}.inputs.f32", "<f4").reshape(-1, *prep["input"])
            xn = torch.from_numpy((x - MEAN) / STD).to(dev)
            with torch.no_grad():
                net(xn).float().cpu().numpy().astype("<f4").tofile(f"{work}/{name}.torch32.f32")
                net = net.half().to(memory_format=torch.channels_last)
                y = net(xn.half().contiguous(memory_format=torch.channels_last))
                y.float().cpu().numpy().astype("<f4").tofile(f"{work}/{name}.torch16.f32")
            rec["torch_graph_ms"] = {}
            for b in BATCHES:
                xb = torch.randn(b, *prep["input"], device=dev).half().contiguous(
                    memory_format=torch.channels_last)
                rec["torch_graph_ms"][str(b)] = zoo.time_graph(net, xb)
        except Exception as err:  # noqa: BLE001 - recorded; the models after it go on
            rec["torch_error"] = f"{type(err).__name__}: {err}"[:600]
        rec["seconds"] = round(time.time() - t0, 1)
        json.dump(rec, open(f"{work}/{name}.torch.json", "w"), indent=1)
        print("torch", json.dumps(rec)[:300], flush=True)
        del net
        torch.cuda.empty_cache()
        if not wait_for(f"{work}/{name}.checked", 600):
            return


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("prepare", "torch"):
        sys.exit(__doc__)
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        torch_side(sys.argv[2], sys.argv[3:])


if __name__ == "__main__":
    main()
