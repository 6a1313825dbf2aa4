"""The tiny detector the inference, export and engine tests share (built once per session by the ``tiny_model``
and ``tiny_checkpoint`` fixtures in tests/conftest.py), and helpers that make their inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

KEY = "infer-test-key"
TINY_SPEC = {
    "model": {"name": "efficientdet-d0", "input_width": 128, "input_height": 128},
    "dataset": {"num_classes": 4},
    "evaluate": {"max_detections_per_image": 100},
}
# head gains that turn the calibrated random network into spread-out scores (logit std ~2) and modest box codes
CLASS_GAIN = 0.01
BOX_GAIN = 0.0005


def sized_spec(width: int = 128, height: int = 128) -> dict:
    """TINY_SPEC at another input size (width, height: multiples of 32, as the spec allows)."""
    return {**TINY_SPEC, "model": {**TINY_SPEC["model"], "input_width": width, "input_height": height}}


def tiny_spec(width: int = 128, height: int = 128):
    from effdet_rt.spec.validation import validate_spec

    return validate_spec(sized_spec(width, height), "tiny")


def build_tiny_model(width: int = 128, height: int = 128, calibration: np.ndarray | None = None):
    """A D0 (3 classes, 128x128 unless told) with fixed random weights and a sharpened class head; its BatchNorm
    statistics are those of ``calibration`` (preprocessed images; default: seeded noise)."""
    import tf_keras as keras

    from effdet_rt.checkpoint import assign_weights, model_weights
    from effdet_rt.model.factory import build_model_from_spec

    keras.utils.set_random_seed(7)
    model = build_model_from_spec(tiny_spec(width, height))
    if calibration is None:
        calibration = np.random.default_rng(7).uniform(0, 255, (4, height, width, 3)).astype(np.float32)
    calibrate_batch_norms(model, calibration)
    weights = model_weights(model)
    weights["class_net_predict/pointwise_kernel"] = weights["class_net_predict/pointwise_kernel"] * CLASS_GAIN
    weights["class_net_predict/bias"] = np.zeros_like(weights["class_net_predict/bias"]) - 2.0
    weights["box_net_predict/pointwise_kernel"] = weights["box_net_predict/pointwise_kernel"] * BOX_GAIN
    assign_weights(model, weights)
    return model


def calibrate_batch_norms(model, batch: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to those of ``batch`` (one forward pass with momentum 0), so a
    randomly initialised network gives non-vanishing activations in inference mode."""
    import tf_keras as keras

    norms = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(batch, training=True)
    for layer, momentum in zip(norms, saved, strict=True):
        layer.momentum = momentum


def save_tiny_checkpoint(model, folder: Path, spec: dict = TINY_SPEC) -> Path:
    """``model`` saved as an encrypted .edrt with ``spec`` (a cheap key cost: the tests open it often)."""
    from effdet_rt.checkpoint import model_weights, save_checkpoint
    from effdet_rt.checkpoint.keys import ScryptCost

    return save_checkpoint(
        folder / "tiny.edrt",
        model_weights(model),
        key=KEY,
        spec_yaml=yaml.safe_dump(spec),
        metadata={"epoch": 1},
        cost=ScryptCost(log2_n=10),
    )


def bccd_images(bccd_root: Path, count: int) -> list[Path]:
    return sorted((bccd_root / "JPEGImages").glob("*.jpg"))[:count]


def write_val_set(folder: Path, bccd_root: Path, count: int) -> tuple[Path, Path, dict]:
    """The first ``count`` BCCD val images as one TFRecord + COCO json (ids as dataset-convert assigns them)."""
    import json

    import tensorflow as tf

    from effdet_rt.data.tfrecord import encode_example
    from effdet_rt.data.voc import voc_to_coco

    coco = voc_to_coco(bccd_root, "val")
    images = coco["images"][:count]
    keep = {image["id"] for image in images}
    coco = {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}
    record_path, json_path = folder / "val-00000-of-00001.tfrecord", folder / "val.json"
    with tf.io.TFRecordWriter(str(record_path)) as writer:
        for image in images:
            data = (bccd_root / "JPEGImages" / image["file_name"]).read_bytes()
            writer.write(encode_example({"image/encoded": [data], "image/source_id": [str(image["id"]).encode()],
                                         "image/filename": [image["file_name"].encode()]}))
    json_path.write_text(json.dumps(coco))
    return record_path, json_path, coco


def hand_graph_session(graph, optimized_path=None):
    """An ONNX Runtime CPU session of a hand-built graphsurgeon graph (IR 8: what this onnxruntime reads)."""
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    model = gs.export_onnx(graph)
    model.ir_version = 8
    options = ort.SessionOptions()
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
