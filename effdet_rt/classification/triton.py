"""The classifier's Triton side: the repository's pre-processing is `eval_image`'s transform with the model's own
ImageFormat, post-processing returns the top-k classes (0-based indices into the model's class list), their
probabilities and names; labels.txt beside the engine serves Triton's classification extension (`class_count` on
the engine's ``probabilities`` output)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.classification.engines import OUTPUT_NAME, TASK
from effdet_rt.classification.images import ImageFormat, eval_transform, open_image
from effdet_rt.errors import DataError, ModelFileError, UserError
from effdet_rt.integrations.triton import (
    RepositoryRequest,
    TaskParts,
    Tensor,
    check_request,
    file_metadata,
    model_io,
    write_repository,
)
from effdet_rt.integrations.triton_python import PerRequestStep

LABELS_FILE = "labels.txt"


def classifier_parts(model: Path, metadata: dict[str, Any], labels: str | Path | None, top_k: int) -> TaskParts:
    if metadata.get("task") != TASK or "image_format" not in metadata:
        raise ModelFileError(f"{model}: not a classifier written by `effdet-rt classification export` (no "
                             "effdet_rt.task / image_format metadata)")
    classes = list(metadata["classes"])
    names = read_class_names(labels, len(classes)) if labels is not None else classes
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: need at least 1")
    k = min(top_k, len(classes))
    fmt = ImageFormat.from_metadata(metadata["image_format"])
    return TaskParts(
        preprocess_class=f"{__name__}:ClassifierPreprocess",
        postprocess_class=f"{__name__}:ClassifierPostprocess",
        preprocess_outputs=(Tensor("images", "float32", (*fmt.size, fmt.channels)),),
        engine_input="images",
        outputs=(Tensor("classes", "int32", (k,)), Tensor("scores", "float32", (k,)),
                 Tensor("class_names", "object", (k,))),
        parameters={"effdet_rt_image_format": json.dumps(fmt.as_metadata()), "effdet_rt_top_k": str(k)},
        files={LABELS_FILE: "\n".join(names) + "\n"},
        engine_output_labels={OUTPUT_NAME: LABELS_FILE},
    )


def read_class_names(path: str | Path, count: int) -> list[str]:
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise UserError(f"{path}: cannot read the labels file ({exc.strerror})") from exc
    if len(names) != count:
        raise UserError(f"{path}: {len(names)} name(s) but the model has {count} classes; one name per line, "
                        "in the model's class order")
    return names


def write_classifier_repository(request: RepositoryRequest, labels: str | Path | None, top_k: int) -> Path:
    check_request(request)
    io_ = model_io(request.model)
    if OUTPUT_NAME not in {t.name for t in io_.outputs}:
        raise ModelFileError(f"{request.model}: no '{OUTPUT_NAME}' output; rebuild it from the classifier ONNX")
    return write_repository(request, classifier_parts(request.model, file_metadata(request.model), labels, top_k),
                            io_)


class ClassifierPreprocess(PerRequestStep):
    def __init__(self, args: dict[str, Any], config: dict[str, Any], parameters: dict[str, str]):
        super().__init__(args, config, parameters)
        self.fmt = ImageFormat.from_metadata(json.loads(parameters["effdet_rt_image_format"]))

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = []
        for index, data in enumerate(inputs["image"].reshape(-1)):
            try:
                image = open_image(io.BytesIO(bytes(data)), self.fmt.channels, self.fmt.depth)
            except DataError as exc:
                reason = str(exc).split(": ", 1)[-1].split(";")[0]
                raise DataError(f"image {index} of the request: {reason}; send the bytes of a JPEG or PNG file") \
                    from exc
            images.append(eval_transform(image, self.fmt))
        return {"images": np.stack(images).astype(np.float32)}


class ClassifierPostprocess(PerRequestStep):
    def __init__(self, args: dict[str, Any], config: dict[str, Any], parameters: dict[str, str]):
        super().__init__(args, config, parameters)
        self.k = int(parameters["effdet_rt_top_k"])
        self.names = (self.folder / LABELS_FILE).read_text(encoding="utf-8").splitlines()

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probabilities = inputs[f"raw_{OUTPUT_NAME}"]
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :self.k]
        names = np.array([[self.names[i].encode() for i in row] for row in top], dtype=object)
        return {"classes": top.astype(np.int32), "scores": np.take_along_axis(probabilities, top, axis=1),
                "class_names": names.reshape(top.shape)}
