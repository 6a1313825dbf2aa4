"""The backend table (effdet_rt/backends.py) is the one description of every backend: the spec's choices, the CLI's
help, build dispatch, load() and engine-info all follow it, and every module it names is where the layering allows."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from effdet_rt.backends import AUTO, BACKENDS, all_precisions, backend_for_file, backend_help, backend_named
from effdet_rt.errors import ModelFileError, SpecError

PACKAGE = Path(__file__).resolve().parents[1] / "effdet_rt"


def module_functions(dotted: str) -> set[str]:
    """Top-level functions of a module, read from its source (no import: TensorRT and OpenVINO may be missing)."""
    path = PACKAGE.parent / (dotted.replace(".", "/") + ".py")
    return {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_every_row_names_modules_that_provide_its_entry_points(backend):
    assert backend.runtime.startswith("effdet_rt.engines.")
    runtime = module_functions(backend.runtime)
    assert "load_engine" in runtime
    if backend.name != "checkpoint":  # a checkpoint is opened by its task, not through a runner
        assert {"open_runner", "describe"} <= runtime
    if backend.builder:
        assert backend.builder.startswith("effdet_rt.engines.build.") and "build" in module_functions(backend.builder)
        assert backend.precisions
    if backend.exporter:  # converted from the checkpoint by `effdet-rt export -o` (LiteRT)
        assert backend.exporter.startswith("effdet_rt.engines.build.")
        assert {"check_settings", "export_detector", "written_heads", "write_tflite"} <= module_functions(backend.exporter)
        assert backend.precisions and not backend.builder
    if backend.status:
        module, function = backend.status.split(":")
        assert module.split(".")[1] in ("engines", "gpu") and function in module_functions(module)


def test_suffixes_pick_one_backend_each():
    suffixes = [s for b in BACKENDS for s in b.suffixes]
    assert len(suffixes) == len(set(suffixes))
    assert {s: backend_for_file(f"m{s.upper()}").name for s in suffixes} == {
        ".edrt": "checkpoint", ".plan": "tensorrt", ".engine": "tensorrt", ".xml": "openvino", ".onnx": "onnxruntime", ".tflite": "litert"}
    with pytest.raises(ModelFileError, match=r"unknown model type '\.pt'.*\.edrt.*\.plan/\.engine.*\.xml.*\.onnx"):
        backend_for_file("model.pt")


def test_spec_choices_and_cli_help_come_from_the_table():
    from effdet_rt.spec.schema import BuildConfig

    fields = BuildConfig.model_fields
    assert set(fields["backend"].annotation.__args__) == {AUTO, "tensorrt", "openvino", "onnxruntime"}
    assert set(all_precisions()) == {"fp32", "bf16", "fp16", "int8"}
    assert set(fields["data_type"].annotation.__args__) == {*all_precisions(), AUTO}  # auto: measured (build.auto)
    assert backend_help().startswith("auto | tensorrt | openvino | onnxruntime ")
    assert "tensorrt > openvino > onnxruntime" in backend_help()
    with pytest.raises(SpecError, match="build.backend 'cuda' is not a backend"):
        backend_named("cuda")


def test_auto_prefers_the_gpu_row_then_the_cpu_row_the_output_names(monkeypatch):
    from effdet_rt.engines.build import request

    statuses = {"tensorrt": (False, "no GPU"), "openvino": (True, "OpenVINO 1"), "onnxruntime": (True, "ORT")}
    monkeypatch.setattr(request, "backend_status", lambda b: statuses[b.name])
    log: list[str] = []
    assert request.choose_backend(AUTO, log.append, Path("m.onnx")) == "onnxruntime"
    assert request.choose_backend(AUTO, log.append, Path("m.bin")) == "openvino"
    statuses["tensorrt"] = (True, "TensorRT 10")
    assert request.choose_backend(AUTO, log.append, Path("m.onnx")) == "tensorrt"
    assert log[0].startswith("backend: onnxruntime (the output is an .onnx file; TensorRT not used: no GPU; OpenVINO")
    assert log[1].startswith("backend: openvino (OpenVINO 1: the fastest installed CPU runtime")
    assert log[2] == "backend: tensorrt (TensorRT 10)"


def test_the_registry_is_the_only_importer_of_backend_modules():
    """importlib on a table string is how a backend is reached; nothing else spells the modules by name."""
    users = [path for path in PACKAGE.rglob("*.py") if "import_module(backend." in path.read_text()]
    assert [p.relative_to(PACKAGE).as_posix() for p in users] == ["engines/registry.py"]
    assert importlib.import_module("effdet_rt.engines.registry").runtime_module(backend_named("onnxruntime")) \
        is importlib.import_module("effdet_rt.engines.runtime.onnxruntime")


def test_engines_size_their_thread_pools_to_the_cpus_the_process_may_use():
    """A process confined to one CPU (a container's cpuset, taskset, a pinned test worker) gets one-thread pools,
    not one thread per CPU of the machine."""
    import subprocess
    import sys

    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from effdet_rt.utils.cpu import usable_cpus; "
            "from effdet_rt.engines.runtime.onnxruntime import session_options; "
            "print(usable_cpus(), session_options().intra_op_num_threads, os.cpu_count() >= 1)")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert printed == ["1", "1", "True"]
