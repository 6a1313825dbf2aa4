"""Where the time goes: per-op-type profiles of ONNX Runtime and OpenVINO engines of one model, batch 1.

Run: .venv/bin/python benchmarks/op_profile.py ENGINE... [--runs 20] [--tag NAME]
ENGINE: an ONNX Runtime engine (.onnx, from `build --backend onnxruntime`) or an OpenVINO IR (.xml). Each engine runs
--runs times on one random preprocessed image; the time of every op type (ORT: node op type; OpenVINO: layer type and
the kernel it ran) is summed over the runs and divided by them. Writes benchmarks/results/op_profile[_TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def ort_profile(path: Path, batch, runs: int) -> dict[str, float]:
    """op type -> ms per run, from ONNX Runtime's own profiler."""
    import onnxruntime as ort

    from effdet_rt.engines.runtime.onnxruntime import session_options

    options = session_options()
    with tempfile.TemporaryDirectory() as work:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(work) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: batch})
        for _ in range(runs):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: collections.Counter = collections.Counter()
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[args.get("op_name", "?")] += event["dur"] / 1000
    return {k: v / (runs + 1) for k, v in totals.items()}


def openvino_profile(path: Path, batch, runs: int) -> dict[str, float]:
    """layer type (kernel) -> ms per run, from OpenVINO's performance counters."""
    import openvino as ov

    from effdet_rt.engines.runtime.openvino import OpenVinoEngine

    engine = OpenVinoEngine(path)  # checks the IR pair and picks the compute precision the engine uses
    compiled = ov.Core().compile_model(str(path), "CPU",
                                       {"INFERENCE_PRECISION_HINT": engine.compute_type, "PERFORMANCE_HINT": "LATENCY",
                                        "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer({0: batch})
    totals: collections.Counter = collections.Counter()
    for _ in range(runs):
        request.infer({0: batch})
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                totals[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds() * 1000
    return {k: v / runs for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    import numpy as np

    from effdet_rt.engines import load

    results = {}
    for path in args.engines:
        size = load(path).input_size
        batch = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype(np.float32)
        profile = openvino_profile(path, batch, args.runs) if path.suffix == ".xml" else ort_profile(path, batch, args.runs)
        results[path.name] = dict(sorted(profile.items(), key=lambda kv: -kv[1]))
    stem = "op_profile" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = describe_cpu()
    (RESULTS / f"{stem}.json").write_text(json.dumps({"machine": machine, "runs": args.runs, "profiles": results}, indent=2) + "\n")
    lines = [f"Per-op-type time, batch 1, mean of {args.runs} runs ({machine}); the machine was shared", ""]
    for name, profile in results.items():
        total = sum(profile.values())
        lines += [f"### {name}: {total:.1f} ms of op time per run", "", "| op type | ms | share |", "| --- | ---: | ---: |"]
        lines += [f"| {op} | {ms:.2f} | {ms / total:.1%} |" for op, ms in list(profile.items())[: args.top]]
        lines.append("")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
