"""Any task's model over a list of image files, in fixed chunks of the file list.

Each chunk of ``batch_size`` files is read on worker threads and its readable files form one batch: an unreadable
file leaves its batch short rather than pulling the next file in, so the other files share a batch with the same
files as in a run where it was readable (an INT8 engine's outputs can depend on which images share a batch). The
detector's pipeline (infer/runner.py `infer_batches`) fills each batch instead and keeps its own batching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from effdet_rt.data.preprocess import IMAGE_SUFFIXES
from effdet_rt.errors import DataError
from effdet_rt.utils.status import progress_bar


def image_files(folder: Path) -> list[Path]:
    """Every image under ``folder`` (recursively), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_inputs(target: str | Path) -> list[Path]:
    """A single image, or every image under a folder (recursively, sorted)."""
    target = Path(target)
    if target.is_file():
        if target.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{target}: not an image file ({'/'.join(IMAGE_SUFFIXES)})")
        return [target]
    if not target.is_dir():
        raise DataError(f"{target}: no such image or folder; pass an image file or a folder of images")
    files = image_files(target)
    if not files:
        raise DataError(f"{target}: holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


def fixed_batches(paths: Sequence[Path], load: Callable[[Path], np.ndarray], batch_size: int, workers: int,
                  on_error: Callable[[Path, str], None] | None = None) -> Iterator[tuple[list[int], np.ndarray]]:
    """(indices, images) of each chunk of ``batch_size`` files, read by ``load``; a file ``load`` cannot read
    (DataError) goes to ``on_error`` (else the error is raised)."""

    def read(path: Path):
        try:
            return load(path)
        except DataError as exc:
            if on_error is None:
                raise
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = list(range(start, min(start + batch_size, len(paths))))
            results = list(pool.map(read, [paths[i] for i in chunk]))
            kept = []
            for i, result in zip(chunk, results, strict=True):
                if isinstance(result, DataError):
                    on_error(paths[i], str(result))
                else:
                    kept.append((i, result))
            if kept:
                yield [i for i, _ in kept], np.stack([image for _, image in kept])


@dataclass
class FileOutputs:
    paths: list[Path]  # the files read, in list order
    outputs: np.ndarray  # (N, width), rows in `paths` order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) of the files that could not be read


def run_files(run: Callable[[np.ndarray], np.ndarray], paths: list[Path], load: Callable[[Path], np.ndarray],
              batch_size: int, workers: int, width: int, description: str, info: str) -> FileOutputs:
    """``run`` on the files in fixed chunks (`fixed_batches`) with a progress bar; unreadable files are skipped
    and listed. ``width``: the size of one output row (for a run in which no file could be read)."""
    skipped: list[tuple[str, str]] = []
    kept: list[int] = []
    rows: list[np.ndarray] = []
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(paths), info=info)
        for indices, images in fixed_batches(paths, load, batch_size, workers,
                                             on_error=lambda p, why: skipped.append((str(p), why))):
            rows.append(run(images))
            kept.extend(indices)
            progress.update(task, completed=len(kept) + len(skipped))
    outputs = np.concatenate(rows) if rows else np.zeros((0, width), np.float32)
    return FileOutputs([paths[i] for i in kept], outputs, skipped)
