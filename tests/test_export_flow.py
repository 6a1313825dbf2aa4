"""export/flow.py, the export flow of every task, driven by a made-up task's ExportJob: the order of the steps, the
temporary file a converted file is verified from, and nothing written when the verification refuses the file."""

import sys
import types
from pathlib import Path

import pytest

from effdet_rt.backends import Backend
from effdet_rt.errors import UserError
from effdet_rt.export.flow import export_file
from effdet_rt.export.verify import Figure, VerifyReport

FAKE_EXPORTER = "tests_fake_exporter_module"  # a module name no installed package uses
FAKE = Backend("fake", "Fake Runtime", (".fake",), ("fp32",), "cpu", runtime="unused", exporter=FAKE_EXPORTER)


class Proto:
    def SerializeToString(self) -> bytes:  # noqa: N802 - the ModelProto method the flow calls
        return b"onnx bytes"


class Job:
    """Records what the flow asked of it; its verification gives ``diff`` against a limit of 1."""

    def __init__(self, diff: float):
        self.diff, self.calls, self.seen = diff, [], None

    def report(self) -> VerifyReport:
        return VerifyReport(3, (Figure("diff", self.diff, 1.0, "diff {value:g} (limit {limit:g})"),))

    def onnx_graph(self):
        self.calls.append("onnx_graph")
        return Proto()

    def verify_graph(self, proto):
        self.calls.append("verify_graph")
        return self.report()

    def converted_bytes(self, exporter):
        self.calls.append("converted_bytes")
        return b"converted bytes"

    def verify_written(self, backend, exporter, path: Path):
        self.calls.append("verify_written")
        self.seen = (path, path.suffix, path.read_bytes())
        return self.report()

    def settle(self, report, backend, log):
        self.calls.append(f"settle {backend.name if backend else None}")
        if not report.passed():
            raise UserError("refused")


@pytest.fixture
def fake_exporter(monkeypatch):
    module = types.ModuleType(FAKE_EXPORTER)

    def write_tflite(data: bytes, output: Path) -> Path:
        output.write_bytes(data)
        return output

    module.write_tflite = write_tflite
    monkeypatch.setitem(sys.modules, FAKE_EXPORTER, module)
    return module


def test_onnx_is_verified_then_written(tmp_path):
    job, lines = Job(0.5), []
    written = export_file(job, tmp_path / "m.onnx", None, verify=True, log=lines.append)
    assert written.read_bytes() == b"onnx bytes"
    assert job.calls == ["onnx_graph", "verify_graph", "settle None"]
    assert lines == ["verify on 3 images: diff 0.5 (limit 1)"]


def test_a_refused_onnx_writes_nothing(tmp_path):
    job, lines = Job(2.0), []
    with pytest.raises(UserError, match="refused"):
        export_file(job, tmp_path / "m.onnx", None, verify=True, log=lines.append)
    assert list(tmp_path.iterdir()) == [] and lines == ["verify on 3 images: diff 2 (limit 1)"]


def test_without_verify_nothing_is_compared(tmp_path, fake_exporter):
    job = Job(2.0)
    export_file(job, tmp_path / "m.onnx", None, verify=False, log=print)
    export_file(job, tmp_path / "m.fake", FAKE, verify=False, log=print)
    assert job.calls == ["onnx_graph", "converted_bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fake", "m.onnx"]


def test_a_converted_file_is_verified_from_a_temporary_copy(tmp_path, fake_exporter):
    job = Job(0.5)
    written = export_file(job, tmp_path / "m.fake", FAKE, verify=True, log=lambda _: None)
    assert written.read_bytes() == b"converted bytes"
    assert job.calls == ["converted_bytes", "verify_written", "settle fake"]
    path, suffix, data = job.seen
    assert suffix == ".fake" and data == b"converted bytes" and not path.exists()


def test_a_refused_converted_file_writes_nothing(tmp_path, fake_exporter):
    job = Job(2.0)
    with pytest.raises(UserError):
        export_file(job, tmp_path / "m.fake", FAKE, verify=True, log=lambda _: None)
    assert list(tmp_path.iterdir()) == [] and not job.seen[0].exists()
