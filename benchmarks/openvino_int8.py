"""OpenVINO INT8 two ways, and FP32 beside them: NNCF post-training quantization (several settings) vs our symmetric
Q/DQ ONNX (`--int8-profile tensorrt`) read by OpenVINO, all from the same TFRecord calibration batches.

Run: .venv/bin/python benchmarks/openvino_int8.py -m model.onnx --calib 'train-*.tfrecord' [--val 'val-*.tfrecord'
     --val-json val.json] [--rounds 6] [--tag NAME]
Each variant is written as IR, loaded as an effdet-rt engine and timed in turns with the others (per round: one
untimed run, 4 timed batch-1 runs, one timed batch-8 run); with --val it is also scored on the val set (mAP, AP50)
and its detections are matched to OpenVINO FP32's. Writes benchmarks/results/openvino_int8[_TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from engine_latency import side_by_side
from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def nncf_variant(model, batches, *, ignore_postprocess: bool, preset: str):
    import nncf

    from effdet_rt.engines.build.openvino import input_normalization_op_names, postprocess_op_names

    names = [*input_normalization_op_names(model), *postprocess_op_names(model)] if ignore_postprocess else []
    return nncf.quantize(model, nncf.Dataset(batches), preset=getattr(nncf.QuantizationPreset, preset),
                         subset_size=len(batches),
                         ignored_scope=nncf.IgnoredScope(names=names, validate=False))


def build_variants(onnx_path: Path, batches, work: Path, log=print) -> dict[str, Path]:
    """name -> IR path of every variant."""
    import nncf
    import openvino as ov

    from effdet_rt.calib.quantize import quantize_int8
    from effdet_rt.engines.build.openvino import save_ir
    from effdet_rt.engines.runtime.onnxruntime import read_onnx
    from effdet_rt.onnx.graph import read_metadata

    meta = read_metadata(read_onnx(onnx_path))
    out: dict[str, Path] = {}

    def save(name: str, model, precision: str) -> None:
        out[name] = save_ir(ov, model, work / f"{name}.xml", {**meta, "precision": precision}, compress_to_fp16=False)
        log(f"built {name}")

    save("fp32", ov.convert_model(str(onnx_path)), "fp32")
    save("nncf_default", nncf.quantize(ov.convert_model(str(onnx_path)), nncf.Dataset(batches),
                                       subset_size=len(batches)), "int8")
    save("nncf_ignore_nms", nncf_variant(ov.convert_model(str(onnx_path)), batches, ignore_postprocess=True,
                                         preset="PERFORMANCE"), "int8")
    save("nncf_ignore_nms_mixed", nncf_variant(ov.convert_model(str(onnx_path)), batches, ignore_postprocess=True,
                                               preset="MIXED"), "int8")
    qdq = quantize_int8(onnx_path, work / "qdq_tensorrt.onnx", batches, log=log, profile="tensorrt")
    save("qdq_tensorrt_profile", ov.convert_model(str(qdq)), "int8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", type=Path, required=True)
    parser.add_argument("--calib", required=True)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--val")
    parser.add_argument("--val-json")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tag", default="")
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    from effdet_rt.calib.batches import calibration_batches
    from effdet_rt.engines import load
    from effdet_rt.engines.build.request import onnx_input_size
    from effdet_rt.export.verify import match_detections

    size = onnx_input_size(args.model)
    batches = list(calibration_batches([args.calib], size, 4, args.calib_batches))
    with tempfile.TemporaryDirectory(prefix="effdet-ov-int8-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        paths = build_variants(args.model, batches, work)
        engines = {name: load(path) for name, path in paths.items()}
        rows = {name: {"variant": name} for name in engines}
        if args.val:
            from effdet_rt.infer.evaluate import evaluate_engine

            detections = {}
            for name, engine in engines.items():
                metrics = evaluate_engine(engine, [args.val], args.val_json, num_samples=None, batch_size=8,
                                          max_detections=100)
                rows[name].update(mAP=metrics["AP"], AP50=metrics["AP50"])
            from effdet_rt.calib.batches import encoded_images, resolve_tfrecords
            from effdet_rt.data.preprocess import decode_image

            images = [decode_image(data, where) for data, where in encoded_images(resolve_tfrecords([args.val]))]
            for name, engine in engines.items():
                detections[name] = engine.infer(images)
            for name in engines:
                report = match_detections(detections["fp32"], detections[name], iou_threshold=0.5, score_tolerance=None)
                rows[name]["matched_fp32_iou50"] = report.rate
        ov_default = load(paths["fp32"])  # OpenVINO's own default compute precision (bf16 on BF16 CPUs)
        import openvino as ov

        ov_default.compiled = ov.Core().compile_model(str(paths["fp32"]), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        ov_default.request = ov_default.compiled.create_infer_request()
        timed = {**engines, "fp32_openvino_default_precision": ov_default}
        measured = side_by_side(list(timed.values()), size[0], args.rounds)
        base = measured[0][0]
        for (name, _), (lat, rate) in zip(timed.items(), measured, strict=True):
            rows.setdefault(name, {"variant": name}).update(latency_ms=lat, throughput=rate, latency_vs_fp32=lat / base)
    stem = "openvino_int8" + (f"_{args.tag}" if args.tag else "")
    machine = describe_cpu()
    title = f"OpenVINO INT8 variants of {args.model.name} at {size[0]}x{size[1]}, {args.rounds} rounds in turns ({machine})"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"title": title, "rows": list(rows.values())}, indent=2) + "\n")
    fmt = lambda v, p=3: "—" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [title, "", "| variant | mAP | AP50 | matched FP32 (IoU 0.5) | batch 1 ms | vs FP32 | batch 8 img/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows.values():
        lines.append(f"| {r['variant']} | {fmt(r.get('mAP'))} | {fmt(r.get('AP50'))} | {fmt(r.get('matched_fp32_iou50'))} "
                     f"| {r['latency_ms']:.1f} | {r['latency_vs_fp32']:.3f} | {r['throughput']:.1f} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
