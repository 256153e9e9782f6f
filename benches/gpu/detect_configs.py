"""The committed detection configurations as a user runs them, GPU against CPU: two servers
started by benches/gpu/detect_backends.sh (configs/yolo.toml or configs/detect_classify.toml on
PORT_CPU, its _gpu.toml twin on PORT_GPU, the generated models of scripts/make-models), every
photo of IMGDIR asked of both through `infer_detect`, the detections matched as
detect_goal.py matches them (class by class, greedily by IoU; equal when every corner is within
1 pixel) and each matched box's crop class compared. The two pipelines decode JPEGs with
different decoders (nvJPEG, libjpeg-turbo), whose pixels may differ by a few levels, so a box
near the threshold may differ: reported, per photo, not required equal. Writes OUT.json.

usage: detect_configs.py NAME IMGDIR PORT_CPU PORT_GPU OUT.json
"""
import json
import sys

import detect_goal as g


def main():
    name, imgdir, port_cpu, port_gpu, out = sys.argv[1:6]
    items = g.photos(imgdir)
    cpu, gpu = g.served(int(port_cpu), items), g.served(int(port_gpu), items)
    rows, same_all = [], True
    for n, _ in items:
        (cb, cc), (gb, gc) = cpu[n], gpu[n]
        pairs, only_cpu, only_gpu = g.match(cb.tolist(), gb.tolist())
        worst = max([p[2] for p in pairs], default=0.0)
        crops_same = sum(cc[i] == gc[j] for i, j, _ in pairs)
        same = only_cpu == 0 and only_gpu == 0 and worst <= 1.0 and crops_same == len(pairs)
        same_all &= same
        rows.append({"photo": n, "cpu_boxes": len(cb), "gpu_boxes": len(gb),
                     "matched": len(pairs), "max_corner_px": round(worst, 4),
                     "crop_classes_equal": crops_same, "same": same})
        print(json.dumps(rows[-1]), flush=True)
    json.dump({"config": name, "all_same": same_all, "rows": rows}, open(out, "w"), indent=1)
    print(f"{name}: GPU pipeline's detections equal the CPU pipeline's on every photo: {same_all}")


if __name__ == "__main__":
    main()
