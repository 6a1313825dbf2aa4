"""Lazy access to TensorRT and the CUDA runtime (cuda-python), shared by the builder and the runtime."""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import numpy as np

from effdet_rt.errors import UserError

INSTALL_HINT = (
    "install it on a machine with an NVIDIA GPU: pip install 'effdet-rt[trt]' tensorrt "
    "--extra-index-url https://pypi.nvidia.com"
)


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise UserError(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from exc
    return tensorrt


def import_cudart() -> ModuleType:
    """The CUDA runtime bindings of cuda-python (new module path first, then the pre-12.6 one)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise UserError(f"cuda-python is not installed ({exc}); {INSTALL_HINT}") from exc
    return runtime


def major_version(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def build_path_name(major: int) -> str:
    """How a given TensorRT major version builds reduced precision (printed so users know which path ran)."""
    if major >= 11:
        return "strongly typed (precision from the ONNX model: FP16 ONNX, Q/DQ ONNX for INT8)"
    return "builder flags (FP16/INT8 flags, IInt8EntropyCalibrator2 for INT8)"


def make_logger(trt: ModuleType) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def load_plugins(trt: ModuleType, logger: Any) -> None:
    """Register TensorRT's bundled plugins (EfficientNMS_TRT) before parsing or deserialising."""
    if not trt.init_libnvinfer_plugins(logger, ""):
        raise UserError("TensorRT could not load its plugin library (libnvinfer_plugin); reinstall tensorrt")


def check(result: Any) -> Any:
    """Unpack a cuda-python call result ``(err, *values)``; raise on a CUDA error."""
    cudart = import_cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_count() -> int:
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    return int(count) if err == cudart.cudaError_t.cudaSuccess else 0


def tensorrt_status() -> tuple[bool, str]:
    """(usable?, text): TensorRT importable, cuda-python importable and at least one GPU visible."""
    try:
        trt = import_tensorrt()
        count = gpu_count()
    except UserError as exc:
        return False, str(exc)
    version = f"TensorRT {trt.__version__}"
    if count == 0:
        return False, f"{version} is installed but no CUDA GPU is visible"
    return True, f"{version}, {count} GPU(s), build path: {build_path_name(major_version(trt))}"


class DeviceBuffer:
    """Device memory of ``nbytes`` bytes (freed with the object)."""

    def __init__(self, nbytes: int):
        self.ptr = 0
        self.nbytes = int(nbytes)
        # kept, so the memory is freed by the runtime that allocated it, even at interpreter shutdown (no import then)
        self._cudart = import_cudart()
        self.ptr = int(check(self._cudart.cudaMalloc(max(self.nbytes, 1))))

    def free(self) -> None:
        if self.ptr:
            self._cudart.cudaFree(self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        self.free()


class PinnedArray:
    """Page-locked host memory viewed as a numpy array of ``shape`` and ``dtype``."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.ptr = 0
        self.dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * self.dtype.itemsize, 1)
        self._cudart = import_cudart()  # see DeviceBuffer
        self.ptr = int(check(self._cudart.cudaMallocHost(nbytes)))
        raw = np.ctypeslib.as_array((ctypes.c_byte * nbytes).from_address(self.ptr))
        self.array = raw.view(self.dtype)[: int(np.prod(shape))].reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            self._cudart.cudaFreeHost(self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        self.free()


def copy_to_device(device_ptr: int, host: np.ndarray, stream: Any) -> None:
    cudart = import_cudart()
    kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(cudart.cudaMemcpyAsync(device_ptr, host.ctypes.data, host.nbytes, kind, stream))


def copy_to_host(host: np.ndarray, device_ptr: int, stream: Any) -> None:
    cudart = import_cudart()
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(cudart.cudaMemcpyAsync(host.ctypes.data, device_ptr, host.nbytes, kind, stream))
