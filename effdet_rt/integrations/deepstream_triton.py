"""Gst-nvinferserver (DeepStream's Triton plugin) configs for a repository `effdet-rt triton` wrote.

DeepStream scales, converts and batches frames itself and hands Triton the network input, so the config points at
the engine folder (``NAME_model``), not at the ensemble, and says the same about the input as the Gst-nvinfer config
beside it: RGB 0..255 NHWC (normalisation inside the graph), aspect kept, padded at the bottom/right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effdet_rt.integrations.deepstream import PARSE_FUNCTION, PARSER_LIBRARY
from effdet_rt.integrations.triton import Enum, pbtxt, served_engine
from effdet_rt.utils.atomic import atomic_write_text

TRITON_CONFIG = "config_infer_primary_effdet_triton.txt"


def nvinferserver_config(repository: Path, model_name: str, max_batch: int, channels: int, keep_aspect: bool,
                         postprocess: dict[str, Any], input_control: dict[str, Any],
                         custom_lib: str | None = None) -> str:
    infer = {
        "unique_id": 1, "gpu_ids": [0], "max_batch_size": max_batch,
        "backend": {"triton": {"model_name": model_name, "version": -1,
                               "model_repo": {"root": str(repository.resolve()), "strict_model_config": True}}},
        "preprocess": {"network_format": Enum("IMAGE_FORMAT_RGB" if channels == 3 else "IMAGE_FORMAT_GRAY"),
                       "tensor_order": Enum("TENSOR_ORDER_NHWC"), "maintain_aspect_ratio": int(keep_aspect),
                       "symmetric_padding": 0, "frame_scaling_hw": Enum("FRAME_SCALING_HW_DEFAULT"),
                       "frame_scaling_filter": 1,
                       "normalize": {"scale_factor": 1.0, "channel_offsets": [0] * channels}},
        "postprocess": postprocess,
    }
    if custom_lib:
        infer["custom_lib"] = {"path": custom_lib}
    return pbtxt({"infer_config": infer, "input_control": input_control})


def write_detector_triton_config(model: Path, repository: Path, name: str | None, out_dir: Path, labels_file: str,
                                 num_classes: int,
                                 threshold: float) -> Path:
    """``config_infer_primary_effdet_triton.txt`` beside the Gst-nvinfer config (same labels file)."""
    engine, max_batch = served_engine(repository, model, name)
    postprocess = {"labelfile_path": labels_file,
                   "detection": {"num_detected_classes": num_classes, "custom_parse_bbox_func": PARSE_FUNCTION,
                                 "simple_cluster": {"threshold": threshold}}}
    text = nvinferserver_config(repository, engine, max_batch, 3, True, postprocess,
                                {"process_mode": Enum("PROCESS_MODE_FULL_FRAME"), "interval": 0}, PARSER_LIBRARY)
    return atomic_write_text(out_dir / TRITON_CONFIG, text)
