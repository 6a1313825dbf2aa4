"""`effdet-rt train`: train EfficientDet from a spec (resumes from the newest checkpoint in the results dir)."""

from __future__ import annotations

import typer

from effdet_rt.cli.common import key_option, overrides_argument, path_or_none, results_dir_option, spec_option


def train_command(
    experiment_spec: str = spec_option,
    results_dir: str | None = results_dir_option,
    key: str | None = key_option,
    max_seconds: float | None = typer.Option(
        None, "--max-seconds", help="Stop after the epoch in which this many seconds have passed (a checkpoint is saved)."
    ),
    overrides: list[str] | None = overrides_argument,
) -> None:
    """Train EfficientDet: encrypted checkpoints, status.json, TensorBoard events and loss_curve.png in the results dir."""
    from effdet_rt.errors import SpecError
    from effdet_rt.spec import load_task_spec
    from effdet_rt.trainer.loop import train

    if not experiment_spec:
        raise SpecError("train needs a spec: pass -e/--experiment-spec spec.yaml")
    spec = load_task_spec(path_or_none(experiment_spec), overrides or [])
    last = train(spec, results_dir or spec.results_dir, key, log=typer.echo, max_seconds=max_seconds)
    typer.echo(f"last checkpoint: {last}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
