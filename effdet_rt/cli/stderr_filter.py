"""Keep TensorFlow's start-up notices out of the CLI's output without hiding real errors.

TensorFlow's native libraries log a few lines on every start on a machine without a GPU (the oneDNN notice, "Could
not find cuda drivers", the CPU-feature notice, and an ``E0000 ... failed call to cuInit ... (303)`` error line).
Most are written before absl's logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them, and level 3
would also hide genuine errors. So the CLI entry point routes native stderr (file descriptor 2) through a small
forked filter process that drops exactly these known lines and passes everything else through unchanged. Python's
own ``sys.stderr`` keeps writing to the original stream, so progress bars still see the terminal.

The filter is a separate process rather than a thread so that output written just before a crash (a segfault
report, an abort message) still reaches the user: the filter drains the pipe until every writer has gone.
``EFFDET_RAW_STDERR=1`` turns it off.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import signal
import sys
import time
from pathlib import Path

# Native log lines look like "I0000 00:00:1796178069.088583    5361 port.cc:153] message".
_NATIVE_LINE = re.compile(rb"^[IWEF]\d{4} [\d:.]+\s+\d+ (?P<source>[\w.]+):\d+\] (?P<message>.*)$")
_ALWAYS_NOISE_SOURCES = {b"port.cc", b"cpu_feature_guard.cc"}
_ALWAYS_NOISE_TEXT = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"rebuild TensorFlow with the appropriate compiler flags.",
)
# Only noise where no NVIDIA driver is installed; on a GPU machine the same lines report a real fault.
_NO_GPU_NOISE = (
    b"Could not find cuda drivers on your machine",
    b"failed call to cuInit",
    b"Unable to register cuDNN factory",
    b"Unable to register cuFFT factory",
    b"Unable to register cuBLAS factory",
    b"TF-TRT Warning: Could not find TensorRT",
)


def nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def is_startup_noise(line: bytes, gpu_machine: bool) -> bool:
    """True for a known TensorFlow start-up notice (``line`` without its newline)."""
    text = line.rstrip(b"\r")
    if any(text.startswith(noise) or text.endswith(noise) for noise in _ALWAYS_NOISE_TEXT):
        return True
    match = _NATIVE_LINE.match(text)
    if match is None:
        return False
    if match.group("source") in _ALWAYS_NOISE_SOURCES:
        return True
    return not gpu_machine and any(noise in match.group("message") for noise in _NO_GPU_NOISE)


def _filter_loop(read_fd: int, out_fd: int, gpu_machine: bool) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not is_startup_noise(line, gpu_machine))
        if kept:
            _write_all(out_fd, kept)
    if pending and not is_startup_noise(pending, gpu_machine):
        _write_all(out_fd, pending)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:
            return


def install_stderr_filter() -> bool:
    """Route native stderr through the start-up-noise filter; returns whether it was installed.

    Call it once at the very start of the command-line entry point, before any thread starts or TensorFlow loads.
    """
    if os.environ.get("EFFDET_RAW_STDERR") == "1" or not hasattr(os, "fork"):
        return False
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_fd, write_fd = os.pipe()
    except (OSError, ValueError, AttributeError):
        return False
    gpu_machine = nvidia_driver_present()
    pid = os.fork()
    if pid == 0:  # the filter: ignore Ctrl-C and termination so it drains what the command writes on its way out
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.close(write_fd)
            _filter_loop(read_fd, original, gpu_machine)
        finally:
            os._exit(0)
    os.close(read_fd)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    stream = io.TextIOWrapper(io.FileIO(original, "w", closefd=True), encoding=sys.stderr.encoding or "utf-8",
                              errors="backslashreplace", line_buffering=True, write_through=True)
    sys.stderr = stream
    atexit.register(_drain_before_exit, pid)
    return True


def _drain_before_exit(pid: int, wait_seconds: float = 2.0) -> None:
    """Close our end of the pipe and give the filter a moment to write what is left, so the last lines arrive
    before the shell prompt (a leftover child process still holding the pipe only shortens the wait)."""
    try:
        os.close(2)
    except OSError:
        return
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)
