"""INT8 entropy calibrator for TensorRT <= 10, fed by calibration batches, with a read-first cache file."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.gpu.trt_common import DeviceBuffer, check, import_cudart
from effdet_rt.utils.atomic import atomic_write_bytes


class DeviceUploader:
    """Copies each batch into one device buffer (allocated on first use) and returns its address."""

    def __init__(self) -> None:
        self._buffer = None

    def __call__(self, batch: np.ndarray) -> int:
        if self._buffer is None or self._buffer.nbytes < batch.nbytes:
            self._buffer = DeviceBuffer(batch.nbytes)
        cudart = import_cudart()
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(cudart.cudaMemcpy(self._buffer.ptr, batch.ctypes.data, batch.nbytes, kind))
        return self._buffer.ptr


def entropy_calibrator_class(base: type) -> type:
    """A calibrator class deriving from ``base`` (trt.IInt8EntropyCalibrator2, or a stand-in in tests)."""

    class EntropyCalibrator(base):
        def __init__(
            self,
            batches: Iterable[np.ndarray] | None,
            cache_file: str | Path,
            batch_size: int,
            to_device: Callable[[np.ndarray], int] | None = None,
            log: Callable[[str], None] = print,
        ):
            base.__init__(self)
            self.cache_file = Path(cache_file)
            self.batch_size = int(batch_size)
            self.batches_used = 0
            self._batches = iter(batches) if batches is not None else None
            self._to_device = to_device or DeviceUploader()
            self._log = log

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str], *args: Any) -> list[int] | None:
            if self._batches is None:
                return None
            batch = next(self._batches, None)
            if batch is None:
                return None
            if batch.shape[0] != self.batch_size:
                self._log(f"calibration: batch of {batch.shape[0]} != {self.batch_size}; stopping there")
                return None
            self.batches_used += 1
            return [self._to_device(np.ascontiguousarray(batch, dtype=np.float32))]

        def read_calibration_cache(self) -> bytes | None:
            if self.cache_file.is_file():
                self._log(f"calibration: using cache {self.cache_file} (delete it to recalibrate)")
                return self.cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(self.cache_file, bytes(cache))
            self._log(f"calibration: wrote cache {self.cache_file} from {self.batches_used} batch(es)")

    return EntropyCalibrator


def make_calibrator(trt: Any, batches: Iterable[np.ndarray] | None, cache_file: str | Path, batch_size: int,
                    log: Callable[[str], None] = print) -> Any:
    cls = entropy_calibrator_class(trt.IInt8EntropyCalibrator2)
    return cls(batches, cache_file, batch_size, log=log)
