"""`effdet-rt train`: train EfficientDet from a spec (resumes from the newest checkpoint in the results dir)."""

from __future__ import annotations

import typer

from effdet_rt.cli.common import field_option, key_option, option, overrides_argument, spec_option, task_spec
from effdet_rt.errors import SpecError, UserError


def parse_gpu_indices(text: str) -> list[int]:
    """TAO's --gpu_index for training: '0', '0,1' or '0 1'."""

    try:
        indices = [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise UserError(f"--gpu_index {text!r} is not allowed: give GPU indices such as 0 or 0,1") from None
    if not indices or min(indices) < 0:
        raise UserError(f"--gpu_index {text!r} is not allowed: give GPU indices such as 0 or 0,1")
    return indices


def train_command(
    spec: str = spec_option,
    results_dir: str | None = field_option("results_dir", "-r", "--results-dir", "-d", "--model-dir",
                                           help="Where checkpoints, status.json, TensorBoard events and logs go."),
    key: str | None = key_option,
    gpus: int | None = field_option("num_gpus", "--gpus", help="Number of GPUs (MirroredStrategy)."),
    gpu_index: str | None = option(None, "--gpu-index", help="GPU indices to train on, e.g. 0 or 0,1 [spec: gpu_ids]."),
    max_seconds: float | None = option(
        None, "--max-seconds", help="Stop after the epoch in which this many seconds have passed (a checkpoint is saved)."
    ),
    overrides: list[str] | None = overrides_argument,
) -> None:
    """Train EfficientDet: encrypted checkpoints, status.json, TensorBoard events and the charts results.png (losses, learning rate, validation mAP) and loss_curve.png in the results dir."""
    from effdet_rt.trainer.loop import train

    if not spec:
        raise SpecError("train needs a spec: pass -e/--experiment-spec spec.yaml")
    extra = {"gpu_ids": parse_gpu_indices(gpu_index)} if gpu_index is not None else {}
    settings = task_spec(train_command, locals(), extra)
    last = train(settings, settings.results_dir, key, log=typer.echo, max_seconds=max_seconds)
    typer.echo(f"last checkpoint: {last}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
