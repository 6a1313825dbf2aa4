"""status.json (JSON lines, TAO's fields) and rich progress bars for long work."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Iterable, Iterator
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


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TrainingProgress:
    """The training bar and the matching status.json fields, true to what ends the run.

    Under a time budget the run ends when the budget does (after that epoch), so the bar fills with elapsed time
    against the budget and names the epochs done; without one, it counts steps to the last epoch with an ETA from
    this run's pace. ``clock`` is injectable so tests can drive it.
    """

    def __init__(self, total_steps: int, steps_per_epoch: int, num_epochs: int, first_step: int,
                 budget_seconds: float | None, clock: Callable[[], float] | None = None):
        import time

        self.total_steps, self.steps_per_epoch, self.num_epochs = total_steps, steps_per_epoch, num_epochs
        self.first_step, self.step = first_step, first_step
        self.budget = budget_seconds
        self.clock = clock or time.monotonic
        self.started = self.clock()
        self.progress: Progress | None = None
        self.task: Any = None

    def elapsed(self) -> float:
        return self.clock() - self.started

    def out_of_time(self) -> bool:
        return self.budget is not None and self.elapsed() >= self.budget

    def epochs_done(self) -> int:
        return self.step // self.steps_per_epoch

    def eta_seconds(self) -> float | None:
        done = self.step - self.first_step
        if done <= 0:
            return None
        return self.elapsed() / done * (self.total_steps - self.step)

    def describe(self) -> str:
        """One line: what the bar shows, for status.json and logs."""
        epochs = self.epochs_done()
        if self.budget is not None:
            return (f"{_clock(self.elapsed())} of the {_clock(self.budget)} time budget, {epochs} epoch(s) done "
                    f"(step {self.step})")
        eta = self.eta_seconds()
        return (f"epoch {epochs}/{self.num_epochs}, step {self.step}/{self.total_steps}, "
                f"eta {_clock(eta) if eta is not None else 'unknown'}")

    def fields(self) -> dict[str, Any]:
        """status.json fields for the same numbers."""
        record: dict[str, Any] = {"cur_iter": self.step, "elapsed_s": round(self.elapsed(), 1)}
        if self.budget is not None:
            record["time_budget_s"] = round(float(self.budget), 1)
        else:
            eta = self.eta_seconds()
            record["max_iter"] = self.total_steps
            record["eta_s"] = None if eta is None else round(eta, 1)
        return record

    def __enter__(self) -> TrainingProgress:
        if self.budget is not None:
            columns = [TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[clock]}"),
                       TextColumn("{task.fields[info]}")]
            total, completed = float(self.budget), min(self.elapsed(), float(self.budget))
        else:
            columns = [TextColumn("[bold]train"), BarColumn(), TextColumn("step"), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
            total, completed = self.total_steps, self.step
        self.progress = Progress(*columns, console=console, disable=os.environ.get("EFFDET_NO_PROGRESS") == "1")
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=total, completed=completed, info="", clock="")
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.progress is not None
        self.progress.__exit__(*exc)

    def update(self, step: int, note: str = "") -> None:
        self.step = step
        if self.progress is None:
            return
        epochs = f"{self.epochs_done()} epoch(s) done"
        if self.budget is not None:
            elapsed = self.elapsed()
            self.progress.update(self.task, completed=min(elapsed, self.budget), info=f"{epochs}  {note}".strip(),
                                 clock=f"{_clock(elapsed)} / {_clock(self.budget)}")
        else:
            self.progress.update(self.task, completed=step, info=f"{epochs}/{self.num_epochs}  {note}".strip())
