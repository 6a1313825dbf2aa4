"""D0 at 512: TF checkpoint vs ONNX Runtime FP32 vs ONNX Runtime INT8, side by side in one run.

Run: .venv/bin/python benchmarks/engine_latency.py [--minutes 10] [--image-size 512] [--data ../shared/data/bccd/BCCD]
     [--speed-only]
It runs the demo flow (BCCD converted, D0 trained for --minutes, evaluated, exported with --verify, ORT FP32 and
INT8 built with the TFRecord calibrator) so the three engines come from the same training, then measures each
engine's `run` on preprocessed batches: median latency at batch 1 and images/s at batch 8, and mAP / AP50 on
BCCD val. `--speed-only` skips training (random weights, no mAP). Writes benchmarks/results/engine_latency.{json,md}.
Reference on this machine type (2-core EPYC): effdet's D0 in ONNX Runtime 58 ms at batch 1, 16 img/s at batch 8;
compute floor 27 ms. Targets: FP32 <= 50 ms and >= 20 img/s; INT8 < 27 ms with an AP drop of at most 1 point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BCCD = REPO.parent / "shared" / "data" / "bccd" / "BCCD"


def speed_only(image_size: int, work: Path) -> list[dict]:
    """Random-weight D0 exported and built both ways; speeds only."""
    import tf_keras as keras

    from effdet_rt.checkpoint import model_weights, save_checkpoint
    from effdet_rt.checkpoint.keys import ScryptCost
    from effdet_rt.demo.data import prepare_demo_data
    from effdet_rt.demo.run import DEMO_KEY, measure_speed
    from effdet_rt.engines import load
    from effdet_rt.engines.ort_build import build_onnxruntime_engine
    from effdet_rt.export.workflow import export_from_spec
    from effdet_rt.model.factory import build_model_from_spec
    from effdet_rt.spec import default_spec, spec_to_yaml
    from effdet_rt.spec.overrides import apply_overrides

    keras.utils.set_random_seed(0)
    spec = apply_overrides(default_spec(), [f"model.input_width={image_size}", f"model.input_height={image_size}",
                                            "dataset.num_classes=4", "export.nms=onnx", "export.min_score_thresh=0.001"])
    ckpt = save_checkpoint(work / "random.edrt", model_weights(build_model_from_spec(spec)), key=DEMO_KEY,
                           spec_yaml=spec_to_yaml(spec), cost=ScryptCost(log2_n=10))
    data = prepare_demo_data(BCCD if BCCD.is_dir() else None, work / "data", log=lambda _: None)
    onnx_path = export_from_spec(spec, checkpoint=ckpt, output=work / "model.onnx", key=DEMO_KEY)
    from effdet_rt.calib.batches import calibration_batches

    fp32 = build_onnxruntime_engine(onnx_path, work / "fp32.onnx", precision="fp32", log=lambda _: None)
    int8 = build_onnxruntime_engine(onnx_path, work / "int8.onnx", precision="int8", log=lambda _: None,
                                    calibration=lambda: calibration_batches([data.train_tfrecords], (image_size, image_size), 4, 8))
    rows = []
    for path in (ckpt, fp32, int8):
        engine = load(path, key=DEMO_KEY)
        latency, throughput = measure_speed(engine, engine.input_size)
        rows.append({"backend": engine.backend, "precision": engine.precision, "model_file": path.name,
                     "mAP": None, "AP50": None, "latency_ms": latency, "throughput": throughput})
    return rows


def markdown(rows: list[dict], title: str) -> str:
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [title, "", "| backend | precision | mAP (BCCD val) | AP50 | latency batch 1 | images/s batch 8 |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['backend']} | {r['precision']} | {fmt(r['mAP'])} | {fmt(r['AP50'])} | {r['latency_ms']:.1f} ms | "
              f"{r['throughput']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--data", type=Path, default=BCCD)
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--keep", type=Path, help="work folder to keep (checkpoint, models, demo outputs); default: a temp folder")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="effdet-engine-latency-") as scratch:
        tmp = str(args.keep or scratch)
        if args.speed_only:
            rows = speed_only(args.image_size, Path(tmp))
            title = f"D0 {args.image_size}x{args.image_size}, random weights (speed only)"
        else:
            from effdet_rt.demo.run import DemoSettings, run_demo

            result = run_demo(DemoSettings(args.data, Path(tmp), args.minutes, args.image_size, 4), log=print)
            rows = [asdict(r) for r in result]
            title = f"D0 {args.image_size}x{args.image_size} trained {args.minutes:g} min on {args.data.name}"
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine_latency.json").write_text(json.dumps({"title": title, "machine": machine, "rows": rows}, indent=2) + "\n")
    text = markdown(rows, f"{title} ({machine})")
    (RESULTS / "engine_latency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
