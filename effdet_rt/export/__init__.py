"""Checkpoint -> ONNX with NMS inside (EfficientNMS_TRT, standard NonMaxSuppression, or raw heads), and its check."""
