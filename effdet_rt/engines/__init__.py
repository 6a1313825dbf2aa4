"""Engines: building them (build/) and running them (runtime/) behind one interface.

`load(path)` picks the backend by file type: `.edrt` checkpoint, `.onnx` (ONNX Runtime), `.plan`/`.engine` (TensorRT), `.xml` (OpenVINO).
"""

from effdet_rt.engines.runtime.base import Engine, load

__all__ = ["Engine", "load"]
