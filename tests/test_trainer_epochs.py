"""trainer/epochs.py: what the detector's and the classifier's training loops share."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from effdet_rt.errors import UserError
from effdet_rt.trainer.epochs import EpochHistory, EpochRun, require_finite_loss


def test_epoch_history_survives_the_checkpoint_metadata():
    history = EpochHistory()
    history.add(1, {"loss": 0.5, "accuracy": 0.25})
    history.add(2, {"loss": 0.25, "accuracy": 0.5})
    stored = history.as_metadata()
    assert stored == {"epochs": [1, 2], "loss": [0.5, 0.25], "accuracy": [0.25, 0.5]}
    assert EpochHistory.from_metadata(stored) == history
    assert stored == {"epochs": [1, 2], "loss": [0.5, 0.25], "accuracy": [0.25, 0.5]}  # not consumed
    assert EpochHistory.from_metadata({}) == EpochHistory()


def test_a_non_finite_loss_stops_naming_the_last_checkpoint_and_the_tasks_field():
    require_finite_loss(1.5, 3, 1, None, "train.lr_config.learning_rate")
    with pytest.raises(UserError) as caught:
        require_finite_loss(math.nan, 7, 2, None, "train.lr_config.learning_rate")
    assert str(caught.value) == ("loss became nan at step 7 (epoch 2); training stopped and no checkpoint was "
                                 "written yet; lower train.lr_config.learning_rate or check the data")
    with pytest.raises(UserError) as caught:
        require_finite_loss(math.inf, 12, 3, Path("r/d0_002.edrt"), "train.lr_schedule.learning_rate")
    assert str(caught.value) == ("loss became inf at step 12 (epoch 3); training stopped and the last good "
                                 "checkpoint is r/d0_002.edrt; lower train.lr_schedule.learning_rate or check the data")


class _Log:
    """TrainingLog's interface, recording (no TensorBoard)."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []
        self.epochs: list[tuple[int, dict]] = []

    def message(self, text, status="RUNNING"):
        self.lines.append((status, text))

    def already_finished(self, checkpoint):
        self.message(f"training already finished ({checkpoint.name}); nothing to do", "SUCCESS")

    def out_of_time(self, max_seconds, epoch):
        self.message(f"time budget of {max_seconds:.0f} s used up after epoch {epoch}; stopping")

    def finished(self, checkpoint):
        self.message(f"training finished; last checkpoint {checkpoint}", "SUCCESS")

    def scalars(self, step, values):
        pass

    def epoch_end(self, epoch, num_epochs, step, values, message=None, fields=None):
        self.epochs.append((epoch, dict(values)))


class _Task(EpochRun):
    """A task of two steps per epoch whose losses and figures are known, on the EpochRun loop."""

    learning_rate_field = "train.rate"
    steps_per_epoch, checkpoint_interval = 2, 2

    def __init__(self, num_epochs, losses, first=1, finished=False):
        super().__init__()
        self.num_epochs, self.losses, self.first = num_epochs, iter(losses), first
        self.log, self.echoed, self.saved, self.closed = _Log(), [], [], False
        self.optimizer = type("Optimizer", (), {"learning_rate": 0.5})()
        if finished:
            self.last_checkpoint = Path(f"r/m_{num_epochs:03d}.edrt")

    def prepare(self):
        return self.first

    def opening_line(self):
        return "training the test task"

    def start_steps(self, first_epoch):
        def batches():
            try:
                while True:
                    yield None
            finally:
                self.closed = True
        self.echo = self.echoed.append
        return batches()

    def train_on(self, batch):
        loss = next(self.losses)
        if loss == "interrupt":
            raise KeyboardInterrupt
        return loss, {"hits": 1.0}

    def epoch_values(self, figures):
        return {"accuracy": sum(figures["hits"]) / (2 * len(figures["hits"]))}

    def save(self, epoch, step):
        self.last_checkpoint = Path(f"r/m_{epoch:03d}.edrt")
        self.saved.append((epoch, step))
        return self.last_checkpoint

    def write_curves(self):
        pass


def test_the_epoch_loop_averages_saves_at_the_interval_and_closes_its_batches():
    task = _Task(3, [1.0, 3.0, 2.0, 2.0, 0.5, 0.25])
    assert task.run(None) == Path("r/m_003.edrt")
    assert task.saved == [(2, 4), (3, 6)] and task.closed  # every 2 epochs, and the last
    assert task.history.epochs == [1, 2, 3] and task.history.values["loss"] == [2.0, 2.0, 0.375]
    assert task.echoed[0] == "epoch 1/3: loss 2.0000, accuracy 0.5000"
    assert task.log.lines[0] == ("RUNNING", "training the test task")
    assert task.log.lines[-1] == ("SUCCESS", "training finished; last checkpoint r/m_003.edrt")


def test_the_epoch_loop_resumes_stops_on_a_bad_loss_and_on_ctrl_c():
    from effdet_rt.errors import TrainingInterrupted

    resumed = _Task(3, [1.0, 1.0], first=3)
    assert resumed.run(None) == Path("r/m_003.edrt") and resumed.saved == [(3, 6)]
    done = _Task(3, [], first=4, finished=True)
    assert done.run(None) == Path("r/m_003.edrt")
    assert done.log.lines == [("SUCCESS", "training already finished (m_003.edrt); nothing to do")]
    diverged = _Task(3, [1.0, 1.0, 1.0, 1.0, math.nan])
    with pytest.raises(UserError, match=r"^loss became nan at step 5 \(epoch 3\); training stopped and the last good "
                                        r"checkpoint is r/m_002.edrt; lower train.rate"):
        diverged.run(None)
    assert diverged.closed
    stopped = _Task(3, [1.0, 1.0, "interrupt"])
    with pytest.raises(TrainingInterrupted, match="training interrupted at step 2; no checkpoint was written;"):
        stopped.run(None)
    assert stopped.log.lines[-1] == ("INTERRUPTED", "interrupted at step 2; no checkpoint was written")
