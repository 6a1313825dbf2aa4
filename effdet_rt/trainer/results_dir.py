"""The results folder of a training run: made and checked before anything runs, cleaned of what a killed run left
half-written, and removed again when set-up fails before the first step."""

from __future__ import annotations

import os
import re
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


# what utils.atomic names the temporary file of a write to <name>: ".<name>.<random letters and digits>.tmp"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]+\.tmp$")
# the suffixes of the files a training run writes into its results dir (checkpoints, chart PNGs and their JSON data,
# the spec it ran with)
RUN_OUTPUT_SUFFIXES = (".edrt", ".json", ".png", ".yaml")


def remove_interrupted_writes(results: Path, log: Callable[[str], None]) -> None:
    """Delete the temporary files of writes a killed run left behind (a checkpoint's, or a chart's and its data's):
    they never replaced the file they were for, so resuming ignores them anyway."""
    for stale in results.glob(".*.tmp"):
        match = _TEMPORARY.match(stale.name)
        if not match or not match["name"].endswith(RUN_OUTPUT_SUFFIXES) or not stale.is_file():
            continue
        try:
            stale.unlink()
        except OSError:
            continue
        what = "checkpoint" if match["name"].endswith(".edrt") else match["name"]
        log(f"removed {stale.name}, left by an interrupted {what} write")


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
