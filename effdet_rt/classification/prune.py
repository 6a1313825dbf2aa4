"""`effdet-rt classification prune`: TAO's prune task on a classifier checkpoint, with the detector's pruner.

The classifier is opened as every classification command opens it (`engines.open_classifier_checkpoint`: its stored
spec, classes and, for a model pruned before, its filter counts); the channel groups, the filter choice and the
writing of the smaller checkpoint are `effdet_rt.prune`'s. The logits layer reads only the kept channels and keeps
its class count. The pruned .edrt keeps the metadata the classification commands read (task, classes, image
format), so evaluate, inference and export take it as they take a trained one, and `classification train` with it
as ``train.pretrained_model_path`` retrains the smaller network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from effdet_rt.prune.run import PruneSource, PruneSummary, prune_to_file, settings_from_spec

KEPT_METADATA = ("task", "model_name", "classes", "image_format")


def open_for_pruning(path: Path, key: str) -> PruneSource:
    from effdet_rt.classification.engines import open_classifier_checkpoint
    from effdet_rt.classification.model import passthrough_layers

    opened = open_classifier_checkpoint(path, key)
    metadata = opened.checkpoint.metadata
    kept = {name: metadata[name] for name in KEPT_METADATA if name in metadata}
    return PruneSource(opened.model, opened.filter_counts, opened.checkpoint.spec_yaml, kept, passthrough_layers())


def prune_classifier(spec: Any, *, key: str | None, log: Callable[[str], None] = print) -> PruneSummary:
    """Prune prune.model_path into prune.output_path with the spec's prune settings."""
    return prune_to_file(settings_from_spec(spec.prune), spec.prune.model_path, spec.prune.output_path, key=key,
                         spec_key=spec.key, load=open_for_pruning, fields=("prune.model_path", "prune.output_path"),
                         log=log)
