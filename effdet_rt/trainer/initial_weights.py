"""The weights a run starts from: a pruned model's (its smaller architecture, loaded exactly) or train.checkpoint's
(our .edrt, or an automl checkpoint / Keras .h5 / EfficientNet-Lite .pth converted on the way in)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from effdet_rt.checkpoint import assign_weights, load_checkpoint, read_metadata
from effdet_rt.errors import CheckpointError
from effdet_rt.model.pruned import FILTERS_KEY, filter_counts_from_metadata
from effdet_rt.weights.pretrained import load_pretrained


def pruned_filter_counts(spec: Any, key: str) -> dict[str, int]:
    """The smaller filter counts of train.pruned_model_path ({} when training the stock architecture)."""
    if not spec.train.pruned_model_path:
        return {}

    path = spec.train.pruned_model_path
    return filter_counts_from_metadata(read_metadata(path, key), f"train.pruned_model_path {path}")


def load_initial_weights(model: Any, spec: Any, key: str, log: Callable[[str], None]) -> None:
    """train.pruned_model_path (exact architecture, built from its filter counts) or train.checkpoint (by layer
    name; class head skipped when its shape differs; the backbone must load whole)."""

    if spec.train.pruned_model_path:
        pruned = load_checkpoint(spec.train.pruned_model_path, key)
        try:
            report = assign_weights(model, pruned.weights, strict=True)
        except CheckpointError as exc:
            raise CheckpointError(f"train.pruned_model_path {spec.train.pruned_model_path}: {exc}") from None
        log(f"loaded pruned model {spec.train.pruned_model_path}: {report.summary()}")
        return
    if not spec.train.checkpoint:
        return

    if Path(spec.train.checkpoint).suffix.lower() == ".edrt" and read_metadata(spec.train.checkpoint, key).get(FILTERS_KEY):
        raise CheckpointError(f"train.checkpoint {spec.train.checkpoint} is a pruned model: pass it as "
                              "train.pruned_model_path, which builds its smaller architecture")
    # an .edrt, or an automl checkpoint / Keras .h5 converted on the fly
    log(load_pretrained(model, spec.train.checkpoint, key, spec.model.name))
