"""Where the backend table (effdet_rt/backends.py) meets code: the one place that imports a backend's modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from effdet_rt.backends import BACKENDS, Backend, backend_for_file
from effdet_rt.errors import ModelFileError


def runtime_module(backend: Backend) -> ModuleType:
    return importlib.import_module(backend.runtime)


def builder_module(backend: Backend) -> ModuleType:
    if backend.builder is None:
        raise ModelFileError(f"{backend.title} files are not built by `effdet-rt build`")
    return importlib.import_module(backend.builder)


def exporter_module(backend: Backend) -> ModuleType:
    if backend.exporter is None:
        raise ModelFileError(f"{backend.title} files are not written by `effdet-rt export`")
    return importlib.import_module(backend.exporter)


def backend_status(backend: Backend) -> tuple[bool, str]:
    """(usable, why) from the row's availability check; a backend without one is always usable."""
    if backend.status is None:
        return True, f"{backend.title} is installed"
    module, function = backend.status.split(":")
    check: Callable[[], tuple[bool, str]] = getattr(importlib.import_module(module), function)
    return check()


def open_runner(path: str | Path) -> Any:
    """The backend's runner for an exported or built model file (not a checkpoint: a task opens those)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    return runtime_module(backend_for_file(path)).open_runner(path)


def describe_file(path: str | Path) -> dict[str, Any]:
    """What `engine-info` prints for a model file, from its backend's runtime module."""
    return runtime_module(backend_for_file(path)).describe(Path(path))


def auto_candidates() -> list[Backend]:
    return sorted((b for b in BACKENDS if b.auto_rank is not None), key=lambda b: b.auto_rank)


def precision_status(backend: Backend, precision: str) -> tuple[bool, str]:
    """(usable, why) for one precision of a usable backend on this machine (bf16 needs bfloat16 arithmetic): the
    runtime module's `precision_status` when it has one; otherwise every precision of the row runs."""
    check = getattr(runtime_module(backend), "precision_status", None)
    return check(precision) if check else (True, "")


def write_engine_metadata(backend: Backend, built: Path, output: Path, values: dict[str, Any]) -> bool:
    """Copy the engine ``built`` to ``output`` with ``values`` added to its metadata (written atomically); False
    when the backend's files carry no metadata of ours (the caller then writes a sidecar)."""
    writer = getattr(builder_module(backend), "write_metadata", None)
    if writer is None:
        return False
    writer(built, output, values)
    return True
