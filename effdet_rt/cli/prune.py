"""`effdet-rt prune`: TAO's prune task (min-weight filter pruning) on a .edrt detector checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import key_option, spec_option


def prune_command(
    spec: Path = spec_option,
    model: Path = typer.Option(None, "-m", "--model", help="Checkpoint (.edrt) to prune; default prune.checkpoint."),
    output: Path = typer.Option(
        None, "-o", "--output", "--output-dir", "--output_dir",
        help="Folder for model_th=<threshold>_eq=<criterion>.edrt and status.json (or a .edrt path); "
             "default prune.output_path.",
    ),
    key: str = key_option,
    normalizer: str = typer.Option(None, "-n", "--normalizer", help="max | L2 (default prune.normalizer)."),
    equalization_criterion: str = typer.Option(
        None, "-eq", "--equalization-criterion", "--equalization_criterion",
        help="union | intersection | arithmetic_mean | geometric_mean (default prune.equalization_criterion).",
    ),
    granularity: int = typer.Option(
        None, "-pg", "--pruning-granularity", "--pruning_granularity",
        help="Kept filter counts are multiples of this (default prune.granularity).",
    ),
    threshold: float = typer.Option(
        None, "-pth", "--pruning-threshold", "--pruning_threshold",
        help="Keep filters whose normalised norm is above this, in [0, 1] (default prune.threshold).",
    ),
    min_num_filters: int = typer.Option(
        None, "-nf", "--min-num-filters", "--min_num_filters",
        help="Keep at least this many filters per layer (default prune.min_num_filters).",
    ),
    excluded_layers: list[str] = typer.Option(
        None, "-el", "--excluded-layers", "--excluded_layers",
        help="Layers never pruned, on top of the prediction layers: repeat, separate by commas, or list them "
             "after -el (default prune.excluded_layers).",
    ),
    arguments: list[str] = typer.Argument(
        None, help="Spec overrides such as prune.threshold=0.3 (and more -el layer names).", show_default=False
    ),
) -> None:
    """Prune a trained EfficientDet: drop the weakest filters (TAO's min-weight method) and write a smaller
    encrypted checkpoint; retrain it with train.pruned_model_path."""
    from effdet_rt.errors import UserError
    from effdet_rt.prune.run import prune_checkpoint, split_excluded
    from effdet_rt.spec import load_task_spec

    overrides = [a for a in arguments or [] if "=" in a]
    names = [a for a in arguments or [] if "=" not in a]
    if names and not excluded_layers:
        raise UserError(f"unexpected argument {names[0]!r}: overrides look like prune.threshold=0.3; layer names "
                        "go after -el/--excluded-layers")
    excluded = split_excluded([*(excluded_layers or []), *names])
    spec_obj = load_task_spec(spec, overrides)
    summary = prune_checkpoint(
        spec_obj, checkpoint=model, output=output, key=key, log=typer.echo,
        threshold=threshold, normalizer=normalizer, equalization_criterion=equalization_criterion,
        granularity=granularity, min_num_filters=min_num_filters, excluded_layers=excluded,
    )
    typer.echo(f"wrote {summary.output}")


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)
