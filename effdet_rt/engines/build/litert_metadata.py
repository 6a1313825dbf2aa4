"""TensorFlow Lite model metadata: the ``TFLITE_METADATA`` buffer (a ``ModelMetadata`` flatbuffer, file identifier
``M001``, schema tensorflow/tflite-support metadata_schema.fbs, as MediaPipe ships it) and the label file packed
into the .tflite as an associated file (the model file is then also a zip). MediaPipe's image tasks and the
TFLite Task Library read both: the input's normalisation and colour space, the output's label file.

Written here with the `flatbuffers` builder because no PyPI package that writes it installs beside TensorFlow
2.21 on Python 3.11: tflite-support 0.4.4 requires protobuf < 4 (TensorFlow 2.21: >= 6.31), and MediaPipe's
metadata writer (0.10.30 to 1.2.3) imports a `_pywrap_metadata_version` extension its wheels do not ship. Only
features of schema version 1.0.0 are used, so that is the minimum parser version written.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

METADATA_BUFFER_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"
# enum and union values of metadata_schema.fbs
TENSOR_AXIS_LABELS, TENSOR_VALUE_LABELS = 2, 3
COLOR_SPACE = {3: 1, 1: 2}  # channels -> RGB, GRAYSCALE
FEATURE_PROPERTIES, IMAGE_PROPERTIES, BOUNDING_BOX_PROPERTIES = 1, 2, 3
NORMALIZATION_OPTIONS = 1
BOUNDARIES, RATIO = 1, 0  # BoundingBoxType, CoordinateType
# where left, top, right, bottom sit in a box of TFLite_Detection_PostProcess (y1, x1, y2, x2)
YXYX_BOX_INDEX = (1, 0, 3, 2)
# the output names MediaPipe's ObjectDetector and the Task Library look up, in the op's output order
DETECTION_OUTPUT_NAMES = ("location", "category", "score", "number of detections")


def _strings(builder, *texts: str) -> list[int]:
    return [builder.CreateString(text) for text in texts]


def _table(builder, fields: list[tuple[int, str, object]]) -> int:
    """A table from (slot, kind, value) fields: kind 'offset' (a string, vector or table made before), 'byte',
    'int', 'uint'. Slots are the fields' positions in the schema (a union field takes two: its type, then its value)."""
    builder.StartObject(max(slot for slot, _, _ in fields) + 1)
    for slot, kind, value in fields:
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "byte":
            builder.PrependInt8Slot(slot, value, 0)
        elif kind == "int":
            builder.PrependInt32Slot(slot, value, 0)
        else:
            builder.PrependUint32Slot(slot, value, 0)
    return builder.EndObject()


def _vector(builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _floats(builder, values: list[float]) -> int:
    return builder.CreateNumpyVector(np.asarray(values, np.float32))


def labelled_output_metadata(name: str, description: str, input_size: tuple[int, int], channels: int,
                             labels_file: str, labels_description: str) -> bytes:
    """The ModelMetadata of a one-output image network: one image input taking raw pixels (normalisation mean 0,
    std 1: it is inside the network), one probabilities output whose last axis is labelled by ``labels_file``."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    image = _image_input(builder, input_size, channels, "RGB or gray pixels 0..255 at the model size (resized, "
                         "centre-cropped); normalisation is inside the network")
    labels = _label_file(builder, labels_file, labels_description, TENSOR_AXIS_LABELS)
    output = _tensor(builder, "probability", "softmax probabilities, one per label", FEATURE_PROPERTIES,
                     _empty_table(builder), stats=(1.0, 0.0), files=[labels])
    return _finish(builder, name, description, [image], [output])


def detector_metadata(name: str, description: str, input_size: tuple[int, int], labels_file: str,
                      nms_inside: bool) -> bytes:
    """The ModelMetadata of a detector. NMS inside: the four outputs of TFLite_Detection_PostProcess as MediaPipe's
    ObjectDetector and the Task Library read them (by these names): location (boxes y1, x1, y2, x2 in 0..1 of the
    input), category (0-based class, its value labelled by ``labels_file``), score, number of detections. Raw
    heads: box_codes and class_logits (whose last axis ``labels_file`` labels), in the subgraph's (sorted) order."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    image = _image_input(builder, input_size, 3, "RGB pixels 0..255 at the model size (resized keeping aspect, "
                         "padded bottom/right); normalisation is inside the network")
    per_box = _table(builder, [(0, "int", 2), (1, "int", 2)])  # the values run along dimension 2 of (1, K, ...)
    if nms_inside:
        location_name, category_name, score_name, count_name = DETECTION_OUTPUT_NAMES
        index = builder.CreateNumpyVector(np.asarray(YXYX_BOX_INDEX, np.uint32))
        box = _table(builder, [(0, "offset", index), (1, "byte", BOUNDARIES), (2, "byte", RATIO)])
        labels = _label_file(builder, labels_file, "class names; line k names category k", TENSOR_VALUE_LABELS)
        outputs = [
            _tensor(builder, location_name, "boxes y1, x1, y2, x2 in 0..1 of the input", BOUNDING_BOX_PROPERTIES,
                    box, value_range=per_box),
            _tensor(builder, category_name, "0-based class of each box", FEATURE_PROPERTIES, _empty_table(builder),
                    value_range=per_box, files=[labels]),
            _tensor(builder, score_name, "score of each box (sigmoid)", FEATURE_PROPERTIES, _empty_table(builder),
                    value_range=per_box, stats=(1.0, 0.0)),
            _tensor(builder, count_name, "number of valid boxes", None, None),
        ]
    else:
        labels = _label_file(builder, labels_file, "class names in the order of the last axis", TENSOR_AXIS_LABELS)
        outputs = [
            _tensor(builder, "box_codes", "box codes (ty, tx, th, tw) per anchor; the anchors are in the effdet_rt "
                    "metadata", FEATURE_PROPERTIES, _empty_table(builder)),
            _tensor(builder, "class_logits", "class logits per anchor (sigmoid gives the scores)", FEATURE_PROPERTIES,
                    _empty_table(builder), files=[labels]),
        ]
    return _finish(builder, name, description, [image], outputs)


def _image_input(builder, input_size: tuple[int, int], channels: int, description: str) -> int:
    """An image input of raw pixels at the model size: normalisation mean 0, std 1 (it is inside the network)."""
    height, width = input_size
    image_name, image_description = _strings(builder, "image", description)
    size = _table(builder, [(0, "uint", width), (1, "uint", height)])
    image = _table(builder, [(0, "byte", COLOR_SPACE[channels]), (1, "offset", size)])
    image_content = _table(builder, [(0, "byte", IMAGE_PROPERTIES), (1, "offset", image)])
    mean, std = _floats(builder, [0.0] * channels), _floats(builder, [1.0] * channels)
    normalization = _table(builder, [(0, "offset", mean), (1, "offset", std)])
    unit = _table(builder, [(0, "byte", NORMALIZATION_OPTIONS), (1, "offset", normalization)])
    units = _vector(builder, [unit])
    pixel_max, pixel_min = _floats(builder, [255.0] * channels), _floats(builder, [0.0] * channels)
    pixel_stats = _table(builder, [(0, "offset", pixel_max), (1, "offset", pixel_min)])
    return _table(builder, [(0, "offset", image_name), (1, "offset", image_description),
                            (3, "offset", image_content), (4, "offset", units), (5, "offset", pixel_stats)])


def _label_file(builder, name: str, description: str, kind: int) -> int:
    file_name, file_description = _strings(builder, name, description)
    return _table(builder, [(0, "offset", file_name), (1, "offset", file_description), (2, "byte", kind)])


def _tensor(builder, name: str, description: str, content_kind: int | None, properties: int | None, *,
            value_range: int | None = None, stats: tuple[float, float] | None = None,
            files: list[int] | None = None) -> int:
    """A TensorMetadata: name, description, content (its properties union and value range), stats (max, min),
    associated files."""
    tensor_name, tensor_description = _strings(builder, name, description)
    fields: list[tuple[int, str, object]] = [(0, "offset", tensor_name), (1, "offset", tensor_description)]
    if content_kind is not None:
        content = [(0, "byte", content_kind), (1, "offset", properties)]
        if value_range is not None:
            content.append((2, "offset", value_range))
        fields.append((3, "offset", _table(builder, content)))
    if stats is not None:
        high, low = _floats(builder, [stats[0]]), _floats(builder, [stats[1]])
        fields.append((5, "offset", _table(builder, [(0, "offset", high), (1, "offset", low)])))
    if files:
        fields.append((6, "offset", _vector(builder, files)))
    return _table(builder, fields)


def _finish(builder, name: str, description: str, inputs: list[int], outputs: list[int]) -> bytes:
    model_name, model_description, parser_version = _strings(builder, name, description, MIN_PARSER_VERSION)
    subgraph = _table(builder, [(2, "offset", _vector(builder, inputs)), (3, "offset", _vector(builder, outputs))])
    root = _table(builder, [(0, "offset", model_name), (1, "offset", model_description),
                            (3, "offset", _vector(builder, [subgraph])), (7, "offset", parser_version)])
    builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _empty_table(builder) -> int:
    builder.StartObject(0)
    return builder.EndObject()


def with_associated_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """The model bytes followed by a zip of ``files`` (stored, not deflated), as tflite-support's and MediaPipe's
    metadata populators pack associated files: the flatbuffer is untouched and the zip's offsets count from the
    start of the whole file, so both an Interpreter and zipfile read it."""
    stream = io.BytesIO(model)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return stream.getvalue()
