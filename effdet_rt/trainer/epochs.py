"""What every task's training loop shares around its own steps: the per-epoch values a checkpoint carries (for a
resumed run's curves), the stop on a loss that is no longer a number, and `EpochRun`, the epoch-by-epoch loop a
task plugs its network, batches and checkpoints into (the detector's own loop, trainer/loop.py, is step-based for
its multi-worker resume)."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effdet_rt.errors import TrainingInterrupted, UserError
from effdet_rt.utils.charts import RedrawClock
from effdet_rt.utils.status import TrainingProgress


@dataclass
class EpochHistory:
    """One value per epoch for each named figure (loss, accuracy, ...), stored in each checkpoint's metadata."""

    epochs: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, epoch: int, values: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for name, value in values.items():
            self.values.setdefault(name, []).append(float(value))

    def as_metadata(self) -> dict[str, Any]:
        return {"epochs": self.epochs, **self.values}

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> EpochHistory:
        data = dict(data or {})
        return cls(list(data.pop("epochs", [])), {k: list(v) for k, v in data.items()})


def require_finite_loss(loss: float, step: int, epoch: int, last_checkpoint: Path | None,
                        learning_rate_field: str) -> None:
    """Stop the run on a NaN or infinite loss, saying which checkpoint is the last good one and which spec field
    (``learning_rate_field``, the task's) to lower."""
    if math.isfinite(loss):
        return
    kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
    raise UserError(f"loss became {loss} at step {step} (epoch {epoch}); training stopped and {kept}; lower "
                    f"{learning_rate_field} or check the data")


class EpochRun(abc.ABC):
    """A training run taken epoch by epoch: the loop, its progress and time budget, the per-epoch figures, status
    and TensorBoard lines, checkpoints every ``checkpoint_interval`` epochs, and a clean stop on Ctrl-C. A task
    subclasses it with its network, batches, step and checkpoint contents (the hooks below)."""

    log: Any  # trainer.callbacks.TrainingLog
    echo: Callable[[str], None]
    optimizer: Any  # a tf_keras optimizer (its learning rate is logged each epoch)
    num_epochs: int
    steps_per_epoch: int
    checkpoint_interval: int
    learning_rate_field: str  # the spec field a diverging run should lower

    def __init__(self) -> None:
        self.history = EpochHistory()
        self.last_checkpoint: Path | None = None
        self.progress: TrainingProgress | None = None
        self.redraw = RedrawClock()

    # ------------------------------------------------------------ the task's hooks

    @abc.abstractmethod
    def prepare(self) -> int:
        """Build the network and optimizer, resume or load the starting weights; the first epoch to run."""

    @abc.abstractmethod
    def opening_line(self) -> str:
        """What the run says before its first step."""

    @abc.abstractmethod
    def start_steps(self, first_epoch: int) -> Iterator[Any]:
        """Compile the steps and return the batches from ``first_epoch`` on (closed when the run ends)."""

    @abc.abstractmethod
    def train_on(self, batch: Any) -> tuple[float, dict[str, float]]:
        """One step on ``batch``: its loss and the other figures the epoch summary is made of."""

    @abc.abstractmethod
    def epoch_values(self, figures: dict[str, list[float]]) -> dict[str, float]:
        """The epoch's figures (besides its mean loss) from each step's."""

    def validate(self) -> dict[str, float]:
        return {}

    @abc.abstractmethod
    def save(self, epoch: int, step: int) -> Path:
        """Write the checkpoint of ``epoch`` and set ``last_checkpoint``."""

    @abc.abstractmethod
    def write_curves(self) -> None:
        """Charts of ``history``: after the first epoch, with every checkpoint, and between them as
        ``utils.charts.RedrawClock`` allows."""

    # ------------------------------------------------------------ the loop

    def run(self, max_seconds: float | None) -> Path:
        first = self.prepare()
        num_epochs, steps_per_epoch = self.num_epochs, self.steps_per_epoch
        if first > num_epochs and self.last_checkpoint is not None:
            self.log.already_finished(self.last_checkpoint)
            return self.last_checkpoint
        self.log.message(self.opening_line())
        batches = self.start_steps(first)
        step = (first - 1) * steps_per_epoch
        try:
            with TrainingProgress(steps_per_epoch * num_epochs, steps_per_epoch, num_epochs, step,
                                  max_seconds) as progress:
                self.progress = progress
                for epoch in range(first, num_epochs + 1):
                    losses: list[float] = []
                    figures: dict[str, list[float]] = {}
                    for _ in range(steps_per_epoch):
                        loss, values = self.train_on(next(batches))
                        step += 1
                        require_finite_loss(loss, step, epoch, self.last_checkpoint, self.learning_rate_field)
                        losses.append(loss)
                        for name, value in values.items():
                            figures.setdefault(name, []).append(value)
                        progress.update(step, f"loss {loss:.4f}")
                    out_of_time = progress.out_of_time()
                    self.end_epoch(epoch, step, {"loss": sum(losses) / len(losses), **self.epoch_values(figures)},
                                   force_save=out_of_time)
                    if out_of_time and epoch < num_epochs:
                        self.log.out_of_time(max_seconds, epoch)
                        break
        except KeyboardInterrupt:
            kept = f"the last checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written"
            self.log.message(f"interrupted at step {step}; {kept}", "INTERRUPTED")
            raise TrainingInterrupted(f"training interrupted at step {step}; {kept}; run train again to resume "
                                      "from it") from None
        finally:
            batches.close()
        self.log.finished(self.last_checkpoint)
        assert self.last_checkpoint is not None
        return self.last_checkpoint

    def end_epoch(self, epoch: int, step: int, values: dict[str, float], force_save: bool) -> None:
        values = {**values, **self.validate()}
        self.history.add(epoch, values)
        self.log.scalars(step, {"train/learning_rate": self.learning_rate()})
        progress = self.progress
        budgeted = progress is not None and progress.budget is not None
        self.log.epoch_end(epoch, self.num_epochs, step, values,
                           message=f"epoch {epoch} done; {progress.describe()}" if budgeted else None,
                           fields=progress.fields() if progress else None)
        self.echo(f"epoch {epoch}/{self.num_epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        saved = epoch % self.checkpoint_interval == 0 or epoch == self.num_epochs or force_save
        self.redraw.draw_if_due(self.write_curves, now=saved)
        if saved:
            self.save(epoch, step)

    def learning_rate(self) -> float:
        rate = self.optimizer.learning_rate
        return float(rate(self.optimizer.iterations)) if callable(rate) else float(rate)
