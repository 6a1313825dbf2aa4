"""ONNX Runtime INT8 with swish kept in float, against the `onnxruntime` profile (swish as QLinearSigmoid +
QLinearMul), and FP32: detections matched and speed measured in turns.

Run: .venv/bin/python benchmarks/int8_swish.py WORK [--rounds 6] [--image-size 512]
WORK is an `engine_latency.py --auto-only --keep WORK` folder (its model.onnx, a random D0, and the demo's
training TFRecords in data/train). Why: the INT8 profiles (op_profile_*.md) give QLinearSigmoid + QLinearMul a third
of an INT8 run, and ONNX Runtime fuses a float x * sigmoid(x) into one QuickGelu kernel; the variant leaves Sigmoid
and Mul out of quantization so that they run in float between DequantizeLinear and QuantizeLinear. Engines already
in WORK/int8_swish/ are reused. Writes benchmarks/results/int8_swish.{json,md}; `op_profile.py` on the two files
gives the per-op tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from machine import describe_cpu

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def build(model: Path, folder: Path, calibration) -> dict[str, Path]:
    import onnxruntime.quantization as quantization
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from effdet_rt.engines.build.onnxruntime import build_onnxruntime_engine

    paths = {name: folder / f"{name}.onnx" for name in ("fp32", "int8", "int8_float_swish")}
    if not paths["fp32"].exists():
        build_onnxruntime_engine(model, paths["fp32"], precision="fp32", log=print)
    if not paths["int8"].exists():
        build_onnxruntime_engine(model, paths["int8"], precision="int8", calibration=calibration, log=print)
    if not paths["int8_float_swish"].exists():
        original = quantization.quantize_static

        def without_swish(*args, **kwargs):  # every op type ONNX Runtime quantizes by default, less Sigmoid and Mul
            kwargs["op_types_to_quantize"] = sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - {"Sigmoid", "Mul"})
            return original(*args, **kwargs)

        quantization.quantize_static = without_swish
        try:
            build_onnxruntime_engine(model, paths["int8_float_swish"], precision="int8", calibration=calibration,
                                     log=print)
        finally:
            quantization.quantize_static = original
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=512)
    args = parser.parse_args()
    from effdet_rt.calib.batches import calibration_batches
    from effdet_rt.detections import Detections
    from effdet_rt.engines import load
    from effdet_rt.export.verify import match_detections

    records = sorted(str(p) for p in (args.work / "data" / "train").glob("*.tfrecord"))
    size = (args.image_size, args.image_size)

    def calibration():
        return calibration_batches(records, size, 4, 8, log=lambda _: None)

    folder = args.work / "int8_swish"
    folder.mkdir(exist_ok=True)
    engines = {name: load(path) for name, path in build(args.work / "model.onnx", folder, calibration).items()}
    images = list(calibration())
    reference = Detections.concat([engines["fp32"].run(b) for b in images])
    rows = {name: {} for name in engines}
    for name in ("int8", "int8_float_swish"):
        detections = Detections.concat([engines[name].run(b) for b in images])
        rows[name]["matched_fp32"] = match_detections(reference, detections, iou_threshold=0.5,
                                                      score_tolerance=None).rate
    one, eight = np.concatenate(images)[:1], np.concatenate(images)[:8]
    times = {name: ([], []) for name in engines}
    for engine in engines.values():
        engine.run(one)
        engine.run(eight)
    for _ in range(args.rounds):
        for name, engine in engines.items():
            for batch, out in zip((one, eight), times[name], strict=True):
                start = time.perf_counter()
                engine.run(batch)
                out.append(time.perf_counter() - start)
    for name, (ones, eights) in times.items():
        rows[name].update({"batch1_ms": statistics.median(ones) * 1000, "batch8_img_s": 8 / statistics.median(eights)})
    for row in rows.values():
        row["batch1_vs_int8"] = row["batch1_ms"] / rows["int8"]["batch1_ms"]
    machine = describe_cpu()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "int8_swish.json").write_text(json.dumps({"machine": machine, "rounds": args.rounds,
                                                         "image_size": args.image_size, "rows": rows}, indent=2) + "\n")
    lines = [f"ONNX Runtime INT8, swish quantized vs in float; D0 {args.image_size}, random weights, {args.rounds} rounds "
             f"in turns ({machine}; a shared, loaded machine: ratios only)", "",
             "| engine | matched FP32 (IoU >= 0.5) | batch 1 | vs INT8 | images/s batch 8 |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in rows.items():
        matched = f"{row['matched_fp32']:.1%}" if "matched_fp32" in row else "—"
        lines.append(f"| {name} | {matched} | {row['batch1_ms']:.1f} ms | {row['batch1_vs_int8']:.3f} | "
                     f"{row['batch8_img_s']:.2f} |")
    (RESULTS / "int8_swish.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
