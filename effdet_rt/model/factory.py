"""Build the detector, its anchors and NMS settings from an experiment spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from effdet_rt.model.anchors import AnchorConfig, generate_anchors
from effdet_rt.model.configs import get_config
from effdet_rt.model.pruned import apply_filter_counts


@dataclass(frozen=True)
class DetectorSetup:
    """Everything that wraps the raw network: its size, class count and anchors."""

    name: str
    input_size: tuple[int, int]  # (H, W)
    num_classes: int  # real classes (spec's dataset.num_classes - 1)
    anchor_config: AnchorConfig

    @property
    def num_levels(self) -> int:
        return self.anchor_config.max_level - self.anchor_config.min_level + 1

    def anchors(self) -> np.ndarray:
        return generate_anchors(self.input_size, self.anchor_config)


def setup_from_spec(spec: Any) -> DetectorSetup:
    from effdet_rt.model.efficientdet import real_num_classes

    m = spec.model
    return DetectorSetup(get_config(m.name).name, m.input_size, real_num_classes(spec.dataset.num_classes), m.anchor_config())


def build_model_from_spec(spec: Any, setup: DetectorSetup | None = None, filter_counts: dict[str, int] | None = None):
    """The raw network (per-level class and box outputs) for the spec; ``filter_counts`` (a pruned checkpoint's
    metadata, see effdet_rt.model.pruned) shrinks the named layers."""
    from effdet_rt.model.efficientdet import build_efficientdet

    setup = setup or setup_from_spec(spec)
    model = build_efficientdet(
        setup.name,
        setup.num_classes,
        setup.input_size,
        num_anchors=setup.anchor_config.num_anchors,
        min_level=setup.anchor_config.min_level,
        max_level=setup.anchor_config.max_level,
        freeze_blocks=tuple(spec.model.freeze_blocks),
        freeze_bn=bool(spec.model.freeze_bn),
    )
    if filter_counts:

        model = apply_filter_counts(model, filter_counts)
    if spec.train.qat:  # trained with fake-quant convs: so are its checkpoints, evaluation and export
        from effdet_rt.model.qat import quantize_model

        model = quantize_model(model)
    return model
