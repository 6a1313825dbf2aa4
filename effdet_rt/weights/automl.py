"""Read google/automl EfficientDet checkpoints (TF1 name-based) and rename their tensors onto our layers.

automl's released checkpoints hold every variable under its Keras name (``efficientnet-b0/blocks_3/conv2d/kernel``,
``fpn_cells/cell_0/fnode4/WSM_1``, ``class_net/class-2-bn-5/gamma``...) plus, for each trainable variable, an
``<name>/ExponentialMovingAverage`` copy. automl's own inference restores those averages, so they are what we
import; BatchNorm moving statistics are not trainable and have no average. Every tensor must find its place in our
model (or be optimizer bookkeeping we name and drop): an unknown tensor is an error, never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from effdet_rt.checkpoint.weights import LoadReport
from effdet_rt.errors import CheckpointError
from effdet_rt.model.configs import DETECTORS, DetectorConfig, get_config

EMA_SUFFIX = "/ExponentialMovingAverage"
# Training bookkeeping a checkpoint may carry besides the network: the step counter and optimizer slots.
BOOKKEEPING = re.compile(r"^global_step$|/(Momentum|Adam|Adam_1|RMSProp|RMSProp_1)$|^_CHECKPOINTABLE_OBJECT_GRAPH$")
NOT_AVERAGED = re.compile(r"/moving_(mean|variance)$")


@dataclass
class AutomlCheckpoint:
    """The network tensors of one automl checkpoint (EMA values where present) and what was done to read them."""

    path: Path
    tensors: dict[str, np.ndarray]
    notices: list[str] = field(default_factory=list)
    averaged: int = 0  # tensors whose ExponentialMovingAverage value was taken


@dataclass(frozen=True)
class AutomlArchitecture:
    """What the tensor names and shapes say about the network that wrote the checkpoint."""

    backbone: str
    fpn_num_filters: int
    fpn_cell_repeats: int
    box_class_repeats: int
    num_levels: int
    weight_method: str
    num_anchors: int
    num_classes: int

    def describe(self) -> str:
        return (f"backbone {self.backbone}, BiFPN {self.fpn_num_filters} channels x {self.fpn_cell_repeats} cells "
                f"({self.weight_method} fusion, {self.num_levels} levels), {self.box_class_repeats} head layers")

    def matches(self, cfg: DetectorConfig) -> bool:
        return (cfg.backbone, cfg.fpn_num_filters, cfg.fpn_cell_repeats, cfg.box_class_repeats,
                cfg.max_level - cfg.min_level + 1, cfg.weight_method) == (
            self.backbone, self.fpn_num_filters, self.fpn_cell_repeats, self.box_class_repeats,
            self.num_levels, self.weight_method)


# ---------------------------------------------------------------- reading


def checkpoint_prefix(path: str | Path) -> str:
    """The TF checkpoint prefix for a folder, a prefix, or one of its ``.index`` / ``.data-*`` files."""
    source = Path(path)
    if source.is_dir():
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(str(source))
        if latest:
            return latest
        indexes = sorted(source.glob("*.index"))
        if len(indexes) == 1:
            return str(indexes[0])[: -len(".index")]
        found = "no .index file" if not indexes else f"{len(indexes)} .index files"
        raise CheckpointError(f"{source}: folder holds {found}; pass the checkpoint's prefix (e.g. {source}/model)")
    text = str(source)
    match = re.match(r"^(.*)\.(index|data-\d{5}-of-\d{5})$", text)
    prefix = match.group(1) if match else text
    if not Path(prefix + ".index").is_file():
        raise CheckpointError(f"{source}: no TensorFlow checkpoint here ({prefix}.index does not exist); pass an "
                              "automl checkpoint folder, its prefix (.../model) or its model.index file")
    return prefix


def read_tf_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint by name."""
    import tensorflow as tf

    prefix = checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
        return {name: np.asarray(reader.get_tensor(name)) for name in names}
    except (tf.errors.OpError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable TensorFlow checkpoint ({first}); pass an automl "
                              "checkpoint folder or its model.index file") from None


def read_automl_checkpoint(path: str | Path) -> AutomlCheckpoint:
    """The network's tensors with EMA values where present; notices say what was dropped or fell back to raw."""
    everything = read_tf_checkpoint(path)
    network = {n: v for n, v in everything.items() if not n.endswith(EMA_SUFFIX) and not BOOKKEEPING.search(n)}
    if not any(re.match(r"^efficientnet-[a-z0-9]+/stem/", n) for n in network):
        raise CheckpointError(f"{path}: a TensorFlow checkpoint but not an automl EfficientDet one (no "
                              "efficientnet-*/stem/ tensors); pass a checkpoint written by google/automl")
    stray = sorted(n[: -len(EMA_SUFFIX)] for n in everything if n.endswith(EMA_SUFFIX)
                   and n[: -len(EMA_SUFFIX)] not in network)
    if stray:
        raise CheckpointError(f"{path}: moving averages without their variable: {stray[:5]}; the checkpoint is "
                              "damaged or not automl's")
    averaged = [n for n in network if not NOT_AVERAGED.search(n)]
    with_ema = [n for n in averaged if n + EMA_SUFFIX in everything]
    tensors = {n: everything[n + EMA_SUFFIX] if n + EMA_SUFFIX in everything else v for n, v in network.items()}
    notices = []
    if not with_ema:
        notices.append("no ExponentialMovingAverage copies in the checkpoint: imported the raw weights")
    elif len(with_ema) < len(averaged):
        raw = sorted(set(averaged) - set(with_ema))
        notices.append(f"imported ExponentialMovingAverage values for {len(with_ema)} tensors; {len(raw)} have no "
                       f"average and were imported raw, e.g. {raw[:3]}")
    else:
        notices.append(f"imported the ExponentialMovingAverage values of all {len(with_ema)} trainable tensors")
    dropped = sorted(n for n in everything if BOOKKEEPING.search(n))
    if dropped:
        notices.append(f"dropped {len(dropped)} training-state tensors (step counter, optimizer slots)")
    return AutomlCheckpoint(Path(path), tensors, notices, len(with_ema))


# ---------------------------------------------------------------- which model


def _count(pattern: str, names: list[str]) -> int:
    return len({m.group(1) for n in names if (m := re.match(pattern, n))})


def architecture_of(tensors: dict[str, np.ndarray]) -> AutomlArchitecture:
    names = sorted(tensors)
    backbone = next(m.group(1) for n in names if (m := re.match(r"^(efficientnet-[a-z0-9]+)/stem/", n)))
    try:
        filters = int(tensors["fpn_cells/cell_0/fnode0/" + _op_after(names, 0, 0) + "/conv/pointwise_kernel"].shape[-1])
        box_bias = tensors["box_net/box-predict/bias"].shape[0]
        class_bias = tensors["class_net/class-predict/bias"].shape[0]
    except (KeyError, StopIteration) as exc:
        raise CheckpointError(f"automl checkpoint lacks a BiFPN or prediction-head tensor ({exc}); it is not a "
                              "whole EfficientDet") from None
    nodes = _count(r"^fpn_cells/cell_0/fnode(\d+)/", names)
    num_anchors = box_bias // 4
    return AutomlArchitecture(
        backbone=backbone,
        fpn_num_filters=filters,
        fpn_cell_repeats=_count(r"^fpn_cells/cell_(\d+)/", names),
        box_class_repeats=_count(r"^class_net/class-(\d+)/", names),
        num_levels=nodes // 2 + 1,
        weight_method="fastattn" if any(re.search(r"/fnode\d+/WSM(_\d+)?$", n) for n in names) else "sum",
        num_anchors=num_anchors,
        num_classes=class_bias // max(1, num_anchors),
    )


def _op_after(names: list[str], cell: int, node: int) -> str:
    return next(m.group(1) for n in names
                if (m := re.match(rf"^fpn_cells/cell_{cell}/fnode{node}/(op_after_combine\d+)/", n)))


def identify_model(arch: AutomlArchitecture, requested: str | None, source: str) -> DetectorConfig:
    """The model config the checkpoint fits; ``requested`` (a model name) must be one of them."""

    fitting = [cfg for cfg in DETECTORS.values() if arch.matches(cfg)]
    names = " / ".join(cfg.name for cfg in fitting)
    if requested is not None:
        cfg = get_config(requested)
        if cfg in fitting:
            return cfg
        if fitting:
            raise CheckpointError(f"{source}: an {names} checkpoint ({arch.describe()}), not {cfg.name}; pass "
                                  f"-m {fitting[0].name} or a checkpoint of the size you want")
        raise CheckpointError(f"{source}: a checkpoint of no EfficientDet size we know ({arch.describe()}); it "
                              f"cannot be loaded into {cfg.name}")
    if not fitting:
        raise CheckpointError(f"{source}: no EfficientDet size has this architecture ({arch.describe()})")
    if len(fitting) > 1:
        raise CheckpointError(f"{source}: the weights fit {names} alike ({arch.describe()}; they differ in input "
                              f"size and anchors only); choose one with -m/--model")
    return fitting[0]


# ---------------------------------------------------------------- renaming


def _backbone_renamer(cfg: DetectorConfig) -> Callable[[str], str | None]:
    """automl's backbone names -> ours; blocks are numbered over the whole network in automl, per stage in ours."""
    from effdet_rt.model.efficientnet import scaled_blocks

    blocks = scaled_blocks(cfg.backbone_config)
    backbone = re.escape(cfg.backbone)

    def rename(name: str) -> str | None:
        if m := re.match(rf"^{backbone}/stem/(conv2d|(?:tpu_)?batch_normalization)/(\w+)$", name):
            return f"stem_{'conv' if m.group(1) == 'conv2d' else 'bn'}/{m.group(2)}"
        m = re.match(rf"^{backbone}/blocks_(\d+)/(.+)/(\w+)$", name)
        if not m or int(m.group(1)) >= len(blocks):
            return None
        block = blocks[int(m.group(1))]
        expands = block.expand_ratio != 1
        convs = ["expand_conv", "project_conv"] if expands else ["project_conv"]
        norms = ["expand_bn", "dw_bn", "project_bn"] if expands else ["dw_bn", "project_bn"]
        layer = _block_layer(m.group(2), convs, norms)
        if layer is None:
            return None
        return f"{block.prefix}{layer}/{m.group(3)}"

    return rename


BLOCK_LAYER = re.compile(r"^(conv2d|(?:tpu_)?batch_normalization)(?:_(\d+))?$")
FIXED_BLOCK_LAYERS = {"depthwise_conv2d": "dwconv", "se/conv2d": "se_reduce", "se/conv2d_1": "se_expand"}


def _block_layer(automl_layer: str, convs: list[str], norms: list[str]) -> str | None:
    """automl numbers a block's 1x1 convs and BatchNorms in creation order (conv2d, conv2d_1...)."""
    if automl_layer in FIXED_BLOCK_LAYERS:
        return FIXED_BLOCK_LAYERS[automl_layer]
    m = BLOCK_LAYER.match(automl_layer)
    if not m:
        return None
    table = convs if m.group(1) == "conv2d" else norms
    index = int(m.group(2) or 0)
    return table[index] if index < len(table) else None


def _fpn_renamer(cfg: DetectorConfig) -> Callable[[str], str | None]:
    num_levels = cfg.max_level - cfg.min_level + 1

    def rename(name: str) -> str | None:
        if m := re.match(r"^resample_p(\d+)/(conv2d|bn)/(\w+)$", name):
            level = int(m.group(1))
            return f"p{level}_from_p{level - 1}_{'conv' if m.group(2) == 'conv2d' else 'bn'}/{m.group(3)}"
        m = re.match(r"^fpn_cells/cell_(\d+)/fnode(\d+)/(.+)$", name)
        if not m:
            return None
        cell, node, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        p = f"fpn_cell{cell}_node{node}"
        if r := re.match(r"^op_after_combine(\d+)/(conv|bn)/(\w+)$", rest):
            return f"{p}_{r.group(2)}/{r.group(3)}" if int(r.group(1)) == num_levels + node else None
        if r := re.match(r"^resample_0_(\d+)_(\d+)/(conv2d|bn)/(\w+)$", rest):
            if int(r.group(2)) != num_levels + node:
                return None
            return f"{p}_in{r.group(1)}_{'conv' if r.group(3) == 'conv2d' else 'bn'}/{r.group(4)}"
        return None

    return rename


def _head_renamer(name: str) -> str | None:
    if m := re.match(r"^(class|box)_net/(class|box)-(\d+)-bn-(\d+)/(\w+)$", name):
        return f"{m.group(1)}_net_bn{m.group(3)}_p{m.group(4)}/{m.group(5)}" if m.group(1) == m.group(2) else None
    if m := re.match(r"^(class|box)_net/(class|box)-(\d+|predict)/(\w+)$", name):
        if m.group(1) != m.group(2):
            return None
        layer = "predict" if m.group(3) == "predict" else f"conv{m.group(3)}"
        return f"{m.group(1)}_net_{layer}/{m.group(4)}"
    return None


FUSION_WEIGHT = re.compile(r"^fpn_cells/cell_(\d+)/fnode(\d+)/WSM(?:_(\d+))?$")


def to_our_names(tensors: dict[str, np.ndarray], cfg: DetectorConfig, source: str) -> dict[str, np.ndarray]:
    """Rename every automl tensor onto our variable names; an unknown tensor is an error naming it."""
    renamers = (_backbone_renamer(cfg), _fpn_renamer(cfg), _head_renamer)
    ours: dict[str, np.ndarray] = {}
    fusion: dict[tuple[int, int], dict[int, float]] = {}
    unknown: list[str] = []
    for name, value in tensors.items():
        if m := FUSION_WEIGHT.match(name):
            slot = int(m.group(3) or 0)
            fusion.setdefault((int(m.group(1)), int(m.group(2))), {})[slot] = float(value)
            continue
        target = next((t for rename in renamers if (t := rename(name)) is not None), None)
        if target is None:
            unknown.append(name)
        else:
            ours[target] = value
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} automl tensor(s) have no place in our {cfg.name}: "
                              f"{', '.join(sorted(unknown)[:8])}; this checkpoint's network differs from ours")
    for (cell, node), slots in fusion.items():
        if sorted(slots) != list(range(len(slots))):
            raise CheckpointError(f"{source}: fusion weights of fpn_cells/cell_{cell}/fnode{node} are incomplete "
                                  f"(have WSM slots {sorted(slots)})")
        ours[f"fpn_cell{cell}_node{node}_fuse/weights"] = np.array([slots[i] for i in range(len(slots))], np.float32)
    return ours


def check_complete(report: LoadReport, source: str, model_name: str) -> None:
    """Every model variable came from the checkpoint (the class head may be re-initialised on purpose)."""
    if report.missing:
        raise CheckpointError(f"{source}: the checkpoint has no value for {len(report.missing)} of our {model_name} "
                              f"weights, e.g. {report.missing[:5]}; it is not a whole automl EfficientDet")
    if report.unexpected:
        raise CheckpointError(f"{source}: {len(report.unexpected)} renamed tensor(s) match no layer of our "
                              f"{model_name}: {report.unexpected[:5]}")


@dataclass
class AutomlWeights:
    """An automl checkpoint renamed onto our layers, with the model config and class count it fits."""

    config: DetectorConfig
    architecture: AutomlArchitecture
    weights: dict[str, np.ndarray]
    notices: list[str]
    averaged: int


def load_automl_weights(path: str | Path, model_name: str | None = None) -> AutomlWeights:
    """Read, identify and rename an automl checkpoint (EMA values preferred); errors name the problem."""
    checkpoint = read_automl_checkpoint(path)
    arch = architecture_of(checkpoint.tensors)
    cfg = identify_model(arch, model_name, str(path))
    weights = to_our_names(checkpoint.tensors, cfg, str(path))
    return AutomlWeights(cfg, arch, weights, checkpoint.notices, checkpoint.averaged)
