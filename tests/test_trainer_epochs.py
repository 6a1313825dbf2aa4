"""trainer/epochs.py: what the detector's and the classifier's training loops share."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from effdet_rt.errors import UserError
from effdet_rt.trainer.epochs import EpochHistory, require_finite_loss


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
