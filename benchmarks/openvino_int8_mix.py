"""OpenVINO INT8 against bf16 on a CPU with bfloat16 arithmetic: where INT8's time goes, and whether leaving the
depthwise convolutions out of INT8 (or running INT8's float parts in bf16) pays.

Run: .venv/bin/python benchmarks/openvino_int8_mix.py WORK [--rounds 8]
WORK is an `engine_latency.py --auto-only --keep WORK` folder (model.onnx, a random D0 at 512, and the demo's
training TFRecords in data/train). Builds, in WORK/openvino_mix/ (reused when there): the bf16 IR, our INT8 IR
(`build --precision int8`: NNCF, post-processing and input normalisation ignored) and the same with every
GroupConvolution (the depthwise convolutions) ignored too. Why: the per-op profiles on an AVX-512 VNNI + BF16 CPU
give the INT8 depthwise convolutions more time than the bf16 ones, while the 1x1 convolutions gain in INT8. Each
IR is compiled with the float parts in f32 and in bf16, timed in turns at batch 1 and 8, and its detections on the
calibration images are matched against ONNX Runtime FP32. Writes benchmarks/results/openvino_int8_mix.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from machine import describe_cpu

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
NAMES = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


def int8_without_depthwise(onnx_path: Path, output: Path, batches: list[np.ndarray]) -> Path:
    """Our NNCF INT8 with the GroupConvolutions in its ignored scope as well."""
    import nncf
    import openvino as ov

    from effdet_rt.engines.build import openvino as builder

    scope = nncf.IgnoredScope

    def with_depthwise(names=None, validate=False, **kwargs):
        return scope(names=names, types=["GroupConvolution"], validate=False)

    nncf.IgnoredScope = with_depthwise
    try:
        model = builder.quantize_with_nncf(builder.convert_onnx(ov, onnx_path), batches, print)
    finally:
        nncf.IgnoredScope = scope
    ov.save_model(model, str(output), compress_to_fp16=False)
    return output


class Compiled:
    def __init__(self, path: Path, hint):
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": os.cpu_count()})
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self.request.infer({0: batch})
        out = {}
        for port in self.compiled.outputs:
            known = [name for name in NAMES if name in port.get_names()]
            out[known[0] if known else sorted(port.get_names())[0]] = np.array(results[port])
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    import openvino as ov

    from effdet_rt.calib.batches import calibration_batches
    from effdet_rt.detections import Detections
    from effdet_rt.engines import load
    from effdet_rt.engines.build.onnxruntime import build_onnxruntime_engine
    from effdet_rt.engines.build.openvino import build_openvino_engine
    from effdet_rt.engines.runtime.base import detections_from_outputs
    from effdet_rt.export.verify import match_detections

    onnx_path, folder = args.work / "model.onnx", args.work / "openvino_mix"
    folder.mkdir(exist_ok=True)
    records = sorted(str(p) for p in (args.work / "data" / "train").glob("*.tfrecord"))
    size = load(onnx_path).input_size
    batches = list(calibration_batches(records, size, 4, 8, log=lambda _: None))
    files = {"fp32": folder / "fp32.onnx", "bf16": folder / "bf16.xml", "int8": folder / "int8.xml",
             "int8_dw_float": folder / "int8_dw_float.xml"}
    if not files["fp32"].exists():
        build_onnxruntime_engine(onnx_path, files["fp32"], precision="fp32", log=print)
    for precision in ("bf16", "int8"):
        if not files[precision].exists():
            build_openvino_engine(onnx_path, files[precision], precision=precision, calibration=lambda: batches,
                                  log=print)
    if not files["int8_dw_float"].exists():
        int8_without_depthwise(onnx_path, files["int8_dw_float"], batches)
    variants = {
        "bf16": Compiled(files["bf16"], ov.Type.bf16),
        "int8, float parts f32 (ours)": Compiled(files["int8"], ov.Type.f32),
        "int8, float parts bf16": Compiled(files["int8"], ov.Type.bf16),
        "int8, depthwise in bf16": Compiled(files["int8_dw_float"], ov.Type.bf16),
        "int8, depthwise in f32": Compiled(files["int8_dw_float"], ov.Type.f32),
    }
    reference_engine = load(files["fp32"])
    reference = Detections.concat([reference_engine.run(b) for b in batches])
    rows = {}
    for name, variant in variants.items():
        detections = Detections.concat([detections_from_outputs(variant.run(b), len(b)) for b in batches])
        rows[name] = {"matched_fp32": match_detections(reference, detections, iou_threshold=0.5,
                                                       score_tolerance=None).rate}
    one, eight = batches[0][:1], np.concatenate(batches)[:8]
    times = {name: ([], []) for name in variants}
    for variant in variants.values():
        variant.run(one)
        variant.run(eight)
    for _ in range(args.rounds):
        for name, variant in variants.items():
            for batch, out in zip((one, eight), times[name], strict=True):
                start = time.perf_counter()
                variant.run(batch)
                out.append(time.perf_counter() - start)
    for name, (ones, eights) in times.items():
        rows[name].update({"batch1_ms": statistics.median(ones) * 1000, "batch8_ms": statistics.median(eights) * 1000})
    for row in rows.values():
        row["batch1_vs_bf16"] = row["batch1_ms"] / rows["bf16"]["batch1_ms"]
        row["batch8_vs_bf16"] = row["batch8_ms"] / rows["bf16"]["batch8_ms"]
    machine = describe_cpu()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "openvino_int8_mix.json").write_text(json.dumps({"machine": machine, "rounds": args.rounds,
                                                                "input_size": list(size), "rows": rows}, indent=2) + "\n")
    lines = [f"OpenVINO INT8 variants vs bf16; D0 {size[0]}, random weights, {args.rounds} rounds in turns ({machine}; "
             "a shared, loaded machine: ratios only)", "",
             "| engine | matched FP32 (IoU >= 0.5) | batch 1 | vs bf16 | batch 8 | vs bf16 |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {row['matched_fp32']:.1%} | {row['batch1_ms']:.1f} ms | {row['batch1_vs_bf16']:.3f} | "
              f"{row['batch8_ms']:.1f} ms | {row['batch8_vs_bf16']:.3f} |" for name, row in rows.items()]
    (RESULTS / "openvino_int8_mix.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
