"""One runner per backend: a preprocessed batch in, the model's named outputs out.

A runner knows nothing of tasks: each task's engine wraps one and decodes its outputs. What
every backend needs around its own call is written here once: padding a short batch up to a fixed-batch model's
size and cutting the padding off the outputs, and splitting a batch larger than the model takes.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np


class Runner(abc.ABC):
    backend: str = ""
    path: Path
    metadata: dict[str, Any]  # the effdet_rt metadata the file carries ({} when none)
    input_size: tuple[int, int]  # (H, W)
    static_batch: int | None = None  # a fixed-batch model's batch; None: the model takes any batch
    precision: str = "fp32"
    output_names: tuple[str, ...] = ()

    @abc.abstractmethod
    def run_exact(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch the model takes as it is (``static_batch`` images when that is set)."""

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Any number of (N, H, W, C) float32 images -> every output with N rows."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        size = self.static_batch
        if not size:
            return self.run_exact(batch)
        parts = [self._run_padded(batch[i:i + size], size) for i in range(0, len(batch), size)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else \
            self._run_padded(batch, size)

    def _run_padded(self, batch: np.ndarray, size: int) -> dict[str, np.ndarray]:
        count = len(batch)
        if count < size:
            batch = np.concatenate([batch, np.zeros((size - count, *batch.shape[1:]), np.float32)])
        return {name: value[:count] for name, value in self.run_exact(batch).items()}
