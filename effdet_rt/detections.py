"""The one result type every backend returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# TAO counts the background as class 0: the network's 0-based class index i is dataset category id i + 1, and the
# spec's dataset.num_classes is the number of real classes + 1.
CLASS_ID_OFFSET = 1


def category_ids(class_indices):
    """Dataset category ids of 0-based class indices (an int, a NumPy array or a tensor)."""
    return class_indices + CLASS_ID_OFFSET


def class_indices(category_ids):
    """0-based class indices of dataset category ids: the inverse of category_ids."""
    return category_ids - CLASS_ID_OFFSET


@dataclass
class Detections:
    """Detections for a batch of N images, K slots each (only the first ``num_detections[i]`` are valid).

    boxes: (N, K, 4) float32, x1, y1, x2, y2 in original-image pixels.
    scores: (N, K) float32. classes: (N, K) int32 dataset category ids. num_detections: (N,) int32.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    num_detections: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.classes = np.asarray(self.classes, dtype=np.int32)
        self.num_detections = np.asarray(self.num_detections, dtype=np.int32).reshape(-1)

    def __len__(self) -> int:
        return int(self.num_detections.shape[0])

    def per_image(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The valid (boxes, scores, classes) of one image."""
        n = int(self.num_detections[index])
        return self.boxes[index, :n], self.scores[index, :n], self.classes[index, :n]

    def scaled(self, scales: Sequence[float], image_sizes: Sequence[tuple[int, int]]) -> Detections:
        """Map boxes from model-input pixels back to original pixels (divide by scale, clip to (h, w))."""
        boxes = self.boxes / np.asarray(scales, np.float32).reshape(-1, 1, 1)
        sizes = np.asarray(image_sizes, np.float32).reshape(-1, 2)
        limits = np.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], axis=-1)[:, None, :]
        boxes = np.clip(boxes, 0.0, limits)
        return Detections(boxes, self.scores.copy(), self.classes.copy(), self.num_detections.copy())

    def filtered(self, min_score: float | np.ndarray) -> Detections:
        """Keep only detections with score >= min_score (one value, or one per image); order is kept."""
        floors = np.asarray(min_score, np.float32)
        keep = np.arange(self.scores.shape[1])[None, :] < self.num_detections[:, None]
        keep &= self.scores >= (floors[:, None] if floors.ndim else floors)
        num = keep.sum(axis=1).astype(np.int32)
        order = np.argsort(~keep, axis=1, kind="stable")
        take = lambda a: np.take_along_axis(a, order if a.ndim == 2 else order[..., None], axis=1)  # noqa: E731
        return Detections(take(self.boxes), take(self.scores), take(self.classes), num)

    @staticmethod
    def concat(parts: Sequence[Detections]) -> Detections:
        """Join batches; K is padded to the largest."""
        k = max((p.scores.shape[1] for p in parts), default=0)

        def pad(a: np.ndarray) -> np.ndarray:
            width = [(0, 0), (0, k - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
            return np.pad(a, width)

        return Detections(
            np.concatenate([pad(p.boxes) for p in parts]) if parts else np.zeros((0, 0, 4), np.float32),
            np.concatenate([pad(p.scores) for p in parts]) if parts else np.zeros((0, 0), np.float32),
            np.concatenate([pad(p.classes) for p in parts]) if parts else np.zeros((0, 0), np.int32),
            np.concatenate([p.num_detections for p in parts]) if parts else np.zeros((0,), np.int32),
        )
