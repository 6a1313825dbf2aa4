"""Import a legacy TAO EfficientDet TF1 spec (protobuf text) as an ExperimentSpec.

The TF1 messages are declared here as data and turned into real protobuf classes at runtime
(no protoc needed), so the file is parsed by protobuf's own text_format parser.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from pydantic import ValidationError

from effdet_rt.errors import SpecError
from effdet_rt.spec.schema import ExperimentSpec
from effdet_rt.spec.text import read_spec_text
from effdet_rt.spec.validation import describe_error, dotted_path

_PACKAGE = "effdet_rt.tf1"
_ROOT = "Tf1Experiment"

# message name -> [(field, type)], field numbers follow list order. Floats are doubles here so that
# 0.00005 stays 0.00005 (TAO declares them float; the text form is the same).
TF1_MESSAGES: dict[str, list[tuple[str, str]]] = {
    "TrainingConfig": [
        ("train_batch_size", "uint32"), ("iterations_per_loop", "uint32"), ("use_xla", "bool"),
        ("disable_logging", "bool"), ("checkpoint", "string"), ("stop_at_epoch", "uint32"),
        ("resume", "bool"), ("checkpoint_period", "uint32"), ("keep_checkpoint_max", "uint32"),
        ("num_examples_per_epoch", "uint32"), ("num_epochs", "uint32"),
        ("skip_checkpoint_variables", "string"), ("profile_skip_steps", "uint32"),
        ("tf_random_seed", "uint32"), ("moving_average_decay", "double"), ("lr_warmup_epoch", "double"),
        ("lr_warmup_init", "double"), ("learning_rate", "double"), ("amp", "bool"),
        ("l2_weight_decay", "double"), ("l1_weight_decay", "double"), ("clip_gradients_norm", "double"),
        ("pruned_model_path", "string"), ("model_name", "string"), ("momentum", "double"),
    ],
    "DatasetConfig": [
        ("num_classes", "uint32"), ("image_size", "string"), ("training_file_pattern", "string"),
        ("validation_file_pattern", "string"), ("validation_json_file", "string"), ("val_json_file", "string"),
        ("max_instances_per_image", "uint32"), ("skip_crowd_during_training", "bool"),
        ("use_fake_data", "bool"),
    ],
    "EvalConfig": [
        ("eval_batch_size", "uint32"), ("eval_epoch_cycle", "uint32"), ("eval_after_training", "bool"),
        ("eval_samples", "uint32"), ("min_score_thresh", "double"), ("max_detections_per_image", "uint32"),
    ],
    "ModelConfig": [
        ("model_name", "string"), ("min_level", "uint32"), ("max_level", "uint32"), ("num_scales", "uint32"),
        ("aspect_ratios", "string"), ("anchor_scale", "double"), ("max_instances_per_image", "uint32"),
        ("freeze_bn", "bool"), ("freeze_blocks", "string"),
    ],
    "AugmentationConfig": [
        ("rand_hflip", "bool"), ("random_crop_min_scale", "double"), ("random_crop_max_scale", "double"),
        ("auto_color_distortion", "bool"), ("auto_translate_xy", "bool"),
    ],
}
TF1_SECTIONS: list[tuple[str, str]] = [
    ("training_config", "TrainingConfig"), ("dataset_config", "DatasetConfig"), ("eval_config", "EvalConfig"),
    ("model_config", "ModelConfig"), ("augmentation_config", "AugmentationConfig"),
]

_PROTO_TYPES = {
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
}


@functools.cache
def tf1_message_class() -> type:
    """The protobuf class of a whole TF1 spec, built from TF1_MESSAGES (proto2, so presence is tracked)."""
    file_proto = descriptor_pb2.FileDescriptorProto(name="effdet_rt_tf1_spec.proto", package=_PACKAGE, syntax="proto2")
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    for message_name, fields in TF1_MESSAGES.items():
        message = file_proto.message_type.add(name=message_name)
        for number, (field_name, type_name) in enumerate(fields, start=1):
            message.field.add(name=field_name, number=number, label=optional, type=_PROTO_TYPES[type_name])
    root = file_proto.message_type.add(name=_ROOT)
    for number, (field_name, message_name) in enumerate(TF1_SECTIONS, start=1):
        root.field.add(
            name=field_name, number=number, label=optional,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, type_name=f".{_PACKAGE}.{message_name}",
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{_ROOT}"))


def _image_size(text: str) -> dict[str, int]:
    numbers = re.findall(r"\d+", text)
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or re.sub(r"[\d\s,x()]", "", text):
        raise ValueError(f"image_size {text!r} must be written as \"height,width\", e.g. \"512,512\"")
    return {"model.input_height": int(numbers[0]), "model.input_width": int(numbers[1])}


def _globs(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _freeze_blocks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def _to(path: str, convert: Callable[[Any], Any] = lambda v: v) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {path: convert(value)}


def _to_both(*paths: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: dict.fromkeys(paths, value)


def _whole_epochs(value: float) -> int:
    if value != int(value):
        raise ValueError(f"{value:g} epochs: TF2's train.lr_schedule.warmup_epoch counts whole epochs; "
                         f"write {int(value)} or {int(value) + 1}")
    return int(value)


# "section.field" -> function giving {tf2 dotted path: value}. TF1 fields absent here have no TF2 equivalent.
TF1_TO_TF2: dict[str, Callable[[Any], dict[str, Any]]] = {
    "training_config.train_batch_size": _to("train.batch_size"),
    "training_config.checkpoint": _to("train.checkpoint"),
    "training_config.checkpoint_period": _to("train.checkpoint_interval"),
    "training_config.num_examples_per_epoch": _to("train.num_examples_per_epoch"),
    "training_config.num_epochs": _to("train.num_epochs"),
    "training_config.tf_random_seed": _to("train.random_seed"),
    "training_config.moving_average_decay": _to("train.moving_average_decay"),
    "training_config.lr_warmup_epoch": _to("train.lr_schedule.warmup_epoch", lambda v: _whole_epochs(v)),
    "training_config.lr_warmup_init": _to("train.lr_schedule.warmup_init"),
    "training_config.learning_rate": _to("train.lr_schedule.learning_rate"),
    "training_config.amp": _to("train.amp"),
    "training_config.l2_weight_decay": _to("train.l2_weight_decay"),
    "training_config.l1_weight_decay": _to("train.l1_weight_decay"),
    "training_config.clip_gradients_norm": _to("train.clip_gradients_norm"),
    "training_config.pruned_model_path": _to("train.pruned_model_path"),
    "training_config.model_name": _to("model.name"),
    "training_config.momentum": _to("train.optimizer.momentum"),
    "dataset_config.num_classes": _to("dataset.num_classes"),
    "dataset_config.image_size": _image_size,
    "dataset_config.training_file_pattern": _to("dataset.train_tfrecords", _globs),
    "dataset_config.validation_file_pattern": _to("dataset.val_tfrecords", _globs),
    "dataset_config.validation_json_file": _to("dataset.val_json_file"),
    "dataset_config.val_json_file": _to("dataset.val_json_file"),
    "dataset_config.max_instances_per_image": _to("dataset.max_instances_per_image"),
    "dataset_config.skip_crowd_during_training": _to("dataset.skip_crowd_during_training"),
    "eval_config.eval_batch_size": _to("evaluate.batch_size"),
    "eval_config.eval_samples": _to("evaluate.num_samples"),
    "eval_config.min_score_thresh": _to_both("evaluate.min_score_thresh", "export.min_score_thresh",
                                             "inference.min_score_thresh"),
    "eval_config.max_detections_per_image": _to("evaluate.max_detections_per_image"),
    "model_config.model_name": _to("model.name"),
    "model_config.min_level": _to("model.min_level"),
    "model_config.max_level": _to("model.max_level"),
    "model_config.num_scales": _to("model.num_scales"),
    "model_config.aspect_ratios": _to("model.aspect_ratios"),
    "model_config.anchor_scale": _to("model.anchor_scale"),
    "model_config.max_instances_per_image": _to("dataset.max_instances_per_image"),
    "model_config.freeze_bn": _to("model.freeze_bn"),
    "model_config.freeze_blocks": _to("model.freeze_blocks", _freeze_blocks),
    "augmentation_config.rand_hflip": _to("dataset.augmentation.rand_hflip"),
    "augmentation_config.random_crop_min_scale": _to("dataset.augmentation.random_crop_min_scale"),
    "augmentation_config.random_crop_max_scale": _to("dataset.augmentation.random_crop_max_scale"),
    "augmentation_config.auto_color_distortion": _to("dataset.augmentation.auto_color_distortion"),
    "augmentation_config.auto_translate_xy": _to("dataset.augmentation.auto_translate_xy"),
}


def convert_tf1(path: str | Path) -> tuple[ExperimentSpec, list[str]]:
    """Convert a TF1 prototxt spec; the list names the TF1 fields set in it that have no TF2 equivalent."""

    return convert_tf1_text(read_spec_text(Path(path)), str(path))


def convert_tf1_text(text: str, source: str) -> tuple[ExperimentSpec, list[str]]:
    message = parse_tf1(text, source)
    values, origins, unmapped = map_tf1_fields(message, source)
    return _validate(values, origins, source), unmapped


def parse_tf1(text: str, source: str) -> Any:
    message = tf1_message_class()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        where = f"line {exc.GetLine()}, column {exc.GetColumn()}: " if exc.GetLine() else ""
        reason = str(exc).split(" : ", 1)[-1]
        raise SpecError(
            f"{source}: not a valid TF1 EfficientDet spec ({where}{reason}); "
            f"its sections are {', '.join(name for name, _ in TF1_SECTIONS)}"
        ) from None
    return message


def map_tf1_fields(message: Any, source: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Return ({tf2 dotted path: value}, {tf2 path: tf1 field}, [unmapped tf1 fields]) in file-section order."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    unmapped: list[str] = []
    for section_name, _ in TF1_SECTIONS:
        if not message.HasField(section_name):
            continue
        for field, value in getattr(message, section_name).ListFields():
            tf1_name = f"{section_name}.{field.name}"
            convert = TF1_TO_TF2.get(tf1_name)
            if convert is None:
                unmapped.append(tf1_name)
                continue
            try:
                mapped = convert(value)
            except ValueError as exc:
                raise SpecError(f"{source}: {tf1_name} is not valid: {exc}") from None
            for path, new in mapped.items():
                if path in values and values[path] != new:
                    raise SpecError(f"{source}: {tf1_name} = {new} conflicts with {origins[path]} = {values[path]} "
                                    f"(both set {path}); keep one of them or make them equal")
            values.update(mapped)
            origins.update(dict.fromkeys(mapped, tf1_name))
    return values, origins, unmapped


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in values.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _validate(values: dict[str, Any], origins: dict[str, str], source: str) -> ExperimentSpec:
    try:
        return ExperimentSpec.model_validate(_nest(values))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            origin = origins.get(dotted_path(err["loc"]))
            suffix = f" (from TF1 field {origin})" if origin else ""
            problems.append(f"{source}: {describe_error(err)}{suffix}")
        raise SpecError("; ".join(problems)) from None
