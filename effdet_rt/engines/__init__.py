"""Engines: one interface over every way of running a detector (checkpoint, ONNX Runtime, TensorRT, OpenVINO)."""

from effdet_rt.engines.base import Engine, load

__all__ = ["Engine", "load"]
