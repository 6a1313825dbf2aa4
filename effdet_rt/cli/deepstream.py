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
    triton: str | None = option(None, "--triton", help="Model repository `effdet-rt triton` wrote from this model: "
                                "also write the Gst-nvinferserver config (*_triton.txt) serving its engine."),
    triton_name: str | None = option(None, "--triton-name", help="With --triton: the repository entry (the "
                                     "--name given to `effdet-rt triton`) when it serves the model more than once."),
) -> None:
    """Write config_infer_primary_effdet.txt (Gst-nvinfer) and labels.txt; for a classifier ONNX,
    config_infer_secondary_classifier.txt (network-type=1) with the model's classes as labels. With --triton,
    the Gst-nvinferserver config for the same model served from that repository goes beside it."""
    if triton is not None:
        from effdet_rt.integrations.triton import served_engine

        served_engine(Path(triton), Path(model), triton_name)  # before anything is written: it must serve the model
    config, labels_path = write_for_task(Path(model), Path(output_dir), labels, num_classes, threshold)
    written = [config, labels_path]
    if triton is not None:
        written.append(write_triton_for_task(Path(model), Path(triton), triton_name, Path(output_dir), labels_path,
                                             threshold))
    typer.echo(f"wrote {', '.join(map(str, written[:-1]))} and {written[-1]}")


def write_triton_for_task(model: Path, repository: Path, name: str | None, output_dir: Path, labels_path: Path,
                          threshold: float) -> Path:
    """The Gst-nvinferserver config of the model's task (its labels file already written beside it)."""
    from effdet_rt.integrations.deepstream import model_metadata
    from effdet_rt.onnx.tasks import task_of_metadata

    meta = model_metadata(model)
    return task_of_metadata(meta, str(model)).deepstream_triton_config(model, repository, name, output_dir, meta,
                                                                       labels_path, threshold)


def write_for_task(model: Path, output_dir: Path, labels: str | None, num_classes: int | None,
                   threshold: float) -> tuple[Path, Path]:
    """The config the model's task deploys with (a primary detector, a secondary classifier), and its labels."""
    from effdet_rt.integrations.deepstream import model_metadata
    from effdet_rt.onnx.tasks import task_of_metadata

    meta = model_metadata(model) if model.is_file() else {}
    return task_of_metadata(meta, str(model)).deepstream_config(model, output_dir, meta, labels, num_classes,
                                                                threshold)


def register(app: typer.Typer) -> None:
    app.command("deepstream-config")(deepstream_config)
