"""Keras detector -> ONNX model file with NMS inside (or raw heads), metadata and optional verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnx
import onnx_graphsurgeon as gs

from effdet_rt.errors import UserError
from effdet_rt.export.heads import raw_heads_model
from effdet_rt.model.factory import DetectorSetup
from effdet_rt.model.postprocess import NmsConfig
from effdet_rt.onnx.graph import (
    clean_graph,
    drop_identity_reshapes,
    fold_scale_into_weighted_sums,
    keras_to_onnx,
    normalize_after_transpose,
    rename_input,
    set_metadata,
    use_asymmetric_nearest_resize,
)
from effdet_rt.onnx.nms import PLUGIN_DOMAIN, add_efficient_nms, add_onnx_nms
from effdet_rt.onnx.qdq import requantize_conv_weights
from effdet_rt.utils.atomic import atomic_write_bytes

NmsMode = Literal["efficient", "onnx", "none"]
NMS_MODES = ("efficient", "onnx", "none")


@dataclass(frozen=True)
class ExportOptions:
    nms: NmsMode = "efficient"
    batch_size: int | None = None  # None: dynamic batch
    opset: int = 17
    nms_settings: NmsConfig = field(default_factory=NmsConfig)


def check_options(options: ExportOptions) -> None:
    if options.nms not in NMS_MODES:
        raise UserError(f"--nms {options.nms} is not allowed: choose one of {', '.join(NMS_MODES)}")
    if options.batch_size is not None and options.batch_size < 1:
        raise UserError(f"--batch-size {options.batch_size} is not allowed: must be a positive integer")
    if not 13 <= options.opset <= 21:
        raise UserError(f"--opset {options.opset} is not allowed: choose an opset from 13 to 21 (17 recommended)")
    s = options.nms_settings
    if not 0.0 <= s.score_threshold < 1.0 or not 0.0 < s.iou_threshold <= 1.0 or s.max_detections < 1:
        raise UserError(
            "NMS settings not allowed: need 0 <= --min-score < 1, 0 < --iou <= 1 and --max-detections >= 1 "
            f"(got {s.score_threshold}, {s.iou_threshold}, {s.max_detections})"
        )
    if options.nms == "efficient" and s.pre_nms_top_k != NmsConfig().pre_nms_top_k:
        raise UserError(f"export.pre_nms_top_k {s.pre_nms_top_k} is not allowed with --nms efficient: EfficientNMS_TRT "
                        "has no pre-NMS top-k setting; use --nms onnx or none, or leave it at "
                        f"{NmsConfig().pre_nms_top_k}")


def model_metadata(setup: DetectorSetup, options: ExportOptions, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    a = setup.anchor_config
    meta = {
        "model_name": setup.name,
        "input_size": list(setup.input_size),
        "num_classes": setup.num_classes,
        "class_id_offset": 1,
        "nms": options.nms,
        "score_threshold": options.nms_settings.score_threshold,
        "iou_threshold": options.nms_settings.iou_threshold,
        "max_detections": options.nms_settings.max_detections,
        "pre_nms_top_k": options.nms_settings.pre_nms_top_k,
        "anchors": {
            "min_level": a.min_level,
            "max_level": a.max_level,
            "num_scales": a.num_scales,
            "aspect_ratios": [list(r) for r in a.aspect_ratios],
            "anchor_scale": a.anchor_scale,
        },
        "input": "images: float32 NHWC RGB 0..255, resized keeping aspect and padded bottom/right; normalised inside",
    }
    meta.update(extra or {})
    return meta


def convert_raw_heads(model, setup: DetectorSetup, batch_size: int | None, opset: int) -> onnx.ModelProto:
    """The network as ONNX with two outputs, class_logits (N, A, C) and box_codes (N, A, 4); the slow step."""
    heads = raw_heads_model(model, setup.num_levels, setup.num_classes)
    graph = gs.import_onnx(keras_to_onnx(heads, setup.input_size, batch_size, opset))
    batch: int | str = batch_size if batch_size else "batch"
    rename_input(graph, batch)
    for tensor in graph.outputs:
        tensor.name = tensor.name.split(":")[0]
        tensor.shape = [batch, *tensor.shape[1:]]
    use_asymmetric_nearest_resize(graph)
    normalize_after_transpose(graph)
    requantize_conv_weights(graph)  # QAT exports: per-channel kernel Q/DQ redone in OIHW (see onnx/qdq.py)
    graph = clean_graph(graph)
    drop_identity_reshapes(graph)
    fold_scale_into_weighted_sums(graph)
    return gs.export_onnx(graph)


def attach_nms(raw: onnx.ModelProto, setup: DetectorSetup, options: ExportOptions, extra_metadata: dict[str, Any] | None = None) -> onnx.ModelProto:
    """Append the chosen NMS to a raw-heads model, add metadata and check the result."""
    check_options(options)
    graph = gs.import_onnx(raw)
    batch = graph.inputs[0].shape[0]
    anchors = setup.anchors()
    if options.nms == "efficient":
        add_efficient_nms(graph, anchors, options.nms_settings, batch)
    elif options.nms == "onnx":
        add_onnx_nms(graph, anchors, setup.num_classes, options.nms_settings, batch)
    graph = clean_graph(graph)
    graph.producer_name = "effdet-rt"
    result = gs.export_onnx(graph)
    if options.nms == "efficient":
        result.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    result.ir_version = raw.ir_version
    set_metadata(result, model_metadata(setup, options, extra_metadata))
    onnx.checker.check_model(result)
    return result


def write_onnx(proto: onnx.ModelProto, path: str | Path) -> Path:
    return atomic_write_bytes(path, proto.SerializeToString())
