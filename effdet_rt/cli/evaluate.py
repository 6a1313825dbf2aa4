"""`effdet-rt evaluate`: COCO metrics for a results file written by any tool."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import key_option, overrides_argument, spec_option


def evaluate(
    detections: Path = typer.Option(
        None, "--detections", help="COCO results json: a list of {image_id, category_id, bbox [x,y,w,h], score}."
    ),
    annotations: Path = typer.Option(
        None, "-a", "--annotations-file", "--annotations", help="COCO ground-truth json the results refer to."
    ),
    output_dir: Path = typer.Option(
        None, "-o", "--output-dir", "-r", "--results-dir", help="Write eval_results.json and pr_curve.png here."
    ),
    label_map: Path = typer.Option(
        None, "--label-map", help="label_map.yaml ({1: RBC, ...}) naming the per-class AP rows (default: the "
        "annotations' category names)."
    ),
    max_detections: int = typer.Option(None, "--max-detections", help="Detections per image COCO counts (maxDets; "
                                       "default 100, or evaluate.max_detections_per_image with -m)."),
    model: Path = typer.Option(None, "-m", "--model", help="Model file (.edrt, .onnx, .plan, OpenVINO .xml) to run on the spec's "
                               "dataset.val_tfrecords instead of --detections (default: evaluate.checkpoint)."),
    spec: Path = spec_option,
    key: str = key_option,
    overrides: list[str] = overrides_argument,
) -> None:
    """Score detections with the COCO metrics (AP, AP50, ..., ARl and AP per class).

    With -m MODEL (and -e spec), the model first runs on dataset.val_tfrecords (evaluate.* settings apply).
    """
    from rich.console import Console

    from effdet_rt.data.labels import load_label_map
    from effdet_rt.errors import UserError
    from effdet_rt.evaluation.coco import run_coco_evaluation
    from effdet_rt.evaluation.report import format_metrics_table, save_evaluation

    if detections is None and (model is not None or spec is not None):
        return _evaluate_model(model, spec, key, overrides, annotations, label_map, max_detections, output_dir)
    if detections is None or annotations is None:
        raise UserError("evaluate needs --detections RESULTS.json (COCO results format) and "
                        "-a/--annotations-file ANNOTATIONS.json (COCO ground truth)")
    names = load_label_map(label_map) if label_map is not None else None
    evaluation = run_coco_evaluation(annotations, detections, max_detections=max_detections or 100, label_map=names,
                                     per_class=True)
    Console().print(format_metrics_table(evaluation.metrics, title=f"COCO evaluation of {detections.name}"))
    if output_dir is not None:
        for path in save_evaluation(output_dir, evaluation):
            typer.echo(f"wrote {path}")


def _evaluate_model(model, spec, key, overrides, annotations, label_map, max_detections, output_dir) -> None:
    """Model mode: run the model on the validation TFRecords; results always land in a results folder."""
    from rich.console import Console

    from effdet_rt.errors import UserError
    from effdet_rt.evaluation.report import format_metrics_table, save_evaluation
    from effdet_rt.evaluation.run import evaluate_model_file
    from effdet_rt.spec.loader import load_task_spec

    settings = load_task_spec(spec, overrides)
    model = model or (Path(settings.evaluate.checkpoint) if settings.evaluate.checkpoint else None)
    if model is None:
        raise UserError("evaluate needs -m/--model (or evaluate.checkpoint in the spec) to run on "
                        "dataset.val_tfrecords, or --detections RESULTS.json with -a")
    results_dir = output_dir or Path(settings.evaluate.results_dir or settings.results_dir)
    evaluation = evaluate_model_file(model, settings, key=key, annotations=annotations, label_map=label_map,
                                     max_detections=max_detections)
    Console().print(format_metrics_table(evaluation.metrics, title=f"COCO evaluation of {Path(model).name}"))
    for path in save_evaluation(results_dir, evaluation):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
