"""D0 at 512: TF checkpoint vs ONNX Runtime FP32 / INT8 vs OpenVINO FP32 / INT8, side by side in one run.

Run: .venv/bin/python benchmarks/engine_latency.py [--minutes 10] [--image-size 512] [--data ../shared/data/bccd/BCCD]
     [--speed-only]
It runs the demo flow (BCCD converted, D0 trained for --minutes, evaluated, exported with --verify, ORT FP32 and
INT8 built with the TFRecord calibrator) so the three engines come from the same training, then measures each
engine's `run` on preprocessed batches: median latency at batch 1 and images/s at batch 8, and mAP / AP50 on
BCCD val. `--speed-only` skips training (random weights, no mAP). Writes benchmarks/results/engine_latency.{json,md}.
Reference on this machine type (2-core EPYC): effdet's D0 in ONNX Runtime 58 ms at batch 1, 16 img/s at batch 8;
compute floor 27 ms. Targets: FP32 <= 50 ms and >= 20 img/s; INT8 < 27 ms with an AP drop of at most 1 point.

`--reference effdet_d0.onnx` (repeatable; made by benchmarks/effdet_reference.py) re-measures every engine and each
reference model interleaved, a few runs of each in turn for --rounds rounds, and reports each engine's latency as a
ratio to the first reference: on a shared machine whose speed drifts by 1.5x within minutes, only such ratios
compare. The issue's targets as ratios to effdet's 58 ms: FP32 <= 0.86, INT8 < 0.47.
Speed-only runs write benchmarks/results/engine_latency_speed.{json,md}, so the trained figures stay.
With OpenVINO installed, its FP32 and INT8 engines (built from the same export and calibration batches) get rows
too, and so does OpenVINO's default compilation of the plain model.onnx (what a user would run without us). Every
runner is timed in turns (--rounds rounds); latency and images/s are also given as ratios to ONNX Runtime FP32.

`--auto` adds `build --precision auto`'s engine (every candidate of the backend table built from the same export and
calibration batches, checked against FP32 and timed in turns; its table goes into the results too) and reports it
against the outside reference, OpenVINO's defaults on the plain model.onnx, at batch 1 and batch 8 (the issue's
target: >= 1.25x faster at both). `--auto-only` builds nothing else (random weights): the export, the auto engine
and the reference. The CPU class (AVX2, AVX-512 VNNI, AMX; bf16) is in every result file's machine line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BCCD = REPO.parent / "shared" / "data" / "bccd" / "BCCD"


SPEED_ONLY_FILES = ("random.edrt", "fp32.onnx", "int8.onnx", "model_openvino_fp32.xml", "model_openvino_int8.xml",
                    "model_openvino_fp16.xml")


def rows_from_folder(work: Path) -> list[dict]:
    """Rows for the engines an earlier speed-only run left in `work` (its --keep folder), to time them again."""
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines import load

    rows = []
    for name in SPEED_ONLY_FILES:
        if (work / name).is_file():
            engine = load(work / name, key=DEMO_KEY)
            rows.append({"backend": engine.backend, "precision": engine.precision, "model_file": str(work / name),
                         "mAP": None, "AP50": None, "latency_ms": None, "throughput": None})
    return rows


def export_random(image_size: int, work: Path):
    """Random-weight D0 at ``image_size`` saved and exported (--nms onnx); returns (checkpoint, model.onnx, demo data)."""
    import tf_keras as keras

    from effdet_rt.checkpoint import model_weights, save_checkpoint
    from effdet_rt.checkpoint.keys import ScryptCost
    from effdet_rt.demo.data import prepare_demo_data
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.export.workflow import export_from_spec
    from effdet_rt.model.factory import build_model_from_spec
    from effdet_rt.spec import default_spec, spec_to_yaml
    from effdet_rt.spec.overrides import apply_option_values, apply_overrides

    keras.utils.set_random_seed(0)
    spec = apply_overrides(default_spec(), [f"model.input_width={image_size}", f"model.input_height={image_size}",
                                            "dataset.num_classes=4", "export.nms=onnx", "export.min_score_thresh=0.001"])
    ckpt = save_checkpoint(work / "random.edrt", model_weights(build_model_from_spec(spec)), key=DEMO_KEY,
                           spec_yaml=spec_to_yaml(spec), cost=ScryptCost(log2_n=10))
    data = prepare_demo_data(BCCD if BCCD.is_dir() else None, work / "data", log=lambda _: None)
    exporting = apply_option_values(spec, {"export.checkpoint": str(ckpt), "export.onnx_file": str(work / "model.onnx")})
    return ckpt, export_from_spec(exporting, key=DEMO_KEY), data


def speed_only(image_size: int, work: Path, measure: bool = True) -> list[dict]:
    """Random-weight D0 exported and built both ways; speeds only (left to the side-by-side run when not `measure`)."""
    from effdet_rt.calib.batches import calibration_batches
    from effdet_rt.demo.run import DEMO_KEY, measure_speed
    from effdet_rt.engines import load
    from effdet_rt.engines.build.onnxruntime import build_onnxruntime_engine

    ckpt, onnx_path, data = export_random(image_size, work)

    fp32 = build_onnxruntime_engine(onnx_path, work / "fp32.onnx", precision="fp32", log=lambda _: None)
    calibration = lambda: calibration_batches([data.train_tfrecords], (image_size, image_size), 4, 8)  # noqa: E731
    int8 = build_onnxruntime_engine(onnx_path, work / "int8.onnx", precision="int8", log=lambda _: None,
                                    calibration=calibration)
    from effdet_rt.demo.run import openvino_engines

    rows = []
    for path in (ckpt, fp32, int8, *(path for _, path in openvino_engines(onnx_path, work, calibration, lambda _: None))):
        engine = load(path, key=DEMO_KEY)
        latency, throughput = measure_speed(engine, engine.input_size) if measure else (None, None)
        rows.append({"backend": engine.backend, "precision": engine.precision, "model_file": str(path),
                     "mAP": None, "AP50": None, "latency_ms": latency, "throughput": throughput})
    return rows


def auto_engine(onnx_path: Path, train_tfrecords: Path, work: Path, rounds: int, data=None) -> tuple[dict, dict]:
    """`build --precision auto` on ``onnx_path``, calibrated on 8 batches of 4 training images as the other INT8
    engines are (with ``data``, a trained model's demo data, every candidate's mAP on its val set is measured too):
    (its row, its auto_build metadata: every candidate's row)."""
    from effdet_rt.engines import load
    from effdet_rt.infer.autotune import Validation, build_fastest
    from effdet_rt.spec.schema import BuildConfig

    settings = BuildConfig.model_validate({
        "data_type": "auto", "engine_file": str(work / "auto_engine"),
        "calibration": {"tfrecords": [str(train_tfrecords)], "batch_size": 4, "batches": 8},
        "auto": {"rounds": rounds}})
    validation = Validation([str(data.val_tfrecords)], str(data.val_json)) if data is not None else None
    path = build_fastest(onnx_path, settings, validation=validation, log=print)
    summary = load(path).metadata["auto_build"]
    choice = summary["choice"]
    chosen = next(r for r in summary["candidates"] if r["status"] == "chosen")
    row = {"backend": f"auto ({choice['backend']})", "precision": choice["precision"], "model_file": str(path),
           "mAP": chosen["mAP"], "AP50": None, "latency_ms": None, "throughput": None}
    return row, summary


class ReferenceRunner:
    """An ONNX model of raw heads on NCHW input (effdet's), timed alone: its input is converted once, outside the
    timing (effdet normalises on the host), and it has no post-processing."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        from effdet_rt.engines.runtime.onnxruntime import session_options

        self.session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.backend, self.precision = f"effdet reference ({path.stem})", "fp32"
        self._converted: dict = {}

    def run(self, batch):
        import numpy as np

        key = (id(batch), batch.shape)
        if key not in self._converted:
            self._converted[key] = np.ascontiguousarray(batch.transpose(0, 3, 1, 2) / 127.5 - 1.0, dtype=np.float32)
        self.session.run(None, {self.input_name: self._converted[key]})


class OpenVinoOnnxRunner:
    """The exported model.onnx compiled by OpenVINO with its defaults, as a user would run it without effdet-rt
    (on CPUs with BF16 that computes in bf16), with no post-processing of the outputs."""

    name = "OpenVINO defaults on model.onnx"

    def __init__(self, path: Path):
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        compute = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.backend, self.precision = self.name, f"fp32 model, computes in {compute}"

    def run(self, batch):
        self.request.infer({0: batch})


def side_by_side(runners: list, image_size: int, rounds: int) -> list[tuple[float, float]]:
    """(median batch-1 ms, median batch-8 images/s) of each runner, measured in turns: per round, each runner does
    one untimed run, 4 timed batch-1 runs and one timed batch-8 run before the next one starts."""
    import numpy as np

    rng = np.random.default_rng(0)
    one = rng.uniform(0, 255, (1, image_size, image_size, 3)).astype(np.float32)
    eight = rng.uniform(0, 255, (8, image_size, image_size, 3)).astype(np.float32)
    latencies: list[list[float]] = [[] for _ in runners]
    rates: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for k, runner in enumerate(runners):
            runner.run(one)
            for _ in range(4):
                start = time.perf_counter()
                runner.run(one)
                latencies[k].append(time.perf_counter() - start)
            start = time.perf_counter()
            runner.run(eight)
            rates[k].append(8 / (time.perf_counter() - start))
    return [(statistics.median(lat) * 1000, statistics.median(rate)) for lat, rate in zip(latencies, rates, strict=True)]


def remeasure_in_turns(rows: list[dict], references: list[Path], onnx_path: Path | None, image_size: int,
                       rounds: int) -> list[dict]:
    """Every engine, each effdet reference and OpenVINO's defaults on model.onnx timed in turns; latencies also as
    ratios to the first reference (when given) and to the ONNX Runtime FP32 engine."""
    from effdet_rt.demo.run import DEMO_KEY
    from effdet_rt.engines import load
    from effdet_rt.engines.runtime.openvino_common import openvino_status

    refs: list = [ReferenceRunner(path) for path in references]
    ref_files = [str(path) for path in references]
    if onnx_path is not None and openvino_status()[0]:
        refs.append(OpenVinoOnnxRunner(onnx_path))
        ref_files.append(str(onnx_path))
    engines = [load(Path(row["model_file"]), key=DEMO_KEY) for row in rows]
    measured = side_by_side([*refs, *engines], image_size, rounds)
    out = [{"backend": r.backend, "precision": r.precision, "model_file": path, "mAP": None, "AP50": None,
            "latency_ms": lat, "throughput": rate}
           for r, path, (lat, rate) in zip(refs, ref_files, measured[: len(refs)], strict=True)]
    out += [{**row, "latency_ms": lat, "throughput": rate} for row, (lat, rate) in zip(rows, measured[len(refs):], strict=True)]
    ort_fp32 = next((r for r in out if r["backend"] == "onnxruntime" and r["precision"] == "fp32"), None)
    outside = next((r for r in out if r["backend"] == OpenVinoOnnxRunner.name), None)
    for row in out:
        if ort_fp32 is not None:
            row["latency_vs_ort_fp32"] = row["latency_ms"] / ort_fp32["latency_ms"]
            row["throughput_vs_ort_fp32"] = row["throughput"] / ort_fp32["throughput"]
        if outside is not None:  # > 1: faster than what a user gets from OpenVINO without effdet-rt
            row["speedup_vs_openvino_defaults_b1"] = outside["latency_ms"] / row["latency_ms"]
            row["speedup_vs_openvino_defaults_b8"] = row["throughput"] / outside["throughput"]
        if references:
            row["latency_vs_reference"] = row["latency_ms"] / out[0]["latency_ms"]
    return out


def markdown(rows: list[dict], title: str) -> str:
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    ratio = any("latency_vs_reference" in r for r in rows)
    ort = any("latency_vs_ort_fp32" in r for r in rows)
    outside = any("speedup_vs_openvino_defaults_b1" in r for r in rows)
    head = "| backend | precision | mAP (BCCD val) | AP50 | latency batch 1 | images/s batch 8 |"
    rule = "| --- | --- | ---: | ---: | ---: | ---: |"
    head += (" latency / reference |" if ratio else "") + (" latency / ORT FP32 | images/s / ORT FP32 |" if ort else "")
    rule += (" ---: |" if ratio else "") + (" ---: | ---: |" if ort else "")
    head += " speed-up vs OpenVINO defaults, batch 1 | batch 8 |" if outside else ""
    rule += " ---: | ---: |" if outside else ""
    lines = [title, "", head, rule]
    for r in rows:
        line = f"| {r['backend']} | {r['precision']} | {fmt(r['mAP'])} | {fmt(r['AP50'])} | {r['latency_ms']:.1f} ms | {r['throughput']:.1f} |"
        line += f" {r['latency_vs_reference']:.3f} |" if ratio else ""
        line += f" {r['latency_vs_ort_fp32']:.3f} | {r['throughput_vs_ort_fp32']:.3f} |" if ort else ""
        line += (f" {r['speedup_vs_openvino_defaults_b1']:.2f}x | {r['speedup_vs_openvino_defaults_b8']:.2f}x |"
                 if outside else "")
        lines.append(line)
    return "\n".join(lines) + "\n"


def candidates_markdown(summary: dict) -> str:
    """`build --precision auto`'s own table: every candidate, timed in turns by it (its rounds, not the table above)."""
    batch = summary["batch"]
    lines = [f"`build --precision auto` chose {summary['choice']['backend']} {summary['choice']['precision']} "
             f"({summary['cpu_class']}, {summary['threads']} threads; {summary['rule']})", "",
             f"| candidate | status | build s | matched FP32 | mAP | batch 1 ms | batch {batch} img/s | why |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    show = lambda v: "—" if v is None else str(v)  # noqa: E731
    for row in summary["candidates"]:
        matched = "—" if row["matched"] is None else f"{row['matched']:.1%}"
        lines.append(f"| {row['backend']} {row['precision']} | {row['status']} | {show(row['build_s'])} | {matched} | "
                     f"{show(row['mAP'])} | {show(row['batch1_ms'])} | {show(row[f'batch{batch}_img_s'])} | {row['why']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--data", type=Path, default=BCCD)
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--keep", type=Path, help="work folder to keep (checkpoint, models, demo outputs); default: a temp folder")
    parser.add_argument("--reference", type=Path, action="append", default=[],
                        help="effdet ONNX from benchmarks/effdet_reference.py, measured in turns with the engines")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the side-by-side measurement")
    parser.add_argument("--tag", default="", help="suffix of the result files (keeps an earlier run's files)")
    parser.add_argument("--auto", action="store_true",
                        help="also build `build --precision auto`'s engine and compare it with OpenVINO's defaults")
    parser.add_argument("--auto-only", action="store_true",
                        help="random weights; only the auto engine and OpenVINO's defaults on model.onnx (implies --auto)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep DIR: time the engines (and the trained demo) an earlier run left in DIR, "
                             "build nothing but the --auto engine")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    summary = None
    with tempfile.TemporaryDirectory(prefix="effdet-engine-latency-") as scratch:
        tmp = str(args.keep or scratch)
        if args.auto_only:
            _ckpt, onnx_path, data = export_random(args.image_size, Path(tmp))
            auto_row, summary = auto_engine(onnx_path, data.train_tfrecords, Path(tmp), args.rounds)
            rows = [auto_row]
            title = f"D0 {args.image_size}x{args.image_size}, random weights: the auto engine vs OpenVINO's defaults"
        elif args.speed_only:
            rows = (rows_from_folder(Path(tmp)) if args.reuse and args.keep else
                    speed_only(args.image_size, Path(tmp), measure=False))
            title = f"D0 {args.image_size}x{args.image_size}, random weights (speed only)"
        else:
            from effdet_rt.demo.run import DemoSettings, run_demo

            if args.reuse and args.keep:  # the demo an earlier run left in --keep: its engines and their mAP
                result = json.loads((Path(tmp) / "demo_results.json").read_text())["rows"]
            else:
                result = [asdict(r) for r in run_demo(DemoSettings(args.data, Path(tmp), args.minutes, args.image_size, 4),
                                                      log=print)]
            rows = [{**r, "model_file": str(Path(tmp) / ("train" if r["model_file"].endswith(".edrt") else "") /
                                            r["model_file"])} for r in result]
            title = f"D0 {args.image_size}x{args.image_size} trained {args.minutes:g} min on {args.data.name}"
        if args.auto and not args.auto_only:
            from effdet_rt.demo.data import prepare_demo_data

            data = prepare_demo_data(args.data if args.data.is_dir() else None, Path(tmp) / "auto_data", log=lambda _: None)
            auto_row, summary = auto_engine(Path(tmp) / "model.onnx", data.train_tfrecords, Path(tmp), args.rounds,
                                            None if args.speed_only else data)
            rows.append(auto_row)
        rows = remeasure_in_turns(rows, args.reference, Path(tmp) / "model.onnx", args.image_size, args.rounds)
        title += f"; every runner measured in turns, {args.rounds} rounds"
    machine = describe_cpu()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for row in rows:
        row["model_file"] = Path(row["model_file"]).name
    stem = ("engine_latency_auto" if args.auto_only else "engine_latency_speed" if args.speed_only
            else "engine_latency") + (f"_{args.tag}" if args.tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"title": title, "machine": machine, "rows": rows,
                                                      "auto_build": summary}, indent=2) + "\n")
    text = markdown(rows, f"{title} ({machine})")
    if summary is not None:
        text += "\n" + candidates_markdown(summary)
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
