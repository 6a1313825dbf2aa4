"""Running engines: the Engine interface and its backends (checkpoint, ONNX Runtime, TensorRT), host NMS."""
