"""The export flow of every task: the task's network as an ONNX graph or as a file converted straight from the
checkpoint (the backend table's `exporter` column: LiteRT's .tflite), `--verify` on what would be written, then
one atomic write. Nothing is written when the verification refuses the file.

A task takes part with an `ExportJob`: its network from its checkpoint, its graph finishing and metadata, its
verification images and report figures, and what a verification outside its limits does. The order of the steps,
the temporary file a converted file is verified from and the write are this module's, the same for every task.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from effdet_rt.backends import Backend
from effdet_rt.engines.registry import backend_status, exporter_module
from effdet_rt.errors import UserError
from effdet_rt.export.exporter import write_onnx
from effdet_rt.export.verify import VerifyReport


class ExportJob(Protocol):
    """One task's export of one checkpoint, its network already built from the checkpoint."""

    def onnx_graph(self) -> Any:
        """The network as an ONNX ModelProto: converted, its heads and graph finished, its metadata set."""

    def verify_graph(self, proto: Any) -> VerifyReport:
        """The checkpoint against ``proto`` (not yet written) on the ONNX Runtime runner."""

    def converted_bytes(self, exporter: Any) -> bytes:
        """The file the backend's ``exporter`` converts the network to, with its metadata (not yet written)."""

    def verify_written(self, backend: Backend, exporter: Any, path: Path) -> VerifyReport:
        """The checkpoint against the converted file at ``path`` (a temporary copy, opened by its backend)."""

    def settle(self, report: VerifyReport, backend: Backend | None, log: Callable[[str], None]) -> None:
        """After the report's summary is logged: the task's notes on it, and raising (nothing is written) or
        warning when it is outside its limits. ``backend`` is None for the ONNX graph."""


def export_file(job: ExportJob, output: Path, backend: Backend | None, *, verify: bool,
                log: Callable[[str], None]) -> Path:
    """Write ``job``'s network to ``output``: the ONNX graph when ``backend`` is None, else the backend's converted
    file; with ``verify`` the bytes are checked first and a refused check leaves nothing behind."""
    if backend is None:
        proto = job.onnx_graph()
        if verify:
            settle(job, job.verify_graph(proto), None, log)
        return write_onnx(proto, output)
    exporter = exporter_module(backend)
    data = job.converted_bytes(exporter)
    if verify:
        with written_file(backend, data) as path:
            report = job.verify_written(backend, exporter, path)
        settle(job, report, backend, log)
    return exporter.write_tflite(data, output)


def settle(job: ExportJob, report: VerifyReport, backend: Backend | None, log: Callable[[str], None]) -> None:
    log(report.summary())
    job.settle(report, backend, log)


def require_backend(backend: Backend, output: Path) -> None:
    """A converted output needs its backend's converter installed (checked before the checkpoint is opened)."""
    usable, why = backend_status(backend)
    if not usable:
        raise UserError(f"{output}: writing a {backend.suffixes[0]} needs {backend.title}: {why}")


@contextmanager
def written_file(backend: Backend, data: bytes) -> Iterator[Path]:
    """The converted bytes in a temporary file named with the backend's suffix, for its runtime to open before
    the output is written (`--verify` writes nothing when it fails); removed afterwards."""
    handle, name = tempfile.mkstemp(suffix=backend.suffixes[0])
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        yield Path(name)
    finally:
        os.unlink(name)
