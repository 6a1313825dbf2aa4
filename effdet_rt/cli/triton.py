"""`effdet-rt triton`: a Triton Inference Server model repository (engine, pre- and post-processing, ensemble) for
an exported or built model, detector or classifier (chosen by the model's own metadata)."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import option


def triton(
    model: Path = option(..., "-m", "--model", help="Exported .onnx (--nms onnx or none), TensorRT .plan/.engine "
                         "or OpenVINO .xml."),
    repository: Path = option(..., "-o", "--output-dir", "--repository", help="Model repository folder (new, or "
                              "one that holds only Triton model folders)."),
    name: str = option(..., "--name", help="Name clients call (the ensemble); the engine is NAME_model, the "
                       "Python steps NAME_preprocess and NAME_postprocess."),
    max_batch_size: int | None = option(None, "--max-batch-size", help="Largest batch Triton forms (default: a "
                                        "TensorRT plan's profile max, a fixed-batch model's batch, else 8)."),
    instances: int = option(1, "--instances", help="Model instances of each step (instance_group count)."),
    runtime: str = option("native", "--runtime", help="native: Triton's own backend for the file (tensorrt_plan, "
                          "onnxruntime_onnx, openvino) | python: our runner inside Triton's Python backend (any "
                          "backend; tied to this Python environment)."),
    labels: Path | None = option(None, "--labels", help="Detector: labels.txt (one name per line) or "
                                 "label_map.yaml naming the classes; classifier: one name per line (default: "
                                 "the model's own class names)."),
    min_score: float = option(0.4, "--min-score", help="Detector: detections scoring below this are dropped (the "
                              "default of `effdet-rt infer`)."),
    top_k: int = option(5, "--top-k", help="Classifier: classes returned per image."),
) -> None:
    """Write a Triton model repository: NAME (the ensemble: encoded JPEG/PNG bytes in; detections, or a
    classifier's top-k classes, out), NAME_preprocess, NAME_model and NAME_postprocess."""
    from effdet_rt.integrations.triton import RepositoryRequest, file_metadata
    from effdet_rt.onnx.tasks import task_of_metadata

    request = RepositoryRequest(model, repository, name, max_batch_size, instances, runtime)
    metadata = file_metadata(model) if model.is_file() and model.suffix.lower() != ".edrt" else {}
    folder = task_of_metadata(metadata, str(model)).triton_repository(request, labels, min_score, top_k)
    typer.echo(f"wrote {folder} (ensemble '{name}') and {name}_preprocess, {name}_model ({runtime}), "
               f"{name}_postprocess in {repository}")


def register(app: typer.Typer) -> None:
    app.command("triton")(triton)
