"""Options shared by task commands, so every task spells them the same way."""

from __future__ import annotations

from pathlib import Path

import typer

SPEC_HELP = "Experiment spec (TAO TF2 YAML, or a legacy TF1 prototxt)."

spec_option = typer.Option(None, "-e", "--experiment-spec", "--spec", help=SPEC_HELP, exists=False)
key_option = typer.Option(
    None, "-k", "--key", help="Encryption key for .edrt checkpoints (else $EFFDET_KEY, else the spec's encryption_key).",
    show_default=False,
)
results_dir_option = typer.Option(None, "-r", "--results-dir", help="Where results, status.json and logs go.")
overrides_argument = typer.Argument(
    None, help="Spec overrides such as train.num_epochs=5 model.input_width=256.", show_default=False
)


def path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None
