"""A real Triton Inference Server for the tests, and Triton's own client and model_config proto.

PyPI's ``nvidia-pytriton`` wheel carries a ``tritonserver`` binary with the Python backend that runs on a CPU-only
machine. Its Python package pins numpy < 2 and ``tritonclient[grpc]`` pins protobuf < 7 and ml-dtypes <= 0.5.4,
which would move the versions TensorFlow and ONNX run with here; so both wheels (and the HTTP client's own
dependencies) are installed without dependency resolution into a tool folder beside the checkout, once
(``.tools/triton``, git-ignored), and put on ``sys.path`` by the tests that use them; the Python stub's own small
environment (`stub_environment`) goes inside it. All of it: about 80 MB from PyPI, 280 MB on disk, some 25 s on a
fresh machine. ``EFFDET_TRITON_TOOLS`` points elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PINS = ["nvidia-pytriton==0.7.0", "tritonclient==2.73.0", "python-rapidjson==1.25", "geventhttpclient==2.6.1",
        "gevent==26.9.0", "greenlet==3.3.2", "zope.event==6.2", "zope.interface==8.7", "brotli==1.2.1"]
READY_TIMEOUT_S = 240.0


def tools_folder() -> Path:
    return Path(os.environ.get("EFFDET_TRITON_TOOLS") or ROOT / ".tools" / "triton")


def install_tools() -> Path:
    """The tool folder with the pinned wheels in it (installed on first use); on sys.path afterwards."""
    folder = tools_folder()
    done = folder / ".installed"
    if not done.is_file() or done.read_text() != "\n".join(PINS):
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--target", str(folder), *PINS], check=True, capture_output=True, text=True)
        done.write_text("\n".join(PINS))
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


STUB_PINS = ["numpy==1.26.4", "ml-dtypes==0.5.4"]


def stub_environment(folder: Path) -> Path:
    """The Python environment Triton's Python stub runs in. The stub in this server (Triton 2.51) exchanges tensors
    with NumPy 1 (under NumPy 2 every tensor it hands over is garbage), so this environment has NumPy 1.26 (and the
    ml-dtypes release that still runs on it, for onnx) and nothing else; the repository's model.py files append the
    writing environment's sys.path after it."""
    env = folder / "stub-env"
    done = env / ".installed"
    if not done.is_file() or done.read_text() != "\n".join(STUB_PINS):
        shutil.rmtree(env, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(env)], check=True, capture_output=True)
        site = env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--target", str(site), *STUB_PINS], check=True, capture_output=True, text=True)
        done.write_text("\n".join(STUB_PINS))
    return env


def server_files(folder: Path) -> tuple[Path, dict[str, str]]:
    """The tritonserver binary and its environment: its bundled libraries, and the Python backend stub for this
    interpreter's version copied beside the backend (what PyTriton does when it starts a server)."""
    server = folder / "pytriton" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    backend = server / "backends" / "python"
    if not (backend / stub.name).is_file():
        shutil.copy2(stub, backend / stub.name)
    libraries = [str(folder / "nvidia_pytriton.libs"), str(backend)]
    # the stub's embedded Python finds its prefix (hence the numpy Triton's own backend utilities import before our
    # model.py runs) from the first `python3` on PATH, as PyTriton arranges it
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([*libraries, os.environ.get("LD_LIBRARY_PATH", "")]),
           "PATH": os.pathsep.join([str(stub_environment(folder) / "bin"), os.environ.get("PATH", "")])}
    return server / "bin" / "tritonserver", env


class ServerUnavailable(RuntimeError):
    """The server binary (or the Python stub) cannot run on this machine: a missing system library, not our bug."""


MISSING_LIBRARY = ("error while loading shared libraries", "cannot open shared object file")


def server_failed(process: subprocess.Popen, server: Server, why: str) -> RuntimeError:
    tail = server.log_tail()
    cls = ServerUnavailable if any(text in tail for text in MISSING_LIBRARY) else RuntimeError
    return cls(f"tritonserver {why}:\n{tail}")


class Server:
    def __init__(self, process: subprocess.Popen, http: int, grpc: int, log: Path):
        self.process, self.http_port, self.grpc_port, self.log = process, http, grpc, log
        self.http_url, self.grpc_url = f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.is_file() else ""


@contextlib.contextmanager
def triton_server(repository: Path, log: Path) -> Iterator[Server]:
    """tritonserver on loopback ports serving ``repository``; waits until it is ready (bounded), stops it after."""
    folder = install_tools()
    import tritonclient.http as http_client

    binary, env = server_files(folder)
    http, grpc, metrics = free_port(), free_port(), free_port()
    args = [str(binary), f"--model-repository={repository}", "--http-address=127.0.0.1", f"--http-port={http}",
            "--grpc-address=127.0.0.1", f"--grpc-port={grpc}", "--allow-metrics=false", f"--metrics-port={metrics}",
            f"--backend-directory={binary.parents[1] / 'backends'}", "--exit-on-error=true", "--log-verbose=0", "--pinned-memory-pool-byte-size=0",
            "--exit-timeout-secs=5"]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(process, http, grpc, log)
    try:
        client = http_client.InferenceServerClient(server.http_url)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise server_failed(process, server, f"exited with {process.returncode}")
            with contextlib.suppress(Exception):
                if client.is_server_ready():
                    break
            if time.monotonic() > deadline:
                raise server_failed(process, server, f"not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def parse_config(path: Path):
    """A config.pbtxt parsed with Triton's own ModelConfig proto (shipped in tritonclient)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
