"""TAO's min-weight pruning criterion on numpy arrays: filter norms, layer normalisation, merging, selection.

Only numpy here, so the selection rules can be tested on hand-made numbers without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from effdet_rt.errors import UserError

NORMALIZERS: tuple[str, ...] = ("max", "L2")
CRITERIA: tuple[str, ...] = ("union", "intersection", "arithmetic_mean", "geometric_mean")


@dataclass(frozen=True)
class PruneSettings:
    """The knobs of `effdet-rt prune` (TAO's names); ``check`` refuses values TAO would not run with."""

    threshold: float = 0.5
    normalizer: str = "max"
    equalization_criterion: str = "union"
    granularity: int = 8
    min_num_filters: int = 16
    excluded_layers: tuple[str, ...] = ()

    def check(self) -> PruneSettings:
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise UserError(f"pruning threshold {self.threshold} is not allowed: normalised filter norms lie in "
                            "[0, 1], so pass -pth/--pruning-threshold between 0 and 1 (prune.threshold)")
        if self.normalizer not in NORMALIZERS:
            raise UserError(f"unknown normalizer {self.normalizer!r}: use one of {', '.join(NORMALIZERS)} "
                            "(-n/--normalizer, prune.normalizer)")
        if self.equalization_criterion not in CRITERIA:
            raise UserError(f"unknown equalization criterion {self.equalization_criterion!r}: use one of "
                            f"{', '.join(CRITERIA)} (-eq/--equalization-criterion, prune.equalization_criterion)")
        if int(self.granularity) < 1:
            raise UserError(f"pruning granularity {self.granularity} is not allowed: it must be at least 1 "
                            "(-pg/--pruning-granularity, prune.granularity)")
        if int(self.min_num_filters) < 1:
            raise UserError(f"min_num_filters {self.min_num_filters} is not allowed: it must be at least 1 "
                            "(-nf/--min-num-filters, prune.min_num_filters)")
        return self


def filter_norms(kernel: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """L2 norm of each output filter: over every axis but the last (depthwise (kh, kw, C, 1): per channel C)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if depthwise:
        if kernel.ndim != 4 or kernel.shape[-1] != 1:
            raise ValueError(f"depthwise kernel of shape {kernel.shape}: only depth_multiplier 1 can be pruned")
        return np.sqrt(np.sum(kernel[..., 0] ** 2, axis=(0, 1)))
    return np.sqrt(np.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0))


def normalize(norms: np.ndarray, normalizer: str) -> np.ndarray:
    """Norms relative to the layer: divided by their max (``max``) or by the L2 norm of all of them (``L2``)."""
    norms = np.asarray(norms, dtype=np.float64)
    if normalizer == "max":
        scale = float(np.max(norms)) if norms.size else 0.0
    elif normalizer == "L2":
        scale = float(np.sqrt(np.sum(norms**2)))
    else:
        raise ValueError(f"unknown normalizer {normalizer!r}")
    return norms / scale if scale > 0 else np.zeros_like(norms)


def merge(stats: Sequence[np.ndarray], criterion: str) -> np.ndarray:
    """One score per channel for layers that must keep the same channels (their normalised norms stacked)."""
    stacked = np.stack([np.asarray(s, dtype=np.float64) for s in stats])
    if criterion == "union":
        return stacked.max(axis=0)
    if criterion == "intersection":
        return stacked.min(axis=0)
    if criterion == "arithmetic_mean":
        return stacked.mean(axis=0)
    if criterion == "geometric_mean":
        with np.errstate(divide="ignore"):
            return np.exp(np.log(stacked).mean(axis=0))
    raise ValueError(f"unknown equalization criterion {criterion!r}")


def kept_channels(scores: np.ndarray, threshold: float, min_num_filters: int, granularity: int) -> np.ndarray:
    """Sorted indices of the channels to keep.

    The count is the number of scores above ``threshold``, raised to ``min_num_filters``, rounded up to a
    multiple of ``granularity`` and capped at the layer's width; the channels kept are the strongest ones.
    """
    scores = np.asarray(scores, dtype=np.float64)
    width = len(scores)
    count = max(int(np.sum(scores > threshold)), min(int(min_num_filters), width))
    count = min(width, -(-count // int(granularity)) * int(granularity))
    strongest = np.argsort(-scores, kind="stable")[:count]
    return np.sort(strongest)
