"""The results folder of a training run: made and checked before anything runs, cleaned of what a killed run left
half-written, and removed again when set-up fails before the first step."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from effdet_rt.errors import UserError


def prepare_results_dir(results_dir: str | os.PathLike) -> Path:
    path = Path(results_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot create the results dir ({exc.strerror}); pass a writable -r/--results-dir") from exc
    if not os.access(path, os.W_OK):
        raise UserError(f"{path}: results dir is not writable; pass a writable -r/--results-dir")
    return path


def remove_interrupted_writes(results: Path, log: Callable[[str], None]) -> None:
    """Delete the temporary files of checkpoint writes a killed run left behind (``.name.edrt.XXXX.tmp``, named so
    by utils.atomic); they never became checkpoints, so resuming ignores them anyway."""
    for stale in results.glob(".*.edrt.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            continue
        log(f"removed {stale.name}, left by an interrupted checkpoint write")


def first_missing_folder(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what creating it would add), or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def remove_setup_leftovers(created: Path) -> None:
    """Remove the folders this run created for its results when set-up failed before training: they hold only the
    status.json and empty TensorBoard folder of a run that never started."""
    import shutil

    if not any(created.rglob("*.edrt")):
        shutil.rmtree(created, ignore_errors=True)
