"""`effdet-rt deepstream-config`: a Gst-nvinfer config and labels file for an exported model or plan."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import option


def deepstream_config(
    model: str = option(..., "-m", "--model", help="Exported .onnx or built .plan/.engine."),
    output_dir: str = option(..., "-o", "--output-dir", help="Folder for the config and labels.txt."),
    labels: str | None = option(None, "--labels", help="labels.txt (one name per line) or label_map.yaml."),
    num_classes: int | None = option(None, "--num-classes", help="Without --labels: number of classes (default: the ONNX metadata effdet_rt.num_classes)."),
    threshold: float = option(0.3, "--threshold", help="pre-cluster-threshold for all classes."),
) -> None:
    """Write config_infer_primary_effdet.txt (Gst-nvinfer) and labels.txt; for a classifier ONNX,
    config_infer_secondary_classifier.txt (network-type=1) with the model's classes as labels."""
    config, labels_path = write_for_task(Path(model), Path(output_dir), labels, num_classes, threshold)
    typer.echo(f"wrote {config} and {labels_path}")


def write_for_task(model: Path, output_dir: Path, labels: str | None, num_classes: int | None,
                   threshold: float) -> tuple[Path, Path]:
    """The config the model's task deploys with: a primary detector, or a secondary classifier."""
    from effdet_rt.classification.deepstream import write_classifier_deepstream_config
    from effdet_rt.classification.engines import TASK as CLASSIFICATION
    from effdet_rt.integrations.deepstream import model_metadata, write_deepstream_config

    meta = model_metadata(model) if model.is_file() else {}
    if meta.get("task") == CLASSIFICATION:
        return write_classifier_deepstream_config(model, output_dir, meta, labels, threshold)
    return write_deepstream_config(model, output_dir, labels, num_classes, threshold)


def register(app: typer.Typer) -> None:
    app.command("deepstream-config")(deepstream_config)
