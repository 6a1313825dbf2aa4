"""INT8 calibration: batches from TFRecords, the TensorRT entropy calibrator, Q/DQ ONNX via onnxruntime.quantization."""
