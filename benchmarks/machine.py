"""What CPU a benchmark ran on: its figures depend on it (INT8 most: VNNI or not; bf16 and AMX), so result files say."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's effdet_rt, when run as a script

from effdet_rt.utils.cpu import cpu_class, has_bf16_arithmetic, model_and_flags, read_cpuinfo  # noqa: E402

__all__ = ["cpu_class", "cpu_model", "describe_cpu", "model_and_flags", "read_cpuinfo"]


def _name(model: str) -> str:
    return model or platform.processor() or platform.machine()


def cpu_model() -> str:
    return _name(read_cpuinfo()[0])


def describe_cpu() -> str:
    """e.g. 'AMD EPYC, 2 cores, AVX-512 VNNI, bf16' (the model name and the CPU class its kernels see)."""
    model, flags = read_cpuinfo()
    bf16 = ", bf16" if has_bf16_arithmetic(flags) else ", no bf16"
    return f"{_name(model)}, {os.cpu_count()} cores, {cpu_class(flags)}{bf16}"


if __name__ == "__main__":
    print(describe_cpu())
