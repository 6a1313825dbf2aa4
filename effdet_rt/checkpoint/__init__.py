"""Encrypted ``.edrt`` checkpoints (see archive.py for the file format) and Keras weight helpers."""

from effdet_rt.checkpoint.archive import (
    CHECKPOINT_SUFFIX,
    Checkpoint,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from effdet_rt.checkpoint.keys import KEY_ENV_VAR, resolve_key
from effdet_rt.checkpoint.weights import LoadReport, assign_weights, model_weights

__all__ = [
    "CHECKPOINT_SUFFIX",
    "KEY_ENV_VAR",
    "Checkpoint",
    "LoadReport",
    "assign_weights",
    "load_checkpoint",
    "model_weights",
    "read_metadata",
    "resolve_key",
    "save_checkpoint",
]
