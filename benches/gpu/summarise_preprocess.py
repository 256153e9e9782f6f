"""Merges preprocess-check's and torchvision_decode.py's JSON into the issue's record:
{device, date, commit, batches: [{batch, ours_per_s, torchvision_per_s, max_abs_diff}], …}."""
import datetime
import json
import os
import subprocess
import sys


def device():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main(check_path, tv_path, out_path):
    check = json.load(open(check_path))
    tv = json.load(open(tv_path))
    tv_by = {r["batch"]: r for r in tv["timings"]}
    batches = []
    for r in check["timings"]:
        t = tv_by.get(r["batch"], {})
        batches.append({
            "batch": r["batch"],
            "ours_per_s": round(r["decode_resize_cvtcolor"]),
            "torchvision_per_s": round(t.get("decode_only", 0)),
            "max_abs_diff": check["max_abs_diff"],
            "ours_decode_only_per_s": round(r["decode_only"]),
            "ours_hybrid_decoder_only_per_s": round(r["decode_resize_cvtcolor_hybrid_only"]),
            "torchvision_decode_resize_per_s": round(t.get("decode_resize", 0)),
        })
    doc = {
        "device": device(),
        "date": datetime.date.today().isoformat(),
        "commit": os.environ.get("COMMIT", "unknown"),
        "what": "node batch of JPEGs (timing_files, cycled) → ours: DecodeTensor+ResizeTensor+"
                "cvtColorTensor (one node, one instance, fused resize+swap to [3,224,224] f32); "
                "torchvision: decode_jpeg(device='cuda') alone, and + F.interpolate bilinear 224. "
                "Median of rounds of ≥0.5 s, after 10 warm-up batches. max_abs_diff: u8 values "
                "after resize+cvtColor vs the CPU path, over every file both decode.",
        "batches": batches,
        "timing_files": check["timing_files"],
        "torch": tv.get("torch"),
        "diff_histogram": check["diff_histogram_hardware_path"],
        "diff_histogram_hybrid_path": check["diff_histogram_hybrid_path"],
        "diff_histogram_decode_only": check["diff_histogram_decode_only"],
        "per_file": check["per_file"],
        "corrupt": check["corrupt"],
        "mixed_batch_good_decoded": check["mixed_batch_good_decoded"],
        "classes": check["classes"],
    }
    json.dump(doc, open(out_path, "w"), indent=1, ensure_ascii=False)
    for b in batches:
        print(b)


if __name__ == "__main__":
    main(*sys.argv[1:4])
