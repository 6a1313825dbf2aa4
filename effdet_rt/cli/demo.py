"""`effdet-rt demo`: train, evaluate, export and compare engines on real or synthetic data in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import option
from effdet_rt.errors import UserError


def demo_command(
    data: Path = option(None, "--data", help="Pascal VOC root or COCO folder; default: a synthetic shapes set."),
    minutes: float = option(10.0, "--minutes", help="Training time budget in minutes (stops after that epoch)."),
    output: Path = option(Path("demo_out"), "-o", "--output-dir", help="Where everything is written."),
    image_size: int | None = option(None, "--image-size", show_default=False,
                             help="Model input size (a multiple of 32, at least 128); default: the model's (256 for D0 from scratch, "
                                  "320 for Lite0)."),
    batch_size: int = option(8, "--batch-size", help="Training batch size."),
    pretrained: bool | None = option(None, "--pretrained/--scratch", show_default=False,
                              help="Fine-tune EfficientDet-Lite0 from its ImageNet backbone (needs the torch-weights "
                                   "extra), or train D0 from scratch. Default: pretrained when the weights are "
                                   "installed."),
) -> None:
    """Convert data, train a small EfficientDet (Lite0 from ImageNet weights, or D0 from scratch), evaluate, export to ONNX, build ONNX Runtime (and, when installed, OpenVINO) FP32 and INT8
    engines, run inference and evaluation on each, and print one table (backend, precision, mAP, AP50, latency)."""
    from effdet_rt.demo.run import (
        CHART_FILE,
        DemoSettings,
        demo_key,
        demo_model,
        format_table,
        rerun_commands,
        run_demo,
    )

    if minutes <= 0:
        raise UserError(f"--minutes {minutes} is not allowed: give a positive time budget")
    model = demo_model(pretrained)
    image_size = model.image_size if image_size is None else image_size
    if image_size < 128 or image_size % 32:
        raise UserError(f"--image-size {image_size} is not allowed: must be a multiple of 32, at least 128")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} is not allowed: must be a positive integer")
    rows = run_demo(DemoSettings(data, output, minutes, image_size, batch_size, model), log=typer.echo)
    typer.echo("\n" + format_table(rows))
    typer.echo(f"\nresults: {output / 'demo_results.md'} (chart: {output / CHART_FILE}), annotated images: "
               f"{output}/infer_*/images_annotated/")
    typer.echo(f"\nthe spec it ran: {output / 'spec.yaml'}; rerun a step with it:")
    for command in rerun_commands(output, demo_key()[1]):
        typer.echo(f"  {command}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
