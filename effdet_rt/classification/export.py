"""`effdet-rt classification export`: checkpoint -> ONNX with softmax probabilities out, preprocessing inside.

Input ``images``: float32 NHWC (N, H, W, C) raw pixels (RGB 0..255, or gray; 16-bit gray 0..65535) already resized
/ centre-cropped as `images.eval_image` does; output ``probabilities`` (N, classes). Metadata (``effdet_rt.*``):
``task`` = classification, ``classes`` in index order, ``image_format`` (size, channels, depth, resize method,
centre crop), ``preprocess_mode``, ``precision``. The graph goes through the detector's tf2onnx conversion and
cleaning (`effdet_rt.onnx.graph`); with torch / tf modes the normalisation becomes the same per-channel 1x1 Conv
after the NHWC->NCHW transpose as the detector's.

The steps (ONNX or a converted .tflite, `--verify` before anything is written, the atomic write) are every task's,
in export/flow.py; `ClassifierExport` gives the classifier's parts of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.backends import exporting_backend
from effdet_rt.checkpoint import resolve_key
from effdet_rt.classification.engines import OUTPUT_NAME, TASK, KerasClassifier
from effdet_rt.classification.images import eval_image
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.export.flow import export_file, require_backend
from effdet_rt.export.verify import Figure, VerifyReport
from effdet_rt.infer.files import image_files
from effdet_rt.onnx.graph import (
    clean_graph,
    drop_identity_reshapes,
    keras_to_onnx,
    normalize_after_transpose,
    rename_input,
    set_metadata,
)
from effdet_rt.spec.schema import CalibrationConfig

VERIFY_TOLERANCE = 1e-4
VERIFY_IMAGES = 8


PROBABILITY = "probability"
TOP1 = "top-1 agreement"


def probability_report(images: int, max_abs_diff: float, top1_agree: int, runtime: str = "ONNX Runtime") -> VerifyReport:
    """The classifier's verification: max |TF - file| of the probabilities, held to VERIFY_TOLERANCE, and how many
    images' top-1 class agrees (reported)."""
    return VerifyReport(images, (
        Figure(PROBABILITY, max_abs_diff, VERIFY_TOLERANCE,
               f"max |TF - {runtime}| probability = {{value:.3e}} (limit {{limit:.0e}})"),
        Figure(TOP1, top1_agree, None, "top-1 agrees on {value:.0f}/{images}"),
    ), heading="verify: {images} images, ")


INPUT_TEXT = "images: float32 NHWC raw pixels (RGB 0..255 or gray), resized/centre-cropped; normalised inside"


def export_metadata(classifier: KerasClassifier) -> dict[str, Any]:
    """The effdet_rt metadata of every classifier file: its task, classes, image format and preprocessing."""
    spec, fmt = classifier.spec, classifier.fmt
    return {"task": TASK, "model_name": spec.model.arch, "classes": classifier.classes,
            "num_classes": len(classifier.classes), "image_format": fmt.as_metadata(),
            "preprocess_mode": spec.data.preprocess_mode, "image_mean": list(spec.data.image_mean),
            "input": INPUT_TEXT}


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
    meta = {**export_metadata(classifier), "precision": "fp32", **(extra_metadata or {})}
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


@dataclass(frozen=True)
class ConvertedOptions:
    """What only a format converted straight from the checkpoint (LiteRT's .tflite) takes: the input type of an
    INT8 file and the folder of images that calibrates it, in batches as `effdet-rt build --calib-images` makes."""

    io_type: str = "float32"
    calib_images: Path | None = None
    calib_batches: int = CalibrationConfig().batches
    calib_batch_size: int = CalibrationConfig().batch_size

    def given(self) -> bool:
        return self != ConvertedOptions(calib_batches=self.calib_batches, calib_batch_size=self.calib_batch_size)


def export_classifier(spec: Any, *, model_path: Path | None, output: Path | None, key: str | None,
                      verify: bool = False, batch_size: int | None = None, opset: int | None = None,
                      converted: ConvertedOptions | None = None, log: Callable[[str], None] = print) -> Path:
    """Export a classification checkpoint to ONNX, or to a .tflite (LiteRT) at export.data_type; with ``verify``
    a failed FP32 parity check writes nothing and raises."""
    model_path = model_path or (Path(spec.export.model_path) if spec.export.model_path else None)
    output = output or (Path(spec.export.output_path) if spec.export.output_path else None)
    converted = converted or ConvertedOptions()
    if model_path is None:
        raise UserError("no checkpoint to export: pass -m model.edrt (or set export.model_path)")
    if output is None:
        raise UserError("no output file: pass -o model.onnx (or set export.output_path)")
    backend = exporting_backend(output)
    if backend is None and output.suffix.lower() != ".onnx":
        raise UserError(f"{output}: the export is an ONNX file or a LiteRT .tflite; name it *.onnx or *.tflite")
    if backend is None and (spec.export.data_type != "fp32" or converted.given()):
        raise UserError(f"{output}: an ONNX export is FP32 with a float input; drop --precision/--io-type/"
                        "--calib-images and build FP16 or INT8 engines from it with `effdet-rt build` (or export "
                        "to a .tflite)")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size} is not allowed: must be a positive integer")
    if opset is not None and not 13 <= opset <= 21:
        raise UserError(f"--opset {opset} is not allowed: choose an opset from 13 to 21 (17 recommended)")
    if backend is not None:
        check_converted(spec, backend, output, converted, batch_size, opset)
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: checkpoint not found; pass the .edrt written by classification train")
    classifier = KerasClassifier(model_path, resolve_key(key, spec.key or None))
    job = ClassifierExport(spec, classifier, output, batch_size, 17 if opset is None else opset, converted, log)
    return export_file(job, output, backend, verify=verify, log=log)


def check_converted(spec: Any, backend: Any, output: Path, converted: ConvertedOptions, batch_size: int | None,
                    opset: int | None) -> None:
    from effdet_rt.engines.registry import exporter_module

    if batch_size is not None or opset is not None:
        raise UserError(f"{output}: --batch-size and --opset are ONNX settings; a {backend.suffixes[0]} takes any "
                        "batch (input resize), so drop them")
    for option, value in (("--calib-batches", converted.calib_batches), ("--calib-batch-size", converted.calib_batch_size)):
        if value < 1:
            raise UserError(f"{option} {value} is not allowed: must be a positive integer")
    require_backend(backend, output)
    exporter_module(backend).check_settings(spec.export.data_type, converted.io_type,
                                            converted.calib_images is not None, "--calib-images DIR")
    if converted.calib_images is not None and not converted.calib_images.is_dir():
        raise UserError(f"--calib-images {converted.calib_images}: not a folder of images")


@dataclass
class ClassifierExport:
    """The classifier's parts of the export flow (export/flow.py): the probabilities network, its metadata, and
    `--verify`'s probabilities on the spec's images; a verification outside its limits writes nothing."""

    spec: Any
    classifier: KerasClassifier
    output: Path
    batch_size: int | None
    opset: int
    converted: ConvertedOptions
    log: Callable[[str], None]

    def onnx_graph(self) -> Any:
        classifier, fmt = self.classifier, self.classifier.fmt
        self.log(f"exporting {classifier.spec.model.arch} {fmt.channels}x{fmt.size[0]}x{fmt.size[1]}, "
                 f"{len(classifier.classes)} classes, batch {self.batch_size or 'dynamic'}, opset {self.opset}")
        return classifier_to_onnx(classifier, self.batch_size, self.opset,
                                  {"source_checkpoint": classifier.path.name})

    def verify_graph(self, proto: Any) -> VerifyReport:
        from effdet_rt.export.verify_run import exported_runner

        images = verification_images(self.spec, self.classifier.fmt, self.batch_size or VERIFY_IMAGES)
        return compared(self.classifier.predict(images), exported_runner(proto).run(images)[OUTPUT_NAME])

    def converted_bytes(self, exporter: Any) -> bytes:
        """INT8 calibrated on the batches `effdet-rt build --calib-images` calibrates the ONNX on."""
        from effdet_rt.classification.deploy import calibration_source

        classifier, converted, fmt = self.classifier, self.converted, self.classifier.fmt
        if converted.io_type != "float32" and fmt.depth != 8:
            raise UserError(f"--io-type {converted.io_type}: a {fmt.depth}-bit model's pixels do not fit an 8-bit "
                            "input; export it with --io-type float32")
        meta = {**export_metadata(classifier), "source_checkpoint": classifier.path.name}
        calibration = calibration_source(str(converted.calib_images) if converted.calib_images else None, meta,
                                         converted.calib_batch_size, converted.calib_batches, self.log)
        precision, classes = self.spec.export.data_type, classifier.classes
        self.log(f"exporting the classifier to LiteRT, {len(classes)} classes, precision {precision}, "
                 f"input {converted.io_type}")
        return exporter.export_labelled_network(
            classifier.model, (*fmt.size, fmt.channels), OUTPUT_NAME, precision, converted.io_type,
            calibration=calibration, metadata=meta, labels=classes,
            description=f"effdet-rt image classifier, {len(classes)} classes, {precision}", source=str(self.output))

    def verify_written(self, backend: Any, exporter: Any, path: Path) -> VerifyReport:
        """TensorFlow's probabilities against the written bytes' on the backend's runner."""
        from effdet_rt.engines.registry import open_runner

        images = verification_images(self.spec, self.classifier.fmt)
        return compared(self.classifier.predict(images), open_runner(path).run(images)[OUTPUT_NAME], backend.title)

    def settle(self, report: VerifyReport, backend: Any, log: Callable[[str], None]) -> None:
        if backend is not None and self.spec.export.data_type != "fp32":
            log(f"verify: the limit is FP32's; a {self.spec.export.data_type} file is expected to exceed it")
        elif not report.passed():
            raise ModelFileError(f"export verification failed: {report.summary()}; nothing was written")


def compared(reference: np.ndarray, candidate: np.ndarray, runtime: str = "ONNX Runtime") -> VerifyReport:
    """The probability report of TensorFlow's ``reference`` against a file's ``candidate`` probabilities."""
    return probability_report(len(reference), float(np.max(np.abs(reference - candidate))),
                              int(np.sum(reference.argmax(1) == candidate.argmax(1))), runtime)
