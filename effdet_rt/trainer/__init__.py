"""Training: losses, learning-rate schedules, EMA, the loop and its callbacks."""

from effdet_rt.trainer.loop import train

__all__ = ["train"]
