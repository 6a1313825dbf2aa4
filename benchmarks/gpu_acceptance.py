"""Build FP32/FP16/INT8 TensorRT plans of one ONNX, compare with ONNX Runtime FP32 and trtexec; print a table."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from effdet_rt.data.preprocess import preprocess_batch, read_image
from effdet_rt.engines.build.tensorrt import build_tensorrt_engine
from effdet_rt.engines.runtime.base import load
from effdet_rt.model.boxes import pairwise_iou


def images_from(folder: Path, count: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    return [read_image(p) for p in files]


def top_match(ref, det, min_score=0.3) -> float:
    """Share of reference detections (score >= min_score) found by det with IoU >= 0.5 and the same class."""
    hits = total = 0
    for i in range(len(ref)):
        rb, rs, rc = ref.per_image(i)
        db, _, dc = det.per_image(i)
        for box, cls in zip(rb[rs >= min_score], rc[rs >= min_score], strict=True):
            total += 1
            if len(db):
                iou = pairwise_iou(box[None], db)[0]
                hits += bool(((iou >= 0.5) & (dc == cls)).any())
    return hits / max(total, 1)


def latency_ms(engine, batch: np.ndarray, runs: int = 50) -> float:
    engine.run(batch)
    start = time.perf_counter()
    for _ in range(runs):
        engine.run(batch)
    return (time.perf_counter() - start) / runs * 1000


def trtexec_ms(onnx: Path, precision: str, shape: tuple[int, ...]) -> float | None:
    exe = shutil.which("trtexec")
    if exe is None:
        return None
    flags = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[precision]
    dims = "x".join(map(str, shape))
    result = subprocess.run([exe, f"--onnx={onnx}", f"--shapes=images:{dims}", *flags], capture_output=True, text=True)
    found = re.search(r"GPU Compute Time: min = [\d.]+ ms, max = [\d.]+ ms, mean = ([\d.]+) ms", result.stdout)
    return float(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--tfrecords", default="")
    args = parser.parse_args()
    reference = load(args.onnx)
    images = images_from(args.images, 32)
    batch, _ = preprocess_batch(images[:1], reference.input_size)
    ref = reference.infer(images)
    calibration = None
    if args.tfrecords:
        from effdet_rt.calib.batches import calibration_batches

        calibration = calibration_batches([args.tfrecords], reference.input_size, 8, 10)
    else:  # calibrate on the evaluation images themselves (BCCD has no TFRecords by default)
        full, _ = preprocess_batch(images, reference.input_size)
        calibration = [full[i : i + 8] for i in range(0, len(full) - 7, 8)]
    rows = []
    for precision in ("fp32", "fp16", "int8"):
        plan = args.out / f"d0_{precision}.plan"
        build_tensorrt_engine(args.onnx, plan, precision=precision, workspace_gb=4, min_batch=1, opt_batch=1,
                              max_batch=8, timing_cache=str(args.out / "timing.cache"),
                              calibration=calibration if precision == "int8" else None,
                              calib_cache=str(args.out / "int8.cache"))
        engine = load(plan)
        det = engine.infer(images)
        rows.append({"precision": precision, "match_vs_ort_fp32": round(top_match(ref, det), 4),
                     "effdet_rt_ms_b1": round(latency_ms(engine, batch), 3),
                     "trtexec_ms_b1": trtexec_ms(args.onnx, precision, batch.shape)})
    (args.out / "gpu_acceptance.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = ["| precision | match vs ORT FP32 | effdet-rt ms (b1) | trtexec GPU ms (b1) |", "| --- | --- | --- | --- |"]
    table += [f"| {r['precision']} | {r['match_vs_ort_fp32']:.3f} | {r['effdet_rt_ms_b1']:.2f} | "
              f"{r['trtexec_ms_b1'] if r['trtexec_ms_b1'] is not None else 'n/a'} |" for r in rows]
    (args.out / "gpu_acceptance.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
