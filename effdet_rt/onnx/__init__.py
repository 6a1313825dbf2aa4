"""ONNX graphs: reading and rewriting them, metadata, the NMS subgraphs, Q/DQ and ONNX Runtime layout passes, FP16."""
