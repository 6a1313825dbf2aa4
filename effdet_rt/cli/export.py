"""`effdet-rt export`: a .edrt checkpoint -> ONNX with NMS inside."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import key_option, overrides_argument, spec_option


def export_command(
    spec: Path = spec_option,
    model: Path = typer.Option(None, "-m", "--model", help="Checkpoint (.edrt); default export.checkpoint."),
    output: Path = typer.Option(None, "-o", "--output", help="ONNX file to write; default export.onnx_file."),
    key: str = key_option,
    nms: str = typer.Option(None, "--nms", help="efficient (TensorRT plugin) | onnx (standard ops) | none (raw heads)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Static batch size (default: spec's export.batch_size when not dynamic)."),
    dynamic_batch: bool = typer.Option(None, "--dynamic-batch/--static-batch", help="Dynamic batch dimension (default: export.dynamic_batch_size)."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default export.opset = 17)."),
    min_score: float = typer.Option(None, "--min-score", help="NMS score threshold (default export.min_score_thresh)."),
    iou: float = typer.Option(None, "--iou", help="NMS IoU threshold (default export.iou_thresh)."),
    max_detections: int = typer.Option(None, "--max-detections", help="Detections per image (default export.max_detections)."),
    verify: bool = typer.Option(False, "--verify", help="Compare TF and ONNX Runtime on sample images; fail above 1e-4 / below 99%."),
    overrides: list[str] = overrides_argument,
) -> None:
    """Export a trained checkpoint to ONNX. Input `images`: float32 NHWC 0..255 at the model size
    (resize keeping aspect, pad bottom/right); normalisation is inside the graph."""
    from effdet_rt.export.workflow import export_from_spec
    from effdet_rt.spec import load_task_spec

    spec_obj = load_task_spec(spec, overrides)
    result = export_from_spec(
        spec_obj,
        checkpoint=model,
        output=output,
        key=key,
        nms=nms,
        batch_size=batch_size,
        dynamic_batch=dynamic_batch,
        opset=opset,
        min_score=min_score,
        iou=iou,
        max_detections=max_detections,
        verify=verify,
        log=typer.echo,
    )
    typer.echo(f"wrote {result}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
