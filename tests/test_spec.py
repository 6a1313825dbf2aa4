"""The experiment spec: seed sample, every table field and its default, overrides, error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from effdet_rt.errors import SpecError
from effdet_rt.spec import (
    ExperimentSpec,
    apply_overrides,
    default_spec,
    load_spec,
    load_task_spec,
    spec_to_yaml,
)

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"

# Every field of the TAO TF2 tables (plus our export/build additions) with its default.
EXPECTED_DEFAULTS = {
    "dataset.train_tfrecords": [],
    "dataset.val_tfrecords": [],
    "dataset.val_json_file": "",
    "dataset.num_classes": 91,
    "dataset.max_instances_per_image": 100,
    "dataset.skip_crowd_during_training": True,
    "dataset.loader.prefetch_size": 4,
    "dataset.loader.shuffle_file": False,
    "dataset.loader.shuffle_buffer": 10000,
    "dataset.loader.cycle_length": 32,
    "dataset.loader.block_length": 16,
    "dataset.augmentation.rand_hflip": True,
    "dataset.augmentation.random_crop_min_scale": 0.1,
    "dataset.augmentation.random_crop_max_scale": 2.0,
    "dataset.augmentation.auto_color_distortion": False,
    "dataset.augmentation.auto_translate_xy": False,
    "model.name": "efficientdet-d0",
    # architecture fields are unset by default: the model preset's values apply (test_presets_fill_unset_fields)
    "model.input_width": None,
    "model.input_height": None,
    "model.min_level": None,
    "model.max_level": None,
    "model.num_scales": None,
    "model.aspect_ratios": None,
    "model.anchor_scale": None,
    "model.freeze_bn": False,
    "model.freeze_blocks": [],
    "train.batch_size": 16,
    "train.num_epochs": 300,
    "train.num_examples_per_epoch": 120000,
    "train.checkpoint": "",
    "train.pruned_model_path": "",
    "train.checkpoint_interval": 10,
    "train.amp": False,
    "train.moving_average_decay": 0.9999,
    "train.l2_weight_decay": 0.00004,
    "train.l1_weight_decay": 0.0,
    "train.random_seed": 42,
    "train.clip_gradients_norm": 5.0,
    "train.qat": False,
    "train.image_preview": True,
    "train.precise_bn_batches": 0,
    "train.xla_swish_gradient": False,
    "train.optimizer.name": "sgd",
    "train.optimizer.momentum": 0.9,
    "train.lr_schedule.name": "cosine",
    "train.lr_schedule.warmup_epoch": 5,
    "train.lr_schedule.warmup_init": 0.0001,
    "train.lr_schedule.learning_rate": 0.2,
    "train.lr_schedule.annealing_epoch": 10,
    "evaluate.checkpoint": "",
    "evaluate.max_detections_per_image": 100,
    "evaluate.min_score_thresh": 0.001,
    "evaluate.iou_thresh": 0.5,
    "evaluate.pre_nms_top_k": 5000,
    "evaluate.batch_size": 16,
    "evaluate.num_samples": 5000,
    "evaluate.label_map": "",
    "evaluate.start_eval_epoch": 1,
    "evaluate.results_dir": "",
    "inference.checkpoint": "",
    "inference.image_dir": "",
    "inference.output_dir": "",
    "inference.dump_label": False,
    "inference.batch_size": 1,
    "inference.min_score_thresh": 0.4,
    "inference.iou_thresh": 0.5,
    "inference.pre_nms_top_k": 5000,
    "inference.label_map": "",
    "inference.max_boxes_to_draw": 100,
    "inference.results_dir": "",
    "export.batch_size": 8,
    "export.dynamic_batch_size": True,
    "export.min_score_thresh": 0.4,
    "export.checkpoint": "",
    "export.onnx_file": "",
    "export.nms": "efficient",
    "export.opset": 17,
    "export.iou_thresh": 0.5,
    "export.max_detections": 100,
    "export.pre_nms_top_k": 5000,
    "export.precision": "fp32",
    "export.io_type": "float32",
    "prune.checkpoint": "",
    "prune.normalizer": "max",
    "prune.output_path": "",
    "prune.equalization_criterion": "union",
    "prune.granularity": 8,
    "prune.threshold": 0.5,
    "prune.min_num_filters": 16,
    "prune.excluded_layers": [],
    "build.backend": "auto",
    "build.data_type": "fp32",
    "build.workspace_gb": 2.0,
    "build.min_batch_size": 1,
    "build.opt_batch_size": 1,
    "build.max_batch_size": 8,
    "build.timing_cache": "",
    "build.engine_file": "",
    "build.int8_profile": "onnxruntime",
    "build.calibration.tfrecords": [],
    "build.calibration.cache_file": "",
    "build.calibration.batch_size": 8,
    "build.calibration.batches": 10,
    "build.auto.budget_s": None,
    "build.auto.rounds": 5,
    "build.auto.min_match": 0.9,
    "encryption_key": "",
    "results_dir": "results",
    "num_gpus": 1,
    "gpu_ids": [0],
}


def flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def get(spec: ExperimentSpec, dotted: str):
    node = spec
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def test_every_table_field_has_its_default():
    assert flatten(default_spec().model_dump()) == EXPECTED_DEFAULTS


def test_presets_fill_unset_fields():
    """A spec that names a model and leaves its architecture unset builds that model's preset (D7's anchor scale
    5.0 and D7x's eighth level reach a model trained from a spec); a field that is set wins."""
    from effdet_rt.model.factory import setup_from_spec

    d0 = default_spec()
    assert d0.model.input_size == (512, 512)
    assert d0.model.anchor_config() == setup_from_spec(d0).anchor_config
    assert (d0.model.resolved("min_level"), d0.model.resolved("max_level"), d0.model.resolved("num_scales"),
            d0.model.resolved("anchor_scale")) == (3, 7, 3, 4.0)
    d7 = setup_from_spec(load_spec(None, ["model.name=efficientdet-d7"]))
    assert (d7.input_size, d7.anchor_config.anchor_scale, d7.anchor_config.max_level) == ((1536, 1536), 5.0, 7)
    d7x = setup_from_spec(load_spec(None, ["model.name=efficientdet-d7x"]))
    assert (d7x.anchor_config.max_level, d7x.num_levels, d7x.anchor_config.anchor_scale) == (8, 6, 4.0)
    chosen = setup_from_spec(load_spec(None, ["model.name=efficientdet-d7", "model.anchor_scale=3",
                                              "model.input_width=640"]))
    assert (chosen.anchor_config.anchor_scale, chosen.input_size) == (3.0, (1536, 640))


def test_load_spec_none_is_default():
    assert load_spec(None) == default_spec()


def test_seed_tf2_sample_loads_with_its_values():
    spec = load_spec(SPECS / "coco_d0.yaml")
    sample = {
        "dataset.loader.shuffle_buffer": 10000,
        "dataset.loader.cycle_length": 32,
        "dataset.num_classes": 91,
        "dataset.train_tfrecords": ["/datasets/coco/train-*"],
        "dataset.val_json_file": "/datasets/coco/annotations/instances_val2017.json",
        "dataset.augmentation.random_crop_max_scale": 2.0,
        "train.optimizer.momentum": 0.9,
        "train.lr_schedule.warmup_init": 0.0001,
        "train.lr_schedule.learning_rate": 0.2,
        "train.amp": True,
        "train.checkpoint": "/weights/efficientnet-b0_500.tlt",
        "train.num_examples_per_epoch": 100,
        "train.moving_average_decay": 0.999,
        "train.batch_size": 20,
        "train.checkpoint_interval": 5,
        "train.clip_gradients_norm": 10.0,
        "train.num_epochs": 200,
        "model.anchor_scale": 4.0,
        "evaluate.batch_size": 8,
        "export.min_score_thresh": 0.4,
        "prune.threshold": 0.5,
        "encryption_key": "nvidia_tlt",
        "results_dir": "/workspace/results_dir",
        "gpu_ids": [0],
    }
    assert {key: get(spec, key) for key in sample} == sample
    assert spec.model.input_size == (512, 512)
    assert spec.model.aspect_ratio_pairs == [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]


def test_bccd_demo_spec():
    spec = load_spec(SPECS / "bccd_d0.yaml")
    assert (spec.dataset.num_classes, spec.model.name, spec.model.input_size) == (4, "efficientdet-d0", (512, 512))
    assert spec.dataset.train_tfrecords == ["results/bccd/tfrecords/train-*"]


def test_yaml_round_trip(tmp_path):
    spec = load_spec(SPECS / "coco_d0.yaml", ["model.input_width=256", "gpu_ids=[0, 1]"])
    path = tmp_path / "again.yaml"
    path.write_text(spec_to_yaml(spec))
    assert load_spec(path) == spec
    assert "gpu_ids: [0, 1]\n" in path.read_text()


def test_model_name_alias_and_underscore_form(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model:\n  model_name: efficientdet_d3\n")
    assert load_spec(path).model.name == "efficientdet-d3"


def test_overrides_are_typed_by_the_schema():
    spec = load_spec(
        None,
        [
            "train.num_epochs=5",
            "train.lr_schedule.learning_rate=0.01",
            "train.amp=true",
            "model.freeze_blocks=[0, 1]",
            "dataset.train_tfrecords=/data/train-*",
            "encryption_key=123",
            "evaluate.label_map='a b.yaml'",
            "model.model_name=efficientdet-d1",
        ],
    )
    assert spec.train.num_epochs == 5 and isinstance(spec.train.num_epochs, int)
    assert spec.train.lr_schedule.learning_rate == 0.01
    assert spec.train.amp is True
    assert spec.model.freeze_blocks == [0, 1]
    assert spec.dataset.train_tfrecords == ["/data/train-*"]
    assert spec.encryption_key == "123"
    assert spec.evaluate.label_map == "a b.yaml"
    assert spec.model.name == "efficientdet-d1"


def test_overrides_apply_in_order_on_top_of_the_file():
    spec = load_spec(SPECS / "coco_d0.yaml", ["train.batch_size=4", "train.batch_size=6"])
    assert (spec.train.batch_size, spec.train.num_epochs) == (6, 200)
    assert apply_overrides(spec, []) is spec


def test_load_task_spec_matches_load_spec():
    assert load_task_spec(SPECS / "bccd_d0.yaml", ["train.num_epochs=2"]).train.num_epochs == 2
    assert load_task_spec(None, None) == default_spec()


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def spec_error(path, overrides=()) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return str(info.value)


def test_unknown_field_names_the_closest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train:\n  lr_schedule:\n    lerning_rate: 0.1\n")
    assert spec_error("spec.yaml") == (
        "spec.yaml: train.lr_schedule.lerning_rate is not a field of train.lr_schedule (did you mean learning_rate?)"
    )
    write(tmp_path, "train:\n  lerning_rate: 0.1\n")
    assert spec_error("spec.yaml") == (
        "spec.yaml: train.lerning_rate is not a field of train (did you mean lr_schedule.learning_rate?)"
    )
    write(tmp_path, "train:\n  bach_size: 2\n")
    assert spec_error("spec.yaml") == "spec.yaml: train.bach_size is not a field of train (did you mean batch_size?)"
    write(tmp_path, "modle:\n  name: efficientdet-d0\n")
    assert spec_error("spec.yaml") == "spec.yaml: modle is not a field of the spec (did you mean model?)"


def test_bad_values_name_field_value_and_what_is_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "train:\n  batch_size: -3\n")
    assert spec_error("spec.yaml") == "spec.yaml: train.batch_size = -3 is not allowed: must be a positive integer"
    write(tmp_path, "train:\n  lr_schedule:\n    name: step\n")
    assert spec_error("spec.yaml") == (
        "spec.yaml: train.lr_schedule.name = 'step' is not allowed: must be one of 'cosine', 'soft_anneal'"
    )
    write(tmp_path, "prune:\n  normalizer: l1\n")
    assert spec_error("spec.yaml") == "spec.yaml: prune.normalizer = 'l1' is not allowed: must be one of 'max', 'L2'"
    write(tmp_path, "model:\n  input_width: 500\n")
    assert spec_error("spec.yaml") == (
        "spec.yaml: model.input_width = 500 is not allowed: must be a positive multiple of 32"
    )
    write(tmp_path, "train:\n  amp: maybe\n")
    assert spec_error("spec.yaml") == "spec.yaml: train.amp = 'maybe' is not allowed: must be true or false"
    write(tmp_path, "train:\n  moving_average_decay: 1.5\n")
    assert spec_error("spec.yaml") == (
        "spec.yaml: train.moving_average_decay = 1.5 is not allowed: must be a number < 1.0"
    )


def test_override_errors(tmp_path):
    assert spec_error(None, ["train.batch_size=-3"]) == (
        "override: train.batch_size = -3 is not allowed: must be a positive integer"
    )
    assert spec_error(None, ["x"]) == (
        "override: 'x' is not an override; write it as section.field=value (e.g. train.num_epochs=5)"
    )
    assert spec_error(None, ["train.lerning_rate=0.1"]) == (
        "override: train.lerning_rate is not a field of train (did you mean lr_schedule.learning_rate?)"
    )
    assert spec_error(None, ["train.batch_size.x=1"]) == (
        "override: train.batch_size is a value, not a section; cannot set train.batch_size.x"
    )
    assert spec_error(None, ["train.batch_size=2.5"]) == (
        "override: train.batch_size = 2.5 is not allowed: must be a whole number (an integer)"
    )


def test_cross_field_checks():
    assert spec_error(None, ["dataset.augmentation.random_crop_min_scale=3"]) == (
        "override: dataset.augmentation is not valid: random_crop_min_scale (3.0) must not exceed "
        "random_crop_max_scale (2.0)"
    )
    assert spec_error(None, ["build.opt_batch_size=16"]).startswith(
        "override: build is not valid: min_batch_size <= opt_batch_size <= max_batch_size must hold (got 1, 16, 8)"
    )


def test_file_problems(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert spec_error("missing.yaml") == "missing.yaml: spec file not found; check the -e/--experiment-spec path"
    write(tmp_path, "train:\n  batch_size: 4\n   num_epochs: 3\n")
    assert spec_error("spec.yaml") == (
        "spec.yaml: YAML syntax error at line 3, column 14: mapping values are not allowed here; "
        "fix the indentation or quoting there"
    )
    write(tmp_path, "train:\n  batch_size: 4\n  batch_size: 5\n")
    assert spec_error("spec.yaml") == (
        "spec.yaml: YAML syntax error at line 3, column 3: key 'batch_size' appears twice (first at line 2); "
        "fix the indentation or quoting there"
    )
    write(tmp_path, "- a\n- b\n")
    assert spec_error("spec.yaml") == (
        "spec.yaml: a spec must be a YAML mapping of sections (dataset:, model:, train: ...), not a list"
    )
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    assert spec_error("bin.yaml") == "bin.yaml: is not a UTF-8 text file; a spec is YAML (or a TF1 prototxt)"
    assert load_spec(write(tmp_path, "")) == default_spec()


SEED_TF2 = REPO.parent / "shared" / "seeds" / "efficientdet_tf2_spec_2025.txt"


def test_coco_d0_yaml_is_the_seed_sample_token_for_token():
    if not SEED_TF2.is_file():
        pytest.skip(f"seed text not found at {SEED_TF2}")
    sample = SEED_TF2.read_text().split("Copy Copied! ", 1)[1].split("\n", 1)[0]
    ours = (SPECS / "coco_d0.yaml").read_text().splitlines()
    assert " ".join(" ".join(line for line in ours if not line.startswith("#")).split()) == " ".join(sample.split())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.num_epochs=1", 1),
        ("dataset.loader.shuffle_buffer=64", 64),
        ("export.iou_thresh=0.65", 0.65),
        ("prune.excluded_layers=[stem_conv, head]", ["stem_conv", "head"]),
        ("build.calibration.tfrecords=[a-*, b-*]", ["a-*", "b-*"]),
        ("inference.dump_label=yes", True),
        ("train.checkpoint=", ""),
    ],
)
def test_override_values_survive_a_yaml_round_trip(tmp_path, override, expected):
    spec = load_spec(None, [override])
    dotted = override.split("=", 1)[0]
    assert get(spec, dotted) == expected
    path = write(tmp_path, spec_to_yaml(spec))
    assert get(load_spec(path), dotted) == expected
