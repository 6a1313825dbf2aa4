"""`effdet-rt classification train|evaluate|inference|export|prune`: TAO's classification task on EfficientNet.

Options that stand for spec fields reach the spec as the detection commands' do (`effdet_rt.cli.common`): each is a
``field_option`` naming its field, and the spec is validated once with the file, the overrides and those values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import typer

from effdet_rt.cli import prune as prune_options
from effdet_rt.cli.common import (
    field_option,
    gpu_index_option,
    key_option,
    option_values,
    overrides_argument,
    path_or_none,
    results_dir_option,
    use_gpu,
)
from effdet_rt.errors import SpecError
from effdet_rt.spec.schema import CalibrationConfig

classification_app = typer.Typer(
    name="classification", no_args_is_help=True,
    help="EfficientNet image classification (TAO's classification spec): train, evaluate, inference, export, prune.",
)

spec_option = typer.Option(None, "-e", "--experiment-spec", "--spec", help="Classification spec (YAML).")
MODEL_HELP = ("Model: .edrt checkpoint, .onnx (export or ONNX Runtime build), .tflite (LiteRT) or .plan/.engine "
              "(TensorRT build).")
CALIBRATION = CalibrationConfig()  # the calibration defaults `effdet-rt build` uses


def model_option(field: str) -> Any:
    return field_option(field, "-m", "--model", help=MODEL_HELP)


def _spec(command: Callable[..., Any], given: Mapping[str, Any]):
    """The command's classification spec: the -e file (required), its trailing overrides, then the values of the
    command's field options."""
    from effdet_rt.classification.spec import load_classification_spec

    path = given.get("experiment_spec")
    if not path:
        raise SpecError("pass the classification spec with -e/--experiment-spec spec.yaml")
    return load_classification_spec(path_or_none(path), given.get("overrides") or [], option_values(command, given))


def _results(given: str | None, spec, task: str | None) -> Path:
    if given:
        return Path(given)
    return Path(spec.results_dir) / task if task else Path(spec.results_dir)


@classification_app.command("train")
def train_command(
    experiment_spec: str = spec_option,
    results_dir: str | None = results_dir_option,
    key: str | None = key_option,
    max_seconds: float | None = typer.Option(
        None, "--max-seconds", help="Stop after the epoch in which this many seconds have passed (a checkpoint is saved)."),
    overrides: list[str] | None = overrides_argument,
) -> None:
    """Train: classmap.json, encrypted checkpoints, status.json, TensorBoard and training_curves.png in the results dir."""
    from effdet_rt.classification.train import train_classifier

    spec = _spec(train_command, locals())
    last = train_classifier(spec, _results(results_dir, spec, None), key, log=typer.echo, max_seconds=max_seconds)
    typer.echo(f"last checkpoint: {last}")


@classification_app.command("evaluate")
def evaluate_command(
    experiment_spec: str = spec_option,
    model: str = model_option("evaluate.model_path"),
    results_dir: str | None = results_dir_option,
    key: str | None = key_option,
    overrides: list[str] | None = overrides_argument,
) -> None:
    """Top-1/top-k accuracy, per-class precision/recall/F1 and the confusion matrix on evaluate.dataset_path."""
    from effdet_rt.classification.evaluate import evaluate_classifier

    spec = _spec(evaluate_command, locals())
    out = _results(results_dir, spec, "evaluate")
    evaluate_classifier(spec, model_path=None, key=key, results_dir=out, log=typer.echo)
    typer.echo(f"wrote {out / 'eval_results.json'}, {out / 'confusion_matrix.png'} and {out / 'class_scores.png'}")


@classification_app.command("inference")
def inference_command(
    experiment_spec: str = spec_option,
    model: str = model_option("inference.model_path"),
    images: str = field_option("inference.image_dir", "-i", "--images", help="An image or a folder of images."),
    classmap: str = field_option("inference.classmap", "--classmap",
                                  help="classmap.json from training (unset: the model's classes)."),
    results_dir: str | None = results_dir_option,
    key: str | None = key_option,
    overrides: list[str] | None = overrides_argument,
) -> None:
    """Classify images: result.csv (image path, class, confidence) in the results dir; exit 1 if some were unreadable."""
    from effdet_rt.classification.evaluate import infer_classifier

    spec = _spec(inference_command, locals())
    _, skipped = infer_classifier(spec, model_path=None, image_dir=None, classmap=None, key=key,
                                  results_dir=_results(results_dir, spec, "inference"), log=typer.echo)
    if skipped:
        raise typer.Exit(1)


@classification_app.command("export")
def export_command(
    experiment_spec: str = spec_option,
    model: str = model_option("export.model_path"),
    output: str = field_option("export.output_path", "-o", "--output",
                               help="ONNX file, or a .tflite (LiteRT, converted from the checkpoint), to write."),
    key: str | None = key_option,
    batch_size: int | None = typer.Option(None, "--batch-size", help="ONNX: fixed batch size (default: dynamic)."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (13-21; default 17)."),
    precision: str | None = field_option("export.data_type", "--precision", "--data-type",
                                         help="A .tflite's precision: fp32 | fp16 | int8 (full integer)."),
    io_type: str = typer.Option("float32", "--io-type", help="float32 | int8 | uint8: the input type of an INT8 .tflite (integer-only accelerators take int8/uint8)."),
    calib_images: str | None = typer.Option(None, "--calib-images", help="INT8 .tflite: folder of images that calibrates it (e.g. the training images), preprocessed as inference does."),
    calib_batches: int = typer.Option(CALIBRATION.batches, "--calib-batches", help="Number of calibration batches."),
    calib_batch_size: int = typer.Option(CALIBRATION.batch_size, "--calib-batch-size", help="Calibration batch size."),
    verify: bool = typer.Option(False, "--verify", help="Compare TensorFlow and ONNX Runtime (or LiteRT) probabilities (<= 1e-4) before writing."),
    overrides: list[str] | None = overrides_argument,
) -> None:
    """Export a checkpoint to ONNX (or a LiteRT .tflite): NHWC float input, preprocessing inside, softmax
    probabilities out."""
    from effdet_rt.classification.export import ConvertedOptions, export_classifier

    spec = _spec(export_command, locals())
    converted = ConvertedOptions(io_type, path_or_none(calib_images), calib_batches, calib_batch_size)
    written = export_classifier(spec, model_path=None, output=None, key=key, verify=verify, batch_size=batch_size,
                                opset=opset, converted=converted, log=typer.echo)
    typer.echo(f"wrote {written}")


@classification_app.command("prune")
def prune_command(
    experiment_spec: str | None = typer.Option(
        None, "-e", "--experiment-spec", "--spec",
        help="Classification spec (YAML); only its prune section and key are read (default: the defaults).",
    ),
    model: Path = field_option("prune.model_path", "-m", "--model", "--model-path",
                               help="Classification checkpoint (.edrt) to prune."),
    output: Path = prune_options.output_option,
    key: str | None = key_option,
    normalizer: str = prune_options.normalizer_option,
    equalization_criterion: str = prune_options.equalization_option,
    granularity: int = prune_options.granularity_option,
    threshold: float = prune_options.threshold_option,
    min_num_filters: int = prune_options.min_filters_option,
    excluded_layers: list[str] = prune_options.excluded_option,
    gpu_index: int = gpu_index_option,
    arguments: list[str] = prune_options.arguments_argument,
) -> None:
    """Prune a trained classifier: drop the weakest filters (TAO's min-weight method, as `effdet-rt prune`) and
    write a smaller encrypted checkpoint; retrain it with train.pretrained_model_path."""
    use_gpu(gpu_index)
    from effdet_rt.classification.prune import prune_classifier
    from effdet_rt.classification.spec import load_classification_spec

    overrides, excluded = prune_options.overrides_and_excluded(arguments, excluded_layers)
    given = {**locals(), "excluded_layers": excluded}
    # the spec is optional here (the prune section's defaults stand without one)
    spec = load_classification_spec(path_or_none(experiment_spec), overrides, option_values(prune_command, given))
    summary = prune_classifier(spec, key=key, log=typer.echo)
    typer.echo(f"wrote {summary.output}")


def register(app: typer.Typer) -> None:
    app.add_typer(classification_app, name="classification")
