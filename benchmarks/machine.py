"""What CPU a benchmark ran on: its figures depend on it (INT8 most: VNNI or not), so every result file says."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_flags_and_model(cpuinfo: str) -> tuple[str, set[str]]:
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def describe_cpu() -> str:
    """e.g. 'AMD EPYC, 2 cores, AVX2, no VNNI' (the model name and the vector extensions INT8 kernels use)."""
    path = Path("/proc/cpuinfo")
    model, flags = cpu_flags_and_model(path.read_text()) if path.exists() else ("", set())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()
    vnni = "VNNI" if {"avx512_vnni", "avx_vnni"} & flags else "no VNNI"
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores, {vector}, {vnni}"


if __name__ == "__main__":
    print(describe_cpu())
