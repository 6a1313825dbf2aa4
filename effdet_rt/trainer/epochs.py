"""What every task's training loop shares around its own steps: the per-epoch values a checkpoint carries (for a
resumed run's curves) and the stop on a loss that is no longer a number."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effdet_rt.errors import UserError


@dataclass
class EpochHistory:
    """One value per epoch for each named figure (loss, accuracy, ...), stored in each checkpoint's metadata."""

    epochs: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, epoch: int, values: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for name, value in values.items():
            self.values.setdefault(name, []).append(float(value))

    def as_metadata(self) -> dict[str, Any]:
        return {"epochs": self.epochs, **self.values}

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> EpochHistory:
        data = dict(data or {})
        return cls(list(data.pop("epochs", [])), {k: list(v) for k, v in data.items()})


def require_finite_loss(loss: float, step: int, epoch: int, last_checkpoint: Path | None,
                        learning_rate_field: str) -> None:
    """Stop the run on a NaN or infinite loss, saying which checkpoint is the last good one and which spec field
    (``learning_rate_field``, the task's) to lower."""
    if math.isfinite(loss):
        return
    kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
    raise UserError(f"loss became {loss} at step {step} (epoch {epoch}); training stopped and {kept}; lower "
                    f"{learning_rate_field} or check the data")
