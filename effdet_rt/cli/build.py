"""`effdet-rt build`: an exported ONNX model -> an engine (TensorRT plan, ONNX Runtime model or OpenVINO IR)."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import overrides_argument, spec_option


def build_command(
    model: Path = typer.Option(..., "-m", "--model", help="ONNX model written by `effdet-rt export`."),
    output: Path = typer.Option(None, "-o", "--output", help="Engine file: .plan/.engine (TensorRT), .onnx (ONNX Runtime) or .xml (OpenVINO, with its .bin); default build.engine_file."),
    spec: Path = spec_option,
    backend: str = typer.Option(None, "--backend", help="auto | onnxruntime | tensorrt | openvino (default build.backend; auto = TensorRT when it and a GPU are present, else the fastest installed CPU runtime)."),
    precision: str = typer.Option(None, "--precision", help="fp32 | fp16 | int8 (default build.data_type)."),
    calib_tfrecords: list[str] = typer.Option(None, "--calib-tfrecords", help="TFRecord glob(s) for INT8 calibration (default build.calibration.tfrecords)."),
    calib_batches: int = typer.Option(None, "--calib-batches", help="Number of calibration batches (default build.calibration.batches)."),
    calib_batch_size: int = typer.Option(None, "--calib-batch-size", help="Calibration batch size (default build.calibration.batch_size)."),
    calib_cache: str = typer.Option(None, "--calib-cache", help="TensorRT <= 10 calibration cache file (read first when it exists)."),
    calib_only: bool = typer.Option(False, "--calib-only", help="TensorRT <= 10: write only the calibration cache."),
    workspace_gb: float = typer.Option(None, "--workspace-gb", help="TensorRT workspace limit in GiB (default build.workspace_gb)."),
    min_batch: int = typer.Option(None, "--min-batch", help="TensorRT profile minimum batch (default build.min_batch_size)."),
    opt_batch: int = typer.Option(None, "--opt-batch", help="TensorRT profile optimum batch (default build.opt_batch_size)."),
    max_batch: int = typer.Option(None, "--max-batch", help="TensorRT profile maximum batch (default build.max_batch_size)."),
    timing_cache: str = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, read and written (default build.timing_cache)."),
    int8_profile: str = typer.Option(None, "--int8-profile", help="ONNX Runtime int8 Q/DQ layout: onnxruntime (all ops, UINT8 activations: fast on CPU) or tensorrt (symmetric INT8 activations on convs: the input TensorRT 11 needs)."),
    overrides: list[str] = overrides_argument,
) -> None:
    """Build an engine from an exported ONNX model."""
    from effdet_rt.engines.build import BuildRequest, build_engine
    from effdet_rt.spec import load_task_spec

    spec_obj = load_task_spec(spec, overrides)
    request = BuildRequest.from_spec(
        spec_obj, model=model, output=output, backend=backend, precision=precision, calib_tfrecords=calib_tfrecords,
        calib_batches=calib_batches, calib_batch_size=calib_batch_size, calib_cache=calib_cache, calib_only=calib_only,
        workspace_gb=workspace_gb, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, timing_cache=timing_cache,
        int8_profile=int8_profile,
    )
    build_engine(request, log=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("build")(build_command)
