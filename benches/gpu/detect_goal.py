"""The detection goals' Python side on the device (benches/gpu/detect_goal.sh drives it).

usage: detect_goal.py prepare WORK IMGDIR
       detect_goal.py boxes WORK IMGDIR PORT NAME      (our server's boxes vs ultralytics')
       detect_goal.py reference WORK IMGDIR SECONDS    (ultralytics' fp16 loop + the classifier)
       detect_goal.py fp16self WORK IMGDIR             (PyTorch's fp16 boxes against themselves)
       detect_goal.py variant WORK NAME SECTION.KEY=VALUE ...   (a gpu16 TOML with edits)
       detect_goal.py nodes BEFORE AFTER               (per node, between two /metrics reads)
       detect_goal.py served WORK IMGDIR PORT NAME     (our server's boxes, kept for `same`)
       detect_goal.py same WORK BASE                   (every kept run's boxes against BASE's)

prepare: YOLOv8n from ultralytics' YAML and torchvision's ResNet-18, seeded weights, BatchNorm
statistics calibrated on random images (export_models.build, zoo.calibrate), nothing
downloaded; both exported by PyTorch's TorchScript exporter (WORK/yolov8n.onnx, dynamic batch,
ultralytics' export mode; WORK/resnet18.onnx). With random weights the class logits are huge
and their sigmoids saturate at 1.0 on most anchors, so every score ties and any threshold keeps
all or nothing. The last convolution of each class branch is therefore scaled and shifted
(one affine map of the logits, ranks unchanged) so that the logits spread as a trained head's
do and, on these photos letterboxed as ultralytics letterboxes them, 30 anchors a photo score
above ultralytics' default conf 0.25 on average (several boxes a photo after NMS). Writes
WORK/goal.json (conf, photos, anchors over conf) and the TOMLs our server runs:
WORK/detect_classify_{fp16,fp32,cpu}.toml (configs/detect_classify.toml's pipeline: decoding,
letterbox and crops on the CPU) and WORK/detect_classify_gpu{16,32}.toml
(configs/detect_classify_gpu.toml's: nvJPEG, LetterBoxTensor, CropTensor; the models in fp16 or
fp32).

boxes: the detections our server returns through `infer_detect` (a minimal Thrift binary
client below: the device has no `thrift` package) for each photo (for the GPU pipelines also
against ultralytics on the photo as nvJPEG decodes it: `decode_nvjpeg`), against ultralytics' own
`predict` on the same weights and photo (square letterbox, `rect=False`, as our LetterBoxMat;
same conf, IoU 0.7, max_det 300): PyTorch fp32 on the CPU for our fp32, gpu32 and CPU runs (on
the GPU PyTorch's convolutions may use TF32), fp16 on the GPU for our fp16 and gpu16 runs.
Boxes are matched class by class, greedily by IoU; a box matches when its class is equal and
every corner within 1 pixel. Writes WORK/boxes-NAME.json.

reference: ultralytics' fp16 `predict` loop (its defaults otherwise: rectangular letterbox),
one photo at a time as a Python service runs it, each box cropped (every pixel it touches, as
CropMat), resized to 224×224, normalised and classified by ResNet-18 in PyTorch fp16 in one
batch a photo; photos/s over SECONDS after a warm-up. Writes WORK/reference.json.

fp16self: ultralytics' fp16 predict on every photo (OpenCV's decode) as `boxes` runs it (one
photo at a time), against the same weights in fp16 run other ways PyTorch itself runs them: all
photos in one batch, and with cuDNN's autotuner on (`torch.backends.cudnn.benchmark`), which
picks other convolution algorithms. Boxes compared as `boxes` does. Writes WORK/fp16self.json.

variant: WORK/detect_classify_gpu16.toml with each SECTION.KEY set to VALUE (written as given:
quote strings), into WORK/detect_classify_NAME.toml; a top-level key is `.KEY`.

served: the boxes and crop classes our server returns through `infer_detect` for each photo,
one photo at a time (so each runs as a batch of 1 in every node), into WORK/served-NAME.json.

same: every WORK/served-*.json against WORK/served-BASE.json, value for value (servers that
differ only in where work runs, not in what is computed, must agree exactly); writes
WORK/same.json.

nodes: each node's items, batch size, busy and queue-wait time an item, from two reads of the
server's /metrics (files), and JSON of the same on the last line.
"""
import glob
import json
import math
import os
import re
import socket
import struct
import sys
import time
import warnings

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import export_models  # noqa: E402
import zoo  # noqa: E402

warnings.filterwarnings("ignore")
IOU, MAX_DET, ANCHORS_A_PHOTO = 0.7, 300, 30
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def photos(imgdir):
    names = sorted(f for f in os.listdir(imgdir)
                   if f.lower().rsplit(".", 1)[-1] in ("jpg", "jpeg", "png", "bmp"))
    return [(n, open(os.path.join(imgdir, n), "rb").read()) for n in names]


def decode(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def decode_nvjpeg(data):
    """The photo as the GPU pipeline decodes it: a JPEG by nvJPEG (torchvision's decode_jpeg on
    the GPU), anything else by OpenCV (the pipeline's CPU fallback); BGR, as `decode`."""
    from torchvision.io import ImageReadMode, decode_jpeg
    if data[:2] != b"\xff\xd8":
        return decode(data)
    rgb = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                      mode=ImageReadMode.RGB, device="cuda")
    return rgb.permute(1, 2, 0).cpu().numpy()[:, :, ::-1].copy()


def yolo(work):
    """ultralytics' YOLO object holding the same weights."""
    from ultralytics import YOLO
    y = YOLO("yolov8n.yaml")
    y.model.load_state_dict(torch.load(f"{work}/yolov8n.pt"))
    y.model.eval()
    return y


def classifier(work):
    net = zoo.build("resnet18").eval()
    net.load_state_dict(torch.load(f"{work}/resnet18.pt"))
    return net


# The detector and its post-processing, the same in both pipelines.
DETECTOR = """[detector]
backend = "SyncTensor[TensorrtTensor]"
model = "{work}/yolov8n.onnx"
{device}
{output}mean = "0, 0, 0"
std = "255, 255, 255"
instance_num = {det_instances}
max = {det_max}
next = "postproc"

[postproc]
backend = "PostProcYoloV8"
classes = 80
conf_thres = {conf}
iou_thres = {iou}
max_det = {max_det}
instance_num = {post_instances}
next = "boxes"
"""

TOML = ("""batching_timeout = 2

[decoder]
backend = "DecodeMat"
instance_num = 6
next = "letterbox"

[letterbox]
backend = "SyncTensor[Sequential[LetterBoxMat,cvtColorMat,Mat2Tensor]]"
resize_h = 640
resize_w = 640
pad_val = 114
color = "rgb"
instance_num = 6
next = "detector"

"""
    + DETECTOR
    + """
[boxes]
backend = "MapReduce"
map = "decoder[result:data,color:color],postproc[result:TASK_BOX_KEY]"
split = "TASK_BOX_KEY"
jump = "crop"
merge = "result"

[crop]
backend = "SyncTensor[Sequential[CropMat,ResizeMat,cvtColorMat,Mat2Tensor]]"
resize_h = 224
resize_w = 224
color = "rgb"
instance_num = 6
next = "classifier"

[classifier]
backend = "SyncTensor[Sequential[TensorrtTensor,SoftmaxArgMax]]"
model = "{work}/resnet18.onnx"
{device}
mean = "123.675, 116.28, 103.53"
std = "58.395, 57.120, 57.375"
instance_num = {cls_instances}
max = {cls_max}
""")


TOML_GPU = ("""batching_timeout = 2

[gpu_decoder]
backend = "SyncTensor[DecodeTensor]"
instance_num = 4
max = 16
next = "cpu_decoder"

[cpu_decoder]
filter = "or"
backend = "SyncTensor[Sequential[DecodeMat,UploadMat]]"
instance_num = 2
next = "letterbox"

[letterbox]
backend = "SyncTensor[Sequential[LetterBoxTensor,cvtColorTensor]]"
resize_h = 640
resize_w = 640
pad_val = 114
color = "rgb"
instance_num = 4
max = 16
next = "detector"

"""
    + DETECTOR
    + """
[boxes]
backend = "MapReduce"
map = "cpu_decoder[result:data,color:color],postproc[result:TASK_BOX_KEY]"
split = "TASK_BOX_KEY"
jump = "crop"
merge = "result"

[crop]
backend = "SyncTensor[Sequential[CropTensor,ResizeTensor,cvtColorTensor]]"
resize_h = 224
resize_w = 224
color = "rgb"
instance_num = 4
max = 32
next = "classifier"

[classifier]
backend = "SyncTensor[Sequential[TensorrtTensor,SoftmaxArgMax]]"
model = "{work}/resnet18.onnx"
{device}
mean = "123.675, 116.28, 103.53"
std = "58.395, 57.120, 57.375"
instance_num = {cls_instances}
max = {cls_max}
""")


def letterboxed(imgdir):
    """The photos as ultralytics' predict feeds its model: square letterbox, RGB, /255."""
    from ultralytics.data.augment import LetterBox
    box = LetterBox((640, 640), auto=False)
    xs = []
    for _, data in photos(imgdir):
        img = box(image=decode(data))
        xs.append(torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(xs)


def spread_scores(det, x):
    """Scales and shifts each class branch's last convolution (logit → a·logit + b) so that the
    anchors' best logits have a standard deviation of 1.5 and 30 anchors a photo score above
    0.25. Returns how many anchors a photo then do."""
    head = det.model[-1]
    convs = [branch[-1] for branch in head.cv3]
    seen = []
    hooks = [c.register_forward_hook(lambda m, i, o: seen.append(o.amax(1).flatten()))
             for c in convs]
    with torch.no_grad():
        det(x)
    for h in hooks:
        h.remove()
    best = torch.cat(seen).double()
    a = 1.5 / float(best.std())
    k = ANCHORS_A_PHOTO * len(x)
    b = math.log(0.25 / 0.75) - a * float(best.sort(descending=True).values[k - 1])
    with torch.no_grad():
        for c in convs:
            c.weight.mul_(a)
            c.bias.mul_(a).add_(b)
        scores = det(x)[:, 4:].amax(1)
    return float((scores > 0.25).sum()) / len(x)


def prepare(work, imgdir):
    torch.set_num_threads(8)
    det = export_models.build("ultralytics:yolov8n").eval()
    zoo.calibrate(det, torch.device("cpu"), (3, 640, 640))
    over = spread_scores(det, letterboxed(imgdir))
    torch.save(det.state_dict(), f"{work}/yolov8n.pt")
    export_models.export(det, torch.randn(1, 3, 640, 640), f"{work}/yolov8n.onnx", "torchscript")
    cls = zoo.build("resnet18").eval()
    zoo.calibrate(cls, torch.device("cpu"), (3, 224, 224))
    torch.save(cls.state_dict(), f"{work}/resnet18.pt")
    export_models.export(cls, torch.randn(1, 3, 224, 224), f"{work}/resnet18.onnx", "torchscript")
    conf = 0.25
    rec = {"conf": conf, "iou": IOU, "max_det": MAX_DET, "photos": [n for n, _ in photos(imgdir)],
           "anchors_over_conf_a_photo": over, "torch": torch.__version__}
    import ultralytics
    rec["ultralytics"] = ultralytics.__version__
    for name, device, precision in (("fp16", "gpu", "fp16"), ("fp32", "gpu", "fp32"),
                                    ("cpu", "cpu", "fp32"), ("gpu16", "gpu", "fp16"),
                                    ("gpu32", "gpu", "fp32")):
        timed = name in ("fp16", "gpu16")
        on_gpu = name.startswith("gpu")
        template = TOML_GPU if on_gpu else TOML
        text = template.format(work=work, conf=conf, iou=IOU, max_det=MAX_DET,
                           post_instances=4 if on_gpu else 3,
                           # The images' pipeline keeps the head on the GPU for PostProcYoloV8.
                           output='output = "gpu"\n' if on_gpu else "",
                           device=f'device = "{device}"\nprecision = "{precision}"',
                           # Only the fp16 and gpu16 servers are timed: the others check boxes one
                           # photo at a time, and tune (fp32) just batch 1.
                           # With the head copied to the host the detector's time is host work
                           # (1.9 ms a photo): 6 instances × max 8 ran fastest. With the head
                           # on the GPU, 2 × max 16 did (H100, detect-tp99-2026-12-06-h100-
                           # a697cb3: TP99 17.4 ms at 20 × 1 against 23.2 with 6 × 8).
                           det_instances=(2 if on_gpu else 6) if timed else 1,
                           det_max=(16 if on_gpu else 8) if timed else 1,
                           # ~10,000 crops/s at 800 photos/s saturated 2 instances.
                           cls_instances=4 if timed else 1,
                           cls_max=32 if timed else 8)
        open(f"{work}/detect_classify_{name}.toml", "w").write(text)
    json.dump(rec, open(f"{work}/goal.json", "w"), indent=1)
    print(json.dumps(rec))


# A minimal Thrift binary-protocol client for infer_detect (strict, buffered framing).
def _call(sock, r, seq, data):
    """One call: the message header, the args struct (field 1: InferenceParams, whose fields
    are uuid and data, then its stop), the args' stop; then the reply read from `r`."""
    name = b"infer_detect"
    params = (b"\x0b\x00\x01" + struct.pack(">i", 4) + b"goal"
              + b"\x0b\x00\x02" + struct.pack(">i", len(data)) + data + b"\x00")
    msg = (struct.pack(">I", 0x80010001) + struct.pack(">i", len(name)) + name
           + struct.pack(">i", seq) + b"\x0c\x00\x01" + params + b"\x00")
    sock.sendall(msg)
    version, = struct.unpack(">I", r.read(4))
    n, = struct.unpack(">i", r.read(4))
    r.read(n)
    r.read(4)
    body = _struct(r)
    if version & 0xFF == 3:
        raise RuntimeError(body.get(1, b"").decode(errors="replace"))
    return body


def _value(r, t):
    if t == 2:
        return r.read(1) != b"\x00"
    if t == 3:
        return r.read(1)[0]
    if t == 4:
        return struct.unpack(">d", r.read(8))[0]
    if t == 6:
        return struct.unpack(">h", r.read(2))[0]
    if t == 8:
        return struct.unpack(">i", r.read(4))[0]
    if t == 10:
        return struct.unpack(">q", r.read(8))[0]
    if t == 11:
        n, = struct.unpack(">i", r.read(4))
        return r.read(n)
    if t == 12:
        return _struct(r)
    if t in (14, 15):
        et = r.read(1)[0]
        n, = struct.unpack(">i", r.read(4))
        return [_value(r, et) for _ in range(n)]
    raise ValueError(f"thrift type {t}")


def _struct(r):
    out = {}
    while True:
        t = r.read(1)[0]
        if t == 0:
            return out
        fid, = struct.unpack(">h", r.read(2))
        out[fid] = _value(r, t)


def served(port, items):
    """(boxes [n, 6], crop classes [n]) per photo, from our server's infer_detect."""
    out = {}
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        r = s.makefile("rb")
        for seq, (name, data) in enumerate(items):
            body = _call(s, r, seq, data)
            dets = body[0][1]
            out[name] = (np.array([[d[1], d[2], d[3], d[4], d[5], d[6]] for d in dets],
                                  np.float64).reshape(-1, 6),
                         [d.get(8) for d in dets])
    return out


def iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(a[:4] == b[:4])


def match(ours, theirs):
    """Greedy by IoU, class by class: matched pairs' largest corner difference, and the
    boxes of each side left over."""
    used, pairs = set(), []
    for i, a in enumerate(ours):
        best, bj = -1.0, None
        for j, b in enumerate(theirs):
            if j in used or int(a[5]) != int(b[5]):
                continue
            v = iou(a, b)
            if v > best:
                best, bj = v, j
        if bj is not None and best > 0.5:
            used.add(bj)
            pairs.append((i, bj, float(np.abs(np.array(a[:4]) - np.array(theirs[bj][:4])).max())))
    return pairs, len(ours) - len(pairs), len(theirs) - len(used)


def boxes(work, imgdir, port, name):
    goal = json.load(open(f"{work}/goal.json"))
    items = photos(imgdir)
    ours = served(port, items)
    half = name.endswith("16")
    y = yolo(work)
    device = 0 if half else "cpu"
    # The GPU pipelines decode JPEGs with nvJPEG, whose pixels differ from OpenCV's by a few
    # levels: their boxes are judged against ultralytics on OpenCV's decode (what a user
    # compares with) and on nvJPEG's (the same input pixels).
    decoders = {"opencv": decode}
    if name.startswith("gpu"):
        decoders["nvjpeg"] = decode_nvjpeg
    rec = {"run": name, "conf": goal["conf"]}
    for label, dec in decoders.items():
        rows, ok = [], True
        for n, data in items:
            r = y.predict(dec(data), imgsz=640, conf=goal["conf"], iou=IOU, max_det=MAX_DET,
                          half=half, device=device, rect=False, verbose=False)[0].boxes
            theirs = np.concatenate([r.xyxy.cpu().numpy(), r.conf.cpu().numpy()[:, None],
                                     r.cls.cpu().numpy()[:, None]], 1).astype(np.float64)
            mine, crop = ours[n]
            pairs, only_ours, only_theirs = match(mine.tolist(), theirs.tolist())
            worst = max([p[2] for p in pairs], default=0.0)
            same = only_ours == 0 and only_theirs == 0 and worst <= 1.0
            ok &= same
            rows.append({"photo": n, "decoder": label, "ours": len(mine),
                         "ultralytics": len(theirs), "matched": len(pairs),
                         "only_ours": only_ours, "only_ultralytics": only_theirs,
                         "max_corner_px": round(worst, 4), "same": same,
                         "crop_classes": sum(c is not None for c in crop)})
            print(json.dumps(rows[-1]), flush=True)
        key = "" if label == "opencv" else f"_{label}"
        rec[f"all_same{key}"], rec[f"rows{key}"] = ok, rows
        print(f"{name}: every photo's boxes equal ultralytics' on {label}'s decode (≤ 1 px): {ok}")
    json.dump(rec, open(f"{work}/boxes-{name}.json", "w"), indent=1)


def reference(work, imgdir, seconds):
    goal = json.load(open(f"{work}/goal.json"))
    items = [(n, decode(d)) for n, d in photos(imgdir)]
    y = yolo(work)
    cls = classifier(work).cuda().half().to(memory_format=torch.channels_last)
    mean, std = MEAN.cuda().half(), STD.cuda().half()

    def one(img):
        r = y.predict(img, imgsz=640, conf=goal["conf"], iou=IOU, max_det=MAX_DET, half=True,
                      device=0, verbose=False)[0]
        xyxy = r.boxes.xyxy.cpu().numpy()
        h, w = img.shape[:2]
        crops = []
        for x1, y1, x2, y2 in xyxy:
            a = min(max(math.floor(x1), 0), w - 1)
            b = min(max(math.floor(y1), 0), h - 1)
            c = min(max(math.ceil(x2), a + 1), w)
            d = min(max(math.ceil(y2), b + 1), h)
            part = cv2.resize(img[b:d, a:c], (224, 224), interpolation=cv2.INTER_LINEAR)
            crops.append(cv2.cvtColor(part, cv2.COLOR_BGR2RGB))
        if not crops:
            return 0
        x = torch.from_numpy(np.stack(crops)).cuda().permute(0, 3, 1, 2).half()
        with torch.no_grad():
            p = torch.softmax(cls(((x - mean) / std).contiguous(
                memory_format=torch.channels_last)).float(), 1)
        k = p.argmax(1).cpu()
        return len(k)

    for img in [i for _, i in items] * 3:
        one(img)
    torch.cuda.synchronize()
    n, boxes_seen, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _, img in items:
            boxes_seen += one(img)
            n += 1
    dt = time.perf_counter() - t0
    rec = {"photos_per_s": n / dt, "photos": n, "seconds": dt, "boxes_per_photo": boxes_seen / n,
           "conf": goal["conf"]}
    json.dump(rec, open(f"{work}/reference.json", "w"), indent=1)
    print(json.dumps(rec))


def fp16self(work, imgdir):
    goal = json.load(open(f"{work}/goal.json"))
    items = [(n, decode(d)) for n, d in photos(imgdir)]
    y = yolo(work)
    kw = dict(imgsz=640, conf=goal["conf"], iou=IOU, max_det=MAX_DET, half=True, device=0,
              rect=False, verbose=False)

    def table(results):
        out = []
        for r in results:
            b = r.boxes
            out.append(np.concatenate([b.xyxy.cpu().numpy(), b.conf.cpu().numpy()[:, None],
                                       b.cls.cpu().numpy()[:, None]], 1).astype(np.float64))
        return out

    base = table([y.predict(img, **kw)[0] for _, img in items])
    ways = {"one batch": table(y.predict([img for _, img in items], batch=len(items), **kw))}
    torch.backends.cudnn.benchmark = True
    for _, img in items:  # the autotuner's own trials
        y.predict(img, **kw)
    ways["cudnn.benchmark"] = table([y.predict(img, **kw)[0] for _, img in items])
    torch.backends.cudnn.benchmark = False
    rec = {"conf": goal["conf"], "ways": {}}
    for way, got in ways.items():
        rows = []
        for (n, _), mine, theirs in zip(items, got, base):
            pairs, only_a, only_b = match(mine.tolist(), theirs.tolist())
            worst = max([p[2] for p in pairs], default=0.0)
            rows.append({"photo": n, "boxes": len(mine), "one_at_a_time": len(theirs),
                         "matched": len(pairs), "only_this_way": only_a,
                         "only_one_at_a_time": only_b, "max_corner_px": round(worst, 4),
                         "same": only_a == 0 and only_b == 0 and worst <= 1.0})
        differ = [r["photo"] for r in rows if not r["same"]]
        rec["ways"][way] = {"photos_differing": differ, "rows": rows}
        print(f"PyTorch fp16, {way} against one photo at a time: {len(differ)} of {len(rows)} "
              f"photos differ {differ}", flush=True)
    json.dump(rec, open(f"{work}/fp16self.json", "w"), indent=1)


def served_dump(work, imgdir, port, name):
    rec = {n: {"boxes": b.tolist(), "classes": c}
           for n, (b, c) in served(port, photos(imgdir)).items()}
    json.dump(rec, open(f"{work}/served-{name}.json", "w"))
    print(f"{name}: {sum(len(v['boxes']) for v in rec.values())} boxes on {len(rec)} photos")


def same(work, base):
    want = json.load(open(f"{work}/served-{base}.json"))
    rec = {"base": base, "runs": {}}
    for path in sorted(glob.glob(f"{work}/served-*.json")):
        name = os.path.basename(path)[len("served-"):-len(".json")]
        if name == base:
            continue
        got = json.load(open(path))
        differ = sorted(n for n in want if got.get(n) != want[n])
        rec["runs"][name] = {"photos": len(want), "photos_differing": differ}
        print(f"{name} against {base}: {len(want) - len(differ)} of {len(want)} photos equal "
              f"(boxes and crop classes){'; differing: ' + ', '.join(differ) if differ else ''}")
    json.dump(rec, open(f"{work}/same.json", "w"), indent=1)


def variant(work, name, edits):
    lines = open(f"{work}/detect_classify_gpu16.toml").read().splitlines()
    for edit in edits:
        target, value = edit.split("=", 1)
        section, key = target.rsplit(".", 1)
        start = 0 if not section else lines.index(f"[{section}]") + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        at = next((i for i in range(start, end) if lines[i].split("=")[0].strip() == key), None)
        if at is None:
            lines.insert(start, f"{key} = {value}")
        else:
            lines[at] = f"{key} = {value}"
    open(f"{work}/detect_classify_{name}.toml", "w").write("\n".join(lines) + "\n")


def nodes(before, after):
    def read(path):
        v = {}
        for line in open(path):
            m = re.match(r'torchpipe_node_(\w+)\{node="([^"]+)"\} ([0-9.e+-]+)', line)
            if m:
                v.setdefault(m[2], {})[m[1]] = float(m[3])
        return v
    a, b = read(before), read(after)
    rec = {}
    for node, x in b.items():
        d = {k: x[k] - a.get(node, {}).get(k, 0.0) for k in x}
        items = d.get("items_total", 0)
        if not items:
            continue
        batches = max(d.get("batches_total", 0), 1)
        rec[node] = {"items": int(items), "batch": items / batches,
                     "busy_ms_a_batch": 1e3 * d.get("busy_seconds_total", 0) / batches,
                     "wait_ms_an_item": 1e3 * d.get("queue_wait_seconds_total", 0) / items,
                     "instances": int(x.get("instances", 0))}
        r = rec[node]
        print(f"{node:12} items {r['items']:7} batch {r['batch']:5.1f} busy ms/batch "
              f"{r['busy_ms_a_batch']:6.2f} wait ms/item {r['wait_ms_an_item']:6.2f} "
              f"instances {r['instances']}")
    print(json.dumps(rec))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "variant":
        variant(sys.argv[2], sys.argv[3], sys.argv[4:])
        sys.exit(0)
    if cmd == "nodes":
        nodes(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if cmd == "same":
        same(sys.argv[2], sys.argv[3])
        sys.exit(0)
    work, imgdir = sys.argv[2], sys.argv[3]
    if cmd == "fp16self":
        fp16self(work, imgdir)
    elif cmd == "prepare":
        prepare(work, imgdir)
    elif cmd == "boxes":
        boxes(work, imgdir, int(sys.argv[4]), sys.argv[5])
    elif cmd == "served":
        served_dump(work, imgdir, int(sys.argv[4]), sys.argv[5])
    elif cmd == "reference":
        reference(work, imgdir, float(sys.argv[4]))
    else:
        sys.exit(__doc__)
