"""What runs inside Triton's Python backend: the model.py of every Python-backend model we write (see triton.py)
instantiates one of these classes with the model's config and calls ``execute`` with each batch of requests.

``triton_python_backend_utils`` exists only inside Triton's Python stub, so it is imported when a step starts.
A request the step cannot serve (a corrupt image) gets an error response of its own; the others in the batch are
answered and the model keeps serving.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from effdet_rt.data.preprocess import decode_image, preprocess_batch
from effdet_rt.detections import Detections
from effdet_rt.engines.runtime.base import detections_from_outputs, host_nms_setup
from effdet_rt.engines.runtime.host_nms import host_postprocess
from effdet_rt.errors import DataError, ModelFileError, UserError
from effdet_rt.onnx.names import BOX_CODES, CLASS_LOGITS

T = TypeVar("T")


class PythonStep:
    """Reads the config's inputs and outputs; subclasses compute named outputs from named inputs."""

    def __init__(self, args: dict[str, Any], config: dict[str, Any], parameters: dict[str, str]):
        self.pb = importlib.import_module("triton_python_backend_utils")
        self.folder = Path(args["model_repository"])
        self.version = str(args["model_version"])
        self.parameters = parameters
        self.input_names = [t["name"] for t in config["input"]]
        self.output_types = {t["name"]: self.pb.triton_string_to_numpy(t["data_type"]) for t in config["output"]}

    def parameter(self, key: str, parse: Callable[[str], T]) -> T:
        """A parameter `effdet-rt triton` wrote into config.pbtxt, parsed; a missing or damaged one (the file edited
        by hand) stops the model's load with an error naming the file, not a traceback in Triton's log."""
        try:
            return parse(self.parameters[key])
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{self.folder / 'config.pbtxt'}: parameter {key} is missing or damaged ({exc}); "
                                 "write the repository again with `effdet-rt triton`") from exc

    def text_file(self, name: str) -> list[str]:
        """The lines of a file `effdet-rt triton` wrote beside config.pbtxt."""
        path = self.folder / name
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{path}: cannot be read ({exc.__class__.__name__}); write the repository again "
                                 "with `effdet-rt triton`") from exc

    def inputs_of(self, request: Any) -> dict[str, np.ndarray]:
        return {name: self.pb.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}

    def response(self, outputs: dict[str, np.ndarray]) -> Any:
        tensors = [self.pb.Tensor(name, np.ascontiguousarray(outputs[name]).astype(dtype))
                   for name, dtype in self.output_types.items()]
        return self.pb.InferenceResponse(output_tensors=tensors)

    def error(self, message: str) -> Any:
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(message))


class PerRequestStep(PythonStep):
    """Pre- and post-processing: each request on its own, so one bad request fails alone."""

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self.response(self.compute(self.inputs_of(request))))
            except UserError as exc:
                responses.append(self.error(str(exc)))
        return responses


class EngineStep(PythonStep):
    """``--runtime python``: the engine file in the version folder on our own runner (any backend in the table);
    the requests of a batch run as one batch."""

    def __init__(self, args: dict[str, Any], config: dict[str, Any], parameters: dict[str, str]):
        super().__init__(args, config, parameters)
        from effdet_rt.engines.registry import open_runner

        self.runner = open_runner(self.folder / self.version / self.parameter("effdet_rt_engine_file", str))

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [self.inputs_of(request)[self.input_names[0]] for request in requests]
        try:
            outputs = self.runner.run(np.concatenate(batches))
        except UserError as exc:
            return [self.error(str(exc)) for _ in requests]
        responses, start = [], 0
        for batch in batches:
            responses.append(self.response({name: value[start:start + len(batch)] for name, value in outputs.items()}))
            start += len(batch)
        return responses


def input_size(text: str) -> tuple[int, int]:
    size = json.loads(text)
    if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int and v > 0 for v in size)):
        raise ValueError(f"{text!r} is not [height, width]")
    return size[0], size[1]


def score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{value} is not in [0, 1)")
    return value


def json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def request_images(encoded: np.ndarray) -> list[np.ndarray]:
    """The encoded images of one request (a (N, 1) array of bytes) decoded to RGB."""
    images = []
    for index, data in enumerate(encoded.reshape(-1)):
        try:
            images.append(decode_image(bytes(data), f"image {index} of the request"))
        except DataError as exc:
            raise DataError(f"{str(exc).split(';')[0]}; send the bytes of a JPEG or PNG file") from exc
    return images


class DetectorPreprocess(PerRequestStep):
    """The one preprocessing function: resize keeping aspect, pad; the scale and image size go to post-processing."""

    def __init__(self, args: dict[str, Any], config: dict[str, Any], parameters: dict[str, str]):
        super().__init__(args, config, parameters)
        self.input_size = self.parameter("effdet_rt_input_size", input_size)

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = request_images(inputs["image"])
        batch, scales = preprocess_batch(images, self.input_size)
        sizes = np.asarray([image.shape[:2] for image in images], np.int32).reshape(-1, 2)
        return {"images": batch, "scale": scales.reshape(-1, 1), "image_size": sizes}


class DetectorPostprocess(PerRequestStep):
    """The engine's outputs decoded as every engine decodes them (NMS outputs, or raw heads through host NMS),
    boxes mapped to the sent image's pixels, detections under the score threshold dropped."""

    def __init__(self, args: dict[str, Any], config: dict[str, Any], parameters: dict[str, str]):
        super().__init__(args, config, parameters)
        self.min_score = self.parameter("effdet_rt_min_score", score)
        self.labels = self.text_file("labels.txt")
        metadata = self.parameter("effdet_rt_metadata", json_object)
        self.raw = f"raw_{CLASS_LOGITS}" in self.input_names
        if self.raw:
            self.anchors, self.nms = host_nms_setup(metadata, self.folder / "config.pbtxt")

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = {name[len("raw_"):]: value for name, value in inputs.items() if name.startswith("raw_")}
        count = len(inputs["scale"])
        detections = (host_postprocess(raw[CLASS_LOGITS], raw[BOX_CODES], self.anchors, self.nms) if self.raw
                      else detections_from_outputs(raw, count))
        sizes = [tuple(int(v) for v in size) for size in inputs["image_size"]]
        detections = detections.scaled(inputs["scale"].reshape(-1), sizes).filtered(self.min_score)
        return detection_outputs(detections, self.labels)


def detection_outputs(detections: Detections, labels: list[str]) -> dict[str, np.ndarray]:
    """The ensemble's outputs: slots past num_detections are zero, their label empty."""
    names = np.array([[labels[c - 1].encode() if 0 < c <= len(labels) and j < n else b""
                       for j, c in enumerate(row)] for row, n in zip(detections.classes, detections.num_detections,
                                                                     strict=True)], dtype=object)
    valid = np.arange(detections.scores.shape[1])[None, :] < detections.num_detections[:, None]
    return {"num_detections": detections.num_detections.reshape(-1, 1),
            "detection_boxes": np.where(valid[..., None], detections.boxes, 0.0),
            "detection_scores": np.where(valid, detections.scores, 0.0),
            "detection_classes": np.where(valid, detections.classes, 0),
            "detection_labels": names.reshape(detections.scores.shape)}
