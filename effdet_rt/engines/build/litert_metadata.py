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
TENSOR_AXIS_LABELS = 2
COLOR_SPACE = {3: 1, 1: 2}  # channels -> RGB, GRAYSCALE
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2
NORMALIZATION_OPTIONS = 1


def _strings(builder, *texts: str) -> list[int]:
    return [builder.CreateString(text) for text in texts]


def _table(builder, fields: list[tuple[int, str, object]]) -> int:
    """A table from (slot, kind, value) fields: kind 'offset' (a string, vector or table made before), 'byte',
    'uint'. Slots are the fields' positions in the schema (a union field takes two: its type, then its value)."""
    builder.StartObject(max(slot for slot, _, _ in fields) + 1)
    for slot, kind, value in fields:
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "byte":
            builder.PrependInt8Slot(slot, value, 0)
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
    height, width = input_size
    model_name, model_description, image_name, image_description, output_name, output_description = _strings(
        builder, name, description, "image", "RGB or gray pixels 0..255 at the model size (resized, centre-cropped); "
        "normalisation is inside the network", "probability", "softmax probabilities, one per label")
    file_name, file_description, parser_version = _strings(builder, labels_file, labels_description, MIN_PARSER_VERSION)

    size = _table(builder, [(0, "uint", width), (1, "uint", height)])
    image = _table(builder, [(0, "byte", COLOR_SPACE[channels]), (1, "offset", size)])
    image_content = _table(builder, [(0, "byte", IMAGE_PROPERTIES), (1, "offset", image)])
    mean, std = _floats(builder, [0.0] * channels), _floats(builder, [1.0] * channels)
    normalization = _table(builder, [(0, "offset", mean), (1, "offset", std)])
    unit = _table(builder, [(0, "byte", NORMALIZATION_OPTIONS), (1, "offset", normalization)])
    units = _vector(builder, [unit])
    pixel_max, pixel_min = _floats(builder, [255.0] * channels), _floats(builder, [0.0] * channels)
    pixel_stats = _table(builder, [(0, "offset", pixel_max), (1, "offset", pixel_min)])
    image_tensor = _table(builder, [(0, "offset", image_name), (1, "offset", image_description),
                                    (3, "offset", image_content), (4, "offset", units), (5, "offset", pixel_stats)])

    features = _empty_table(builder)
    output_content = _table(builder, [(0, "byte", FEATURE_PROPERTIES), (1, "offset", features)])
    label_file = _table(builder, [(0, "offset", file_name), (1, "offset", file_description),
                                  (2, "byte", TENSOR_AXIS_LABELS)])
    files = _vector(builder, [label_file])
    score_max, score_min = _floats(builder, [1.0]), _floats(builder, [0.0])
    score_stats = _table(builder, [(0, "offset", score_max), (1, "offset", score_min)])
    output_tensor = _table(builder, [(0, "offset", output_name), (1, "offset", output_description),
                                     (3, "offset", output_content), (5, "offset", score_stats),
                                     (6, "offset", files)])

    subgraph = _table(builder, [(2, "offset", _vector(builder, [image_tensor])),
                                (3, "offset", _vector(builder, [output_tensor]))])
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
