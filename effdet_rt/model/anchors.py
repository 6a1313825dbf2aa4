"""Anchor boxes, generated per pyramid level in the order the network's outputs are flattened.

Order: level (min..max), then feature-map row, column, then anchor index (scale octave outer, aspect ratio inner).
Boxes are y1, x1, y2, x2 in model-input pixels.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from effdet_rt.errors import SpecError

AspectRatios = tuple[tuple[float, float], ...]
DEFAULT_ASPECT_RATIOS: AspectRatios = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))


def parse_aspect_ratios(text: str | Sequence) -> AspectRatios:
    """Parse TAO's '[(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]' (x, y multipliers) or an already parsed sequence."""
    value = text
    if isinstance(text, str):
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError) as exc:
            raise SpecError(
                f"model.aspect_ratios = {text!r} is not allowed: write a list of (x, y) pairs such as "
                "'[(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]'"
            ) from exc
    try:
        pairs = tuple((float(x), float(y)) for x, y in value)
    except (TypeError, ValueError) as exc:
        raise SpecError(
            f"model.aspect_ratios = {text!r} is not allowed: each entry must be an (x, y) pair of numbers"
        ) from exc
    if not pairs or any(x <= 0 or y <= 0 for x, y in pairs):
        raise SpecError(f"model.aspect_ratios = {text!r} is not allowed: need at least one pair of positive numbers")
    return pairs


@dataclass(frozen=True)
class AnchorConfig:
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: AspectRatios = DEFAULT_ASPECT_RATIOS
    anchor_scale: float = 4.0

    @property
    def num_anchors(self) -> int:
        return self.num_scales * len(self.aspect_ratios)


def feature_sizes(image_size: tuple[int, int], min_level: int, max_level: int) -> list[tuple[int, int]]:
    """Feature-map (height, width) per level for an input of image_size, halving with 'same' padding."""
    height, width = image_size
    sizes = []
    for level in range(1, max_level + 1):
        height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        if level >= min_level:
            sizes.append((height, width))
    return sizes


def level_anchors(image_size: tuple[int, int], feat_size: tuple[int, int], level: int, config: AnchorConfig) -> np.ndarray:
    stride_y = image_size[0] / feat_size[0]
    stride_x = image_size[1] / feat_size[1]
    centers_y = np.arange(stride_y / 2, image_size[0], stride_y)[: feat_size[0]]
    centers_x = np.arange(stride_x / 2, image_size[1], stride_x)[: feat_size[1]]
    grid_x, grid_y = np.meshgrid(centers_x, centers_y)
    per_anchor = []
    for octave in range(config.num_scales):
        for aspect_x, aspect_y in config.aspect_ratios:
            base = config.anchor_scale * 2.0**level * 2.0 ** (octave / config.num_scales)
            half_w, half_h = base * aspect_x / 2.0, base * aspect_y / 2.0
            per_anchor.append(
                np.stack([grid_y - half_h, grid_x - half_w, grid_y + half_h, grid_x + half_w], axis=-1).reshape(-1, 4)
            )
    return np.stack(per_anchor, axis=1).reshape(-1, 4)


def generate_anchors(image_size: tuple[int, int], config: AnchorConfig = AnchorConfig()) -> np.ndarray:
    """All anchors for an input of image_size=(H, W): float32 (num_anchors_total, 4) as y1, x1, y2, x2."""
    sizes = feature_sizes(image_size, config.min_level, config.max_level)
    levels = range(config.min_level, config.max_level + 1)
    return np.concatenate(
        [level_anchors(image_size, size, level, config) for level, size in zip(levels, sizes, strict=True)]
    ).astype(np.float32)
