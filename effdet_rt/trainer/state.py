"""Training checkpoints: what is saved every checkpoint_interval epochs and read back to resume.

Main weights = EMA weights (what evaluation and export load); groups hold the raw weights, the EMA shadows and the
optimizer variables, so a resumed run continues exactly. File name: ``{model_name}_{epoch:03d}.edrt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.checkpoint import Checkpoint, assign_weights, load_checkpoint, model_weights, save_checkpoint
from effdet_rt.errors import CheckpointError

RAW_GROUP, EMA_GROUP, OPTIMIZER_GROUP = "raw", "ema", "optimizer"


@dataclass
class TrainingParts:
    model: Any
    optimizer: Any
    ema: Any  # trainer.ema.WeightAverage


def checkpoint_name(model_name: str, epoch: int) -> str:
    return f"{model_name}_{epoch:03d}.edrt"


def newest_checkpoint(results_dir: Path, model_name: str) -> Path | None:
    pattern = re.compile(rf"^{re.escape(model_name)}_(\d{{3,}})\.edrt$")
    found = [(int(m.group(1)), p.stat().st_mtime, p) for p in results_dir.glob("*.edrt") if (m := pattern.match(p.name))]
    return max(found)[2] if found else None


def indexed_values(variables: list[Any]) -> dict[str, np.ndarray]:
    return {f"{i:05d}/{v.name.split(':')[0]}": np.asarray(v.numpy()) for i, v in enumerate(variables)}


def save_training_checkpoint(
    path: Path, parts: TrainingParts, *, key: str, spec_yaml: str, metadata: dict[str, Any]
) -> Path:
    with parts.ema.swapped_in():
        averaged = model_weights(parts.model)
    groups = {
        RAW_GROUP: model_weights(parts.model),
        EMA_GROUP: indexed_values(parts.ema.shadows),
        OPTIMIZER_GROUP: indexed_values(parts.optimizer.variables),
    }
    return save_checkpoint(path, averaged, key=key, spec_yaml=spec_yaml, metadata=metadata, groups=groups)


def restore_training_checkpoint(path: Path, parts: TrainingParts, key: str) -> dict[str, Any]:
    """Load raw weights, EMA shadows and optimizer state; returns the checkpoint's metadata."""
    checkpoint: Checkpoint = load_checkpoint(path, key)
    missing = [g for g in (RAW_GROUP, EMA_GROUP, OPTIMIZER_GROUP) if g not in checkpoint.groups]
    if missing:
        raise CheckpointError(f"{path}: holds no training state ({', '.join(missing)} missing), so training cannot "
                              "resume from it; move it out of the results dir or use it as train.checkpoint")
    assign_weights(parts.model, checkpoint.groups[RAW_GROUP])
    assign_indexed(path, "EMA", parts.ema.shadows, checkpoint.groups[EMA_GROUP])
    assign_indexed(path, "optimizer", parts.optimizer.variables, checkpoint.groups[OPTIMIZER_GROUP])
    return checkpoint.metadata


def assign_indexed(path: Path, what: str, variables: list[Any], arrays: dict[str, np.ndarray]) -> None:
    values = [arrays[name] for name in sorted(arrays)]
    shapes_ok = len(values) == len(variables) and all(
        tuple(v.shape) == tuple(a.shape) for v, a in zip(variables, values, strict=False)
    )
    if not shapes_ok:
        raise CheckpointError(f"{path}: its {what} state does not fit this model/optimizer; resume with the spec it "
                              "was trained with, or use another results dir")
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
