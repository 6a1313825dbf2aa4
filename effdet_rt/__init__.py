"""effdet-rt: EfficientDet from training to TensorRT / ONNX Runtime deployment."""

__version__ = "0.1.0"
