"""Legacy TF1 prototxt specs: parsing through protobuf text_format, mapping to TF2 names, unmapped fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from effdet_rt.errors import SpecError
from effdet_rt.spec import convert_tf1, load_spec
from effdet_rt.spec.tf1 import TF1_MESSAGES, TF1_TO_TF2, tf1_message_class

TF1_SAMPLE = Path(__file__).parent / "data" / "spec_tf1_sample.txt"

SAMPLE_UNMAPPED = [
    "training_config.iterations_per_loop",
    "training_config.profile_skip_steps",
    "eval_config.eval_epoch_cycle",
    "eval_config.eval_after_training",
]


def test_tf1_sample_maps_to_tf2_values():
    spec, unmapped = convert_tf1(TF1_SAMPLE)
    assert unmapped == SAMPLE_UNMAPPED
    assert spec.train.batch_size == 16
    assert spec.train.checkpoint_interval == 10
    assert spec.train.num_examples_per_epoch == 14700
    assert spec.train.num_epochs == 300
    assert spec.train.random_seed == 42
    assert spec.train.lr_schedule.warmup_epoch == 5
    assert spec.train.lr_schedule.warmup_init == 0.00005
    assert spec.train.lr_schedule.learning_rate == 0.1
    assert spec.train.amp is True
    assert spec.train.moving_average_decay == 0.9999
    assert spec.train.l2_weight_decay == 0.00004
    assert spec.train.checkpoint == "/path/to/your/pretrained_model"
    assert spec.train.pruned_model_path == ""  # commented out in the sample
    assert spec.dataset.num_classes == 91
    assert spec.model.input_size == (512, 512)
    assert spec.dataset.train_tfrecords == ["/path/to/coco/train-*"]
    assert spec.dataset.val_tfrecords == ["/path/to/coco/val-*"]
    assert spec.dataset.val_json_file == "/path/to/coco/annotations/instances_val2017.json"
    assert spec.evaluate.batch_size == 16
    assert spec.evaluate.num_samples == 5000
    assert spec.export.min_score_thresh == 0.4
    assert spec.inference.min_score_thresh == 0.4
    assert spec.evaluate.max_detections_per_image == 100
    assert (spec.model.name, spec.model.min_level, spec.model.max_level, spec.model.num_scales) == (
        "efficientdet-d0", 3, 7, 3,
    )
    assert spec.dataset.augmentation.rand_hflip is True
    assert spec.dataset.augmentation.random_crop_max_scale == 2.0


def test_load_spec_reads_tf1_directly_with_overrides():
    spec = load_spec(TF1_SAMPLE, ["train.num_epochs=3"])
    assert (spec.train.num_epochs, spec.train.batch_size) == (3, 16)


def test_tf1_content_is_detected_without_the_suffix(tmp_path):
    path = tmp_path / "old.spec"
    path.write_bytes(TF1_SAMPLE.read_bytes())
    assert load_spec(path).train.num_examples_per_epoch == 14700


def test_image_size_forms(tmp_path):
    for text, size in [('"512,512"', (512, 512)), ('"(384, 640)"', (384, 640)), ('"256"', (256, 256))]:
        path = tmp_path / "s.txt"
        path.write_text(f"dataset_config {{ image_size: {text} }}\n")
        assert load_spec(path).model.input_size == size


def test_every_declared_tf1_field_is_mapped_or_reported(tmp_path):
    # A spec setting every declared field: mapped ones land, the rest come back as unmapped, in order.
    lines = []
    for section, message in [("training_config", "TrainingConfig"), ("model_config", "ModelConfig")]:
        values = {"uint32": "1", "double": "0.5", "bool": "true", "string": '"efficientdet-d1"'}
        body = " ".join(f"{name}: {values[kind]}" for name, kind in TF1_MESSAGES[message])
        lines.append(f"{section} {{ {body} }}")
    path = tmp_path / "all.txt"
    path.write_text("\n".join(lines).replace('aspect_ratios: "efficientdet-d1"', 'aspect_ratios: "[(1.0, 1.0)]"'))
    path.write_text(path.read_text().replace('freeze_blocks: "efficientdet-d1"', 'freeze_blocks: "[0, 1]"')
                    .replace("lr_warmup_epoch: 0.5", "lr_warmup_epoch: 1"))  # whole epochs in TF2
    _spec, unmapped = convert_tf1(path)
    declared = [f"training_config.{n}" for n, _ in TF1_MESSAGES["TrainingConfig"]] + [
        f"model_config.{n}" for n, _ in TF1_MESSAGES["ModelConfig"]
    ]
    assert unmapped == [name for name in declared if name not in TF1_TO_TF2]
    assert "training_config.use_xla" in unmapped and "training_config.train_batch_size" not in unmapped


def test_presence_is_tracked_for_false_values():
    message = tf1_message_class()()
    assert not message.HasField("training_config")
    message.training_config.use_xla = False
    assert message.training_config.HasField("use_xla")


def tf1_error(tmp_path, text: str) -> str:
    path = tmp_path / "old.txt"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        convert_tf1(path)
    return str(info.value).replace(str(path), "old.txt")


def test_tf1_errors(tmp_path):
    assert tf1_error(tmp_path, "training_config {\n  train_bach_size: 4\n}\n") == (
        'old.txt: not a valid TF1 EfficientDet spec (line 2, column 3: Message type '
        '"effdet_rt.tf1.TrainingConfig" has no field named "train_bach_size".); its sections are '
        "training_config, dataset_config, eval_config, model_config, augmentation_config"
    )
    assert tf1_error(tmp_path, "training_config { train_batch_size: 0 }\n") == (
        "old.txt: train.batch_size = 0 is not allowed: must be a positive integer "
        "(from TF1 field training_config.train_batch_size)"
    )
    assert tf1_error(tmp_path, 'dataset_config { image_size: "big" }\n') == (
        "old.txt: dataset_config.image_size is not valid: image_size 'big' must be written as "
        '"height,width", e.g. "512,512"'
    )
