"""The Engine interface and `load`, which picks the backend from the model file."""

from __future__ import annotations

import abc
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.data.preprocess import preprocess_batch
from effdet_rt.detections import Detections
from effdet_rt.errors import ModelFileError

# file suffix -> module under effdet_rt.engines.runtime exposing `load_engine(path, key=..., spec=...) -> Engine`
BACKENDS: dict[str, str] = {
    ".edrt": "checkpoint",
    ".onnx": "onnxruntime",
    ".plan": "tensorrt",
    ".engine": "tensorrt",
    ".xml": "openvino",
}


class Engine(abc.ABC):
    """A loaded detector. Subclasses implement `run` on preprocessed batches; `infer` takes raw images."""

    backend: str = ""
    precision: str = "fp32"
    input_size: tuple[int, int] = (512, 512)  # (H, W)
    max_batch_size: int | None = None  # None: any batch size

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> Detections:
        """(N, H, W, 3) float32 0..255 preprocessed batch -> detections in model-input pixels."""

    def run_scaled(self, batch: np.ndarray, scales: np.ndarray, image_sizes: Sequence[tuple[int, int]]) -> Detections:
        """Run on a preprocessed batch, splitting it when larger than the engine allows; boxes in original pixels."""
        limit = self.max_batch_size or len(batch) or 1
        parts = [self.run(batch[i : i + limit]) for i in range(0, len(batch), limit)]
        return Detections.concat(parts).scaled(scales, image_sizes)

    def infer(self, images: Sequence[np.ndarray]) -> Detections:
        """RGB uint8 images of any size -> detections in each image's own pixels."""
        batch, scales = preprocess_batch(list(images), self.input_size)
        return self.run_scaled(batch, scales, [img.shape[:2] for img in images])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "input_size": list(self.input_size)}


def load(path: str | Path, key: str | None = None, spec: Any = None) -> Engine:
    """Open a model file with the backend its suffix names (.edrt, .onnx, .plan/.engine, OpenVINO .xml)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found; pass a .edrt checkpoint, .onnx model, .plan/.engine file or OpenVINO .xml")
    module = BACKENDS.get(path.suffix.lower())
    if module is None:
        known = ", ".join(sorted(BACKENDS)) or "none yet"
        raise ModelFileError(f"{path}: unknown model type '{path.suffix}'; supported: {known}")
    return importlib.import_module(f"effdet_rt.engines.runtime.{module}").load_engine(path, key=key, spec=spec)
