"""`effdet-rt classification export`: checkpoint -> ONNX with softmax probabilities out, preprocessing inside.

Input ``images``: float32 NHWC (N, H, W, C) raw pixels (RGB 0..255, or gray; 16-bit gray 0..65535) already resized
/ centre-cropped as `images.eval_image` does; output ``probabilities`` (N, classes). Metadata (``effdet_rt.*``):
``task`` = classification, ``classes`` in index order, ``image_format`` (size, channels, depth, resize method,
centre crop), ``preprocess_mode``, ``precision``. The graph goes through the detector's tf2onnx conversion and
cleaning (`effdet_rt.onnx.graph`); with torch / tf modes the normalisation becomes the same per-channel 1x1 Conv
after the NHWC->NCHW transpose as the detector's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.checkpoint import resolve_key
from effdet_rt.classification.dataset import image_files
from effdet_rt.classification.engines import OUTPUT_NAME, TASK, KerasClassifier
from effdet_rt.classification.images import eval_image
from effdet_rt.engines.runtime.onnxruntime import session_options
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.onnx.graph import (
    clean_graph,
    drop_identity_reshapes,
    keras_to_onnx,
    normalize_after_transpose,
    rename_input,
    set_metadata,
)

VERIFY_TOLERANCE = 1e-4
VERIFY_IMAGES = 8


@dataclass(frozen=True)
class VerifyReport:
    images: int
    max_abs_diff: float
    top1_agree: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= VERIFY_TOLERANCE

    def summary(self) -> str:
        return (f"verify: {self.images} images, max |TF - ONNX Runtime| probability = {self.max_abs_diff:.3e} "
                f"(limit {VERIFY_TOLERANCE:.0e}), top-1 agrees on {self.top1_agree}/{self.images}")


def classifier_to_onnx(classifier: KerasClassifier, batch_size: int | None, opset: int,
                       extra_metadata: dict[str, Any] | None = None):
    import onnx
    import onnx_graphsurgeon as gs


    fmt = classifier.fmt
    raw = keras_to_onnx(classifier.model, fmt.size, batch_size, opset, channels=fmt.channels)
    graph = gs.import_onnx(raw)
    batch: int | str = batch_size if batch_size else "batch"
    rename_input(graph, batch)
    (output,) = graph.outputs
    output.name = OUTPUT_NAME
    output.shape = [batch, len(classifier.classes)]
    normalize_after_transpose(graph)
    graph = clean_graph(graph)
    drop_identity_reshapes(graph)
    graph.producer_name = "effdet-rt"
    proto = gs.export_onnx(graph)
    proto.ir_version = raw.ir_version
    spec = classifier.spec
    meta = {
        "task": TASK,
        "model_name": spec.model.arch,
        "classes": classifier.classes,
        "num_classes": len(classifier.classes),
        "image_format": fmt.as_metadata(),
        "preprocess_mode": spec.data.preprocess_mode,
        "image_mean": list(spec.data.image_mean),
        "precision": "fp32",
        "input": "images: float32 NHWC raw pixels (RGB 0..255 or gray), resized/centre-cropped; normalised inside",
        **(extra_metadata or {}),
    }
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def verification_images(spec: Any, fmt, count: int = VERIFY_IMAGES) -> np.ndarray:
    """Real images from the spec's validation (else training) folders, else seeded noise."""

    for folder in (spec.data.val_dataset_path, spec.data.train_dataset_path):
        if folder and Path(folder).is_dir():
            files = image_files(Path(folder))
            picked = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int)] if files else []
            images = []
            for path in picked:
                try:
                    images.append(eval_image(path, fmt))
                except UserError:
                    continue
            if images:
                return np.stack(images)
    peak = 255.0 if fmt.depth == 8 else 65535.0
    return np.random.default_rng(0).uniform(0, peak, (count, *fmt.size, fmt.channels)).astype(np.float32)


def verify_onnx(classifier: KerasClassifier, proto, images: np.ndarray) -> VerifyReport:
    import onnxruntime as ort


    reference = classifier.predict(images)
    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = int(dims[0].dim_value) if dims[0].HasField("dim_value") else None
    outputs = []
    step = fixed or len(images)
    for start in range(0, len(images), step):
        part = images[start:start + step]
        count = len(part)
        if fixed and count < fixed:
            part = np.concatenate([part, np.zeros((fixed - count, *part.shape[1:]), np.float32)])
        outputs.append(session.run([OUTPUT_NAME], {proto.graph.input[0].name: part})[0][:count])
    candidate = np.concatenate(outputs)
    return VerifyReport(len(images), float(np.max(np.abs(reference - candidate))),
                        int(np.sum(reference.argmax(1) == candidate.argmax(1))))


def export_classifier(spec: Any, *, model_path: Path | None, output: Path | None, key: str | None,
                      verify: bool = False, batch_size: int | None = None, opset: int = 17,
                      log: Callable[[str], None] = print) -> Path:
    """Export a classification checkpoint; with ``verify`` a failed parity check writes nothing and raises."""
    from effdet_rt.export.exporter import write_onnx

    model_path = model_path or (Path(spec.export.model_path) if spec.export.model_path else None)
    output = output or (Path(spec.export.output_path) if spec.export.output_path else None)
    if model_path is None:
        raise UserError("no checkpoint to export: pass -m model.edrt (or set export.model_path)")
    if output is None:
        raise UserError("no output file: pass -o model.onnx (or set export.output_path)")
    if output.suffix.lower() != ".onnx":
        raise UserError(f"{output}: the export is an ONNX file; name it *.onnx")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size} is not allowed: must be a positive integer")
    if not 13 <= opset <= 21:
        raise UserError(f"--opset {opset} is not allowed: choose an opset from 13 to 21 (17 recommended)")
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: checkpoint not found; pass the .edrt written by classification train")
    classifier = KerasClassifier(model_path, resolve_key(key, spec.key or None))
    fmt = classifier.fmt
    log(f"exporting {classifier.spec.model.arch} {fmt.channels}x{fmt.size[0]}x{fmt.size[1]}, "
        f"{len(classifier.classes)} classes, batch {batch_size or 'dynamic'}, opset {opset}")
    proto = classifier_to_onnx(classifier, batch_size, opset, {"source_checkpoint": model_path.name})
    if verify:
        report = verify_onnx(classifier, proto, verification_images(spec, fmt, batch_size or VERIFY_IMAGES))
        log(report.summary())
        if not report.ok:
            raise ModelFileError(f"export verification failed: {report.summary()}; nothing was written")
    return write_onnx(proto, output)
