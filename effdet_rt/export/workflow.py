"""Export as the CLI runs it: everything from the spec's export section (command-line options are overrides).
The steps are every task's (export/flow.py); `DetectorExport` gives the detector's parts of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.backends import Backend, exporting_backend, model_file_types
from effdet_rt.calib.batches import calibration_batches
from effdet_rt.engines.registry import exporter_module
from effdet_rt.engines.runtime.checkpoint import KerasEngine, load_engine
from effdet_rt.engines.runtime.onnxruntime import describe
from effdet_rt.errors import UserError
from effdet_rt.export.converted import calibration_for, class_labels, verify_written
from effdet_rt.export.exporter import (
    ExportOptions,
    attach_nms,
    check_options,
    convert_raw_heads,
    model_metadata,
)
from effdet_rt.export.flow import export_file, require_backend
from effdet_rt.export.heads import raw_heads_model
from effdet_rt.export.verify import VerifyReport
from effdet_rt.export.verify_run import VERIFY_MIN_SCORE, settle_verification, verify_export
from effdet_rt.export.written_heads import written_heads
from effdet_rt.model.postprocess import NmsConfig
from effdet_rt.onnx.tasks import default_model_task


def export_options_from_spec(export: Any) -> ExportOptions:
    """ExportOptions from the spec's export section."""
    return ExportOptions(
        nms=export.nms,
        batch_size=None if export.dynamic_batch_size else export.batch_size,
        opset=export.opset,
        nms_settings=NmsConfig(
            score_threshold=float(export.min_score_thresh),
            iou_threshold=float(export.iou_thresh),
            max_detections=int(export.max_detections),
            pre_nms_top_k=int(export.pre_nms_top_k),
        ),
    )


def baked_nms_line(nms: NmsConfig, evaluation_floor: float) -> str:
    """What the exported model's NMS keeps (in its metadata too), and how to export for evaluation."""
    line = (f"NMS baked in: scores >= {nms.score_threshold:g} (export.min_score_thresh), IoU {nms.iou_threshold:g}, "
            f"at most {nms.max_detections} per image")
    if nms.score_threshold > evaluation_floor:
        line += (f"; `evaluate` scores from {evaluation_floor:g} (evaluate.min_score_thresh), so export with "
                 f"--min-score {evaluation_floor:g} for an engine whose mAP equals the checkpoint's")
    return line


def verification_batch(spec: Any, input_size: tuple[int, int], count: int = 4) -> np.ndarray:
    """Real validation images when the spec names some, else seeded noise images."""

    if spec.dataset.val_tfrecords:
        try:
            return next(iter(calibration_batches(spec.dataset.val_tfrecords, input_size, count, 1, log=lambda _: None)))
        except (UserError, StopIteration):
            pass
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, size=(count, *input_size, 3)).astype(np.float32)


def export_from_spec(spec: Any, *, key: str | None, verify: bool = False, strict_verify: bool = True,
                     log: Callable[[str], None] = print) -> Path:
    """Export export.checkpoint to export.onnx_file; with ``verify``, a failed check raises (``strict_verify``)
    or is logged as a warning."""

    if not spec.export.checkpoint:
        raise UserError("no checkpoint to export: pass -m model.edrt (or set export.checkpoint)")
    if not spec.export.onnx_file:
        raise UserError("no output file: pass -o model.onnx (or set export.onnx_file)")
    checkpoint, output = Path(spec.export.checkpoint), Path(spec.export.onnx_file)
    converted = exporting_backend(output)
    if converted is None and output.suffix.lower() != ".onnx":
        raise UserError(f"{output}: the export is an ONNX file or {model_file_types()}; name it *.onnx or *.tflite")
    if converted is None and (spec.export.precision != "fp32" or spec.export.io_type != "float32"):
        raise UserError(f"{output}: an ONNX export is FP32 with a float input; drop --precision/--io-type and build "
                        "FP16 or INT8 engines from it with `effdet-rt build` (or export to a .tflite)")
    export_options = export_options_from_spec(spec.export)
    check_options(export_options)
    if converted is not None:
        require_backend(converted, output)
        exporter_module(converted).check_settings(spec.export.precision, spec.export.io_type,
                                                  bool(spec.build.calibration.tfrecords), default_model_task().calib_data)
    engine = load_engine(checkpoint, key=key, spec=spec)
    job = DetectorExport(spec, engine, export_options, checkpoint, output, strict_verify, log)
    return export_file(job, output, converted, verify=verify, log=log)


@dataclass
class DetectorExport:
    """The detector's parts of the export flow (export/flow.py): raw heads with NMS attached, its metadata, and
    `--verify`'s raw-head and detection comparison on the spec's validation images."""

    spec: Any
    engine: Any  # the checkpoint engine (load_engine)
    options: ExportOptions
    checkpoint: Path
    output: Path
    strict_verify: bool
    log: Callable[[str], None]
    raw: Any = None  # the raw-heads graph, once converted
    heads_model: Any = None  # the network's raw heads as one Keras model, once made

    @property
    def setup(self) -> Any:
        return self.engine.setup

    def batch(self, count: int) -> np.ndarray:
        return verification_batch(self.spec, self.setup.input_size, count)

    def onnx_graph(self) -> Any:
        setup, options = self.setup, self.options
        self.log(f"exporting {setup.name} {setup.input_size[1]}x{setup.input_size[0]}, {setup.num_classes} classes, "
                 f"nms={options.nms}, batch={options.batch_size or 'dynamic'}, opset {options.opset}")
        self.log(baked_nms_line(options.nms_settings, float(self.spec.evaluate.min_score_thresh)))
        self.raw = convert_raw_heads(self.engine.model, setup, options.batch_size, options.opset)
        return attach_nms(self.raw, setup, options, {"source_checkpoint": self.checkpoint.name})

    def verify_graph(self, proto: Any) -> VerifyReport:
        # both sides' NMS run down to VERIFY_MIN_SCORE, so a model whose scores stay under the export's threshold
        # still has detections to compare; the written graph differs from that twin only in its threshold constant
        setup, options = self.setup, self.options
        settings = options.nms_settings
        low = replace(settings, score_threshold=min(settings.score_threshold, VERIFY_MIN_SCORE))
        reference = KerasEngine(self.engine.model, setup, low)
        onnx_nms = proto if options.nms == "onnx" and low == settings else \
            attach_nms(self.raw, setup, replace(options, nms="onnx", nms_settings=low))
        return verify_export(reference, written_heads(proto), onnx_nms, self.batch(options.batch_size or 4))

    def converted_bytes(self, exporter: Any) -> bytes:
        setup, spec = self.setup, self.spec
        metadata = model_metadata(setup, self.options, {"source_checkpoint": self.checkpoint.name})
        return exporter.export_detector(self.heads(), setup, self.options.nms_settings, spec.export,
                                        calibration=calibration_for(spec, setup.input_size, self.log),
                                        metadata=metadata, labels=class_labels(spec, setup.num_classes, self.log),
                                        source=str(self.output), log=self.log)

    def verify_written(self, backend: Backend, exporter: Any, path: Path) -> VerifyReport:
        reference = KerasEngine(self.engine.model, self.setup, self.options.nms_settings)
        return verify_written(backend, exporter, reference, self.heads(), path, self.batch(4))

    def heads(self) -> Any:
        if self.heads_model is None:
            self.heads_model = raw_heads_model(self.engine.model, self.setup.num_levels, self.setup.num_classes)
        return self.heads_model

    def settle(self, report: VerifyReport, backend: Backend | None, log: Callable[[str], None]) -> None:
        if backend is None:
            nms = self.options.nms
            if nms == "efficient":
                log("verify: the raw heads compared are those of the file written; EfficientNMS_TRT runs only in "
                    "TensorRT, so its detections were compared through the same heads with standard-op NMS "
                    "(--nms onnx)")
            elif nms == "none":
                log("verify: the file written holds the raw heads compared; its detections were compared through "
                    "the host-side equivalent, standard-op NMS (--nms onnx) on the same heads")
            settle_verification(report, self.strict_verify, log)
            return
        precision = self.spec.export.precision
        if precision != "fp32":
            log(f"verify: the limits are FP32's; a {precision} file is expected to exceed them")
        settle_verification(report, self.strict_verify and precision == "fp32", log)


def describe_onnx(path: str | Path) -> list[str]:
    """Inputs, outputs, op counts and effdet_rt metadata of an ONNX file, one line each (export --verbose): the
    engine-info description of the file, as lines."""
    info = describe(Path(path))
    lines = [f"{t['io']} {t['name']}: {'x'.join(str(d) for d in t['shape'])}" for t in info["tensors"]]
    lines.append(f"{info['nodes']} nodes: " + ", ".join(f"{op} {n}" for op, n in info["ops"].items()))
    lines += [f"metadata {name}: {value}" for name, value in sorted(info["metadata"].items())]
    return lines


def describe_converted(path: str | Path) -> list[str]:
    """export --verbose for a file converted from the checkpoint (.tflite): its backend's engine-info, as lines."""
    from effdet_rt.engines.registry import describe_file

    info = describe_file(Path(path))
    lines = [f"{t['io']} {t['name']}: {'x'.join(str(d) for d in t['shape'])} {t['dtype']}" for t in info["tensors"]]
    lines.append("ops: " + ", ".join(f"{op} {n}" for op, n in info.get("ops", {}).items()))
    lines += [f"{key}: {value}" for key, value in info.items() if key.startswith("xnnpack")]
    lines += [f"metadata {name}: {value}" for name, value in sorted(info["metadata"].items())]
    return lines
