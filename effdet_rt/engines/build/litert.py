"""Checkpoint -> LiteRT `.tflite` with TensorFlow's own converter (TFLite conversion starts from the TensorFlow
model, not from ONNX): FP32, FP16 weights or full-integer INT8, NMS inside as TFLite_Detection_PostProcess or the
raw heads (`--nms none`), the effdet-rt metadata inside the file.

TFLite_Detection_PostProcess is made the way LiteRT's converter expects a composite op: a tf.function whose
`experimental_implements` attribute names the op and its attributes; the converter replaces the function's body by
the custom op, which LiteRT's built-in resolver runs. Its box decoding is ours exactly: codes (ty, tx, th, tw) with
all four scales 1, anchors as (y centre, x centre, height, width). Anchors are given in 0..1 of the input, so
the boxes come out normalised (y1, x1, y2, x2), which is what MediaPipe's ObjectDetector and the Task Library read.
Scores go in after the sigmoid behind a zero background column (label offset 1, the Object Detection API's
layout; the kernel leaves out the last class without it), and
`use_regular_nms` runs per-class NMS like the other backends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from effdet_rt.errors import UserError
from effdet_rt.onnx.names import (
    BOX_CODES,
    CLASS_LOGITS,
    DETECTION_BOXES,
    DETECTION_CLASSES,
    DETECTION_SCORES,
    INPUT_NAME,
    NUM_DETECTIONS,
)
from effdet_rt.utils.atomic import atomic_write_bytes

PRECISIONS = ("fp32", "fp16", "int8")
IO_TYPES = ("float32", "int8", "uint8")
NMS_MODES = ("tflite", "none")  # the ONNX spellings "efficient" and "onnx" also mean "NMS inside" here
METADATA_NAME = "effdet_rt"
LABELS_FILE = "labels.txt"  # the associated label file: one name a line, in the order of the output's last axis
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
# the subgraph's outputs in the order TFLite_Detection_PostProcess gives them (and MediaPipe reads them)
POSTPROCESS_OUTPUTS = (DETECTION_BOXES, DETECTION_CLASSES, DETECTION_SCORES, NUM_DETECTIONS)


def check_settings(precision: str, io_type: str, has_calibration: bool, calib_option: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision} is not allowed for a .tflite: choose one of {', '.join(PRECISIONS)}")
    if io_type not in IO_TYPES:
        raise UserError(f"--io-type {io_type} is not allowed: choose one of {', '.join(IO_TYPES)}")
    if io_type != "float32" and precision != "int8":
        raise UserError(f"--io-type {io_type} needs a full-integer model: add --precision int8 (or drop --io-type)")
    if precision == "int8" and not has_calibration:
        raise UserError(f"--precision int8 needs calibration images: pass {calib_option} (the same batches and "
                        "preprocessing every INT8 path calibrates on)")


def postprocess_implements(num_classes: int, settings: Any) -> str:
    """The `experimental_implements` string that names TFLite_Detection_PostProcess and its attributes."""
    attrs = [
        ("max_detections", "i", int(settings.max_detections)),
        ("max_classes_per_detection", "i", 1),
        ("detections_per_class", "i", int(settings.max_detections)),
        ("use_regular_nms", "b", "true"),
        ("nms_score_threshold", "f", float(settings.score_threshold)),
        ("nms_iou_threshold", "f", float(settings.iou_threshold)),
        ("num_classes", "i", int(num_classes)),
        ("y_scale", "f", 1.0), ("x_scale", "f", 1.0), ("h_scale", "f", 1.0), ("w_scale", "f", 1.0),
    ]
    return " ".join([f'name: "{POSTPROCESS_OP}"'] +
                    [f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, kind, value in attrs])


def normalised_center_anchors(anchors: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """y1, x1, y2, x2 anchors in input pixels -> (y centre, x centre, height, width) in 0..1 of the input."""
    height, width = input_size
    a = np.asarray(anchors, np.float64)
    h, w = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    return np.stack([(a[:, 0] + h / 2) / height, (a[:, 1] + w / 2) / width, h / height, w / width], 1).astype(np.float32)


def detector_function(heads: Any, setup: Any, nms: str, settings: Any):
    """(tf.Module holding the network, concrete serving function) for the converter; ``heads`` is the Keras
    raw-heads model (images -> class_logits, box_codes)."""
    import tensorflow as tf

    module = tf.Module()
    # the variables, not the Keras model: the SavedModel the custom-op path lowers through then saves one traced
    # function instead of re-tracing every Keras layer's call (thousands of traces for a detector)
    module.weights = list(heads.variables)
    height, width = setup.input_size
    # TFLite_Detection_PostProcess's kernel takes one image; the raw heads take any batch (input resize)
    signature = tf.TensorSpec([None if nms == "none" else 1, height, width, 3], tf.float32, name=INPUT_NAME)
    if nms == "none":
        def serve(images):
            logits, codes = heads(images, training=False)
            return {CLASS_LOGITS: logits, BOX_CODES: codes}
    else:
        k = int(settings.max_detections)
        anchors = tf.constant(normalised_center_anchors(setup.anchors(), setup.input_size))

        @tf.function(experimental_implements=postprocess_implements(setup.num_classes, settings))
        def postprocess(codes, scores, anchor_table):  # the body is replaced by the custom op
            return (tf.zeros([1, k, 4]), tf.zeros([1, k]), tf.zeros([1, k]), tf.zeros([1]))

        def serve(images):
            logits, codes = heads(images, training=False)
            scores = top_k_scores(tf.sigmoid(logits), settings)
            # a background column first, as the Object Detection API gives it: the kernel skips the first
            # (label offset) column, and with none it leaves out the last real class
            scores = tf.concat([tf.zeros_like(scores[..., :1]), scores], axis=-1)
            boxes, classes, scores, count = postprocess(codes, scores, anchors)
            return {DETECTION_BOXES: boxes, DETECTION_CLASSES: classes, DETECTION_SCORES: scores, NUM_DETECTIONS: count}
    module.serve = tf.function(serve, input_signature=[signature])
    with xnnpack_friendly_tracing():
        function = module.serve.get_concrete_function()
    return module, function


def chained_add(inputs, name=None):
    """tf.add_n as a chain of ADDs (same sum; the order of a 3-term float sum can differ in the last bit)."""
    total = inputs[0]
    for term in inputs[1:]:
        total = total + term
    return total


def nearest_upsample(x, height_factor, width_factor, data_format, interpolation="nearest"):
    """Nearest-neighbour upsampling by integer factors as CONCATENATION + RESHAPE (repeat every pixel along W,
    then every row along H): the same values as RESIZE_NEAREST_NEIGHBOR, in ops XNNPACK runs in int8."""
    import tensorflow as tf

    if data_format != "channels_last" or interpolation != "nearest":
        return ORIGINAL_RESIZE_IMAGES(x, height_factor, width_factor, data_format, interpolation=interpolation)
    _, height, width, channels = x.shape
    x = tf.reshape(tf.concat([x] * width_factor, axis=-1), [-1, height, width * width_factor, channels])
    return tf.reshape(tf.concat([x] * height_factor, axis=2), [-1, height * height_factor, width * width_factor, channels])


ORIGINAL_RESIZE_IMAGES = None


@contextmanager
def xnnpack_friendly_tracing():
    """While the serving function is traced for the converter: BiFPN's weighted sums (tf.add_n) become chained
    ADDs, since TFLite has no int8 ADD_N (a full-integer file would run all 24 of D0's fusions in float behind
    DEQUANTIZE ops) and XNNPACK delegates no ADD_N (each one splits the graph); and nearest 2x upsampling
    (UpSampling2D) becomes CONCATENATION + RESHAPE, since XNNPACK leaves RESIZE_NEAREST_NEIGHBOR to LiteRT's
    reference kernel. The model code and the ONNX path (which folds scales into the ONNX Sum) are untouched."""
    import tensorflow as tf
    from tf_keras.src import backend

    global ORIGINAL_RESIZE_IMAGES
    ORIGINAL_RESIZE_IMAGES = backend.resize_images
    with mock.patch.object(tf, "add_n", chained_add), mock.patch.object(backend, "resize_images", nearest_upsample):
        yield


def top_k_scores(scores: Any, settings: Any) -> Any:
    """Scores outside the best pre_nms_top_k (anchor, class) pairs zeroed: the other backends' NMS looks only at
    those, and TFLite_Detection_PostProcess has no such cut, so without it low-scoring pairs the others never see
    would suppress or join the detections."""
    import tensorflow as tf

    pairs = int(scores.shape[1]) * int(scores.shape[2])
    if pairs <= settings.pre_nms_top_k:
        return scores
    kth = tf.math.top_k(tf.reshape(scores, [1, pairs]), k=int(settings.pre_nms_top_k), sorted=True).values[:, -1]
    return tf.where(scores >= kth[:, None, None], scores, tf.zeros_like(scores))


def representative_images(batches: Iterable[np.ndarray]) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's representative dataset: every image of the shared calibration batches, one at a time."""
    def dataset():
        for batch in batches:
            for image in batch:
                yield [np.asarray(image, np.float32)[None]]
    return dataset


def convert(module: Any, function: Any, precision: str, io_type: str, custom_ops: bool,
            calibration: Callable[[], Iterable[np.ndarray]] | None, source: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    # without a composite op to fuse, convert the frozen function, not a SavedModel of the module: saving one
    # traces every Keras layer's call again (thousands of traces for an EfficientNet), ten times the conversion
    # itself, for the same ops. TFLite_Detection_PostProcess is fused (from experimental_implements) only on the
    # SavedModel path.
    converter.experimental_lower_to_saved_model = custom_ops
    converter.allow_custom_ops = custom_ops
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_images(calibration())
        # full integer: every convolution and activation int8; a float op the converter cannot quantize is an error
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io_type]
    try:
        return with_signature(converter.convert(), sorted(function.structured_outputs))
    except Exception as exc:  # the converter raises ConverterError / ValueError with its MLIR diagnostics
        first = next((line for line in str(exc).splitlines() if "error" in line.lower()), str(exc).splitlines()[0])
        raise UserError(f"{source}: TensorFlow's TFLite converter cannot convert this model ({first.strip()}); "
                        "a spec input size that is a multiple of 128 and --precision fp32 convert everywhere") from exc


def with_signature(data: bytes, output_names: list[str]) -> bytes:
    """The `serving_default` signature (input and output names -> tensors) that the runner reads, which the
    frozen-function conversion does not write: the subgraph's outputs are the function's, in the order its output
    dict flattens (sorted names)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    if model.signatureDefs:
        return data
    graph = model.subgraphs[0]

    def tensor_map(name: str, index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(INPUT_NAME, graph.inputs[0])]
    signature.outputs = [tensor_map(name, index) for name, index in zip(output_names, graph.outputs, strict=True)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def with_metadata(data: bytes, metadata: dict[str, Any], outputs_order: tuple[str, ...] | None,
                  model_metadata: bytes | None = None) -> bytes:
    """The flatbuffer with a JSON `effdet_rt` metadata entry (and a TFLITE_METADATA entry when ``model_metadata``
    is given) and, for NMS files, the subgraph outputs in TFLite_Detection_PostProcess's order (boxes, classes,
    scores, count; the converter sorts them otherwise)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from effdet_rt.engines.build.litert_metadata import METADATA_BUFFER_NAME

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    entries = {METADATA_NAME: json.dumps(metadata, sort_keys=True).encode()}
    if model_metadata is not None:
        entries[METADATA_BUFFER_NAME] = model_metadata
    for name, content in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(content, np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    if outputs_order:
        signature = model.signatureDefs[0]
        by_name = {t.name.decode() if isinstance(t.name, bytes) else t.name: t.tensorIndex for t in signature.outputs}
        model.subgraphs[0].outputs = np.array([by_name[name] for name in outputs_order], np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def exact_pixel_input(data: bytes, io_type: str) -> bytes:
    """An integer input that takes the pixels themselves: scale 1 and zero point 0 (uint8: 0..255 as they are) or
    -128 (int8: pixel - 128), instead of the converter's calibration range (a scale of 0.96 for images whose
    brightest pixel is 244). A camera frame or a decoded JPEG then goes in without arithmetic, which is what
    integer-only accelerators (the Edge TPU) and MediaPipe, which hands a uint8 model the raw bytes, need. The ops
    reading the input quantize or rescale (QUANTIZE, MUL, ADD, SUB, convolutions), so they take the new scale."""
    if io_type == "float32":
        return data
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    graph = model.subgraphs[0]
    (index,) = graph.inputs
    readers = {flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in graph.operators if index in op.inputs}
    rescaling = {"QUANTIZE", "MUL", "ADD", "SUB", "CONV_2D", "DEPTHWISE_CONV_2D"}
    if not readers <= rescaling:  # an op that assumes its input's scale is its output's (RESHAPE, PAD, ...)
        raise UserError(f"the input of this model is read by {', '.join(sorted(readers - rescaling))}, which cannot "
                        "take a pixel scale of 1; export with --io-type float32")
    quantization = schema.QuantizationParametersT()
    quantization.scale = [1.0]
    quantization.zeroPoint = [0 if io_type == "uint8" else -128]
    graph.tensors[index].quantization = quantization
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def float_weight_tensors(data: bytes) -> list[str]:
    """Names of float32/float16 constant tensors (weights) left in a .tflite; empty for a full-integer file except
    the anchors TFLite_Detection_PostProcess takes as float by design."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    floats = (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16)
    names = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer())
            if tensor.Type() in floats and (buffer.DataLength() or buffer.Size()):
                names.append(tensor.Name().decode())
    return names


def export_detector(heads: Any, setup: Any, nms_settings: Any, export: Any, *,
                    calibration: Callable[[], Iterable[np.ndarray]] | None, metadata: dict[str, Any],
                    labels: list[str], source: str, log: Callable[[str], None]) -> bytes:
    """The .tflite bytes (not yet written) of a detector's raw-heads Keras model, NMS inside unless export.nms is
    none; ``metadata`` (the ONNX export's) is stored with this file's own precision, input type and NMS, and
    ``labels`` (the names of classes 0..N-1) as the packed label file the TensorFlow Lite model metadata names."""
    from effdet_rt.engines.build.litert_metadata import detector_metadata, with_associated_files

    nms = "none" if export.nms == "none" else "tflite"
    log(f"exporting {setup.name} {setup.input_size[1]}x{setup.input_size[0]} to LiteRT, {setup.num_classes} classes, "
        f"precision {export.precision}, input {export.io_type}, nms={nms}")
    module, function = detector_function(heads, setup, nms, nms_settings)
    data = convert(module, function, export.precision, export.io_type, nms != "none", calibration, source)
    data = exact_pixel_input(data, export.io_type)
    # the names live in the label file only (the runner reads them from it), so the two cannot disagree
    meta = {**{k: v for k, v in metadata.items() if k != "classes"}, "nms": nms, "precision": export.precision,
            "io_type": export.io_type, "format": "tflite", "labels_file": LABELS_FILE}
    if nms != "none":
        meta["box_layout"] = "detection_boxes: y1, x1, y2, x2 in 0..1 of the input (TFLite_Detection_PostProcess)"
    described = detector_metadata(setup.name, f"effdet-rt detector, {setup.num_classes} classes, {export.precision}",
                                  setup.input_size, LABELS_FILE, nms != "none")
    data = with_metadata(data, meta, POSTPROCESS_OUTPUTS if nms != "none" else None, described)
    return with_associated_files(data, {LABELS_FILE: "".join(f"{label}\n" for label in labels).encode()})


def network_function(model: Any, input_shape: tuple[int, int, int], output_name: str):
    """(tf.Module holding the network, concrete serving function) of a one-output Keras model with a dynamic
    batch (the interpreter's input resize takes any batch)."""
    import tensorflow as tf

    module = tf.Module()
    module.model = model
    signature = tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)
    module.serve = tf.function(lambda images: {output_name: model(images, training=False)},
                               input_signature=[signature])
    return module, module.serve.get_concrete_function()


def export_labelled_network(model: Any, input_shape: tuple[int, int, int], output_name: str, precision: str,
                            io_type: str, *, calibration: Callable[[], Iterable[np.ndarray]] | None,
                            metadata: dict[str, Any], labels: list[str], description: str,
                            source: str) -> bytes:
    """The .tflite bytes (not yet written) of a one-output image network (NHWC raw pixels in, normalisation
    inside) whose output's last axis is named by ``labels``: the effdet-rt metadata, the TensorFlow Lite model
    metadata and the label file that MediaPipe and the Task Library read (engines/build/litert_metadata.py)."""
    from effdet_rt.engines.build.litert_metadata import labelled_output_metadata, with_associated_files

    module, function = network_function(model, input_shape, output_name)
    data = exact_pixel_input(convert(module, function, precision, io_type, False, calibration, source), io_type)
    # the names live in the label file only (the runner reads them from it), so the two cannot disagree
    meta = {**{k: v for k, v in metadata.items() if k != "classes"}, "precision": precision, "io_type": io_type,
            "format": "tflite", "labels_file": LABELS_FILE}
    height, width, channels = input_shape
    described = labelled_output_metadata(str(metadata.get("model_name", "model")), description, (height, width),
                                         channels, LABELS_FILE, "names in output order")
    data = with_metadata(data, meta, None, described)
    return with_associated_files(data, {LABELS_FILE: "".join(f"{label}\n" for label in labels).encode()})


def written_heads(path: Path, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class scores after the sigmoid, box codes) of the written file on one image at a time: the raw-heads
    outputs, or the two tensors that feed its TFLite_Detection_PostProcess (kept by preserve_all_tensors)."""
    from effdet_rt.engines.runtime.litert import LiteRTRunner

    runner = LiteRTRunner(path, preserve_all_tensors=True)
    interp = runner.interp
    ops = interp._get_ops_details()
    post = next((op for op in ops if op["op_name"] == POSTPROCESS_OP), None)
    if post is not None:  # the sigmoid whose output (before the top-k cut) has the scores' shape
        shape = list(interp._get_tensor_details(int(post["inputs"][1]), 0)["shape"])
        shape[-1] -= 1  # the background column
        sigmoid = [op for op in ops if op["op_name"] == "LOGISTIC"
                   and list(interp._get_tensor_details(int(op["outputs"][0]), 0)["shape"]) == shape][-1]
    scores, codes = [], []
    for image in batch:
        outputs = runner.run(image[None])
        if post is None:
            scores.append(1.0 / (1.0 + np.exp(-outputs[CLASS_LOGITS].astype(np.float64))))
            codes.append(outputs[BOX_CODES])
        else:
            codes.append(float_tensor(interp, int(post["inputs"][0])))
            scores.append(float_tensor(interp, int(sigmoid["outputs"][0])))
    return np.concatenate(scores).astype(np.float32), np.concatenate(codes).astype(np.float32)


def float_tensor(interp: Any, index: int) -> np.ndarray:
    """A tensor of the last run, dequantized with its own scale and zero point when it is an integer tensor."""
    from effdet_rt.engines.runtime.litert import dequantize

    return dequantize(interp.get_tensor(index), interp._get_tensor_details(index, 0))


def write_tflite(data: bytes, output: Path) -> Path:
    return atomic_write_bytes(output, data)
