"""status.json (JSON lines, TAO's fields) and rich progress bars for long work."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True)


class StatusLogger:
    """Appends one JSON object per line to ``results_dir/status.json``, as TAO does."""

    def __init__(self, results_dir: str | os.PathLike | None, filename: str = "status.json"):
        self.path = Path(results_dir) / filename if results_dir else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, status: str, message: str, kpi: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        now = _dt.datetime.now()
        record: dict[str, Any] = {
            "date": f"{now.month}/{now.day}/{now.year}",
            "time": f"{now.hour}:{now.minute:02d}:{now.second:02d}",
            "status": status,
            "verbosity": "INFO",
            "message": message,
        }
        record.update(fields)
        if kpi:
            record["kpi"] = kpi
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=_to_jsonable) + "\n")
                handle.flush()
        return record


def _to_jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=os.environ.get("EFFDET_NO_PROGRESS") == "1",
    )


def progress_disabled() -> bool:
    return os.environ.get("EFFDET_NO_PROGRESS") == "1"


@contextmanager
def library_progress_hidden() -> Iterator[None]:
    """Under EFFDET_NO_PROGRESS=1, silence rich's global console for the duration: libraries that draw their own
    rich progress bars on it (NNCF's calibration) then draw nothing either."""
    import rich

    shared = rich.get_console()
    saved = shared.quiet
    shared.quiet = saved or progress_disabled()
    try:
        yield
    finally:
        shared.quiet = saved


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    with progress_bar() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)
