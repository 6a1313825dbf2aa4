"""`effdet-rt models` through the in-process CLI."""

from effdet_rt.cli.main import run


def test_models_lists_parameters_without_flops(capsys):
    assert run(["models", "-m", "efficientdet_d0", "-n", "3", "--no-flops"]) == 0
    out = capsys.readouterr().out
    # 3 classes: D0's 3,880,067 less the class predictor's (64 + 1) * 9 * (90 - 3) weights
    assert "3,829,172" in out and "512x512" in out and "efficientnet-b0" in out and "64 x 3" in out


def test_models_unknown_name_lists_valid_ones(capsys):
    assert run(["models", "-m", "efficientdet-d9", "--no-flops"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model name 'efficientdet-d9': use one of efficientdet-d0, ")
    assert "efficientdet-d7x" in err and "Traceback" not in err


def test_models_rejects_zero_classes(capsys):
    assert run(["models", "-n", "0"]) == 2
    assert capsys.readouterr().err == (
        "error: --num-classes 0 is not allowed: give the number of real classes (>= 1)\n"
    )
