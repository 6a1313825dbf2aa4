"""Kill `effdet-rt train` with SIGKILL at random moments (one of them while a checkpoint is being written), restart it
each time, and check that: it resumes from the newest whole checkpoint, no partial `.edrt` (or leftover temporary
file) is ever left, and the final weights equal those of an uninterrupted run with the same seed. Then the same for
`dataset-convert` and `build` killed mid-run: nothing at their output paths.

Too slow for CI (each start builds a D0); run by hand:

    python benchmarks/reliability.py --bccd ../shared/data/bccd/BCCD [--kills 5] [--seed 0]

Writes benchmarks/results/reliability.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
KEY = "reliability-key"
# The CLI with the train step run eagerly: a few steps per start, so tracing the step would dominate every restart.
EAGER_CLI = ("import sys, tensorflow as tf; tf.config.run_functions_eagerly(True); "
             "from effdet_rt.cli.main import main; sys.argv = ['effdet-rt'] + sys.argv[1:]; main()")
PLAIN_CLI = "import sys; from effdet_rt.cli.main import main; sys.argv = ['effdet-rt'] + sys.argv[1:]; main()"


def cli(args: list[str], eager: bool = False) -> list[str]:
    return [sys.executable, "-c", EAGER_CLI if eager else PLAIN_CLI, *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "EFFDET_NO_PROGRESS": "1", "EFFDET_KEY": KEY}


def train_args(spec: Path, results: Path) -> list[str]:
    return ["train", "-e", str(spec), "-r", str(results)]


def write_spec(folder: Path, records: Path, epochs: int) -> Path:
    import yaml

    spec = {
        "model": {"name": "efficientdet-d0", "input_width": 128, "input_height": 128, "anchor_scale": 2},
        "dataset": {"num_classes": 4, "train_tfrecords": [str(records)], "loader": {"shuffle_buffer": 16}},
        "train": {"batch_size": 4, "num_examples_per_epoch": 8, "num_epochs": epochs, "checkpoint_interval": 1,
                  "moving_average_decay": 0.9, "image_preview": False, "random_seed": 42,
                  "lr_schedule": {"learning_rate": 0.05, "warmup_epoch": 1}},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def leftovers(folder: Path) -> list[str]:
    """Temporary files of interrupted writes, and .edrt files that do not open with the key."""
    from effdet_rt.checkpoint import load_checkpoint
    from effdet_rt.errors import UserError

    bad = [p.name for p in folder.glob(".*.tmp")]
    for path in folder.glob("*.edrt"):
        try:
            load_checkpoint(path, KEY)
        except UserError as exc:
            bad.append(f"{path.name} ({exc})")
    return bad


def checkpoint_epochs(folder: Path) -> list[int]:
    return sorted(int(p.stem.rsplit("_", 1)[1]) for p in folder.glob("*.edrt"))


def kill_at(process: subprocess.Popen, folder: Path, delay: float, during_write: bool) -> str:
    """SIGKILL ``process`` after ``delay`` s, or (``during_write``) as soon as a checkpoint temp file appears."""
    start = time.monotonic()
    while process.poll() is None:
        writing = any(folder.glob(".*.edrt.*.tmp"))
        if (during_write and writing) or (not during_write and time.monotonic() - start >= delay):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return "during a checkpoint write" if writing else f"after {time.monotonic() - start:.1f} s"
        time.sleep(0.002 if during_write else 0.05)
    return "finished before the kill"


def kill_training(work: Path, records: Path, kills: int, rng: random.Random, epochs: int) -> dict:
    spec = write_spec(work, records, epochs)
    env = environment()
    reference_dir, killed_dir = work / "reference", work / "killed"
    started = time.monotonic()
    subprocess.run(cli(train_args(spec, reference_dir), eager=True), env=env, check=True, capture_output=True)
    full_seconds = time.monotonic() - started
    events = []
    write_kill = rng.randrange(kills)
    for index in range(kills):
        before = checkpoint_epochs(killed_dir) if killed_dir.exists() else []
        process = subprocess.Popen(cli(train_args(spec, killed_dir), eager=True), env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        delay = rng.uniform(0.2, 1.0) * full_seconds
        when = kill_at(process, killed_dir, delay, during_write=index == write_kill)
        output = process.stdout.read() if process.stdout else ""
        after = checkpoint_epochs(killed_dir)
        resumed = [line for line in output.splitlines() if "resuming from" in line]
        events.append({"kill": index + 1, "when": when, "checkpoints_before": before, "checkpoints_after": after,
                       "resume_line": resumed[0] if resumed else None,
                       "resumed_from_newest": (not before) or bool(resumed and f"_{before[-1]:03d}.edrt" in resumed[0]),
                       "leftovers": leftovers(killed_dir)})
    final = subprocess.run(cli(train_args(spec, killed_dir), eager=True), env=env, capture_output=True, text=True)
    return {"uninterrupted_seconds": round(full_seconds, 1), "events": events, "final_exit": final.returncode,
            "final_leftovers": leftovers(killed_dir),
            "weights_equal": weights_equal(reference_dir, killed_dir, epochs)}


def weights_equal(a: Path, b: Path, epochs: int) -> dict:
    from effdet_rt.checkpoint import load_checkpoint

    name = f"efficientdet-d0_{epochs:03d}.edrt"
    if not (a / name).is_file() or not (b / name).is_file():
        return {"equal": False, "why": f"{name} missing"}
    one, two = load_checkpoint(a / name, KEY), load_checkpoint(b / name, KEY)
    worst = max(float(np.max(np.abs(one.weights[k] - two.weights[k]) / (np.abs(one.weights[k]) + 1e-6)))
                for k in one.weights)
    equal = sorted(one.weights) == sorted(two.weights) and all(
        np.allclose(one.weights[k], two.weights[k], rtol=1e-5, atol=1e-6) for k in one.weights)
    return {"equal": bool(equal), "max_relative_difference": worst}


def kill_once(args: list[str], output: Path, rng: random.Random, seconds: float) -> dict:
    """Start the command, wait until its temporary output (``.name.XXXX.tmp`` beside ``output``) appears, so the
    kill lands while it writes, then SIGKILL it after a random fraction of the time the whole run took."""
    process = subprocess.Popen(cli(args), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not any(output.parent.glob(f".{output.name}.*")):
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.3) * seconds)
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    litter = [p.name for p in output.parent.glob(f".{output.name}.*")]
    return {"killed_mid_run": not finished, "output_exists": output.exists(), "temporary_files": litter}


def timed(args: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cli(args), env=environment(), check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bccd", type=Path, default=REPO.parent / "shared" / "data" / "bccd" / "BCCD")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-training", action="store_true", help="Only kill dataset-convert and build.")
    options = parser.parse_args()
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="effdet-reliability-"))
    records_dir = work / "records"
    convert = ["dataset-convert", "--voc", str(options.bccd), "--split", "val", "-o", str(records_dir), "-s", "1"]
    convert_seconds = timed(convert)
    sys.path.insert(0, str(REPO))
    from tests.support.data import write_first_records

    records = write_first_records(records_dir / "val-00000-of-00001.tfrecord", 8)
    report = {} if options.skip_training else {"training": kill_training(work, records, options.kills, rng,
                                                                         options.epochs)}
    again = work / "records_again"
    report["dataset_convert"] = kill_once([*convert[:-4], "-o", str(again), "-s", "1"], again, rng, convert_seconds)
    report["dataset_convert"]["output_has_partial_shards"] = bool(again.exists() and any(again.iterdir()))
    if options.skip_training:
        subprocess.run(cli(train_args(write_spec(work, records, 1), work / "killed")), env=environment(), check=True,
                       capture_output=True)
    report["build"] = build_kill(work, rng)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "reliability_convert_build" if options.skip_training else "reliability"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(report))
    print(markdown(report))


def build_kill(work: Path, rng: random.Random) -> dict:
    run_dir = work / "killed"
    checkpoint = sorted(run_dir.glob("*.edrt"))[-1]
    onnx_path = work / "model.onnx"
    subprocess.run(cli(["export", "-m", str(checkpoint), "-o", str(onnx_path), "-k", KEY, "--nms", "onnx"]),
                   env=environment(), check=True, capture_output=True)
    engine = work / "model_ort_fp32.onnx"
    seconds = timed(["build", "-m", str(onnx_path), "-o", str(engine), "--backend", "onnxruntime"])
    engine.unlink()
    return kill_once(["build", "-m", str(onnx_path), "-o", str(engine), "--backend", "onnxruntime"], engine, rng,
                     seconds)


def markdown(report: dict) -> str:
    lines = ["# Kill and restart", ""]
    training = report.get("training")
    if training:
        lines += ["| kill | when | checkpoints before -> after | resumed from newest | leftovers |",
                  "| ---: | --- | --- | --- | --- |"]
        for e in training["events"]:
            lines.append(f"| {e['kill']} | {e['when']} | {e['checkpoints_before']} -> {e['checkpoints_after']} | "
                         f"{'yes' if e['resumed_from_newest'] else 'NO'} | {e['leftovers'] or 'none'} |")
        lines += ["", f"final run exit {training['final_exit']}; leftovers {training['final_leftovers'] or 'none'}; "
                  f"final weights equal to the uninterrupted run: {training['weights_equal']}"]
    lines += [f"dataset-convert killed: {report['dataset_convert']}", f"build killed: {report['build']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
