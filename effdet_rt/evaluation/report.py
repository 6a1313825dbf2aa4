"""Show and save evaluation metrics: a rich table for the terminal, eval_results.json for tools."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from rich.table import Table

from effdet_rt.evaluation.coco import (
    METRIC_KEYS,
    PER_CLASS_PREFIX,
    CocoEvaluation,
    write_class_ap_chart,
    write_pr_curve,
)
from effdet_rt.utils.atomic import atomic_write_text
from effdet_rt.utils.charts import draw_safely
from effdet_rt.utils.status import StatusLogger

METRICS_FILE = "eval_results.json"
PR_CURVE_FILE = "pr_curve.png"
CLASS_AP_FILE = "ap_per_class.png"
METRIC_DESCRIPTIONS = {
    "AP": "AP @[IoU=0.50:0.95 | area=all | maxDets=max]",
    "AP50": "AP @[IoU=0.50 | area=all | maxDets=max]",
    "AP75": "AP @[IoU=0.75 | area=all | maxDets=max]",
    "APs": "AP @[IoU=0.50:0.95 | area=small | maxDets=max]",
    "APm": "AP @[IoU=0.50:0.95 | area=medium | maxDets=max]",
    "APl": "AP @[IoU=0.50:0.95 | area=large | maxDets=max]",
    "ARmax1": "AR @[IoU=0.50:0.95 | area=all | maxDets=1]",
    "ARmax10": "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "ARmax100": "AR @[IoU=0.50:0.95 | area=all | maxDets=max]",
    "ARs": "AR @[IoU=0.50:0.95 | area=small | maxDets=max]",
    "ARm": "AR @[IoU=0.50:0.95 | area=medium | maxDets=max]",
    "ARl": "AR @[IoU=0.50:0.95 | area=large | maxDets=max]",
}


def format_metrics_table(metrics: Mapping[str, float], title: str = "COCO evaluation") -> Table:
    """The 12 standard numbers first, then per-class AP, then anything else; -1 (no ground truth) shows as n/a."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    ordered = [key for key in METRIC_KEYS if key in metrics]
    ordered += sorted(key for key in metrics if key.startswith(PER_CLASS_PREFIX))
    ordered += [key for key in metrics if key not in ordered]
    for key in ordered:
        meaning = METRIC_DESCRIPTIONS.get(key, "AP @[IoU=0.50:0.95 | area=all] of one class"
                                          if key.startswith(PER_CLASS_PREFIX) else "")
        table.add_row(key, _format_value(metrics[key]), meaning)
    return table


def _format_value(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value == -1:
            return "n/a"
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def write_metrics_json(results_dir: str | os.PathLike, metrics: Mapping[str, object]) -> Path:
    """results_dir/eval_results.json, written atomically."""
    text = json.dumps(dict(metrics), indent=2, default=float) + "\n"
    return atomic_write_text(Path(results_dir) / METRICS_FILE, text)


def save_evaluation(results_dir: str | os.PathLike, evaluation: CocoEvaluation,
                    log: Callable[[str], None] = print) -> list[Path]:
    """eval_results.json, the charts (pr_curve.png, ap_per_class.png, each with its JSON data) and a status.json line
    with the metrics as kpi. A chart that cannot be drawn is a warning; the metrics are still written."""
    written = [write_metrics_json(results_dir, evaluation.metrics)]
    for draw, name in ((write_pr_curve, PR_CURVE_FILE), (write_class_ap_chart, CLASS_AP_FILE)):
        chart = draw_safely(draw, evaluation, Path(results_dir) / name, log=log)
        if chart is not None:
            written.append(chart)
    StatusLogger(results_dir).write("SUCCESS", "evaluation finished", kpi=evaluation.metrics)
    return written
