"""Forward latency (batch 1) and throughput (batch 8) of EfficientDet D0/D1 at native size on this CPU.

Each model runs in its own child process so that its peak resident memory (ru_maxrss) is its own.
Writes benchmarks/results/model_latency.json and .md. Reference (google/automl D0 on this machine type):
110 ms at batch 1, 6.7 img/s at batch 8.

    .venv/bin/python benchmarks/model_latency.py [--models efficientdet-d0 efficientdet-d1] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = {"efficientdet-d0": {"latency_ms_b1": 110.0, "throughput_img_s_b8": 6.7}}


def measure(name: str, runs: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from effdet_rt.model.configs import get_config
    from effdet_rt.model.efficientdet import build_efficientdet

    size = get_config(name).image_size
    model = build_efficientdet(name, 90)
    forward = tf.function(lambda images: model(images, training=False))

    def timed(batch: int, repeats: int) -> list[float]:
        images = tf.random.uniform((batch, size, size, 3), 0, 255, seed=0)
        for _ in range(2):  # trace + warm up
            [t.numpy() for t in forward(images)]
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            [t.numpy() for t in forward(images)]
            seconds.append(time.perf_counter() - start)
        return seconds

    single = timed(1, runs)
    batched = timed(8, max(3, runs // 4))
    return {
        "model": name,
        "input": f"{size}x{size}",
        "latency_ms_b1_median": round(1000 * statistics.median(single), 1),
        "latency_ms_b1_min": round(1000 * min(single), 1),
        "throughput_img_s_b8": round(8 / statistics.median(batched), 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runs_b1": len(single),
        "runs_b8": len(batched),
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# EfficientDet forward pass on CPU (tf.function, float32, training=False)",
        "",
        f"{meta['cpu']}, {meta['cores']} cores (shared with other jobs while measured), TF {meta['tensorflow']}",
        "",
        "| model | input | batch 1 median ms | batch 1 min ms | batch 8 img/s | peak RSS MiB | automl ref |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ref = REFERENCE.get(r["model"])
        ref_text = f"{ref['latency_ms_b1']:.0f} ms, {ref['throughput_img_s_b8']} img/s" if ref else "-"
        lines.append(
            f"| {r['model']} | {r['input']} | {r['latency_ms_b1_median']} | {r['latency_ms_b1_min']} | "
            f"{r['throughput_img_s_b8']} | {r['peak_rss_mib']} | {ref_text} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientdet-d0", "efficientdet-d1"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.runs)))
        return
    rows = []
    for name in args.models:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--runs", str(args.runs)],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    import tensorflow as tf

    meta = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from effdet_rt.utils.atomic import atomic_write_text

    atomic_write_text(RESULTS / "model_latency.json", json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    atomic_write_text(RESULTS / "model_latency.md", markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
