"""The batched inference pipeline shared by `infer`, model-based `evaluate` and the throughput benchmark.

Worker threads decode and preprocess the next images (a bounded window of futures) while the engine runs
the current batch on the calling thread. An image that cannot be read becomes a failed result; the run
goes on. Results come back in input order, except that a failed image is reported with the batch it fell in.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from effdet_rt.data.preprocess import preprocess_image
from effdet_rt.engines.runtime.base import Engine
from effdet_rt.errors import UserError


@dataclass(frozen=True)
class Source:
    """One input image: ``key`` identifies it (a path, an image id); ``load`` returns RGB uint8 pixels."""

    key: Any
    load: Callable[[], np.ndarray]


@dataclass
class ImageResult:
    key: Any
    image: np.ndarray | None  # the original RGB image (None when it failed, or when images are not kept)
    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2 in original pixels
    scores: np.ndarray  # (n,)
    classes: np.ndarray  # (n,) category ids
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Prepared:
    key: Any
    image: np.ndarray | None
    tensor: np.ndarray | None
    scale: float
    error: str | None


def _prepare(source: Source, input_size: tuple[int, int]) -> _Prepared:
    try:
        image = source.load()
    except UserError as exc:
        return _Prepared(source.key, None, None, 0.0, str(exc))
    tensor, scale = preprocess_image(image, input_size)
    return _Prepared(source.key, image, tensor, scale, None)


def _failed(item: _Prepared) -> ImageResult:
    empty = np.zeros((0,), np.float32)
    return ImageResult(item.key, None, np.zeros((0, 4), np.float32), empty, empty.astype(np.int32), item.error)


def _prepared_in_order(sources: Iterable[Source], input_size: tuple[int, int], workers: int,
                       prefetch: int) -> Iterator[_Prepared]:
    """Decode + preprocess on ``workers`` threads, at most ``prefetch`` images ahead of the consumer."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effdet-preprocess") as pool:
        pending: collections.deque[Future[_Prepared]] = collections.deque()
        for source in sources:
            pending.append(pool.submit(_prepare, source, input_size))
            if len(pending) >= prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _run_batch(engine: Engine, batch: list[_Prepared], keep_images: bool) -> list[ImageResult]:
    tensors = np.stack([item.tensor for item in batch])
    scales = np.asarray([item.scale for item in batch], np.float32)
    detections = engine.run_scaled(tensors, scales, [item.image.shape[:2] for item in batch])
    results = []
    for index, item in enumerate(batch):
        boxes, scores, classes = detections.per_image(index)
        results.append(ImageResult(item.key, item.image if keep_images else None, boxes, scores, classes))
    return results


def infer_batches(
    engine: Engine,
    sources: Iterable[Source],
    batch_size: int,
    *,
    workers: int = 2,
    keep_images: bool = True,
) -> Iterator[list[ImageResult]]:
    """Yield the results of each batch (failed images included, in input order); the last batch may be short."""
    if batch_size < 1:
        raise UserError(f"batch size {batch_size} is not allowed; use 1 or more")
    batch: list[_Prepared] = []
    failed: list[ImageResult] = []
    prefetch = 2 * batch_size + workers
    for item in _prepared_in_order(sources, tuple(engine.input_size), workers, prefetch):
        if item.error is not None:
            failed.append(_failed(item))
            continue
        batch.append(item)
        if len(batch) == batch_size:
            yield failed + _run_batch(engine, batch, keep_images)
            batch, failed = [], []
    if batch or failed:
        yield failed + (_run_batch(engine, batch, keep_images) if batch else [])
