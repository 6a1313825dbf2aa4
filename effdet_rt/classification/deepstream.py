"""The classifier's DeepStream side: a secondary classifier (``network-type=1``, ``process-mode=2``) on 0..255 NHWC
input, the normalisation being inside the graph; DeepStream resizes each object crop to the network size (it has no
centre crop, so a model trained with ``enable_center_crop`` sees slightly different framing there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effdet_rt.errors import ModelFileError
from effdet_rt.integrations.deepstream import NETWORK_MODES, model_input, read_labels
from effdet_rt.utils.atomic import atomic_dir


def nvinfer_classifier_config(model: Path, labels_file: str, meta: dict[str, Any], batch: int, precision: str,
                              threshold: float) -> str:
    fmt = meta["image_format"]
    height, width = fmt["input_size"]
    channels = int(fmt["channels"])
    model_key = "onnx-file" if model.suffix.lower() == ".onnx" else "model-engine-file"
    lines = [
        "[property]",
        "gpu-id=0",
        "net-scale-factor=1.0",
        "offsets=" + ";".join(["0"] * channels),
        f"model-color-format={0 if channels == 3 else 2}",
        f"{model_key}={model}",
        f"labelfile-path={labels_file}",
        f"infer-dims={channels};{height};{width}",
        "network-input-order=1",
        f"batch-size={batch}",
        f"network-mode={NETWORK_MODES.get(precision, 0)}",
        "network-type=1",
        "process-mode=2",
        "classifier-async-mode=0",
        f"classifier-threshold={threshold}",
        "maintain-aspect-ratio=0",
        "output-blob-names=probabilities",
        "",
    ]
    return "\n".join(lines)


def write_classifier_deepstream_config(model: Path, out_dir: Path, meta: dict[str, Any], labels: str | Path | None,
                                       threshold: float) -> tuple[Path, Path]:
    """``config_infer_secondary_classifier.txt`` and ``labels.txt`` (class names on one line, ';'-separated, which is
    how Gst-nvinfer reads a classifier's labels)."""

    _, _, batch, precision = model_input(model)
    names = read_labels(labels) if labels is not None else list(meta["classes"])
    if len(names) != len(meta["classes"]):
        raise ModelFileError(f"{labels}: {len(names)} label(s) but the model has {len(meta['classes'])} classes")
    config_name, labels_name = "config_infer_secondary_classifier.txt", "labels.txt"
    with atomic_dir(out_dir) as tmp:
        (tmp / labels_name).write_text(";".join(names) + "\n", encoding="utf-8")
        if model.suffix.lower() == ".onnx":  # an ONNX says its own precision (INT8 after a Q/DQ build)
            precision = meta.get("precision", precision)
        text = nvinfer_classifier_config(model.resolve(), labels_name, meta, batch, precision, threshold)
        (tmp / config_name).write_text(text, encoding="utf-8")
    return out_dir / config_name, out_dir / labels_name
