"""`effdet-rt engine-info model.plan|model.xml`: what a TensorRT plan or an OpenVINO IR holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from effdet_rt.cli.common import option
from effdet_rt.errors import ModelFileError


def engine_info(
    engine: str = typer.Argument(..., help="TensorRT plan (.plan/.engine), OpenVINO .xml or ONNX model."),
    as_json: bool = option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Print bindings (name, shape, dtype), optimisation profile, precision and TensorRT version of a plan; the
    tensors, precision and OpenVINO version of an OpenVINO .xml; for an ONNX model its inputs, outputs, opset, task
    (detection or classification) and effdet-rt metadata."""
    info, header = describe(engine)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"file: {info['file']}")
    for line in header:
        typer.echo(line)
    auto = (info.get("metadata") or {}).get("auto_build")
    if auto:  # `build --precision auto`'s choice; its table is in --json (or the metadata lines below)
        timed = sum(1 for row in auto["candidates"] if row["status"] in ("chosen", "timed"))
        typer.echo(f"chosen by build --precision auto: {auto['choice']['backend']} {auto['choice']['precision']}, "
                   f"the fastest of {timed} timed candidates on {auto['cpu'] or 'this CPU'} ({auto['cpu_class']}, "
                   f"{auto['threads']} threads)")
    for tensor in info["tensors"]:
        typer.echo(f"{tensor['io']:6s} {tensor['name']}: shape {tensor['shape']} {tensor['dtype']}")
    for name, profile in info.get("profile", {}).items():
        typer.echo(f"profile {name}: min {profile['min']} opt {profile['opt']} max {profile['max']}")
    for name, value in sorted(info.get("metadata", {}).items()) if engine.lower().endswith(".onnx") else ():
        typer.echo(f"meta {name}: {json.dumps(value)}")


def describe(engine: str) -> tuple[dict, list[str]]:
    """What the file holds (from its backend's runtime module, effdet_rt/backends.py), and the lines that head its
    text form."""
    from effdet_rt.backends import backend_for_file, model_file_types
    from effdet_rt.engines.registry import describe_file

    backend = backend_for_file(engine)
    if not Path(engine).is_file():
        raise ModelFileError(f"{engine}: engine file not found; pass a built engine or an exported model "
                             f"({model_file_types()})")
    info = describe_file(engine)
    return info, header_lines(backend.name, info)


def header_lines(backend: str, info: dict) -> list[str]:
    if backend == "onnxruntime":
        return [f"task: {info['task']}  precision: {info['precision']}  opset: {', '.join(info['opset'])}"]
    if backend == "openvino":
        return [f"OpenVINO: {info['openvino']} (built with {info['built_with']})",
                f"precision: {info['precision']} (computes in {info['compute_precision']})"]
    if backend == "tensorrt":
        return [f"TensorRT: {info['tensorrt']} (built with {info['built_with']})", f"precision: {info['precision']}"]
    return [f"{key}: {value}" for key, value in info.items() if key not in ("file", "tensors", "metadata")]


def register(app: typer.Typer) -> None:
    app.command("engine-info")(engine_info)
