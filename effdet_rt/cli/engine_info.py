"""`effdet-rt engine-info model.plan|model.xml`: what a TensorRT plan or an OpenVINO IR holds."""

from __future__ import annotations

import json

import typer


def engine_info(
    engine: str = typer.Argument(..., help="TensorRT plan (.plan/.engine) or OpenVINO .xml built by `effdet-rt build`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Print bindings (name, shape, dtype), optimisation profile, precision and TensorRT version of a plan
    (or the tensors, precision and OpenVINO version of an OpenVINO .xml)."""
    if engine.lower().endswith(".xml"):
        return openvino_info(engine, as_json)
    from effdet_rt.engines.tensorrt import describe_plan

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


def openvino_info(engine: str, as_json: bool) -> None:
    from effdet_rt.engines.openvino_engine import describe_ir

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
