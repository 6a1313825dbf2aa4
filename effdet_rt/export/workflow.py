"""Export as the CLI runs it: options from the command line, defaults from the spec's export section."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.errors import UserError
from effdet_rt.export.exporter import ExportOptions, attach_nms, check_options, convert_raw_heads, write_onnx
from effdet_rt.model.postprocess import NmsConfig
from effdet_rt.spec.overrides import first_given as _pick


def export_options_from_spec(spec: Any, *, nms=None, batch_size=None, dynamic_batch=None, opset=None,
                             min_score=None, iou=None, max_detections=None) -> ExportOptions:
    e = spec.export
    dynamic = _pick(dynamic_batch, e.dynamic_batch_size if batch_size is None else False)
    return ExportOptions(
        nms=_pick(nms, e.nms),
        batch_size=None if dynamic else _pick(batch_size, e.batch_size),
        opset=_pick(opset, e.opset),
        nms_settings=NmsConfig(
            score_threshold=float(_pick(min_score, e.min_score_thresh)),
            iou_threshold=float(_pick(iou, e.iou_thresh)),
            max_detections=int(_pick(max_detections, e.max_detections)),
        ),
    )


def verification_batch(spec: Any, input_size: tuple[int, int], count: int = 4) -> np.ndarray:
    """Real validation images when the spec names some, else seeded noise images."""
    from effdet_rt.calib.batches import calibration_batches

    if spec.dataset.val_tfrecords:
        try:
            return next(iter(calibration_batches(spec.dataset.val_tfrecords, input_size, count, 1, log=lambda _: None)))
        except (UserError, StopIteration):
            pass
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, size=(count, *input_size, 3)).astype(np.float32)


def export_from_spec(spec: Any, *, checkpoint: Path | None, output: Path | None, key: str | None,
                     verify: bool = False, strict_verify: bool = True, log: Callable[[str], None] = print,
                     **options: Any) -> Path:
    """Export a checkpoint; with ``verify``, a failed check raises (``strict_verify``) or is logged as a warning."""
    from effdet_rt.engines.checkpoint import load_engine

    checkpoint = checkpoint or (Path(spec.export.checkpoint) if spec.export.checkpoint else None)
    output = output or (Path(spec.export.onnx_file) if spec.export.onnx_file else None)
    if checkpoint is None:
        raise UserError("no checkpoint to export: pass -m model.edrt (or set export.checkpoint)")
    if output is None:
        raise UserError("no output file: pass -o model.onnx (or set export.onnx_file)")
    if output.suffix.lower() != ".onnx":
        raise UserError(f"{output}: the export is an ONNX file; name it *.onnx")
    export_options = export_options_from_spec(spec, **options)
    check_options(export_options)
    engine = load_engine(checkpoint, key=key, spec=spec)
    setup = engine.setup
    log(f"exporting {setup.name} {setup.input_size[1]}x{setup.input_size[0]}, {setup.num_classes} classes, "
        f"nms={export_options.nms}, batch={export_options.batch_size or 'dynamic'}, opset {export_options.opset}")
    raw = convert_raw_heads(engine.model, setup, export_options.batch_size, export_options.opset)
    meta = {"source_checkpoint": checkpoint.name}
    proto = attach_nms(raw, setup, export_options, meta)
    if verify:
        from dataclasses import replace

        from effdet_rt.engines.checkpoint import KerasEngine
        from effdet_rt.export.verify_run import settle_verification, verify_export

        reference = KerasEngine(engine.model, setup, export_options.nms_settings)
        onnx_nms = proto if export_options.nms == "onnx" else attach_nms(raw, setup, replace(export_options, nms="onnx"))
        batch = verification_batch(spec, setup.input_size, count=export_options.batch_size or 4)
        from effdet_rt.export.written_heads import written_heads

        report = verify_export(reference, written_heads(proto), onnx_nms, batch)
        log(report.summary())
        if export_options.nms == "efficient":
            log("verify: the raw heads compared are those of the file written; EfficientNMS_TRT runs only in "
                "TensorRT, so its detections were compared through the same heads with standard-op NMS (--nms onnx)")
        elif export_options.nms == "none":
            log("verify: the file written holds the raw heads compared; its detections were compared through the "
                "host-side equivalent, standard-op NMS (--nms onnx) on the same heads")
        settle_verification(report, strict_verify, log)
    return write_onnx(proto, output)
