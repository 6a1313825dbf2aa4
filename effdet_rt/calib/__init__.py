"""INT8 calibration: batches from TFRecords, TensorRT calibrator, FP16 ONNX conversion."""
