"""`effdet-rt export`: a .edrt checkpoint -> ONNX with NMS inside."""

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


def export_command(
    spec: Path = spec_option,
    model: Path = field_option("export.checkpoint", "-m", "--model", "--model-path", help="Checkpoint (.edrt)."),
    output: Path = field_option("export.onnx_file", "-o", "--output", "--output-path",
                                help="ONNX file to write, or a .tflite (LiteRT, converted from the checkpoint)."),
    key: str = key_option,
    nms: str = field_option("export.nms", "--nms",
                            help="efficient (TensorRT plugin) | onnx (standard ops) | none (raw heads)."),
    batch_size: int = field_option("export.batch_size", "--batch-size",
                                   help="Static batch size (giving it alone also makes the batch static)."),
    dynamic_batch: bool = field_option("export.dynamic_batch_size", "--dynamic-batch/--static-batch",
                                       help="Dynamic batch dimension."),
    opset: int = field_option("export.opset", "--opset", help="ONNX opset."),
    min_score: float = field_option("export.min_score_thresh", "--min-score", help="NMS score threshold."),
    iou: float = field_option("export.iou_thresh", "--iou", help="NMS IoU threshold."),
    max_detections: int = field_option("export.max_detections", "--max-detections", help="Detections per image."),
    precision: str = field_option("export.precision", "--precision",
                                  help="fp32 | fp16 | int8 (full integer), for a .tflite output."),
    io_type: str = field_option("export.io_type", "--io-type",
                                help="float32 | int8 | uint8: the input type of an INT8 .tflite (integer-only "
                                     "accelerators take int8/uint8)."),
    calib_tfrecords: list[str] = field_option("build.calibration.tfrecords", "--calib-tfrecords",
                                              help="TFRecords glob whose images calibrate an INT8 .tflite."),
    calib_batches: int = field_option("build.calibration.batches", "--calib-batches",
                                      help="Number of calibration batches."),
    calib_batch_size: int = field_option("build.calibration.batch_size", "--calib-batch-size",
                                         help="Calibration batch size."),
    verify: bool = option(False, "--verify", help="Compare TF and the written file (ONNX Runtime or LiteRT) on sample images; fail above 1e-4 / below 99%."),
    verbose: bool = option(False, "--verbose", help="Also print the written graph's inputs, outputs, op counts and metadata."),
    gpu_index: int = gpu_index_option,
    overrides: list[str] = overrides_argument,
) -> None:
    """Export a trained checkpoint to ONNX. Input `images`: float32 NHWC 0..255 at the model size
    (resize keeping aspect, pad bottom/right); normalisation is inside the graph."""
    use_gpu(gpu_index)
    from effdet_rt.export.workflow import describe_converted, describe_onnx, export_from_spec

    static = {"export.dynamic_batch_size": False} if batch_size is not None and dynamic_batch is None else {}
    settings = task_spec(export_command, locals(), static)
    result = export_from_spec(settings, key=key, verify=verify, log=typer.echo)
    typer.echo(f"wrote {result}")
    if verbose:
        for line in describe_onnx(result) if result.suffix.lower() == ".onnx" else describe_converted(result):
            typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
