"""The Engine interface and `load`, which picks the backend from the model file."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from effdet_rt.backends import model_file_backend
from effdet_rt.data.preprocess import preprocess_batch
from effdet_rt.detections import Detections, category_ids
from effdet_rt.engines.runtime.host_nms import host_postprocess
from effdet_rt.engines.runtime.runner import Runner
from effdet_rt.errors import ModelFileError
from effdet_rt.model.anchors import AnchorConfig, generate_anchors
from effdet_rt.model.postprocess import NmsConfig
from effdet_rt.onnx.names import (
    BOX_CODES,
    CLASS_LOGITS,
    DETECTION_BOXES,
    DETECTION_CLASSES,
    DETECTION_SCORES,
    NUM_DETECTIONS,
    OUTPUT_NAMES,
    RAW_OUTPUTS,
)
from effdet_rt.onnx.tasks import default_model_task, task_of_metadata


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


class RunnerEngine(Engine):
    """A detector on any backend's runner: outputs with NMS inside decoded as they are, raw heads through host NMS.

    Every exported-model backend (ONNX Runtime, OpenVINO, TensorRT) is this class over its own runner."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.path = runner.path
        self.metadata = runner.metadata
        self.input_size = tuple(runner.input_size)
        self.static_batch = self.max_batch_size = runner.static_batch
        self.precision = runner.precision
        names = set(runner.output_names)
        if set(OUTPUT_NAMES) <= names:
            self.mode = "nms"
        elif set(RAW_OUTPUTS) <= names:
            self.mode = "raw"
            self.anchors, self.nms_config = host_nms_setup(self.metadata, self.path)
        else:
            task = task_of_metadata(self.metadata, str(self.path))
            hint = (f"it is a {task.noun}: run it with `{task.command} evaluate|inference`" if task is not default_model_task()
                    else "export it with `effdet-rt export`")
            raise ModelFileError(f"{self.path}: outputs {sorted(names)} are not an effdet-rt detector's; expected "
                                 f"{list(OUTPUT_NAMES)} or {list(RAW_OUTPUTS)} ({hint})")

    def run(self, batch: np.ndarray) -> Detections:
        outputs = self.runner.run(batch)
        if self.mode == "raw":
            return host_postprocess(outputs[CLASS_LOGITS], outputs[BOX_CODES], self.anchors, self.nms_config)
        return detections_from_outputs(outputs, len(batch))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": str(self.path), "nms": self.mode, "batch": self.static_batch or "dynamic"}


Level = Annotated[int, Field(ge=1, le=12, strict=True)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class AnchorMetadata(BaseModel):
    """The anchor settings an export writes into a raw-heads model (model/anchors.py's AnchorConfig)."""

    min_level: Level
    max_level: Level
    num_scales: Annotated[int, Field(ge=1, le=16, strict=True)]
    aspect_ratios: Annotated[list[tuple[Positive, Positive]], Field(min_length=1, max_length=16)]
    anchor_scale: Positive


class HostNmsMetadata(BaseModel):
    """What host NMS reads from a raw-heads model's metadata. Bounded: a damaged file must not make it generate
    anchors for a gigapixel input."""

    anchors: AnchorMetadata
    input_size: tuple[Annotated[int, Field(ge=1, le=8192, strict=True)], Annotated[int, Field(ge=1, le=8192, strict=True)]]
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.001
    iou_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_detections: Annotated[int, Field(ge=1, strict=True)] = 100
    pre_nms_top_k: Annotated[int, Field(ge=1, strict=True)] = 5000


def host_nms_setup(metadata: dict[str, Any], path: Path) -> tuple[np.ndarray, NmsConfig]:
    """Anchors and NMS settings for a raw-heads model, from the metadata its export wrote."""
    if "anchors" not in metadata:
        raise ModelFileError(f"{path}: raw-heads model without anchor metadata; re-export it with effdet-rt")
    try:
        meta = HostNmsMetadata.model_validate(metadata)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise ModelFileError(f"{path}: damaged anchor/NMS metadata ({field}: {problem['msg']}); re-export it with "
                             "effdet-rt") from exc
    a = meta.anchors
    if a.min_level > a.max_level:
        raise ModelFileError(f"{path}: damaged anchor metadata (min_level {a.min_level} > max_level {a.max_level}); "
                             "re-export it with effdet-rt")
    config = AnchorConfig(a.min_level, a.max_level, a.num_scales, tuple(a.aspect_ratios), a.anchor_scale)
    nms = NmsConfig(score_threshold=meta.score_threshold, iou_threshold=meta.iou_threshold,
                    max_detections=meta.max_detections, pre_nms_top_k=meta.pre_nms_top_k)
    return generate_anchors(meta.input_size, config), nms


def detections_from_outputs(outputs: dict[str, np.ndarray], count: int) -> Detections:
    """The first ``count`` images of NMS outputs -> Detections (0-based class indices -> category ids).

    Slots past each image's num_detections are zeroed so nothing invalid leaks out.
    """
    boxes = np.asarray(outputs[DETECTION_BOXES], np.float32)[:count].copy()
    scores = np.asarray(outputs[DETECTION_SCORES], np.float32)[:count].copy()
    classes = category_ids(np.asarray(outputs[DETECTION_CLASSES])[:count].astype(np.int32))
    slots = scores.shape[1]
    num_outputs = np.asarray(outputs[NUM_DETECTIONS])
    num = np.clip(num_outputs.reshape(len(num_outputs), -1)[:count, 0].astype(np.int32), 0, slots)
    valid = np.arange(slots)[None, :] < num[:, None]
    boxes[~valid] = 0.0
    scores[~valid] = 0.0
    classes[~valid] = 0
    return Detections(boxes, scores, classes, num)


def load(path: str | Path, key: str | None = None, spec: Any = None) -> Engine:
    """Open a detector model file with the backend the table names for its suffix (effdet_rt/backends.py)."""
    from effdet_rt.engines.registry import runtime_module

    path = Path(path)
    return runtime_module(model_file_backend(path)).load_engine(path, key=key, spec=spec)
