"""`effdet-rt engine-info model.plan|model.xml`: what a TensorRT plan or an OpenVINO IR holds."""

from __future__ import annotations

import json

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
    if engine.lower().endswith(".onnx"):
        return _onnx_info(engine, as_json)
    if engine.lower().endswith(".xml"):
        return openvino_info(engine, as_json)
    from effdet_rt.engines.runtime.tensorrt import describe_plan

    info = describe_plan(engine)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"file: {info['file']}")
    typer.echo(f"TensorRT: {info['tensorrt']} (built with {info['built_with']})")
    typer.echo(f"precision: {info['precision']}")
    for tensor in info["tensors"]:
        typer.echo(f"{tensor['io']:6s} {tensor['name']}: shape {tensor['shape']} {tensor['dtype']}")
    for name, profile in info["profile"].items():
        typer.echo(f"profile {name}: min {profile['min']} opt {profile['opt']} max {profile['max']}")


def _onnx_info(path: str, as_json: bool) -> None:
    from pathlib import Path

    from effdet_rt.classification.deploy import describe_onnx

    if not Path(path).is_file():
        raise ModelFileError(f"{path}: model file not found; pass a .onnx model or a .plan/.engine file")
    info = describe_onnx(path)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"file: {info['file']}")
    typer.echo(f"task: {info['task']}  precision: {info['precision']}  opset: {', '.join(info['opset'])}")
    for tensor in info["tensors"]:
        typer.echo(f"{tensor['io']:6s} {tensor['name']}: shape {tensor['shape']} {tensor['dtype']}")
    for name, value in sorted(info["metadata"].items()):
        typer.echo(f"meta {name}: {json.dumps(value)}")


def openvino_info(engine: str, as_json: bool) -> None:
    from effdet_rt.engines.runtime.openvino import describe_ir

    info = describe_ir(engine)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"file: {info['file']}")
    typer.echo(f"OpenVINO: {info['openvino']} (built with {info['built_with']})")
    typer.echo(f"precision: {info['precision']} (computes in {info['compute_precision']})")
    for tensor in info["tensors"]:
        typer.echo(f"{tensor['io']:6s} {tensor['name']}: shape {tensor['shape']} {tensor['dtype']}")


def register(app: typer.Typer) -> None:
    app.command("engine-info")(engine_info)
