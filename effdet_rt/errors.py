"""Exceptions that carry a message meant for the user.

Library code raises these; the CLI prints ``error: <message>`` and exits 2 (no traceback unless --debug).
"""


class UserError(Exception):
    """A mistake the user can fix: a bad path, spec value, annotation, key or model file."""

    exit_code = 2


class SpecError(UserError):
    """A spec file or override that does not validate."""


class DataError(UserError):
    """Input data (images, annotations, TFRecords) that cannot be used."""


class CheckpointError(UserError):
    """A checkpoint that cannot be opened: wrong key, truncated or foreign file."""


class ModelFileError(UserError):
    """A model file (ONNX, engine) that is not what the command expects."""


class TrainingInterrupted(Exception):
    """Raised when training is stopped by Ctrl-C after the checkpoint was saved (exit 130)."""

    exit_code = 130
