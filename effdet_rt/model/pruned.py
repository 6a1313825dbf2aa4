"""How a pruned network is described and rebuilt: a {layer name: filters} map stored in checkpoint metadata.

The builder makes the stock network and then clones it with those layers' ``filters`` changed, so the pruned
graph keeps exactly the stock topology (which the builder decides from the stock channel counts, e.g. whether a
BiFPN input needs a 1x1 resampling conv) while every channel count downstream follows from the smaller layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effdet_rt.errors import CheckpointError

FILTERS_KEY = "pruned_filters"


def filter_counts_from_metadata(metadata: Mapping[str, Any] | None, source: str = "checkpoint") -> dict[str, int]:
    """The pruned filter counts a checkpoint carries ({} for a model that was never pruned)."""
    raw = (metadata or {}).get(FILTERS_KEY) or {}
    if not isinstance(raw, Mapping) or not all(isinstance(v, int) and v > 0 for v in raw.values()):
        raise CheckpointError(f"{source}: damaged pruned-architecture record ({FILTERS_KEY!r} in its metadata); "
                              "prune the model again")
    return {str(name): int(count) for name, count in raw.items()}


def apply_filter_counts(model: Any, counts: Mapping[str, int] | None) -> Any:
    """``model`` rebuilt with fewer filters in the named Conv2D / SeparableConv2D layers (fresh weights)."""
    if not counts:
        return model
    import tf_keras as keras

    layers = {layer.name: layer for layer in model.layers}
    unknown = sorted(name for name in counts if name not in layers or not hasattr(layers[name], "filters"))
    if unknown:
        raise CheckpointError(f"the pruned architecture names layers this network has no filters in, e.g. "
                              f"{unknown[:3]}; rebuild with the spec the pruned model came from")

    def resized(layer: Any) -> Any:
        config = layer.get_config()
        if layer.name in counts:
            config["filters"] = int(counts[layer.name])
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=resized)
