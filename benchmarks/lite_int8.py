"""What ONNX Runtime INT8 gains on the CPU for EfficientDet-Lite0 (ReLU6) vs D0 (swish), at the same input size.

Run: .venv/bin/python benchmarks/lite_int8.py [--image-size 320] [--rounds 8]
Random-weight models (speed only, no mAP: that needs trained models), exported with NMS inside, built as ORT FP32
and INT8 (`onnxruntime` profile, calibrated on BCCD train TFRecords), then all four engines timed in turns
(benchmarks/engine_latency.py's side_by_side: median batch-1 ms, median batch-8 images/s). The figure that matters
is each model's INT8 / FP32 latency ratio, measured side by side. Writes benchmarks/results/lite_int8.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from engine_latency import BCCD, RESULTS, side_by_side
from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

MODELS = ("efficientdet-d0", "efficientdet-lite0")


def build_pair(name: str, image_size: int, work: Path, train_records: str) -> tuple[Path, Path]:
    """Export a random-weight `name` and build its ORT FP32 and INT8 engines."""
    import tf_keras as keras

    from effdet_rt.calib.batches import calibration_batches
    from effdet_rt.checkpoint import model_weights, save_checkpoint
    from effdet_rt.checkpoint.keys import ScryptCost
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines.build.onnxruntime import build_onnxruntime_engine
    from effdet_rt.export.workflow import export_from_spec
    from effdet_rt.model.configs import get_config
    from effdet_rt.model.factory import build_model_from_spec
    from effdet_rt.spec import default_spec, spec_to_yaml
    from effdet_rt.spec.overrides import apply_overrides

    keras.utils.set_random_seed(0)
    spec = apply_overrides(default_spec(), [
        f"model.name={name}", f"model.input_width={image_size}", f"model.input_height={image_size}",
        f"model.anchor_scale={get_config(name).anchor_scale}", "dataset.num_classes=4", "export.nms=onnx",
        "export.min_score_thresh=0.001",
    ])
    folder = work / name
    folder.mkdir()
    ckpt = save_checkpoint(folder / "random.edrt", model_weights(build_model_from_spec(spec)), key=DEMO_KEY,
                           spec_yaml=spec_to_yaml(spec), cost=ScryptCost(log2_n=10))
    onnx_path = export_from_spec(spec, checkpoint=ckpt, output=folder / "model.onnx", key=DEMO_KEY)
    fp32 = build_onnxruntime_engine(onnx_path, folder / "fp32.onnx", precision="fp32", log=lambda _: None)
    int8 = build_onnxruntime_engine(onnx_path, folder / "int8.onnx", precision="int8", log=lambda _: None,
                                    calibration=lambda: calibration_batches([train_records], (image_size, image_size), 4, 8))
    keras.backend.clear_session()
    return fp32, int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    from effdet_rt.demo.data import prepare_demo_data
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines import load

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare_demo_data(BCCD if BCCD.is_dir() else None, work / "data", log=lambda _: None)
        pairs = {name: build_pair(name, args.image_size, work, data.train_tfrecords) for name in MODELS}
        runners = [load(path, key=DEMO_KEY) for pair in pairs.values() for path in pair]
        measured = side_by_side(runners, args.image_size, args.rounds)
    rows = []
    for i, name in enumerate(MODELS):
        (fp32_ms, fp32_rate), (int8_ms, int8_rate) = measured[2 * i], measured[2 * i + 1]
        rows.append({"model": name, "image_size": args.image_size, "fp32_ms": fp32_ms, "int8_ms": int8_ms,
                     "int8_vs_fp32_latency": int8_ms / fp32_ms, "fp32_img_s": fp32_rate, "int8_img_s": int8_rate})
    result = {"cpu": describe_cpu(), "rounds": args.rounds, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lite_int8.json").write_text(json.dumps(result, indent=2))
    lines = [f"# ORT INT8 vs FP32 at {args.image_size} (random weights, {args.rounds} rounds in turns; {describe_cpu()})",
             "", "| model | FP32 ms | INT8 ms | INT8 / FP32 | FP32 img/s (b8) | INT8 img/s (b8) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['fp32_ms']:.1f} | {r['int8_ms']:.1f} | {r['int8_vs_fp32_latency']:.3f} | "
              f"{r['fp32_img_s']:.1f} | {r['int8_img_s']:.1f} |" for r in rows]
    (RESULTS / "lite_int8.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
