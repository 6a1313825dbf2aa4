"""What `build`, `engine-info` and `deepstream-config` do differently for a classifier ONNX.

They tell one apart by the ONNX metadata key ``effdet_rt.task`` = ``classification``.
- INT8 calibration batches: images of a folder (searched recursively), preprocessed with the model's own
  `ImageFormat` exactly as evaluation and inference do (`images.eval_image`), never augmented.
- DeepStream: a secondary classifier (``network-type=1``, ``process-mode=2``) on 0..255 NHWC input, the
  normalisation being inside the graph; DeepStream resizes each object crop to the network size (it has no centre
  crop, so a model trained with ``enable_center_crop`` sees slightly different framing there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.errors import DataError, ModelFileError


def onnx_classifier_metadata(path: str | Path) -> dict[str, Any] | None:
    """The metadata of a classifier ONNX file, None when it is another model (a detector)."""
    from effdet_rt.classification.engines import classifier_metadata
    from effdet_rt.engines.ort_engine import read_onnx

    return classifier_metadata(read_onnx(Path(path)))


def model_classifier_metadata(path: Path) -> dict[str, Any] | None:
    """Classifier metadata of an ONNX file, or of the ONNX a TensorRT plan was built from (named in ``<plan>.json``)."""
    if path.suffix.lower() == ".onnx":
        return onnx_classifier_metadata(path)
    if path.suffix.lower() in (".plan", ".engine"):
        from effdet_rt.engines.tensorrt import read_engine_info

        source = read_engine_info(path).get("onnx")
        if source and Path(source).is_file():
            return onnx_classifier_metadata(source)
    return None


def calibration_batches(folder: str | Path, meta: dict[str, Any], batch_size: int, num_batches: int,
                        log: Callable[[str], None] = print) -> Iterator[np.ndarray]:
    """Up to ``num_batches`` (batch_size, H, W, C) batches of the folder's images, sorted by path, as inference sees
    them; unreadable files are skipped (and counted); a final partial batch is dropped."""
    from effdet_rt.classification.dataset import image_files
    from effdet_rt.classification.images import ImageFormat, eval_image
    from effdet_rt.errors import UserError

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--calib-images {folder}: not a folder of images")
    files = image_files(folder)
    fmt = ImageFormat.from_metadata(meta["image_format"])
    pending: list[np.ndarray] = []
    produced = skipped = 0
    for path in files:
        try:
            pending.append(eval_image(path, fmt))
        except UserError:
            skipped += 1
            continue
        if len(pending) == batch_size:
            yield np.stack(pending)
            pending, produced = [], produced + 1
            if produced == num_batches:
                break
    if produced == 0:
        raise DataError(f"--calib-images {folder}: found {len(pending)} readable image(s), fewer than one calibration "
                        f"batch of {batch_size}; lower --calib-batch-size or add images")
    note = f", {skipped} unreadable skipped" if skipped else ""
    log(f"calibration: {produced} batch(es) of {batch_size} images from {folder}{note}")


def calibration_source(images: str | None, meta: dict[str, Any], batch_size: int, num_batches: int,
                       log: Callable[[str], None]):
    if not images:
        return None
    if not Path(images).is_dir():
        raise DataError(f"--calib-images {images}: not a folder of images")
    return lambda: calibration_batches(images, meta, batch_size, num_batches, log)


def softmax_node_names(model) -> list[str]:
    return [node.name for node in model.graph.node if node.op_type == "Softmax"]


def describe_onnx(path: str | Path) -> dict[str, Any]:
    """Inputs, outputs, opset and effdet-rt metadata of any ONNX model (detector or classifier)."""
    from effdet_rt.engines.ort_engine import read_onnx
    from effdet_rt.export.graph import read_metadata

    proto = read_onnx(Path(path))

    def tensors(values, io: str) -> list[dict[str, Any]]:
        out = []
        for value in values:
            t = value.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            import onnx

            out.append({"io": io, "name": value.name, "shape": shape,
                        "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    meta = read_metadata(proto)
    return {
        "file": str(path),
        "format": "onnx",
        "task": meta.get("task", "detection"),
        "opset": [f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import],
        "precision": meta.get("precision", "fp32"),
        "tensors": tensors(proto.graph.input, "input") + tensors(proto.graph.output, "output"),
        "metadata": meta,
    }


def nvinfer_classifier_config(model: Path, labels_file: str, meta: dict[str, Any], batch: int, precision: str,
                              threshold: float) -> str:
    from effdet_rt.engines.deepstream import NETWORK_MODES

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
    from effdet_rt.engines.deepstream import model_input, read_labels
    from effdet_rt.utils.atomic import atomic_dir

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
