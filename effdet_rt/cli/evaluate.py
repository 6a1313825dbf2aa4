"""`effdet-rt evaluate` (a model on the spec's validation set) and `effdet-rt evaluate-detections` (a COCO
results file written by any tool)."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import (
    field_option,
    gpu_index_option,
    key_option,
    option,
    overrides_argument,
    spec_option,
    task_spec,
    use_gpu,
)
from effdet_rt.errors import UserError


def evaluate(
    spec: Path = spec_option,
    model: Path = field_option("evaluate.checkpoint", "-m", "--model", "--model-path",
                               help="Model file (.edrt, .onnx, .plan, OpenVINO .xml) to run on dataset.val_tfrecords."),
    key: str = key_option,
    results_dir: Path = field_option("evaluate.results_dir", "-r", "--results-dir", "-o", "--output-dir",
                                     help="Where eval_results.json and the charts (pr_curve.png, ap_per_class.png) go (unset: results_dir)."),
    annotations: Path = field_option("dataset.val_json_file", "-a", "--annotations-file",
                                     help="COCO ground-truth json of the validation TFRecords."),
    label_map: Path = field_option("evaluate.label_map", "--label-map",
                                   help="label_map.yaml or labels.txt naming the per-class AP rows."),
    max_detections: int = field_option("evaluate.max_detections_per_image", "--max-detections",
                                       help="Detections per image COCO counts (maxDets)."),
    gpu_index: int = gpu_index_option,
    overrides: list[str] = overrides_argument,
) -> None:
    """Run a model on the spec's dataset.val_tfrecords and score it with the COCO metrics (AP, AP50, ..., ARl,
    AP per class)."""
    use_gpu(gpu_index)
    from rich.console import Console

    from effdet_rt.evaluation.report import format_metrics_table, save_evaluation
    from effdet_rt.infer.evaluate import evaluate_model_file

    settings = task_spec(evaluate, locals())
    if not settings.evaluate.checkpoint:
        raise UserError("evaluate needs -m/--model (or evaluate.checkpoint in the spec) to run on "
                        "dataset.val_tfrecords; to score a results json, use `effdet-rt evaluate-detections`")
    model_path = Path(settings.evaluate.checkpoint)
    evaluation = evaluate_model_file(model_path, settings, key=key, warn=lambda line: typer.echo(line, err=True))
    Console().print(format_metrics_table(evaluation.metrics, title=f"COCO evaluation of {model_path.name}"))
    for path in save_evaluation(Path(settings.evaluate.results_dir or settings.results_dir), evaluation):
        typer.echo(f"wrote {path}")


def evaluate_detections(
    detections: Path = option(..., "--detections", help="COCO results json: a list of {image_id, category_id, "
                              "bbox [x,y,w,h], score}."),
    annotations: Path = option(..., "-a", "--annotations-file", "--annotations",
                               help="COCO ground-truth json the results refer to."),
    output_dir: Path = option(None, "-o", "--output-dir", "-r", "--results-dir",
                              help="Write eval_results.json and the charts (pr_curve.png, ap_per_class.png) here."),
    label_map: Path = option(None, "--label-map", help="label_map.yaml ({1: RBC, ...}) or labels.txt naming the "
                             "per-class AP rows (default: the annotations' category names)."),
    max_detections: int = option(100, "--max-detections", help="Detections per image COCO counts (maxDets)."),
) -> None:
    """Score a COCO results json (from any tool) against COCO ground truth."""
    from rich.console import Console

    from effdet_rt.data.labels import load_label_map
    from effdet_rt.evaluation.coco import run_coco_evaluation
    from effdet_rt.evaluation.report import format_metrics_table, save_evaluation

    if max_detections < 1:
        raise UserError(f"--max-detections {max_detections} is not allowed: use 1 or more")
    names = load_label_map(label_map) if label_map is not None else None
    evaluation = run_coco_evaluation(annotations, detections, max_detections=max_detections, label_map=names,
                                     per_class=True)
    Console().print(format_metrics_table(evaluation.metrics, title=f"COCO evaluation of {detections.name}"))
    if output_dir is not None:
        for path in save_evaluation(output_dir, evaluation):
            typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("evaluate-detections")(evaluate_detections)
