"""`effdet-rt evaluate`: COCO metrics for a results file written by any tool."""

from __future__ import annotations

from pathlib import Path

import typer


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
    max_detections: int = typer.Option(100, "--max-detections", help="Detections per image COCO counts (maxDets)."),
) -> None:
    """Score detections with the COCO metrics (AP, AP50, ..., ARl and AP per class)."""
    from rich.console import Console

    from effdet_rt.data.labels import load_label_map
    from effdet_rt.errors import UserError
    from effdet_rt.evaluation.coco import run_coco_evaluation
    from effdet_rt.evaluation.report import format_metrics_table, save_evaluation

    if detections is None or annotations is None:
        raise UserError("evaluate needs --detections RESULTS.json (COCO results format) and "
                        "-a/--annotations-file ANNOTATIONS.json (COCO ground truth)")
    names = load_label_map(label_map) if label_map is not None else None
    evaluation = run_coco_evaluation(annotations, detections, max_detections=max_detections, label_map=names,
                                     per_class=True)
    Console().print(format_metrics_table(evaluation.metrics, title=f"COCO evaluation of {detections.name}"))
    if output_dir is not None:
        for path in save_evaluation(output_dir, evaluation):
            typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
