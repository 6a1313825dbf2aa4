"""`effdet-rt prune`: TAO's prune task (min-weight filter pruning) on a .edrt detector checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import field_option, gpu_index_option, key_option, spec_option, task_spec, use_gpu
from effdet_rt.errors import UserError

# The options of every prune command (`effdet-rt prune`, `effdet-rt classification prune`), TAO's spellings.
output_option = field_option(
    "prune.output_path", "-o", "--output", "--output-dir",
    help="Folder for model_th=<threshold>_eq=<criterion>.edrt and status.json (or a .edrt path).",
)
normalizer_option = field_option("prune.normalizer", "-n", "--normalizer", help="max | L2.")
equalization_option = field_option(
    "prune.equalization_criterion", "-eq", "--equalization-criterion",
    help="union | intersection | arithmetic_mean | geometric_mean.",
)
granularity_option = field_option("prune.granularity", "-pg", "--pruning-granularity",
                                  help="Kept filter counts are multiples of this.")
threshold_option = field_option("prune.threshold", "-pth", "--pruning-threshold",
                                help="Keep filters whose normalised norm is above this, in [0, 1].")
min_filters_option = field_option("prune.min_num_filters", "-nf", "--min-num-filters",
                                  help="Keep at least this many filters per layer.")
excluded_option = field_option(
    "prune.excluded_layers", "-el", "--excluded-layers",
    help="Layers never pruned, on top of the output layers (predictions, logits): repeat, separate by commas, "
         "or list them after -el.",
)
arguments_argument = typer.Argument(
    None, help="Spec overrides such as prune.threshold=0.3 (and more -el layer names).", show_default=False
)


def prune_command(
    spec: Path = spec_option,
    model: Path = field_option("prune.checkpoint", "-m", "--model", "--model-path", help="Checkpoint (.edrt) to prune."),
    output: Path = output_option,
    key: str = key_option,
    normalizer: str = normalizer_option,
    equalization_criterion: str = equalization_option,
    granularity: int = granularity_option,
    threshold: float = threshold_option,
    min_num_filters: int = min_filters_option,
    excluded_layers: list[str] = excluded_option,
    gpu_index: int = gpu_index_option,
    arguments: list[str] = arguments_argument,
) -> None:
    """Prune a trained EfficientDet: drop the weakest filters (TAO's min-weight method) and write a smaller
    encrypted checkpoint; retrain it with train.pruned_model_path."""
    use_gpu(gpu_index)
    from effdet_rt.prune.run import prune_checkpoint

    overrides, excluded = overrides_and_excluded(arguments, excluded_layers)
    given = {**locals(), "overrides": overrides, "excluded_layers": excluded}
    summary = prune_checkpoint(task_spec(prune_command, given), key=key, log=typer.echo)
    typer.echo(f"wrote {summary.output}")


def overrides_and_excluded(arguments: list[str] | None, excluded_layers: list[str] | None
                           ) -> tuple[list[str], list[str] | None]:
    """The trailing arguments of a prune command: ``a.b=value`` overrides, and layer names that TAO lets follow
    -el (space-separated) joined to the -el values."""
    from effdet_rt.prune.run import split_excluded

    overrides = [a for a in arguments or [] if "=" in a]
    names = [a for a in arguments or [] if "=" not in a]
    if names and not excluded_layers:
        raise UserError(f"unexpected argument {names[0]!r}: overrides look like prune.threshold=0.3; layer names "
                        "go after -el/--excluded-layers")
    return overrides, split_excluded([*(excluded_layers or []), *names])


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)
