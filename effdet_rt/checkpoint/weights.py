"""Move weights between a tf_keras model and a checkpoint's name -> array dict.

Names are the variables' names without the ``:0`` suffix (e.g. ``box_net/box-predict/bias``), so layers need
explicit names for a checkpoint to load into a model built in another process. Works on anything with a
``.weights`` list of variables; TensorFlow is never imported here.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effdet_rt.errors import CheckpointError


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # shape differs and the name matches skip_pattern
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)}, skipped {len(self.skipped)}, missing {len(self.missing)}, "
                f"unused {len(self.unexpected)}")


def variable_key(variable: Any) -> str:
    name = str(variable.name)
    return name[:-2] if name.endswith(":0") else name


def named_variables(model: Any) -> dict[str, Any]:
    """The model's variables (trainable and not) by name; raises if two share a name."""
    variables = list(model.weights)
    names = [variable_key(v) for v in variables]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"model {getattr(model, 'name', '?')!r} has variables sharing a name, so they cannot be "
                         f"saved by name: {duplicates[:5]}; give the layers unique names")
    return dict(zip(names, variables, strict=True))


def model_weights(model: Any) -> dict[str, np.ndarray]:
    """Every variable of ``model`` as a numpy array, by name."""
    return {name: np.asarray(variable.numpy()) for name, variable in named_variables(model).items()}


def assign_weights(
    model: Any,
    weights: dict[str, np.ndarray],
    skip_pattern: str | None = None,
    strict: bool = True,
) -> LoadReport:
    """Load ``weights`` into ``model`` by name; nothing is assigned unless every check passes.

    A shape mismatch is an error unless the name matches ``skip_pattern`` (a regex searched in the name, e.g.
    ``class-predict`` when class counts differ); then that variable keeps its value. With ``strict`` every model
    variable not matching ``skip_pattern`` must be in ``weights`` and every entry of ``weights`` must be used.
    """
    skip = re.compile(skip_pattern) if skip_pattern else None
    variables = named_variables(model)
    report = LoadReport()
    to_assign: list[tuple[Any, np.ndarray]] = []
    mismatched: list[str] = []
    for name, variable in variables.items():
        skippable = bool(skip and skip.search(name))
        if name not in weights:
            (report.skipped if skippable else report.missing).append(name)
            continue
        value = np.asarray(weights[name])
        model_shape = tuple(variable.shape)
        if value.shape != model_shape:
            if skippable:
                report.skipped.append(name)
            else:
                mismatched.append(f"{name} is {value.shape} in the checkpoint but {model_shape} in the model")
            continue
        to_assign.append((variable, value))
        report.loaded.append(name)
    report.unexpected = sorted(set(weights) - set(variables))
    _check(report, mismatched, strict, skip)
    for variable, value in to_assign:
        variable.assign(value.astype(_numpy_dtype(variable), copy=False))
    return report


def _check(report: LoadReport, mismatched: list[str], strict: bool, skip: re.Pattern[str] | None) -> None:
    if mismatched:
        raise CheckpointError(f"{len(mismatched)} weight(s) do not fit the model: {'; '.join(mismatched[:3])}; "
                              "check the model config, or skip them with a pattern (e.g. the class head when "
                              "num_classes differs)")
    unexpected = [name for name in report.unexpected if not (skip and skip.search(name))]
    if strict and (report.missing or unexpected):
        parts = []
        if report.missing:
            parts.append(f"{len(report.missing)} model weight(s) missing from the checkpoint, e.g. {report.missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint weight(s) unknown to the model, e.g. {unexpected[:3]}")
        raise CheckpointError(f"checkpoint does not match the model: {'; '.join(parts)}; check the model config")


def _numpy_dtype(variable: Any) -> Any:
    dtype = variable.dtype
    return getattr(dtype, "as_numpy_dtype", dtype)
