"""What CPU a benchmark ran on: its figures depend on it (INT8 most: VNNI or not), so result files say."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def model_and_flags(cpuinfo: str) -> tuple[str, set[str]]:
    """The first CPU's 'model name' and 'flags' from the text of /proc/cpuinfo."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def read_cpuinfo() -> tuple[str, set[str]]:
    try:
        return model_and_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "", set()


def _name(model: str) -> str:
    return model or platform.processor() or platform.machine()


def cpu_model() -> str:
    return _name(read_cpuinfo()[0])


def describe_cpu() -> str:
    """e.g. 'AMD EPYC, 2 cores, AVX2, no VNNI' (the model name and the vector extensions INT8 kernels use)."""
    model, flags = read_cpuinfo()
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()
    vnni = "VNNI" if {"avx512_vnni", "avx_vnni"} & flags else "no VNNI"
    return f"{_name(model)}, {os.cpu_count()} cores, {vector}, {vnni}"


if __name__ == "__main__":
    print(describe_cpu())
