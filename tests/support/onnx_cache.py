"""One tf2onnx conversion per distinct network in a test run, shared by the xdist workers.

Many tests export the same checkpoint (the tiny D0's, or a page's stand-in) with options that differ only after
the conversion (the NMS mode, the score floor, verify, the engine built from it); tf2onnx costs more than the rest of
an export. A conversion is a function of the network's architecture, its weights, the input signature, the opset
and tf2onnx's version, so the key holds all of them; a network whose architecture Keras cannot write as JSON is
converted every time. The first conversion of each key runs tf2onnx for real; tests/test_onnx_convert.py calls the
uncached conversion itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx


def conversion_key(model, input_size, batch_size, opset: int, channels: int) -> str | None:
    import tf2onnx

    try:
        architecture = model.to_json()
    except Exception:  # noqa: BLE001 - a layer without a complete config (Keras raises several types): no key
        return None
    digest = hashlib.sha256()
    digest.update(repr((architecture, tuple(input_size), batch_size, opset, channels, tf2onnx.__version__)).encode())
    for weight in model.weights:
        value = weight.numpy()
        digest.update(repr((weight.name, value.dtype.str, value.shape)).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cached_conversion(convert: Callable[..., onnx.ModelProto], folder: Path) -> Callable[..., onnx.ModelProto]:
    """``convert`` (keras_to_onnx's signature) answering repeated conversions from ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)

    def keras_to_onnx(model, input_size, batch_size, opset, channels=3) -> onnx.ModelProto:
        key = conversion_key(model, input_size, batch_size, opset, channels)
        path = folder / f"{key}.onnx"
        if key is not None and path.is_file():
            return onnx.load(path)
        proto = convert(model, input_size, batch_size, opset, channels)
        if key is not None:  # whole files only: the other worker may read it at any moment
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
            with os.fdopen(handle, "wb") as file:
                file.write(proto.SerializeToString())
            os.replace(temporary, path)
        return proto

    return keras_to_onnx
