"""The experiment spec: pydantic models named after the TAO EfficientDet TF2 spec fields.

Every section forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Defaults are the typical values of the TAO tables (or of its sample spec where the table gives none).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from effdet_rt.backends import AUTO, all_precisions, backend_names
from effdet_rt.errors import SpecError
from effdet_rt.model.anchors import AnchorConfig, parse_aspect_ratios
from effdet_rt.model.configs import MODEL_NAMES, DetectorConfig, canonical_name, get_config

INPUT_MULTIPLE = 32

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]

BACKEND_CHOICES = (AUTO, *backend_names(buildable=True))
PRECISION_CHOICES = (*all_precisions(), AUTO)  # auto: measured on this machine (build.auto)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


def _as_list(value: object) -> object:
    """Let a single glob stand for a one-item list (``train_tfrecords: /data/train-*``)."""
    return [value] if isinstance(value, str) else value


class LoaderConfig(Section):
    prefetch_size: PositiveInt = 4
    shuffle_file: bool = False
    shuffle_buffer: PositiveInt = 10000
    cycle_length: PositiveInt = 32
    block_length: PositiveInt = 16


class AugmentationConfig(Section):
    rand_hflip: bool = True
    random_crop_min_scale: PositiveFloat = 0.1
    random_crop_max_scale: PositiveFloat = 2.0
    auto_color_distortion: bool = False
    auto_translate_xy: bool = False

    @model_validator(mode="after")
    def _crop_range_ordered(self) -> AugmentationConfig:
        if self.random_crop_min_scale > self.random_crop_max_scale:
            raise ValueError(
                f"random_crop_min_scale ({self.random_crop_min_scale}) must not exceed "
                f"random_crop_max_scale ({self.random_crop_max_scale})"
            )
        return self


class DatasetConfig(Section):
    train_tfrecords: list[str] = Field(default_factory=list, description="TFRecord globs for training.")
    val_tfrecords: list[str] = Field(default_factory=list, description="TFRecord globs for validation.")
    val_json_file: str = ""
    num_classes: Annotated[int, Field(ge=2, description="Categories + 1 (background).")] = 91
    max_instances_per_image: PositiveInt = 100
    skip_crowd_during_training: bool = True
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)

    _wrap_globs = field_validator("train_tfrecords", "val_tfrecords", mode="before")(_as_list)


class ModelConfig(Section):
    """The network. Architecture fields left unset (null) take the value of the named model's preset
    (effdet_rt/model/configs.py, listed by `effdet-rt models`): D7's anchor_scale 5.0, D7x's max_level 8."""

    name: str = Field("efficientdet-d0", validation_alias=AliasChoices("name", "model_name"))
    input_width: PositiveInt | None = None
    input_height: PositiveInt | None = None
    min_level: PositiveInt | None = None
    max_level: PositiveInt | None = None
    num_scales: PositiveInt | None = None
    aspect_ratios: str | None = None
    anchor_scale: PositiveFloat | None = None
    freeze_bn: bool = False
    freeze_blocks: list[NonNegativeInt] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        normalised = canonical_name(value)
        if normalised not in MODEL_NAMES:
            raise ValueError("must be one of " + ", ".join(MODEL_NAMES))
        return normalised

    @field_validator("input_width", "input_height")
    @classmethod
    def _multiple_of_32(cls, value: int | None) -> int | None:
        if value is not None and value % INPUT_MULTIPLE:
            raise ValueError(f"must be a positive multiple of {INPUT_MULTIPLE}")
        return value

    @field_validator("aspect_ratios")
    @classmethod
    def _parsable_ratios(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_aspect_ratios(value)
            except SpecError as exc:
                raise ValueError(str(exc).split(" is not allowed: ", 1)[-1]) from None
        return value

    @model_validator(mode="after")
    def _levels_ordered(self) -> ModelConfig:
        if self.resolved("min_level") > self.resolved("max_level"):
            raise ValueError(f"min_level ({self.resolved('min_level')}) must not exceed "
                             f"max_level ({self.resolved('max_level')})")
        return self

    @property
    def preset(self) -> DetectorConfig:
        return get_config(self.name)

    def resolved(self, field: str) -> object:
        """The field's value, or the preset's when the spec leaves it unset."""
        value = getattr(self, field)
        if value is not None:
            return value
        if field in ("input_width", "input_height"):
            return self.preset.image_size
        return getattr(self.preset, field)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return (int(self.resolved("input_height")), int(self.resolved("input_width")))

    @property
    def aspect_ratio_pairs(self) -> list[tuple[float, float]]:
        return list(parse_aspect_ratios(self.resolved("aspect_ratios")))

    def anchor_config(self) -> AnchorConfig:
        return AnchorConfig(
            min_level=int(self.resolved("min_level")),
            max_level=int(self.resolved("max_level")),
            num_scales=int(self.resolved("num_scales")),
            aspect_ratios=tuple(self.aspect_ratio_pairs),
            anchor_scale=float(self.resolved("anchor_scale")),
        )


class OptimizerConfig(Section):
    name: Literal["sgd"] = "sgd"
    momentum: Probability = 0.9


class LRScheduleConfig(Section):
    name: Literal["cosine", "soft_anneal"] = "cosine"
    warmup_epoch: NonNegativeInt = 5
    warmup_init: NonNegativeFloat = 0.0001
    learning_rate: PositiveFloat = 0.2
    annealing_epoch: PositiveInt = 10

    @model_validator(mode="after")
    def _soft_anneal_needs_a_start(self) -> LRScheduleConfig:
        if self.name == "soft_anneal" and self.warmup_init <= 0:
            raise ValueError("warmup_init must be above 0 with soft_anneal: it warms up and anneals in log space, "
                             "where 0 has no logarithm (try 0.0001)")
        return self


class TrainConfig(Section):
    batch_size: PositiveInt = 16
    num_epochs: PositiveInt = 300
    num_examples_per_epoch: PositiveInt = 120000
    checkpoint: str = ""
    pruned_model_path: str = ""
    checkpoint_interval: PositiveInt = 10
    amp: bool = False
    moving_average_decay: Fraction = 0.9999
    l2_weight_decay: NonNegativeFloat = 0.00004
    l1_weight_decay: NonNegativeFloat = 0.0
    random_seed: PositiveInt = 42
    clip_gradients_norm: NonNegativeFloat = 5.0
    qat: bool = False
    image_preview: bool = True
    # ours, not TAO's: before each checkpoint, re-estimate BatchNorm statistics over this many training batches with
    # the weights being saved ("precise BN"); 0 keeps the moving averages as they are (TAO's behaviour)
    precise_bn_batches: NonNegativeInt = 0
    # ours: swish gradients of the training model run as one XLA-fused kernel (trainer/fast_swish.py): faster CPU
    # steps (benchmarks/train_throughput.py --compare measures it), gradients equal to float rounding but not bit for
    # bit, so a seeded run takes another trajectory; off by default to keep seeded results as they were
    xla_swish_gradient: bool = False
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    lr_schedule: LRScheduleConfig = Field(default_factory=LRScheduleConfig)


class EvaluateConfig(Section):
    checkpoint: str = ""
    max_detections_per_image: PositiveInt = 100
    # ours (automl's nms_configs): the NMS of checkpoint evaluation, and the score floor every engine's
    # detections are scored from (an engine whose baked-in threshold is higher gets a warning)
    min_score_thresh: Probability = 0.001
    iou_thresh: Probability = 0.5
    pre_nms_top_k: PositiveInt = 5000
    batch_size: PositiveInt = 16
    num_samples: PositiveInt = 5000
    label_map: str = ""
    start_eval_epoch: PositiveInt = 1
    results_dir: str = ""


class InferenceConfig(Section):
    checkpoint: str = ""
    image_dir: str = ""
    output_dir: str = ""
    dump_label: bool = False
    batch_size: PositiveInt = 1
    min_score_thresh: Probability = 0.4
    iou_thresh: Probability = 0.5  # ours: NMS IoU of checkpoint inference
    pre_nms_top_k: PositiveInt = 5000  # ours: (anchor, class) pairs kept before NMS in checkpoint inference
    label_map: str = ""
    max_boxes_to_draw: PositiveInt = 100
    results_dir: str = ""


class ExportConfig(Section):
    batch_size: PositiveInt = 8
    dynamic_batch_size: bool = True
    min_score_thresh: Probability = 0.4
    checkpoint: str = ""
    onnx_file: str = ""
    nms: Literal["efficient", "onnx", "none"] = "efficient"
    opset: Annotated[int, Field(ge=13)] = 17
    iou_thresh: Probability = 0.5
    max_detections: PositiveInt = 100
    pre_nms_top_k: PositiveInt = 5000  # ours: --nms onnx / none; EfficientNMS_TRT has no such setting
    # a .tflite output (LiteRT) is converted from the checkpoint at this precision; INT8 calibrates on
    # build.calibration; io_type int8/uint8 gives integer-only accelerators an integer input. An ONNX export is FP32.
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    io_type: Literal["float32", "int8", "uint8"] = "float32"


class PruneCriteria(Section):
    """TAO's min-weight pruning fields, declared once for every task; a task's prune section adds where its model
    comes from and goes to, and may set its own documented threshold default."""

    normalizer: Literal["max", "L2"] = "max"
    equalization_criterion: Literal["arithmetic_mean", "geometric_mean", "union", "intersection"] = "union"
    granularity: PositiveInt = 8
    threshold: float = 0.5  # TAO EfficientDet TF2's sample spec
    min_num_filters: PositiveInt = 16
    excluded_layers: list[str] = Field(default_factory=list)

    @field_validator("threshold")
    @classmethod
    def _normalised(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("normalised filter norms lie in [0, 1], so pass a threshold between 0 and 1 "
                             "(-pth/--pruning-threshold)")
        return value


class PruneConfig(PruneCriteria):
    checkpoint: str = ""
    output_path: str = ""


class CalibrationConfig(Section):
    tfrecords: list[str] = Field(default_factory=list)
    cache_file: str = ""
    batch_size: PositiveInt = 8
    batches: PositiveInt = 10

    _wrap_globs = field_validator("tfrecords", mode="before")(_as_list)


class AutoBuildConfig(Section):
    """`build --precision auto`: how the candidates are timed and which accuracy they must keep."""

    budget_s: PositiveFloat | None = None  # seconds for building and timing every candidate; None: no cap
    rounds: PositiveInt = 5  # timing rounds, each running every candidate once at batch 1 and at max_batch_size
    # share of FP32's detections on the calibration images a candidate must match (same class, IoU >= 0.5)
    min_match: Probability = 0.9


class BuildConfig(Section):
    # the choices come from the backend table (effdet_rt/backends.py)
    backend: Literal[BACKEND_CHOICES] = "auto"  # type: ignore[valid-type]
    data_type: Literal[PRECISION_CHOICES] = "fp32"  # type: ignore[valid-type]
    workspace_gb: PositiveFloat = 2.0
    min_batch_size: PositiveInt = 1
    opt_batch_size: PositiveInt = 1
    max_batch_size: PositiveInt = 8
    timing_cache: str = ""
    engine_file: str = ""
    # ONNX Runtime INT8 Q/DQ layout: onnxruntime (every op, UINT8 activations: fast on CPUs) or tensorrt
    # (symmetric INT8 activations on convolutions only: the input TensorRT 11 needs)
    int8_profile: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    auto: AutoBuildConfig = Field(default_factory=AutoBuildConfig)

    @model_validator(mode="after")
    def _batch_range_ordered(self) -> BuildConfig:
        if not self.min_batch_size <= self.opt_batch_size <= self.max_batch_size:
            raise ValueError(
                "min_batch_size <= opt_batch_size <= max_batch_size must hold "
                f"(got {self.min_batch_size}, {self.opt_batch_size}, {self.max_batch_size})"
            )
        return self


class ExperimentSpec(Section):
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    encryption_key: str = ""
    results_dir: str = "results"
    num_gpus: PositiveInt = 1
    gpu_ids: list[NonNegativeInt] = Field(default_factory=lambda: [0])
