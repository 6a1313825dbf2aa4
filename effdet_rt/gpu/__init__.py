"""TensorRT and the CUDA runtime, imported lazily: version checks, device buffers and copies. Below calib/ (the
TensorRT calibrator feeds the GPU through it) and engines/ (builders and plan runners)."""
