"""EfficientDet D0..D7x / Lite0..Lite4 and EfficientNet B0..B7 / Lite0..Lite4 settings.

D and B: the figures of the EfficientDet paper. Lite: google/automl's definitions (hparams_config.py,
backbone/efficientnet_lite_builder.py): ReLU6 everywhere, no squeeze-excite, stem and head (and the first and last
stages' repeats) not scaled, plain-sum BiFPN fusion, inputs normalised as (x - 127) / 128.
"""

from __future__ import annotations

from dataclasses import dataclass

from effdet_rt.errors import UserError
from effdet_rt.model.anchors import parse_aspect_ratios

IMAGENET_MEAN_RGB = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
IMAGENET_STD_RGB = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)
LITE_MEAN_RGB = (127.0, 127.0, 127.0)  # automl: inception-style, for better post-training quantization
LITE_STD_RGB = (128.0, 128.0, 128.0)


@dataclass(frozen=True)
class BackboneConfig:
    """Compound scaling of one EfficientNet variant."""

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    survival_prob: float = 0.8
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    activation: str = "swish"  # or "relu6"
    use_se: bool = True
    fix_head_stem: bool = False  # Lite: stem / head widths and first / last stage repeats are not scaled
    mean_rgb: tuple[float, float, float] = IMAGENET_MEAN_RGB
    stddev_rgb: tuple[float, float, float] = IMAGENET_STD_RGB
    use_batch_norm: bool = True  # False: no BatchNormalization layers, biased convolutions instead


@dataclass(frozen=True)
class StageConfig:
    """One of the seven MBConv stages of EfficientNet-B0 (before scaling)."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    in_filters: int
    out_filters: int
    se_ratio: float = 0.25


B0_STAGES: tuple[StageConfig, ...] = (
    StageConfig(1, 3, 1, 1, 32, 16),
    StageConfig(2, 3, 2, 6, 16, 24),
    StageConfig(2, 5, 2, 6, 24, 40),
    StageConfig(3, 3, 2, 6, 40, 80),
    StageConfig(3, 5, 1, 6, 80, 112),
    StageConfig(4, 5, 2, 6, 112, 192),
    StageConfig(1, 3, 1, 6, 192, 320),
)

STEM_FILTERS = 32
HEAD_FILTERS = 1280

# Stage index (0-based) whose output is C3, C4, C5 (strides 8, 16, 32): the last block before each reduction.
FEATURE_STAGES: dict[int, int] = {3: 2, 4: 4, 5: 6}

BACKBONES: dict[str, BackboneConfig] = {
    cfg.name: cfg
    for cfg in (
        BackboneConfig("efficientnet-b0", 1.0, 1.0, 224, 0.2),
        BackboneConfig("efficientnet-b1", 1.0, 1.1, 240, 0.2),
        BackboneConfig("efficientnet-b2", 1.1, 1.2, 260, 0.3),
        BackboneConfig("efficientnet-b3", 1.2, 1.4, 300, 0.3),
        BackboneConfig("efficientnet-b4", 1.4, 1.8, 380, 0.4),
        BackboneConfig("efficientnet-b5", 1.6, 2.2, 456, 0.4),
        BackboneConfig("efficientnet-b6", 1.8, 2.6, 528, 0.5),
        BackboneConfig("efficientnet-b7", 2.0, 3.1, 600, 0.5),
        *(
            BackboneConfig(f"efficientnet-lite{i}", width, depth, resolution, dropout, activation="relu6",
                           use_se=False, fix_head_stem=True, mean_rgb=LITE_MEAN_RGB, stddev_rgb=LITE_STD_RGB)
            for i, (width, depth, resolution, dropout) in enumerate(
                ((1.0, 1.0, 224, 0.2), (1.0, 1.1, 240, 0.2), (1.1, 1.2, 260, 0.3), (1.2, 1.4, 280, 0.3),
                 (1.4, 1.8, 300, 0.3))
            )
        ),
    )
}


@dataclass(frozen=True)
class DetectorConfig:
    name: str
    image_size: int
    backbone: str
    fpn_num_filters: int
    fpn_cell_repeats: int
    box_class_repeats: int
    anchor_scale: float = 4.0
    weight_method: str = "fastattn"  # "fastattn" (fast normalised fusion) or "sum"
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: str = "[(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]"  # (x, y) multipliers, TAO's spelling
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    activation: str = "swish"  # of the BiFPN and the heads ("relu6" in Lite)

    @property
    def num_anchors(self) -> int:
        return self.num_scales * len(parse_aspect_ratios(self.aspect_ratios))

    @property
    def backbone_config(self) -> BackboneConfig:
        return BACKBONES[self.backbone]


DETECTORS: dict[str, DetectorConfig] = {
    cfg.name: cfg
    for cfg in (
        DetectorConfig("efficientdet-d0", 512, "efficientnet-b0", 64, 3, 3),
        DetectorConfig("efficientdet-d1", 640, "efficientnet-b1", 88, 4, 3),
        DetectorConfig("efficientdet-d2", 768, "efficientnet-b2", 112, 5, 3),
        DetectorConfig("efficientdet-d3", 896, "efficientnet-b3", 160, 6, 4),
        DetectorConfig("efficientdet-d4", 1024, "efficientnet-b4", 224, 7, 4),
        DetectorConfig("efficientdet-d5", 1280, "efficientnet-b5", 288, 7, 4),
        DetectorConfig("efficientdet-d6", 1280, "efficientnet-b6", 384, 8, 5, weight_method="sum"),
        DetectorConfig("efficientdet-d7", 1536, "efficientnet-b6", 384, 8, 5, anchor_scale=5.0, weight_method="sum"),
        DetectorConfig(
            "efficientdet-d7x", 1536, "efficientnet-b7", 384, 8, 5, weight_method="sum", max_level=8
        ),
        *(
            DetectorConfig(name, size, backbone, filters, cells, repeats, anchor_scale=anchor_scale,
                           weight_method="sum", activation="relu6")
            for name, size, backbone, filters, cells, repeats, anchor_scale in (
                ("efficientdet-lite0", 320, "efficientnet-lite0", 64, 3, 3, 3.0),
                ("efficientdet-lite1", 384, "efficientnet-lite1", 88, 4, 3, 3.0),
                ("efficientdet-lite2", 448, "efficientnet-lite2", 112, 5, 3, 3.0),
                ("efficientdet-lite3", 512, "efficientnet-lite3", 160, 6, 4, 4.0),
                ("efficientdet-lite3x", 640, "efficientnet-lite3", 200, 6, 4, 3.0),
                ("efficientdet-lite4", 640, "efficientnet-lite4", 224, 7, 4, 4.0),
            )
        ),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(DETECTORS)


def canonical_name(name: str) -> str:
    """'EfficientDet_D0' (TAO spelling) and 'efficientdet-d0' both become 'efficientdet-d0'."""
    return name.strip().lower().replace("_", "-")


def get_config(name: str) -> DetectorConfig:
    key = canonical_name(name)
    if key not in DETECTORS:
        raise UserError(f"unknown model name {name!r}: use one of {', '.join(MODEL_NAMES)}")
    return DETECTORS[key]


def get_backbone_config(name: str) -> BackboneConfig:
    key = canonical_name(name)
    if key not in BACKBONES:
        raise UserError(f"unknown backbone name {name!r}: use one of {', '.join(BACKBONES)}")
    return BACKBONES[key]
