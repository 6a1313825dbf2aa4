"""Batch profiles and batch splitting for TensorRT engines (pure shape arithmetic, no TensorRT needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from effdet_rt.errors import ModelFileError, SpecError
from effdet_rt.onnx.names import INPUT_NAME

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BatchProfile:
    """Input shapes for an optimisation profile; ``dynamic`` False means the model has a fixed batch."""

    min: Shape
    opt: Shape
    max: Shape
    dynamic: bool

    @property
    def min_batch(self) -> int:
        return self.min[0]

    @property
    def max_batch(self) -> int:
        return self.max[0]


def batch_profile(input_shape: Sequence[int], min_batch: int, opt_batch: int, max_batch: int,
                  input_name: str = INPUT_NAME) -> BatchProfile:
    """Profile shapes for an NHWC input whose batch dim may be dynamic (-1); other dims must be fixed."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4 or any(d < 1 for d in shape[1:]):
        raise ModelFileError(
            f"input '{input_name}' has shape {list(shape)}; expected (N, H, W, C) with fixed H, W and channels; "
            "re-export with a fixed input size"
        )
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise SpecError(
            f"build batch sizes min={min_batch}, opt={opt_batch}, max={max_batch}: need 1 <= min <= opt <= max; "
            "fix build.min_batch_size / opt_batch_size / max_batch_size"
        )
    rest = shape[1:]
    if shape[0] > 0:
        fixed = shape[0]
        if (min_batch, opt_batch, max_batch) != (fixed, fixed, fixed):
            raise SpecError(
                f"the model has a static batch of {fixed} but build asks min={min_batch}, opt={opt_batch}, "
                f"max={max_batch}; set build.min/opt/max_batch_size={fixed} or re-export with a dynamic batch"
            )
        return BatchProfile((fixed, *rest), (fixed, *rest), (fixed, *rest), dynamic=False)
    return BatchProfile((min_batch, *rest), (opt_batch, *rest), (max_batch, *rest), dynamic=True)


def batch_chunks(count: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """Split ``count`` images into runs the engine accepts: (start, stop, padded batch size).

    Runs hold at most ``max_batch`` images; a run smaller than ``min_batch`` is padded up to it
    (a static-batch engine has min == max, so every run is padded to that batch).
    """
    if min_batch < 1 or max_batch < min_batch:
        raise ValueError(f"bad engine batch range {min_batch}..{max_batch}")
    chunks = []
    for start in range(0, count, max_batch):
        stop = min(start + max_batch, count)
        chunks.append((start, stop, max(stop - start, min_batch)))
    return chunks
