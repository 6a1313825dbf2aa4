"""Which vector extensions this CPU has (the fastest engine, and whether INT8 or bf16 pay, depend on them), and how
many CPUs this process may use."""

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


def cpu_class(flags: set[str]) -> str:
    """The CPU class the engines' kernels see: AMX (bf16/int8 matrix tiles), AVX-512 VNNI (int8 dot products),
    AVX-512, AVX2 (+ AVX-VNNI), or the machine's architecture when none of these (ARM, old x86)."""
    if {"amx_bf16", "amx_int8"} & flags:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-512"
    if "avx2" in flags:
        return "AVX2 VNNI" if "avx_vnni" in flags else "AVX2"
    return platform.machine() or "unknown"


def has_bf16_arithmetic(flags: set[str]) -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def describe_cpu_class() -> str:
    """e.g. 'AMD EPYC 9R14 (AVX-512 VNNI, bf16)'."""
    model, flags = read_cpuinfo()
    bf16 = ", bf16" if has_bf16_arithmetic(flags) else ""
    return f"{model or platform.processor() or platform.machine()} ({cpu_class(flags)}{bf16})"


def usable_cpus() -> int:
    """The CPUs this process is allowed to use: a container's cpuset, `taskset` or a test worker's pinning can allow
    fewer than the machine has, and a thread pool sized to the machine then oversubscribes the cores it has."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return os.cpu_count() or 1
