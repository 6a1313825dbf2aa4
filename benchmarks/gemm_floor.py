"""The physical floor: this CPU's GEMM throughput per precision, the detectors' multiply-adds, and how far each
engine is from the time those multiply-adds would take at that throughput.

Run: .venv/bin/python benchmarks/gemm_floor.py [--size 1024] [--rounds 5] [--engines results/engine_latency_auto.json]
Measures square N x N matrix products, in turns, on every core:
- fp32: numpy (its BLAS), ONNX Runtime MatMul, OpenVINO MatMul computing in f32;
- bf16: OpenVINO MatMul computing in bf16, where the CPU has bfloat16 arithmetic (AVX512_BF16, AMX);
- int8: ONNX Runtime MatMulInteger (uint8 x int8 -> int32) and OpenVINO MatMul between FakeQuantize nodes (its
  low-precision pass runs it on int8; the runtime precision it reports is recorded).
The best of each precision is its peak in multiply-adds per second. The detectors' multiply-adds come from
effdet_rt/model/cost_table.py (tests check it against built networks). An engine's floor is its model's
multiply-adds at the peak of its precision; the engines' times come from an engine_latency.py result file (its
`build --precision auto` candidates, timed in turns there). A network of depthwise and 1x1 convolutions on small
maps does not reach a large GEMM's rate (depthwise convolutions are bound by memory), so the ratio says how much of
an engine's time is not multiply-adds, not what is reachable.
Writes benchmarks/results/gemm_floor.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from machine import describe_cpu, read_cpuinfo

from effdet_rt.utils.cpu import has_bf16_arithmetic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = (("efficientdet-d0", 3), ("efficientdet-lite0", 3))  # the benchmarks' random models: 3 real classes


def numpy_fp32(n: int):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    return lambda: a @ b


def onnx_matmul(n: int, integer: bool):
    """An ONNX Runtime session of one MatMul (fp32) or MatMulInteger (uint8 x int8) with a constant right side."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from effdet_rt.engines.runtime.onnxruntime import session_options

    rng = np.random.default_rng(0)
    if integer:
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = rng.integers(-127, 127, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
        types = (TensorProto.UINT8, TensorProto.INT32)
    else:
        a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        types = (TensorProto.FLOAT, TensorProto.FLOAT)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", types[0], [n, n])],
                              [helper.make_tensor_value_info("c", types[1], [n, n])], [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})


def openvino_matmul(n: int, mode: str):
    """An OpenVINO MatMul computing in f32 or bf16, or between FakeQuantize nodes (int8); returns (run, the
    precision the CPU plugin reports running the MatMul in)."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    left = ops.parameter([n, n], ov.Type.f32, name="a")
    right = ops.constant(b)
    if mode == "int8":
        def fake_quantize(x, low, high, levels):
            lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
            return ops.fake_quantize(x, lo, hi, lo, hi, levels)

        # unsigned activations, symmetric 255-level weights: the pattern NNCF writes and the CPU plugin runs as u8 x i8
        product = ops.matmul(fake_quantize(left, 0.0, 4.0, 256), fake_quantize(right, -4.0, 4.0, 255), False, True)
    else:
        product = ops.matmul(left, right, False, True)  # B transposed: a FullyConnected layer, as in the networks
    params = [left]
    model = ov.Model([product], params, "gemm")
    hint = {"bf16": ov.Type.bf16}.get(mode, ov.Type.f32)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                                                      "INFERENCE_NUM_THREADS": os.cpu_count() or 1})
    request = compiled.create_infer_request()
    runtime = [op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
               if op.get_rt_info()["layerType"].astype(str) in ("MatMul", "FullyConnected")]
    a_in = np.abs(a) if mode == "int8" else a
    return (lambda: request.infer({0: a_in})), ",".join(runtime) or "?"


def kernels(n: int) -> list[dict]:
    """Every GEMM this machine runs: name, precision, and a callable doing one N x N product."""
    found = [{"name": "numpy matmul", "precision": "fp32", "run": numpy_fp32(n)},
             {"name": "ONNX Runtime MatMul", "precision": "fp32", "run": onnx_matmul(n, False)},
             {"name": "ONNX Runtime MatMulInteger (u8 x s8)", "precision": "int8", "run": onnx_matmul(n, True)}]
    try:
        import openvino  # noqa: F401
    except ImportError:
        return found
    modes = ["fp32", "int8"] + (["bf16"] if has_bf16_arithmetic(read_cpuinfo()[1]) else [])
    for mode in modes:
        run, runtime = openvino_matmul(n, mode)
        found.append({"name": f"OpenVINO MatMul ({runtime})", "precision": mode, "run": run})
    return found


def measure(found: list[dict], n: int, rounds: int, repeats: int = 3) -> None:
    """Each kernel's median multiply-adds per second, timed in turns (a round runs every kernel before the next)."""
    times: list[list[float]] = [[] for _ in found]
    for kernel in found:
        kernel["run"]()  # warm-up: first-run allocation and kernel choice
    for _ in range(rounds):
        for k, kernel in enumerate(found):
            for _ in range(repeats):
                start = time.perf_counter()
                kernel["run"]()
                times[k].append(time.perf_counter() - start)
    for kernel, seconds in zip(found, times, strict=True):
        kernel["gmac_s"] = n**3 / statistics.median(seconds) / 1e9
        del kernel["run"]


def engine_rows(path: Path) -> tuple[str, list[dict]]:
    """(model name, candidate rows with timings) from an engine_latency.py result with an `auto_build` table."""
    data = json.loads(path.read_text())
    summary = data.get("auto_build") or {}
    rows = [r for r in summary.get("candidates", []) if r.get("batch1_ms")]
    return data.get("title", ""), [{**r, "batch": summary["batch"]} for r in rows]


def floors(peaks: dict[str, float], engines: list[dict], title: str) -> list[dict]:
    from effdet_rt.model.cost_table import tabled_cost

    d0 = tabled_cost("efficientdet-d0", 3)
    size = next((int(word.split("x")[0]) for word in title.split() if "x" in word and word.split("x")[0].isdigit()),
                d0.input_size[0])
    # another input size: scaled by pixels (the heads' and BiFPN's costs are linear in H*W; close enough for a floor)
    macs = int(d0.multiply_adds * size * size / (d0.input_size[0] * d0.input_size[1]))
    out = []
    for row in engines:
        peak = peaks.get(row["precision"]) or peaks["fp32"]
        floor_ms = macs / (peak * 1e9) * 1000
        per_image_ms = 1000.0 / row[f"batch{row['batch']}_img_s"]
        out.append({"engine": f"{row['backend']} {row['precision']}", "status": row["status"],
                    "model": f"efficientdet-d0 {size}x{size}", "multiply_adds": macs, "floor_ms": floor_ms,
                    "batch1_ms": row["batch1_ms"], "batch1_vs_floor": row["batch1_ms"] / floor_ms,
                    "per_image_ms_batch": per_image_ms, "per_image_vs_floor": per_image_ms / floor_ms})
    return out


def markdown(result: dict) -> str:
    lines = [f"# GEMM floor ({result['machine']})", "", result["note"], "",
             f"| GEMM ({result['size']}x{result['size']}) | precision | GMAC/s |", "| --- | --- | ---: |"]
    lines += [f"| {k['name']} | {k['precision']} | {k['gmac_s']:.1f} |" for k in result["kernels"]]
    lines += ["", "| model | multiply-adds | " + " | ".join(f"floor at {p} peak" for p in result["peaks"]) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in result["peaks"]) + " |"]
    for model in result["models"]:
        lines.append(f"| {model['name']} {model['size']} | {model['multiply_adds'] / 1e9:.3f} G | "
                     + " | ".join(f"{model['floor_ms'][p]:.1f} ms" for p in result["peaks"]) + " |")
    if result["engines"]:
        lines += ["", f"Engines ({result['engines_from']}):", "",
                  "| engine | status | floor | batch 1 | x floor | per image at batch 8 | x floor |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {e['engine']} | {e['status']} | {e['floor_ms']:.1f} ms | {e['batch1_ms']:.1f} ms | "
                  f"{e['batch1_vs_floor']:.1f} | {e['per_image_ms_batch']:.1f} ms | {e['per_image_vs_floor']:.1f} |"
                  for e in result["engines"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engines", type=Path, default=RESULTS / "engine_latency_auto.json")
    parser.add_argument("--note", default="", help="how loaded the machine was (goes into the result files)")
    args = parser.parse_args()
    from effdet_rt.model.cost_table import tabled_cost

    found = kernels(args.size)
    measure(found, args.size, args.rounds)
    peaks = {}
    for kernel in found:
        peaks[kernel["precision"]] = max(peaks.get(kernel["precision"], 0.0), kernel["gmac_s"])
    models = []
    for name, classes in MODELS:
        cost = tabled_cost(name, classes)
        models.append({"name": name, "size": f"{cost.input_size[0]}x{cost.input_size[1]}",
                       "multiply_adds": cost.multiply_adds,
                       "floor_ms": {p: cost.multiply_adds / (peak * 1e9) * 1000 for p, peak in peaks.items()}})
    title, engines = engine_rows(args.engines) if args.engines.is_file() else ("", [])
    result = {"machine": describe_cpu(), "size": args.size, "rounds": args.rounds, "note": args.note,
              "kernels": found, "peaks": peaks, "models": models, "engines_from": args.engines.name,
              "engines": floors(peaks, engines, title)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gemm_floor.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / "gemm_floor.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
