"""`effdet-rt models` answers from effdet_rt/model/cost_table.py; the table against built networks and automl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from effdet_rt.cli.main import run
from effdet_rt.model.configs import MODEL_NAMES, get_config
from effdet_rt.model.cost_table import (
    FITTED,
    TRACED_AT_NATIVE_SIZE,
    class_head_float_ops_per_class,
    tabled_cost,
)

REPO = Path(__file__).resolve().parents[1]
# automl's trainable parameters with 90 classes (docs: DESIGN.md reference facts; Lite: tests/test_model_lite.py)
AUTOML_PARAMS = {
    "efficientdet-d0": 3_880_067, "efficientdet-d1": 6_625_898, "efficientdet-d2": 8_097_039,
    "efficientdet-d3": 12_032_296, "efficientdet-d4": 20_723_675, "efficientdet-d5": 33_653_315,
    "efficientdet-d6": 51_871_782, "efficientdet-d7": 51_871_782, "efficientdet-d7x": 77_147_166,
    "efficientdet-lite0": 3_243_470, "efficientdet-lite1": 4_248_318, "efficientdet-lite2": 5_252_334,
    "efficientdet-lite3": 8_350_862, "efficientdet-lite3x": 9_280_862, "efficientdet-lite4": 15_130_894,
}
# automl's multiply-adds at batch 1 and the native size (D7x has none in the reference facts)
AUTOML_MULTIPLY_ADDS = {
    "efficientdet-d0": 2.5506e9, "efficientdet-d1": 6.1338e9, "efficientdet-d2": 11.046e9,
    "efficientdet-d3": 24.983e9, "efficientdet-d4": 55.347e9, "efficientdet-d5": 135.73e9,
    "efficientdet-d6": 226.03e9, "efficientdet-d7": 325.47e9, "efficientdet-lite0": 977_617_221,
    "efficientdet-lite1": 1_973_728_714, "efficientdet-lite2": 3_383_232_590, "efficientdet-lite3": 7_503_764_515,
    "efficientdet-lite3x": 14_019_809_178, "efficientdet-lite4": 20_221_443_966,
}


def test_the_table_covers_every_model_once():
    assert not set(FITTED) & set(TRACED_AT_NATIVE_SIZE)
    assert sorted([*FITTED, *TRACED_AT_NATIVE_SIZE]) == sorted(MODEL_NAMES)
    for name in TRACED_AT_NATIVE_SIZE:  # exactly the sizes the linear fit in H*W cannot reach
        cfg = get_config(name)
        assert cfg.image_size % 2**cfg.max_level, name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameters_at_90_classes_are_automls(name):
    assert tabled_cost(name, 90).trainable_params == AUTOML_PARAMS[name]


@pytest.mark.parametrize("name", sorted(AUTOML_MULTIPLY_ADDS))
def test_multiply_adds_at_90_classes_are_within_half_a_percent_of_automls(name):
    assert abs(tabled_cost(name, 90).multiply_adds / AUTOML_MULTIPLY_ADDS[name] - 1) < 0.005


def test_measured_counts_pinned_elsewhere():
    # tests/test_model_flops.py and tests/test_model_lite.py measure these on built networks
    assert tabled_cost("efficientdet-d0", 90).multiply_adds == 2_549_262_098
    assert tabled_cost("efficientdet-lite0", 90).multiply_adds == 976_542_211
    # tests/test_model_cli.py: D0 with 3 classes has the class predictor's (64 + 1) * 9 * 87 weights fewer
    assert tabled_cost("efficientdet-d0", 3).trainable_params == 3_880_067 - 65 * 9 * 87


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_per_class_increase_is_the_class_predictors(name):
    cfg = get_config(name)
    if name in FITTED:
        params, small, double = FITTED[name]
        side = 2**cfg.max_level
        assert small[1] == class_head_float_ops_per_class(name, (side, side))
        assert double[1] == class_head_float_ops_per_class(name, (2 * side, 2 * side))
    else:
        params, native = TRACED_AT_NATIVE_SIZE[name]
        assert native[1] == class_head_float_ops_per_class(name, (cfg.image_size, cfg.image_size))
    assert params[1] == (cfg.fpn_num_filters + 1) * cfg.num_anchors


def test_models_answers_without_building_anything():
    script = ("import sys; from effdet_rt.cli.main import run; code = run(['models', '-n', '20']); "
              "print(code, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "EFFDET_NO_PROGRESS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "0 False"
    for name in MODEL_NAMES:
        cost = tabled_cost(name, 20)
        assert f"{cost.trainable_params:,}" in out.stdout and f"{cost.multiply_adds / 1e9:.3f}" in out.stdout, name


@pytest.mark.slow
@pytest.mark.parametrize(("name", "classes"), [("efficientdet-d0", 7), ("efficientdet-lite0", 2),
                                               ("efficientdet-d1", 90), ("efficientdet-lite1", 3)])
def test_the_table_equals_built_networks(name, classes):
    import tf_keras as keras

    from effdet_rt.model.flops import detector_cost

    keras.backend.clear_session()
    built = detector_cost(name, classes)
    keras.backend.clear_session()
    tabled = tabled_cost(name, classes)
    assert (tabled.trainable_params, tabled.multiply_adds, tabled.input_size) == (
        built.trainable_params, built.multiply_adds, built.input_size)


@pytest.mark.slow
def test_models_build_option_prints_the_same_table(capsys):
    assert run(["models", "-m", "efficientdet-d0", "-m", "efficientdet-lite0", "-n", "5", "--build"]) == 0
    built = capsys.readouterr().out
    assert run(["models", "-m", "efficientdet-d0", "-m", "efficientdet-lite0", "-n", "5"]) == 0
    assert capsys.readouterr().out == built
