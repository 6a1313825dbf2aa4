"""LiteRT accuracy targets on BCCD: the FP32 .tflite scores the checkpoint's mAP (+-0.002) and the full-integer INT8
.tflite stays within 1 mAP point of FP32, on the demo's fine-tuned EfficientDet-Lite0.

Run: .venv/bin/python benchmarks/litert_accuracy.py [--minutes 4] [--checkpoint CKPT --spec SPEC]
Without --checkpoint it runs the demo's training: BCCD (../shared/data/bccd/BCCD) converted as the demo converts
it, Lite0 at 320 fine-tuned from the EfficientNet-Lite0 ImageNet weights (the torch-weights extra) for --minutes,
with the demo's spec (effdet_rt/demo/run.py: demo_spec). Then `export -o *.tflite` FP32 and INT8 (NMS inside, the
file people ship; INT8 calibrated on --calib-batches x 4 BCCD train images) and every engine evaluated on the 87 BCCD
val images with the same COCO evaluation. Writes benchmarks/results/litert_accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from engine_latency import BCCD, RESULTS
from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

FP32_TOLERANCE = 0.002
INT8_MAX_DROP = 0.01


def trained_checkpoint(data, work: Path, minutes: float, log):
    """(checkpoint, spec, epochs): the demo's fine-tuned Lite0 trained for ``minutes``."""
    from effdet_rt.demo.run import (
        DEMO_KEY,
        PRETRAINED_MODEL,
        DemoSettings,
        demo_spec,
        lite0_weights_installed,
        trained_epochs,
    )
    from effdet_rt.trainer.loop import train

    if not lite0_weights_installed():
        raise SystemExit("needs the torch-weights extra (EfficientNet-Lite0 ImageNet weights)")
    settings = DemoSettings(BCCD, work, minutes, PRETRAINED_MODEL.image_size, 8, PRETRAINED_MODEL)
    spec = demo_spec(data, settings, work / "train", DEMO_KEY)
    checkpoint = train(spec, work / "train", DEMO_KEY, log=log, max_seconds=minutes * 60)
    return checkpoint, spec, trained_epochs(checkpoint, DEMO_KEY)


def export_tflite(spec, checkpoint: Path, output: Path, precision: str, data, calib_batches: int, log) -> Path:
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.export.workflow import export_from_spec
    from effdet_rt.spec.overrides import apply_option_values

    exporting = apply_option_values(spec, {
        "export.checkpoint": str(checkpoint), "export.onnx_file": str(output), "export.precision": precision,
        "export.nms": "onnx", "export.min_score_thresh": 0.001,
        "build.calibration.tfrecords": [str(data.train_tfrecords)] if precision == "int8" else [],
        "build.calibration.batch_size": 4, "build.calibration.batches": calib_batches})
    return export_from_spec(exporting, key=DEMO_KEY, verify=precision == "fp32", strict_verify=False, log=log)


def evaluate(engine, data, spec) -> dict[str, float]:
    from effdet_rt.infer.evaluate import evaluate_engine

    metrics = evaluate_engine(engine, [data.val_tfrecords], data.val_json, num_samples=None,
                              batch_size=spec.evaluate.batch_size, max_detections=100)
    return {"mAP": float(metrics["AP"]), "AP50": float(metrics["AP50"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--checkpoint", type=Path, help="a trained Lite0 checkpoint (key: the demo's)")
    parser.add_argument("--spec", type=Path, help="the spec it was trained with (with --checkpoint)")
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="copy the trained checkpoint and its spec here (for --checkpoint)")
    args = parser.parse_args()

    from effdet_rt.demo.data import prepare_demo_data
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines import load

    def log(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare_demo_data(BCCD, work / "data", log=log)
        if args.checkpoint:
            from effdet_rt.spec import load_spec
            from effdet_rt.spec.overrides import apply_option_values

            checkpoint, epochs = args.checkpoint, None
            spec = apply_option_values(load_spec(args.spec), {"dataset.val_tfrecords": [str(data.val_tfrecords)]})
        else:
            checkpoint, spec, epochs = trained_checkpoint(data, work, args.minutes, log)
            if args.keep:
                from effdet_rt.spec import spec_to_yaml

                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(checkpoint, args.keep / checkpoint.name)
                (args.keep / "spec.yaml").write_text(spec_to_yaml(spec))
        rows = {"checkpoint": evaluate(load(checkpoint, key=DEMO_KEY, spec=spec), data, spec)}
        for precision in ("fp32", "int8"):
            start = time.perf_counter()
            path = export_tflite(spec, checkpoint, work / f"litert_{precision}.tflite", precision, data,
                                 args.calib_batches, log)
            seconds = time.perf_counter() - start
            rows[f"litert {precision}"] = {**evaluate(load(path), data, spec), "export_s": round(seconds, 1),
                                           "bytes": path.stat().st_size}
    fp32_gap = rows["litert fp32"]["mAP"] - rows["checkpoint"]["mAP"]
    int8_drop = rows["litert fp32"]["mAP"] - rows["litert int8"]["mAP"]
    result = {"cpu": describe_cpu(), "load_average": os.getloadavg(), "data": data.source,
              "model": f"{spec.model.name} at {spec.model.input_size[0]}, " + (
                  f"fine-tuned from EfficientNet-Lite0 ImageNet weights for {args.minutes:g} min ({epochs} epochs)"
                  if epochs is not None else f"checkpoint {checkpoint.name}"),
              "calibration_images": 4 * args.calib_batches, "rows": rows,
              "fp32_minus_checkpoint": fp32_gap, "fp32_target_met": abs(fp32_gap) <= FP32_TOLERANCE,
              "fp32_minus_int8": int8_drop, "int8_target_met": int8_drop <= INT8_MAX_DROP}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "litert_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# LiteRT accuracy on BCCD val ({result['model']}; {describe_cpu()})", "",
             f"Data: {data.source}. NMS inside the .tflite (TFLite_Detection_PostProcess), scores from 0.001, "
             f"INT8 full-integer calibrated on {result['calibration_images']} BCCD train images.", "",
             "| engine | mAP | AP50 |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {r['mAP']:.4f} | {r['AP50']:.4f} |" for name, r in rows.items()]
    lines += ["", f"- FP32 - checkpoint: {fp32_gap:+.4f} (target +-{FP32_TOLERANCE}): "
              f"{'met' if result['fp32_target_met'] else 'NOT met'}",
              f"- FP32 - INT8: {int8_drop:+.4f} (target <= {INT8_MAX_DROP}): "
              f"{'met' if result['int8_target_met'] else 'NOT met'}",
              f"- load average while it ran: {', '.join(f'{v:.1f}' for v in result['load_average'])}"]
    (RESULTS / "litert_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
