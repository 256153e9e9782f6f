"""Exports image classifiers as users do, with both of PyTorch's exporters, for the coverage check.

usage: export_models.py OUTDIR EXPORTER MODEL [MODEL ...]

EXPORTER: `torchscript` (torch.onnx.export(..., dynamo=False, opset_version=17), what PyTorch
wrote by default before 2.9) or `dynamo` (torch.onnx.export with no `dynamo` argument, PyTorch's
default call since 2.9: opset 18, weights in OUTDIR/<name>.onnx.data beside the model, the
files left exactly as written). MODEL: a torchvision name (`resnet50`), `timm:<name>`, or
`ultralytics:<name>` (a detector built from ultralytics' own YAML, `yolov8n`, `yolo11n`, at
640×640, its Detect head in the mode ultralytics' ONNX export sets: one `[batch, 4 + 80,
anchors]` output).

Weights are seeded (torch.manual_seed(0)), BatchNorm statistics calibrated on random images as
zoo.py does, nothing downloaded. Runs on the CPU (here, or on the device). Writes
OUTDIR/<exporter>/<name>.onnx and a line of JSON per model, on stdout and appended to
OUTDIR/<exporter>/exports.jsonl: the input size, and the export's error, if any, with PyTorch's
own message.
"""
import json
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
import zoo  # noqa: E402  (the same construction and calibration as the torchvision zoo)

warnings.filterwarnings("ignore")


def ultralytics_detector(name):
    """An ultralytics detector from its YAML (`yolov8n.yaml`: the scale from the name), seeded
    weights, the Detect head set up as ultralytics' exporter sets it for ONNX (`export`,
    `format`), so that forward returns the one tensor ONNX files carry. Not `dynamic`: the
    anchors are then made once per input shape, outside a CUDA graph's capture (PyTorch's
    timing) and as constants in the file; the batch stays dynamic (export's dynamic_axes)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn.tasks import DetectionModel
    torch.manual_seed(0)
    net = DetectionModel(f"{name}.yaml", nc=80, verbose=False)
    for m in net.modules():
        if type(m).__name__ in ("Detect", "v10Detect"):
            m.export, m.format, m.dynamic = True, "onnx", False
    net.pretrained_cfg = {"input_size": (3, 640, 640)}
    return net


def build(spec):
    if spec.startswith("ultralytics:"):
        return ultralytics_detector(spec.split(":", 1)[1])
    if spec.startswith("timm:"):
        import timm
        torch.manual_seed(0)
        net = timm.create_model(spec[5:], pretrained=False)
    else:
        net = zoo.build(spec)
    # Some classifiers start from a zero head (timm's MLP-Mixer; torchvision's ViT, which
    # zoo.build already resets): every logit would be the bias, and any engine would "match".
    for m in net.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and not m.weight.any():
            m.reset_parameters()
    return net


def input_size(net):
    cfg = getattr(net, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))
    return tuple(size)


def export(net, x, path, exporter):
    kw = dict(input_names=["input"], output_names=["output"],
              dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}})
    if exporter == "torchscript":
        torch.onnx.export(net, x, path, dynamo=False, opset_version=17,
                          do_constant_folding=True, **kw)
    else:
        torch.onnx.export(net, x, path, **kw)


def main():
    out, exporter, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    if exporter not in ("torchscript", "dynamo"):
        sys.exit(f"EXPORTER must be torchscript or dynamo, not {exporter!r}")
    folder = os.path.join(out, exporter)
    os.makedirs(folder, exist_ok=True)
    for spec in specs:
        name = spec.split(":")[-1]
        rec = {"model": name, "family": spec.split(":")[0] if ":" in spec else "torchvision",
               "exporter": exporter, "torch": torch.__version__}
        t0 = time.time()
        try:
            net = build(spec).eval()
            rec["input"] = list(input_size(net))
            rec["bn_calibrated"] = zoo.calibrate(net, torch.device("cpu"), rec["input"])
            x = torch.randn(1, *rec["input"])
            path = os.path.join(folder, name + ".onnx")
            # Not under no_grad: there nn.MultiheadAttention takes its fused path, which the
            # TorchScript exporter refuses (aten::_native_multi_head_attention).
            export(net, x, path, exporter)
            rec["file"] = path
        except Exception as e:  # the exporter's own error is the row's content
            rec["export_error"] = f"{type(e).__name__}: {e}"[:2000]
        rec["seconds"] = round(time.time() - t0, 1)
        print(json.dumps(rec), flush=True)
        with open(os.path.join(folder, "exports.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
