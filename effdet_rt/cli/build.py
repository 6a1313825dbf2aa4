"""`effdet-rt build`: an exported ONNX model -> an engine (TensorRT plan, ONNX Runtime model or OpenVINO IR)."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.backends import backend_help, precision_help
from effdet_rt.cli.common import field_option, option, overrides_argument, spec_option, task_spec
from effdet_rt.errors import UserError


def build_command(
    model: Path = option(..., "-m", "--model", "--model-path", help="ONNX model written by `effdet-rt export`."),
    output: Path = field_option("build.engine_file", "-o", "--output", "--output-path",
                                help="Engine file: .plan/.engine (TensorRT), .onnx (ONNX Runtime) or .xml (OpenVINO, with its .bin)."),
    spec: Path = spec_option,
    backend: str = field_option("build.backend", "--backend", help=backend_help()),
    precision: str = field_option("build.data_type", "--precision", "--data-type", help=precision_help()),
    calib_tfrecords: list[str] = field_option("build.calibration.tfrecords", "--calib-tfrecords",
                                              help="TFRecord glob(s) for INT8 calibration (unset: the spec's "
                                                   "dataset.train_tfrecords)."),
    calib_batches: int = field_option("build.calibration.batches", "--calib-batches",
                                      help="Number of calibration batches."),
    calib_batch_size: int = field_option("build.calibration.batch_size", "--calib-batch-size",
                                         help="Calibration batch size."),
    calib_cache: str = field_option("build.calibration.cache_file", "--calib-cache", "--cal-cache-file",
                                    help="TensorRT <= 10 calibration cache file (read first when it exists)."),
    calib_only: bool = option(False, "--calib-only", help="TensorRT <= 10: write only the calibration cache."),
    workspace_gb: float = field_option("build.workspace_gb", "--workspace-gb", help="TensorRT workspace limit in GiB."),
    min_batch: int = field_option("build.min_batch_size", "--min-batch", "--min-batch-size",
                                  help="TensorRT profile minimum batch."),
    opt_batch: int = field_option("build.opt_batch_size", "--opt-batch", "--opt-batch-size",
                                  help="TensorRT profile optimum batch."),
    max_batch: int = field_option("build.max_batch_size", "--max-batch", "--max-batch-size",
                                  help="TensorRT profile maximum batch."),
    timing_cache: str = field_option("build.timing_cache", "--timing-cache",
                                     help="TensorRT timing cache file, read and written."),
    calib_images: Path = option(None, "--calib-images", help="Classifier ONNX: folder of images for INT8 calibration "
                                "(e.g. the training images), preprocessed as inference does."),
    int8_profile: str = field_option("build.int8_profile", "--int8-profile",
                                     help="ONNX Runtime int8 Q/DQ layout: onnxruntime (all ops, UINT8 activations: fast "
                                          "on CPU) or tensorrt (symmetric INT8 activations on convs: the input "
                                          "TensorRT 11 needs)."),
    budget: float = field_option("build.auto.budget_s", "--budget",
                                 help="--precision auto: seconds for building and timing every candidate (those not "
                                      "reached are reported as skipped)."),
    timing_rounds: int = field_option("build.auto.rounds", "--timing-rounds",
                                      help="--precision auto: timing rounds (each times every candidate in turn at "
                                           "batch 1 and at --max-batch)."),
    min_match: float = field_option("build.auto.min_match", "--min-match",
                                    help="--precision auto: share of FP32's detections on the calibration images a "
                                         "candidate must match (same class, IoU >= 0.5)."),
    overrides: list[str] = overrides_argument,
) -> None:
    """Build an engine from an exported ONNX model; `--precision auto` builds every engine this machine runs, times
    them and keeps the fastest that matches FP32."""
    from effdet_rt.backends import AUTO
    from effdet_rt.engines.build.request import build_engine

    settings = task_spec(build_command, locals())
    if settings.build.data_type == AUTO:
        if calib_only or calib_images is not None:
            raise UserError("--precision auto builds detector engines for CPUs and GPUs; drop --calib-only / "
                            "--calib-images, or choose a --precision")
        calibrate_on_training_set(settings, typer.echo)
        build_measured(model, settings, typer.echo)
        return
    calibration = task_calibration(model, calib_images, settings.build.calibration, typer.echo)
    if calibration is None:
        calibrate_on_training_set(settings, typer.echo)
    build_engine(model, settings.build, calib_only=calib_only, calibration=calibration, log=typer.echo)


def build_measured(model: Path, settings, log) -> Path:
    """`--precision auto`, with mAP on the validation set too when the spec names one (dataset.val_tfrecords and
    dataset.val_json_file; evaluate.num_samples images)."""
    from effdet_rt.infer.autotune import Validation, build_fastest

    dataset = settings.dataset
    validation = None
    if dataset.val_tfrecords and dataset.val_json_file:
        validation = Validation(list(dataset.val_tfrecords), dataset.val_json_file, settings.evaluate.num_samples)
        log(f"auto: each candidate's mAP on {dataset.val_json_file} (up to {settings.evaluate.num_samples} images)")
    return build_fastest(model, settings.build, validation=validation, log=log)


def calibrate_on_training_set(settings, log) -> None:
    """A detector's INT8 (or auto) build without build.calibration.tfrecords calibrates on dataset.train_tfrecords (what
    the training images are, as TAO calibrates on the training images)."""
    calibration = settings.build.calibration
    if settings.build.data_type in ("int8", "auto") and not calibration.tfrecords and settings.dataset.train_tfrecords:
        calibration.tfrecords = list(settings.dataset.train_tfrecords)
        log("calibration: no --calib-tfrecords / build.calibration.tfrecords; using dataset.train_tfrecords")


def task_calibration(model: Path, images: Path | None, calibration, log):
    """The calibration batches of the ONNX's task when it calibrates on its own images (a classifier: the folder
    --calib-images); None when it calibrates on build.calibration's TFRecords."""
    from effdet_rt.engines.runtime.onnxruntime import read_onnx
    from effdet_rt.onnx.graph import read_metadata
    from effdet_rt.onnx.tasks import task_of_metadata

    metadata = read_metadata(read_onnx(model)) if model.suffix.lower() == ".onnx" and model.is_file() else {}
    task = task_of_metadata(metadata, str(model))
    if task.image_calibration is None:
        if images is not None:
            raise UserError("--calib-images is for classifier ONNX models; calibrate a detector with --calib-tfrecords")
        return None
    return task.image_calibration(metadata, images, calibration, log)


def register(app: typer.Typer) -> None:
    app.command("build")(build_command)
