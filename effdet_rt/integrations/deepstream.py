"""Gst-nvinfer (DeepStream) config and labels for our ONNX export or TensorRT plan.

Our model takes 0..255 RGB NHWC (normalisation inside the graph), resized keeping aspect ratio and padded at
the bottom/right; its four outputs are EfficientNMS-style, which DeepStream's sample parser
NvDsInferParseCustomEfficientNMS (libnvds_infercustomparser.so) reads: num_detections int32, boxes x1,y1,x2,y2
in network pixels, scores, classes as 0-based integer indices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from effdet_rt.data.labels import load_label_map
from effdet_rt.detections import category_ids, class_indices
from effdet_rt.engines.runtime.onnxruntime import read_onnx
from effdet_rt.engines.runtime.tensorrt import describe, engine_info_path, plan_metadata
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.onnx.fp16 import load_onnx
from effdet_rt.onnx.graph import read_metadata
from effdet_rt.onnx.names import OUTPUT_NAMES
from effdet_rt.onnx.tasks import default_model_task, task_of_metadata
from effdet_rt.utils.atomic import atomic_dir

PARSE_FUNCTION = "NvDsInferParseCustomEfficientNMS"
PARSER_LIBRARY = "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so"
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}


def read_labels(path: str | Path) -> list[str]:
    """Class names in 0-based index order from labels.txt (one per line) or a label_map.yaml (id: name)."""

    mapping = load_label_map(path)
    ids = [category_ids(index) for index in range(class_indices(max(mapping)) + 1)]
    return [mapping.get(i, f"unused_{i}") for i in ids]


def model_input(path: Path) -> tuple[int, int, int, str]:
    """(height, width, max batch, precision) of an ONNX model or a TensorRT plan."""
    if path.suffix.lower() == ".onnx":

        dims = [d.dim_value if d.HasField("dim_value") else -1
                for d in load_onnx(path).graph.input[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or dims[3] not in (1, 3) or min(dims[1:]) < 1:
            raise ModelFileError(f"{path}: input shape {dims} is not (N, H, W, 3 or 1) with a fixed H, W")
        return dims[1], dims[2], max(dims[0], 1), "fp32"
    if path.suffix.lower() in (".plan", ".engine"):

        info_path = engine_info_path(path)
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            high = info["profile"]["max"]
            return high[1], high[2], high[0], info.get("precision", "fp32")

        info = describe(path)
        high = next(iter(info["profile"].values()))["max"]
        return high[1], high[2], high[0], "fp32"
    raise ModelFileError(f"{path}: expected a .onnx model or a .plan/.engine file")


def model_num_classes(path: Path) -> int | None:
    """Real classes recorded by `effdet-rt export` in the ONNX metadata (``effdet_rt.num_classes``); for a plan,
    in the ONNX file it was built from when that is still there. ``None`` when neither records it."""
    if path.suffix.lower() in (".plan", ".engine"):

        try:
            source = json.loads(engine_info_path(path).read_text()).get("onnx")
        except (OSError, ValueError, AttributeError):
            return None
        path = Path(source) if source else path
        if path.suffix.lower() != ".onnx" or not path.is_file():
            return None

    for entry in load_onnx(path).metadata_props:
        if entry.key == "effdet_rt.num_classes":
            try:
                value = json.loads(entry.value)
            except ValueError:
                return None
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    return None


def nvinfer_config(model: Path, labels_file: str, height: int, width: int, batch: int, precision: str,
                   num_classes: int, threshold: float = 0.3) -> str:
    model_key = "onnx-file" if model.suffix.lower() == ".onnx" else "model-engine-file"
    lines = [
        "[property]",
        "gpu-id=0",
        "net-scale-factor=1.0",
        "offsets=0;0;0",
        "model-color-format=0",
        f"{model_key}={model}",
        f"labelfile-path={labels_file}",
        f"infer-dims=3;{height};{width}",
        "network-input-order=1",
        f"batch-size={batch}",
        f"network-mode={NETWORK_MODES.get(precision, 0)}",
        f"num-detected-classes={num_classes}",
        "network-type=0",
        "cluster-mode=4",
        "maintain-aspect-ratio=1",
        "symmetric-padding=0",
        f"output-blob-names={';'.join(OUTPUT_NAMES)}",
        f"parse-bbox-func-name={PARSE_FUNCTION}",
        f"custom-lib-path={PARSER_LIBRARY}",
        "",
        "[class-attrs-all]",
        f"pre-cluster-threshold={threshold}",
        "",
    ]
    return "\n".join(lines)


def write_deepstream_config(model: str | Path, out_dir: str | Path, labels: str | Path | None = None,
                            num_classes: int | None = None, threshold: float = 0.3) -> tuple[Path, Path]:
    """Write ``config_infer_primary_effdet.txt`` and ``labels.txt`` into ``out_dir``; returns both paths."""
    model = Path(model)
    if not model.is_file():
        raise ModelFileError(f"{model}: model file not found; pass the exported .onnx or a built .plan/.engine")
    task = task_of_metadata(model_metadata(model), str(model))
    if task is not default_model_task():
        raise ModelFileError(f"{model}: is a {task.noun}; write its config with `{task.command} deepstream-config`"
                             if task.command != "effdet-rt" else f"{model}: is not a detector")
    height, width, batch, precision = model_input(model)
    if labels is not None:
        names = read_labels(labels)
    elif num_classes or (num_classes := model_num_classes(model)):
        names = [f"class_{category_ids(index)}" for index in range(num_classes)]
    else:
        raise UserError(f"deepstream-config needs --labels labels.txt|label_map.yaml or --num-classes N: {model} "
                        "does not record its number of classes (ONNX metadata effdet_rt.num_classes)")
    out_dir = Path(out_dir)
    config_name, labels_name = "config_infer_primary_effdet.txt", "labels.txt"
    with atomic_dir(out_dir) as tmp:
        (tmp / labels_name).write_text("\n".join(names) + "\n", encoding="utf-8")
        text = nvinfer_config(model.resolve(), labels_name, height, width, batch, precision, len(names), threshold)
        (tmp / config_name).write_text(text, encoding="utf-8")
    return out_dir / config_name, out_dir / labels_name


def model_metadata(path: Path) -> dict[str, Any]:
    """The effdet_rt metadata of an ONNX file or of a TensorRT plan (copied into ``<plan>.json`` by the build)."""
    if path.suffix.lower() == ".onnx":
        return read_metadata(read_onnx(path))
    if path.suffix.lower() in (".plan", ".engine"):
        return plan_metadata(path)
    return {}
