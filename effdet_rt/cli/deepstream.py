"""`effdet-rt deepstream-config`: a Gst-nvinfer config and labels file for an exported model or plan."""

from __future__ import annotations

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
    from effdet_rt.integrations.deepstream import write_deepstream_config

    config, labels_path = write_deepstream_config(model, output_dir, labels, num_classes, threshold)
    typer.echo(f"wrote {config} and {labels_path}")


def register(app: typer.Typer) -> None:
    app.command("deepstream-config")(deepstream_config)
