"""EfficientNet-B0 classification on hymenoptera (ants vs bees): accuracy after a fixed training-time budget from
scratch, and TensorFlow vs ONNX Runtime FP32 vs ONNX Runtime INT8 side by side (top-1 on the 153 val images, batch-1
latency of the engine on a preprocessed image, in alternating rounds so that load swings hit every backend alike).

Latency is measured at the trained size and at 224x224 (B0's native size; the same exported network with the
trained weights, re-exported at 224). timm's efficientnet_b0 needs PyTorch, which this project does not install;
the result file says so rather than comparing against nothing.

    .venv/bin/python benchmarks/classification.py [--minutes 10] [--image-size 128] [--rounds 20] [-o OUT]

Writes benchmarks/results/classification.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_cpu

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DATA = ROOT.parent / "shared" / "data" / "hymenoptera" / "hymenoptera_data"
KEY = "benchmark-key"


def spec_for(size: int, results: Path, epochs: int):
    from effdet_rt.classification.spec import load_classification_spec

    return load_classification_spec(ROOT / "specs" / "hymenoptera_b0.yaml", [
        f"results_dir={results}", f"key={KEY}", f"data.train_dataset_path={DATA / 'train'}",
        f"data.val_dataset_path={DATA / 'val'}", f"evaluate.dataset_path={DATA / 'val'}",
        f"model.input_image_size=3,{size},{size}", f"train.num_epochs={epochs}", "train.n_workers=2",
        "evaluate.n_workers=2",
    ])


def build_engines(onnx_path: Path, out: Path) -> dict[str, Path]:
    from effdet_rt.cli.build import classifier_calibration
    from effdet_rt.engines.build.request import build_engine
    from effdet_rt.spec import default_spec
    from effdet_rt.spec.overrides import apply_option_values

    engines = {"onnxruntime fp32": out / f"{onnx_path.stem}_fp32.onnx", "onnxruntime int8": out / f"{onnx_path.stem}_int8.onnx"}
    for name, path in engines.items():
        spec = apply_option_values(default_spec(), {
            "build.engine_file": str(path), "build.backend": "onnxruntime", "build.data_type": name.split()[1],
            "build.calibration.batch_size": 8, "build.calibration.batches": 8})
        calibration = classifier_calibration(onnx_path, DATA / "train", spec.build.calibration, lambda _m: None)
        build_engine(onnx_path, spec.build, calibration=calibration, log=lambda _m: None)
    return engines


def latencies(models: dict[str, Path], rounds: int) -> dict[str, dict[str, float]]:
    """Batch-1 median / min per backend, measured round-robin (one run of each backend per round)."""
    import numpy as np

    from effdet_rt.classification.engines import load_classifier
    from effdet_rt.classification.images import eval_image

    loaded = {name: load_classifier(path, KEY) for name, path in models.items()}
    image = next(iter(sorted((DATA / "val" / "bees").glob("*.jpg"))))
    batches = {name: eval_image(image, c.fmt)[None] for name, c in loaded.items()}
    for name, classifier in loaded.items():  # trace / warm up
        for _ in range(3):
            classifier.predict(batches[name])
    seconds: dict[str, list[float]] = {name: [] for name in loaded}
    for _ in range(rounds):
        for name, classifier in loaded.items():
            start = time.perf_counter()
            np.asarray(classifier.predict(batches[name]))
            seconds[name].append(time.perf_counter() - start)
    return {name: {"median_ms": round(1000 * statistics.median(s), 2), "min_ms": round(1000 * min(s), 2)}
            for name, s in seconds.items()}


def accuracy(model: Path, spec) -> float:
    from effdet_rt.classification.evaluate import evaluate_classifier

    with tempfile.TemporaryDirectory() as out:
        return evaluate_classifier(spec, model_path=model, key=KEY, results_dir=out, log=lambda _m: None)["top_1_accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training-time budget from scratch")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("-o", "--output", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("EFFDET_NO_PROGRESS", "1")
    sys.path.insert(0, str(ROOT))
    from effdet_rt.classification.export import export_classifier
    from effdet_rt.classification.train import train_classifier

    work = args.output or Path(tempfile.mkdtemp(prefix="effdet-cls-bench-"))
    spec = spec_for(args.image_size, work / "train", epochs=1000)
    started = time.monotonic()
    checkpoint = train_classifier(spec, work / "train", KEY, log=print, max_seconds=60 * args.minutes)
    trained_s = time.monotonic() - started
    from effdet_rt.checkpoint import read_metadata

    epochs = int(read_metadata(checkpoint, KEY)["epoch"])
    onnx_path = export_classifier(spec, model_path=checkpoint, output=work / "b0.onnx", key=KEY, verify=True, log=print)
    models = {"tensorflow (checkpoint)": checkpoint, **build_engines(onnx_path, work)}
    rows = []
    timing = latencies(models, args.rounds)
    for name, path in models.items():
        rows.append({"backend": name, "top1": round(accuracy(path, spec), 4),
                     f"latency_ms_b1_{args.image_size}": timing[name]["median_ms"],
                     f"latency_min_ms_b1_{args.image_size}": timing[name]["min_ms"]})
    native = spec_for(224, work / "native", epochs=1)
    onnx_224 = export_classifier(native, model_path=_resized_checkpoint(checkpoint, native, work), output=work / "b0_224.onnx",
                                 key=KEY, log=print)
    timing_224 = latencies({"tensorflow (checkpoint)": work / "b0_224.edrt", **build_engines(onnx_224, work)}, args.rounds)
    for row in rows:
        row["latency_ms_b1_224"] = timing_224[row["backend"]]["median_ms"]
        row["latency_min_ms_b1_224"] = timing_224[row["backend"]]["min_ms"]
    result = {
        "cpu": describe_cpu(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dataset": "hymenoptera train 244 (one non-JPEG/PNG file ignored), val 153",
        "image_size": args.image_size,
        "budget_minutes": args.minutes,
        "trained_seconds": round(trained_s, 1),
        "epochs": epochs,
        "rounds": args.rounds,
        "rows": rows,
        "timm_efficientnet_b0": "not measured: PyTorch / timm are not installed in this project's environment",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "classification.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "classification.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _resized_checkpoint(checkpoint: Path, native_spec, work: Path) -> Path:
    """The trained weights under a 224x224 spec (EfficientNet's weights do not depend on the input size)."""
    from effdet_rt.checkpoint import load_checkpoint, save_checkpoint
    from effdet_rt.classification.images import ImageFormat
    from effdet_rt.classification.spec import classification_spec_to_yaml

    source = load_checkpoint(checkpoint, KEY)
    meta = {**source.metadata, "image_format": ImageFormat.from_spec(native_spec).as_metadata()}
    return save_checkpoint(work / "b0_224.edrt", source.weights, key=KEY, metadata=meta,
                           spec_yaml=classification_spec_to_yaml(native_spec.model_copy(update={"key": ""})))


def markdown(r: dict) -> str:
    size = r["image_size"]
    lines = [
        f"EfficientNet-B0 on hymenoptera, trained from scratch for {r['budget_minutes']:g} min ({r['epochs']} epochs, "
        f"{size}x{size}, batch 16) on {r['cpu']}, {r['date']}. Top-1 on the 153 val images; latency = engine alone on "
        f"one preprocessed image, median of {r['rounds']} alternating rounds (min in brackets).",
        "",
        f"| backend | top-1 | latency b1 {size} | latency b1 224 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in r["rows"]:
        lines.append(f"| {row['backend']} | {row['top1']:.4f} | {row[f'latency_ms_b1_{size}']:.2f} ms "
                     f"({row[f'latency_min_ms_b1_{size}']:.2f}) | {row['latency_ms_b1_224']:.2f} ms "
                     f"({row['latency_min_ms_b1_224']:.2f}) |")
    lines += ["", f"timm efficientnet_b0: {r['timm_efficientnet_b0']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
