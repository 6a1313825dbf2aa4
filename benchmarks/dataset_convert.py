"""Images/s of dataset-convert with 1 and 2 worker processes, side by side, on two workloads.

- BCCD: all 364 images (640x480 JPEG, ~22 KB each), 4 shards (the figures earlier runs reported).
- BCCD x4: the same 364 images listed 4 times under new image ids (1,456 images), the default 256 shards;
  large enough that starting and stopping the worker processes (a few ms) stays small beside ~1.3 s of work.

Each repeat is one pair measured back to back: 1 worker, then 2 workers, then a control pair (a pure-Python
loop of fixed work in 1 process, then split over 2 forked processes: what a second process gained on plain CPU
work at that moment; other people's jobs share the host). It is not a ceiling for the conversion: in runs where
the control gained only 1.2-1.3x, BCCD x4 still reached 1.7-1.8x (integer-bound Python and JPEG decoding
compete differently for a shared physical core). The headline "2 vs 1" is the median of
the per-pair ratios: on a shared machine whose speed drifts within seconds, a ratio taken inside one pair
compares like with like, where best-of-N of each side can pair a quiet moment with a busy one. Best-of-N
images/s and its ratio are reported too. Outputs stay on disk until the end of a workload: deleting hundreds
of files between runs could make a disk mounted with `discard` (ext4 here) trim during the next run. CPU seconds
(main process + workers) show whether 2 workers add work or only wait.
Run: .venv/bin/python benchmarks/dataset_convert.py [--repeats 7]
Writes benchmarks/results/dataset_convert.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe_cpu

os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "data" / "bccd" / "BCCD"
RESULTS = REPO / "benchmarks" / "results"
WORKER_COUNTS = (1, 2)


def repeated(coco: dict, times: int) -> dict:
    """The COCO dict with every image (and its boxes) listed ``times`` times under fresh ids."""
    images, annotations = [], []
    step = max(i["id"] for i in coco["images"])
    ann_step = max((a["id"] for a in coco["annotations"]), default=0)
    for copy in range(times):
        images += [dict(i, id=i["id"] + copy * step) for i in coco["images"]]
        annotations += [dict(a, id=a["id"] + copy * ann_step, image_id=a["image_id"] + copy * step)
                        for a in coco["annotations"]]
    return dict(coco, images=images, annotations=annotations)


def _spin(count: int) -> int:
    total = 0
    for i in range(count):
        total += i
    return total


def control_pair(count: int = 20_000_000) -> tuple[float, float]:
    """Wall seconds of a fixed CPU loop in 1 process, then of the same work split over 2 forked processes.

    About 1 s of work in one process: with less, starting the two processes (15-20 ms) caps the ratio well below 2
    (4M iterations, 0.2 s, capped it near 1.7x)."""
    start = time.perf_counter()
    _spin(count)
    one = time.perf_counter() - start
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_spin, [count // 2, count // 2])
    return one, time.perf_counter() - start


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(name: str, coco: dict, shards: int, repeats: int) -> dict:
    from effdet_rt.data.coco import parse_coco
    from effdet_rt.data.convert import convert_dataset

    dataset = parse_coco(coco, name)
    seconds: dict[int, list[float]] = {w: [] for w in WORKER_COUNTS}
    cpu: dict[int, list[float]] = {w: [] for w in WORKER_COUNTS}
    controls: list[tuple[float, float]] = []
    written = 0
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for workers in WORKER_COUNTS:
                cpu_start = _cpu_seconds()
                out = Path(tmp) / f"out-{repeat}-{workers}"
                report = convert_dataset(dataset, BCCD / "JPEGImages", out, "all", shards, workers=workers)
                cpu[workers].append(_cpu_seconds() - cpu_start)
                seconds[workers].append(report.seconds)
                written = report.images_written
            controls.append(control_pair())
    rows = {w: {"seconds_best": round(min(t), 4), "seconds_all": [round(s, 4) for s in t],
                "cpu_seconds_min": round(min(cpu[w]), 3), "images_per_s": round(written / min(t), 1)}
            for w, t in seconds.items()}
    pairs = [one / two for one, two in zip(seconds[1], seconds[2], strict=True)]
    control_pairs = [one / two for one, two in controls]
    return {"workload": name, "images": written, "boxes": len(coco["annotations"]), "shards": shards,
            "workers": {str(w): r for w, r in rows.items()},
            "speedup_2_vs_1": round(statistics.median(pairs), 2), "speedup_pairs": [round(r, 2) for r in pairs],
            "speedup_of_best": round(rows[2]["images_per_s"] / rows[1]["images_per_s"], 2),
            "control": {"ratio": round(statistics.median(control_pairs), 2),
                        "pairs": [round(r, 2) for r in control_pairs]}}


def markdown(result: dict) -> str:
    lines = ["| workload | images | shards | 1 worker img/s (best s, CPU s) | 2 workers img/s (best s, CPU s) "
             "| 2 vs 1 (median of pairs) | pairs | 2 vs 1 (of best) | control 2 vs 1 (median, pairs) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for w in result["workloads"]:
        one, two = w["workers"]["1"], w["workers"]["2"]
        pairs = ", ".join(f"{r:.2f}" for r in w["speedup_pairs"])
        control = ", ".join(f"{r:.2f}" for r in w["control"]["pairs"])
        lines.append(f"| {w['workload']} | {w['images']} | {w['shards']} "
                     f"| {one['images_per_s']} ({one['seconds_best']}, {one['cpu_seconds_min']}) "
                     f"| {two['images_per_s']} ({two['seconds_best']}, {two['cpu_seconds_min']}) "
                     f"| {w['speedup_2_vs_1']:.2f}x | {pairs} | {w['speedup_of_best']:.2f}x "
                     f"| {w['control']['ratio']:.2f}x ({control}) |")
    lines.append(f"\ntarget: 2 workers >= {result['target_speedup']}x 1 worker; {result['machine']} "
                 f"(shared with other work: absolute figures are noisy); {result['repeats']} pairs (1 worker, then 2, "
                 f"then the control pair); BCCD x4 = BCCD's 364 images listed 4 times; control = a fixed pure-Python "
                 f"loop in 1 vs 2 processes, what a second process gained on plain CPU work at that moment; "
                 f"run at niceness {result['niceness']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from effdet_rt.data.voc import voc_to_coco

    coco = voc_to_coco(BCCD, "all")
    workloads = [measure("BCCD", coco, 4, args.repeats), measure("BCCD x4", repeated(coco, 4), 256, args.repeats)]
    result = {"cpu_count": os.cpu_count(), "machine": describe_cpu(),
              "repeats": args.repeats, "target_speedup": 1.7, "niceness": os.nice(0), "workloads": workloads}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dataset_convert.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (RESULTS / "dataset_convert.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
