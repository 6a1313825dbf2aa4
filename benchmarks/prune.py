"""Pruning on BCCD: a D0 trained for --minutes, pruned at three thresholds, each retrained for as long.

Run: .venv/bin/python benchmarks/prune.py [--minutes 3] [--image-size 256] [--thresholds 0.7 0.8 0.9]
     [--data ../shared/data/bccd/BCCD] [--keep DIR]
For the unpruned model and each threshold: trainable parameters, GFLOPs (multiply-adds at batch 1), ORT FP32
batch-1 latency measured in turns with the unpruned engine (ratio), mAP / AP50 on BCCD val right after pruning and
after retraining (train.pruned_model_path, no weight decay, as TAO advises) for the same minutes as the first
training. Writes benchmarks/results/prune.{json,md}.
Target (issue 19): at the threshold that removes >= 40% of the parameters, retraining recovers mAP to within
1 point of the unpruned model, and its ORT FP32 engine runs >= 1.3x faster than the unpruned one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BCCD = REPO.parent / "shared" / "data" / "bccd" / "BCCD"


def evaluate(path: Path, data, spec) -> tuple[float, float]:
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines import load
    from effdet_rt.infer.evaluate import evaluate_engine

    metrics = evaluate_engine(load(path, key=DEMO_KEY, spec=spec), [data.val_tfrecords], data.val_json,
                              num_samples=None, batch_size=spec.evaluate.batch_size, max_detections=100)
    return float(metrics["AP"]), float(metrics["AP50"])


def model_cost(path: Path) -> tuple[int, float]:
    """(trainable parameters, GFLOPs as multiply-adds at batch 1) of a checkpoint's network."""
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines.runtime.checkpoint import load_engine
    from effdet_rt.model.flops import count_multiply_adds
    from effdet_rt.prune.pruner import trainable_parameters

    model = load_engine(path, key=DEMO_KEY).model
    return trainable_parameters(model), count_multiply_adds(model) / 1e9


def ort_fp32(checkpoint: Path, spec, out: Path) -> Path:
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines.build.onnxruntime import build_onnxruntime_engine
    from effdet_rt.export.workflow import export_from_spec

    onnx_path = export_from_spec(spec, checkpoint=checkpoint, output=out.with_suffix(".export.onnx"), key=DEMO_KEY,
                                 log=lambda _: None)
    return build_onnxruntime_engine(onnx_path, out, precision="fp32", log=lambda _: None)


def latencies_in_turns(paths: list[Path], image_size: int, rounds: int) -> list[float]:
    """Median batch-1 ms of each engine; per round every engine runs once untimed and 5 times timed in turn."""
    import numpy as np

    from effdet_rt.engines import load

    engines = [load(p) for p in paths]
    one = np.random.default_rng(0).uniform(0, 255, (1, image_size, image_size, 3)).astype(np.float32)
    times: list[list[float]] = [[] for _ in engines]
    for _ in range(rounds):
        for k, engine in enumerate(engines):
            engine.run(one)
            for _ in range(5):
                start = time.perf_counter()
                engine.run(one)
                times[k].append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def run(args: argparse.Namespace, work: Path) -> dict:
    from effdet_rt.demo.data import prepare_demo_data
    from effdet_rt.demo.run import DEMO_KEY, DemoSettings, demo_spec
    from effdet_rt.prune.run import prune_checkpoint
    from effdet_rt.spec.overrides import apply_overrides
    from effdet_rt.trainer.loop import train

    quiet = lambda _: None  # noqa: E731
    data = prepare_demo_data(args.data if args.data.is_dir() else None, work / "data", log=quiet)
    settings = DemoSettings(args.data, work, args.minutes, args.image_size, 8)
    spec = demo_spec(data, settings, work / "train")
    print(f"training the unpruned D0 for {args.minutes:g} min")
    base = train(spec, work / "train", DEMO_KEY, log=quiet, max_seconds=args.minutes * 60)
    params, gflops = model_cost(base)
    rows = [{"threshold": None, "params": params, "gflops": gflops, "mAP_pruned": None, "AP50_pruned": None}]
    rows[0]["mAP_retrained"], rows[0]["AP50_retrained"] = evaluate(base, data, spec)
    engines = [ort_fp32(base, spec, work / "unpruned_fp32.onnx")]
    for threshold in args.thresholds:
        tag = f"th{threshold:g}"
        pruning = apply_overrides(spec, [f"prune.checkpoint={base}", f"prune.output_path={work / tag}",
                                         f"prune.threshold={threshold}"])
        summary = prune_checkpoint(pruning, key=DEMO_KEY, log=quiet)
        row = {"threshold": threshold, "params": summary.params_after, "gflops": model_cost(summary.output)[1]}
        row["mAP_pruned"], row["AP50_pruned"] = evaluate(summary.output, data, spec)
        print(f"threshold {threshold:g}: {summary.params_after:,} parameters ({1 - summary.ratio:.1%} removed), "
              f"mAP right after pruning {row['mAP_pruned']:.3f}; retraining {args.minutes:g} min")
        retrain_spec = apply_overrides(spec, [f"results_dir={work / (tag + '_retrain')}",
                                              f"train.pruned_model_path={summary.output}", "train.l2_weight_decay=0"])
        retrained = train(retrain_spec, work / (tag + "_retrain"), DEMO_KEY, log=quiet, max_seconds=args.minutes * 60)
        row["mAP_retrained"], row["AP50_retrained"] = evaluate(retrained, data, retrain_spec)
        engines.append(ort_fp32(retrained, retrain_spec, work / f"{tag}_fp32.onnx"))
        rows.append(row)
    times = latencies_in_turns(engines, args.image_size, args.rounds)
    for row, ms in zip(rows, times, strict=True):
        row["ort_fp32_ms"] = ms
        row["speedup_vs_unpruned"] = times[0] / ms
        row["params_removed"] = 1 - row["params"] / rows[0]["params"]
    return {"minutes": args.minutes, "image_size": args.image_size, "rounds": args.rounds, "rows": rows}


def markdown(result: dict, machine: str) -> str:
    f = lambda v, spec=".3f": "—" if v is None else format(v, spec)  # noqa: E731
    lines = [f"D0 {result['image_size']}x{result['image_size']} on BCCD, trained {result['minutes']:g} min, each pruned "
             f"model retrained {result['minutes']:g} min ({machine}; ORT FP32 batch 1, {result['rounds']} rounds in turns)",
             "", "| threshold | parameters | removed | GFLOPs | mAP pruned | mAP retrained | AP50 retrained | "
             "ORT FP32 batch 1 | speed-up |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {'unpruned' if r['threshold'] is None else r['threshold']} | {r['params']:,} | "
                     f"{r['params_removed']:.1%} | {r['gflops']:.3f} | {f(r['mAP_pruned'])} | {f(r['mAP_retrained'])} | "
                     f"{f(r['AP50_retrained'])} | {r['ort_fp32_ms']:.1f} ms | {r['speedup_vs_unpruned']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="first training, and each retraining")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--data", type=Path, default=BCCD)
    parser.add_argument("--keep", type=Path, help="work folder to keep; default: a temp folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="effdet-prune-bench-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        result = run(args, work)
    machine = describe_cpu()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prune.json").write_text(json.dumps({**result, "machine": machine}, indent=2) + "\n")
    text = markdown(result, machine)
    (RESULTS / "prune.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
