"""Options shared by task commands, and the one way an option reaches the spec.

An option that stands for a spec field is declared with ``field_option("section.field", ...)``: its value, when
given, becomes an override of that field, and the spec is validated once with all of them (``task_spec``). Library
functions then read the validated spec, never the raw options. Every long flag also answers to TAO's spelling
with underscores (``--image_dir`` for ``--image-dir``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import typer

from effdet_rt.errors import UserError
from effdet_rt.spec.loader import load_task_spec

SPEC_HELP = "Experiment spec (TAO TF2 YAML, or a legacy TF1 prototxt)."


def flags(*names: str) -> tuple[str, ...]:
    """The flags as given plus, for each ``--long-flag``, TAO's ``--long_flag``."""
    spelled = list(names)
    for name in names:
        if name.startswith("--") and "-" in name[2:]:
            # "--on-x/--off-x" pairs: each side gets its underscore spelling ("--on_x/--off_x")
            underscored = "/".join("--" + side[2:].replace("-", "_") for side in name.split("/"))
            if underscored not in spelled:
                spelled.append(underscored)
    return tuple(spelled)


def option(default: Any, *names: str, **kwargs: Any) -> Any:
    return typer.Option(default, *flags(*names), **kwargs)


def field_option(path: str, *names: str, help: str, **kwargs: Any) -> Any:
    """An option that sets spec field ``path``; unset, the spec's value stands."""
    info = typer.Option(None, *flags(*names), help=f"{help} [spec: {path}]", show_default=False, **kwargs)
    info.spec_field = path  # read back by option_values()
    return info


def option_values(command: Callable[..., Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """{spec path: value} for each field option of ``command`` that was given on the command line."""
    values = {}
    for name, parameter in inspect.signature(command).parameters.items():
        path = getattr(parameter.default, "spec_field", None)
        value = given.get(name)
        if path is None or value is None or (isinstance(value, list | tuple) and not value):
            continue
        values[path] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
    return values


def task_spec(command: Callable[..., Any], given: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Any:
    """The validated spec of one task run: the -e file, then the trailing overrides, then the field options
    (and ``extra`` field values an option gives after parsing, like --gpu_index's list)."""

    spec_path = given.get("spec")
    values = {**option_values(command, given), **(extra or {})}
    return load_task_spec(Path(spec_path) if spec_path else None, given.get("overrides") or [], values,
                          log=spec_notice)


def spec_notice(line: str) -> None:
    """What loading a spec has to say (a TF1 file's dropped fields), on stderr beside the command's output."""
    typer.echo(f"notice: {line}", err=True)


def use_gpu(index: int | None) -> None:
    """TAO's --gpu_index for single-GPU tasks: only that GPU is visible to TensorFlow, ONNX Runtime and TensorRT
    (set before any of them is imported)."""
    if index is None:
        return
    if index < 0:

        raise UserError(f"--gpu_index {index} is not allowed: GPU indices start at 0")
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)


spec_option = option(None, "-e", "--experiment-spec", "--experiment-spec-file", "--spec", help=SPEC_HELP)
key_option = option(
    None, "-k", "--key", help="Encryption key for .edrt checkpoints (else $EFFDET_KEY, else the spec's encryption_key).",
    show_default=False,
)
gpu_index_option = option(None, "--gpu-index", help="Run on this GPU only (TAO's --gpu_index); ignored by CPU backends.")
overrides_argument = typer.Argument(
    None, help="Spec overrides such as train.num_epochs=5 model.input_width=256.", show_default=False
)


def path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None
results_dir_option = option(None, "-r", "--results-dir", help="Where results, status.json and logs go.")
