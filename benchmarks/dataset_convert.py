"""Images/s of dataset-convert on BCCD (all 364 images) with 1 and 2 worker processes, side by side.

Run: .venv/bin/python benchmarks/dataset_convert.py [--repeats 3]
Writes benchmarks/results/dataset_convert.{json,md}. TensorFlow is imported before timing starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "data" / "bccd" / "BCCD"
RESULTS = REPO / "benchmarks" / "results"


def measure(workers: int, repeats: int) -> dict:
    from effdet_rt.data.coco import parse_coco
    from effdet_rt.data.convert import convert_dataset
    from effdet_rt.data.voc import voc_to_coco

    dataset = parse_coco(voc_to_coco(BCCD, "all"), "BCCD")
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            report = convert_dataset(dataset, BCCD / "JPEGImages", Path(tmp) / "out", "all", 4, workers=workers)
            times.append(report.seconds)
    best = min(times)
    return {"workers": workers, "images": report.images_written, "seconds_best": round(best, 4),
            "seconds_all": [round(t, 4) for t in times], "images_per_s": round(report.images_written / best, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tensorflow  # noqa: F401  (import cost kept out of the timings)

    rows = [measure(workers, args.repeats) for workers in (1, 2)]
    speedup = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    result = {"dataset": "BCCD all (364 images, 4,888 boxes)", "shards": 4, "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "rows": rows, "speedup_2_vs_1": round(speedup, 2),
              "target_speedup": 1.7}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dataset_convert.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| workers | images | best s | images/s |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['workers']} | {r['images']} | {r['seconds_best']} | {r['images_per_s']} |" for r in rows]
    lines.append(f"\nspeedup 2 vs 1 workers: {speedup:.2f}x (target 1.7x), {os.cpu_count()} CPUs, best of {args.repeats}")
    (RESULTS / "dataset_convert.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
