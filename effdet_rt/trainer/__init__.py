"""Training: losses, learning-rate schedules, EMA, anchor labelling, the loop and its callbacks."""
