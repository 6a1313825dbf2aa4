"""LiteRT FP32 / INT8 against ONNX Runtime and OpenVINO (FP32, INT8, and BF16 on a CPU with bfloat16 arithmetic) for
Lite0 at 320 and D0 at 512, batch 1,
the same threads, side by side in one run; and what XNNPACK does with each LiteRT graph's ops.

Run: .venv/bin/python benchmarks/litert.py [--rounds 6] [--models efficientdet-lite0:320,efficientdet-d0:512]
Random-weight models (speed only; accuracy needs trained models), every file written by the CLI from one
checkpoint with raw heads (`--nms none`): `export` to ONNX then `build` ORT FP32 / INT8 and OpenVINO FP32 / INT8
when installed, and `export -o *.tflite` FP32 and INT8; INT8 everywhere calibrated on the same BCCD train batches.
The network alone is timed (each backend's runner: batch in, heads out), all with the machine's threads, in turns
(benchmarks/engine_latency.py's side_by_side): raw heads because a LiteRT file with TFLite_Detection_PostProcess
inside runs on one thread (effdet_rt/engines/runtime/litert.py: POSTPROCESS_THREADS_BUG), which would not compare.
The figure that matters is each ratio, measured side by side: LiteRT INT8 / LiteRT FP32 (target <= 0.6 for Lite0)
and LiteRT / ORT.
The load average before and after is recorded: on a shared machine it moves every figure.
Writes benchmarks/results/litert.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from engine_latency import BCCD, RESULTS, side_by_side
from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

MODELS = "efficientdet-lite0:320,efficientdet-d0:512"


def checkpoint(name: str, size: int, folder: Path) -> tuple[Path, Path]:
    """A random-weight checkpoint of ``name`` at ``size`` and the spec file it was made from."""
    import tf_keras as keras

    from effdet_rt.checkpoint import model_weights, save_checkpoint
    from effdet_rt.checkpoint.keys import ScryptCost
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.model.configs import get_config
    from effdet_rt.model.factory import build_model_from_spec
    from effdet_rt.spec import default_spec, spec_to_yaml
    from effdet_rt.spec.overrides import apply_overrides

    keras.utils.set_random_seed(0)
    spec = apply_overrides(default_spec(), [
        f"model.name={name}", f"model.input_width={size}", f"model.input_height={size}",
        f"model.anchor_scale={get_config(name).anchor_scale}", "dataset.num_classes=4",
        "export.min_score_thresh=0.001",
    ])
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(spec_to_yaml(spec))
    ckpt = save_checkpoint(folder / "random.edrt", model_weights(build_model_from_spec(spec)), key=DEMO_KEY,
                           spec_yaml=spec_to_yaml(spec), cost=ScryptCost(log2_n=10))
    keras.backend.clear_session()
    return ckpt, folder / "spec.yaml"


def openvino_bf16() -> bool:
    """Whether this CPU runs OpenVINO bf16 engines (AVX512_BF16 or AMX)."""
    from effdet_rt.engines.runtime.openvino import has_bf16
    from effdet_rt.engines.runtime.openvino_common import import_openvino

    return has_bf16(import_openvino().Core())


def model_files(name: str, size: int, folder: Path, calib: str) -> dict[str, Path]:
    """Every engine of one model, written through the CLI as a user would."""
    from effdet_rt.backends import backend_named
    from effdet_rt.cli.main import run
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines.registry import backend_status

    ckpt, spec = checkpoint(name, size, folder)
    common = ["-e", str(spec), "-m", str(ckpt), "-k", DEMO_KEY]
    calibration = ["--calib-tfrecords", calib, "--calib-batches", "4", "--calib-batch-size", "4"]

    def cli(args: list[str]) -> None:
        if run(args) != 0:
            raise SystemExit(f"failed: effdet-rt {' '.join(args)}")

    files = {}
    cli(["export", *common, "-o", str(folder / "model.onnx"), "--nms", "none"])
    backends = [("onnxruntime", ".onnx")]
    if backend_status(backend_named("openvino"))[0]:
        backends.append(("openvino", ".xml"))
    for backend, suffix in backends:
        for precision in ("fp32", "int8", *(("bf16",) if backend == "openvino" and openvino_bf16() else ())):
            out = folder / f"{backend}_{precision}{suffix}"
            cli(["build", "-m", str(folder / "model.onnx"), "-o", str(out), "--backend", backend,
                 "--precision", precision, *(calibration if precision == "int8" else [])])
            files[f"{backend} {precision}"] = out
    for precision in ("fp32", "int8"):
        out = folder / f"litert_{precision}.tflite"
        cli(["export", *common, "-o", str(out), "--nms", "none", "--precision", precision,
             *(calibration if precision == "int8" else [])])
        files[f"litert {precision}"] = out
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--models", default=MODELS, help="name:size,name:size")
    args = parser.parse_args()

    from effdet_rt.demo.data import prepare_demo_data
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines import load
    from effdet_rt.engines.runtime.litert import xnnpack_partitions

    threads = os.cpu_count() or 1
    rows, xnnpack = [], {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare_demo_data(BCCD if BCCD.is_dir() else None, work / "data", log=lambda _: None)
        for item in args.models.split(","):
            name, size = item.split(":")
            files = model_files(name, int(size), work / name, str(data.train_tfrecords))
            runners = [load(path, key=DEMO_KEY).runner for path in files.values()]
            measured = side_by_side(runners, int(size), args.rounds)
            base = dict(zip(files, measured, strict=True))
            for label, (ms, rate) in base.items():
                rows.append({"model": name, "image_size": int(size), "engine": label, "batch1_ms": ms,
                             "batch8_img_s": rate, "vs_litert_fp32": ms / base["litert fp32"][0],
                             "vs_ort_fp32": ms / base["onnxruntime fp32"][0]})
            for label in ("litert fp32", "litert int8"):
                partitions, fallback = xnnpack_partitions(files[label], threads)
                xnnpack[f"{name} {label}"] = {"partitions": partitions, "fallback_ops": fallback}
    load = {"before": load_before, "after": os.getloadavg()}
    result = {"cpu": describe_cpu(), "threads": threads, "rounds": args.rounds, "load_average": load, "rows": rows,
              "xnnpack": xnnpack}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "litert.json").write_text(json.dumps(result, indent=2))
    lines = [f"# LiteRT vs ONNX Runtime vs OpenVINO, network only, {threads} threads (random weights, raw heads, "
             f"{args.rounds} rounds in turns; {describe_cpu()})", "",
             "Load average (1, 5, 15 min) before: " + ", ".join(f"{v:.1f}" for v in load["before"]) +
             "; after: " + ", ".join(f"{v:.1f}" for v in load["after"]) + " (a shared machine: ratios measured in "
             "turns hold better than the absolute times)", "",
             "| model | size | engine | batch-1 ms | / LiteRT FP32 | / ORT FP32 | batch-8 img/s |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['image_size']} | {r['engine']} | {r['batch1_ms']:.1f} | {r['vs_litert_fp32']:.2f} | "
              f"{r['vs_ort_fp32']:.2f} | {r['batch8_img_s']:.1f} |" for r in rows]
    lines += ["", "XNNPACK: partitions, and the ops it left to LiteRT's own kernels", ""]
    lines += [f"- {key}: {v['partitions']} partitions; not delegated: "
              f"{', '.join(f'{op} {n}' for op, n in v['fallback_ops'].items()) or 'none'}" for key, v in xnnpack.items()]
    (RESULTS / "litert.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
