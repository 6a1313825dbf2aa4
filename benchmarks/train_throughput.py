"""Training throughput (images/s) and peak memory of EfficientDet-D0 on this machine, plus a short BCCD run.

Each configuration runs in its own process (peak RSS is per process). Usage:
    python benchmarks/train_throughput.py --records DIR [--steps 6] [--bccd-seconds 120]
DIR holds BCCD TFRecords from `effdet-rt dataset-convert --voc .../BCCD --split train|val -o DIR`.
Writes benchmarks/results/train_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [(512, 2), (512, 4), (256, 2)]


def base_overrides(records: Path, size: int, batch: int) -> list[str]:
    return [
        f"dataset.train_tfrecords={records}/train-*.tfrecord", f"dataset.val_tfrecords={records}/val-*.tfrecord",
        f"dataset.val_json_file={records}/val.json", "dataset.num_classes=4",
        f"model.input_width={size}", f"model.input_height={size}", f"train.batch_size={batch}",
        "train.image_preview=false", "encryption_key=bench", "dataset.loader.shuffle_buffer=64",
    ]


def measure_one(records: Path, size: int, batch: int, steps: int) -> dict:
    """Runs inside the child process: time `steps` steps after the first (compiling) epoch."""
    from effdet_rt.spec.loader import load_spec
    from effdet_rt.trainer.loop import train

    epoch_times: list[float] = []
    marks = {"start": time.monotonic()}
    spec = load_spec(None, base_overrides(records, size, batch) + [
        f"train.num_examples_per_epoch={steps * batch}", "train.num_epochs=2", "train.checkpoint_interval=100",
        "train.lr_schedule.warmup_epoch=1",
    ])
    with tempfile.TemporaryDirectory() as tmp:
        import effdet_rt.trainer.callbacks as callbacks

        original = callbacks.TrainingLog.epoch_end

        def timed_epoch_end(self, *args, **kwargs):
            epoch_times.append(time.monotonic())
            return original(self, *args, **kwargs)

        callbacks.TrainingLog.epoch_end = timed_epoch_end
        train(spec, tmp, None, log=lambda message: None)
    second_epoch = epoch_times[-1] - epoch_times[-2]
    return {
        "input": size, "batch": batch, "steps_timed": steps,
        "images_per_s": round(steps * batch / second_epoch, 3),
        "s_per_step": round(second_epoch / steps, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "compile_and_first_epoch_s": round(epoch_times[-2] - marks["start"], 1),
    }


def bccd_run(records: Path, seconds: float) -> dict:
    from effdet_rt.checkpoint import read_metadata
    from effdet_rt.spec.loader import load_spec
    from effdet_rt.trainer.loop import train

    spec = load_spec(None, base_overrides(records, 256, 4) + [
        "train.num_examples_per_epoch=64", "train.num_epochs=1000", "train.checkpoint_interval=1000",
        "train.lr_schedule.warmup_epoch=1", "train.lr_schedule.learning_rate=0.08", "evaluate.num_samples=87",
        "model.anchor_scale=3",
    ])
    from effdet_rt.engines.checkpoint import load_engine
    from effdet_rt.evaluation.run import evaluate_engine

    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        last = train(spec, tmp, None, log=lambda m: None, max_seconds=seconds)
        elapsed = time.monotonic() - started
        meta = read_metadata(last, "bench")
        metrics = evaluate_engine(load_engine(last, "bench"), spec.dataset.val_tfrecords, spec.dataset.val_json_file,
                                  num_samples=87, batch_size=8)
    return {"budget_s": seconds, "wall_s": round(elapsed, 1), "epochs": meta["epoch"], "steps": meta["step"],
            "AP": round(metrics["AP"], 4), "AP50": round(metrics["AP50"], 4)}


def child(argv: list[str]) -> None:
    kind, records = argv[0], Path(argv[1])
    result = bccd_run(records, float(argv[2])) if kind == "bccd" else measure_one(records, int(argv[2]), int(argv[3]), int(argv[4]))
    print("RESULT" + json.dumps(result), flush=True)


def spawn(args: list[str]) -> dict:
    env = {**os.environ, "EFFDET_NO_PROGRESS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"args": args, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.split("RESULT")[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--bccd-seconds", type=float, default=120.0)
    args = parser.parse_args()
    rows = []
    for size, batch in CONFIGS:
        rows.append(spawn(["speed", str(args.records), str(size), str(batch), str(args.steps)]))
        print(rows[-1], flush=True)
    bccd = spawn(["bccd", str(args.records), str(args.bccd_seconds)]) if args.bccd_seconds > 0 else None
    print(bccd, flush=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)",
              "throughput": rows, "bccd": bccd,
              "reference": "google/automl D0 512 batch 2: 1.24-1.42 s/step (~1.6 img/s); target >= 2 img/s, < 6 GB at batch 4"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_throughput.json").write_text(json.dumps(report, indent=1))
    lines = ["# Training throughput (EfficientDet-D0, CPU)", "", f"Machine: {report['machine']}", "",
             "| input | batch | images/s | s/step | peak RSS GB |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.get('input')} | {r.get('batch')} | {r.get('images_per_s')} | {r.get('s_per_step')} | "
              f"{r.get('peak_rss_gb')} |" for r in rows]
    if bccd:
        lines += ["", f"BCCD (256x256, batch 4, from scratch) for {bccd.get('budget_s')} s: {bccd}"]
    lines += ["", report["reference"]]
    (RESULTS / "train_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
