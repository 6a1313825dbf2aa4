"""TensorRT's published Python API as data, for tests/test_tensorrt_api.py.

- tensorrt10_api.json: every module-level name and every class's members of TensorRT 10's Python bindings, read from
  the type stubs of the PyPI package ``tensorrt-stubs`` 10.13.0.35.1 (``tensorrt_bindings/tensorrt.pyi`` and
  ``tensorrt/__init__.pyi``, MIT licence, generated from the TensorRT 10.13 bindings). Methods an application
  overrides (IOutputAllocator.reallocate_output ...) appear in those stubs only in the class docstring's example
  subclass, so ``def name(self ...`` lines inside a class count as members too.
  The package is not a dependency: installing it puts a ``tensorrt`` namespace package (stub files only) into
  site-packages, which ``import tensorrt`` then finds on machines without TensorRT. Regenerate the JSON with
      pip download --no-deps tensorrt-stubs==10.13.0.35.1 -d /tmp/stubs
      python -m tests.support.tensorrt_api /tmp/stubs/tensorrt_stubs-10.13.0.35.1-py3-none-any.whl
- REMOVED_IN_11: Python APIs TensorRT 11 removed, from NVIDIA's "Removed Python APIs and Replacements" list of the
  TensorRT 10.x to 11.x migration guide (MIGRATION_SOURCE); the entries of that list among the classes effdet-rt
  touches (builder flags, builder config, engine, calibrators), not the whole list.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from functools import cache
from pathlib import Path

API_FILE = Path(__file__).with_name("tensorrt10_api.json")
STUBS = "tensorrt-stubs 10.13.0.35.1 (PyPI)"
STUB_FILES = ("tensorrt_bindings/tensorrt.pyi", "tensorrt/__init__.pyi")
MIGRATION_SOURCE = ("https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/"
                    "tensorrt-10x-to-11x-python-api-reference.html")
REMOVED_IN_11 = frozenset({
    "BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.FP8", "BuilderFlag.BF16", "BuilderFlag.INT4",
    "BuilderFlag.FP4", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
    "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile",
    "IBuilderConfig.get_calibration_profile", "IBuilderConfig.set_quantization_flag",
    "IBuilderConfig.get_quantization_flag", "IBuilderConfig.quantization_flags",
    "IBuilderConfig.clear_quantization_flag", "ICudaEngine.device_memory_size", "ICudaEngine.device_memory_size_v2",
})


def surface(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Module-level names and class members of a .pyi file (read line by line: the published stub is not valid
    Python everywhere, e.g. a non-default argument after default ones)."""
    module: set[str] = set()
    classes: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"^class (\w+)", line):
            current = m.group(1)
            module.add(current)
            classes.setdefault(current, set())
        elif m := re.match(r"^(?:def (\w+)|from \S+ import (\w+)$|(\w+)\s*[:=])", line):
            current = None
            module.add(m.group(1) or m.group(2) or m.group(3))
        elif current and (m := re.match(r"^    (?:(?:async )?def (\w+)|class (\w+)|(\w+)\s*[:=])", line)):
            classes[current].add(m.group(1) or m.group(2) or m.group(3))
        elif current and (m := re.match(r"^\s+def (\w+)\(self\b", line)):  # an override in the docstring example
            classes[current].add(m.group(1))
    return module, classes


def write_api(wheel: Path) -> None:
    module: set[str] = set()
    classes: dict[str, set[str]] = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in STUB_FILES:
            names, members = surface(archive.read(name).decode())
            module |= names
            for cls, found in members.items():
                classes.setdefault(cls, set()).update(found)
    data = {"source": f"{STUBS}: {', '.join(STUB_FILES)}", "module": sorted(module),
            "classes": {k: sorted(v) for k, v in sorted(classes.items())}}
    API_FILE.write_text(json.dumps(data, indent=0, separators=(",", ":")) + "\n")


@cache
def tensorrt10_api() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    data = json.loads(API_FILE.read_text())
    return frozenset(data["module"]), {k: frozenset(v) for k, v in data["classes"].items()}


if __name__ == "__main__":
    write_api(Path(sys.argv[1]))
