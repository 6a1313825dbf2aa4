"""The matplotlib charts: PNGs read back, their JSON data, and the bad input a chart must survive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from effdet_rt.utils import charts
from effdet_rt.utils.status import TrainingProgress

REPO = Path(__file__).resolve().parents[1]


def training_data(steps: int = 60, evaluated: tuple[int, ...] = (2, 3)) -> dict:
    numbers = list(range(1, steps + 1))
    return {"title": "test run", "steps_per_epoch": 20, "step": numbers, "epoch": [s / 20 for s in numbers],
            "class_loss": [1 / (1 + s / 10) for s in numbers], "box_loss": [0.1 / (1 + s / 20) for s in numbers],
            "total_loss": [1.5 / (1 + s / 10) for s in numbers], "learning_rate": [0.08 * min(1, s / 20) for s in numbers],
            "evaluation": {"epoch": list(evaluated), "AP": [0.1 * e for e in evaluated],
                           "AP50": [0.2 * e for e in evaluated]}}


def colours_in(path: Path, box: tuple[int, int, int, int]) -> set[tuple[int, int, int]]:
    with Image.open(path) as image:
        return {tuple(c) for c in np.asarray(image.convert("RGB").crop(box)).reshape(-1, 3)}


def test_training_results_png_has_six_panels_and_its_data(tmp_path):
    data = training_data()
    path = charts.write_training_results(tmp_path / "results.png", data)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1500, 750)
    assert json.loads((tmp_path / "results.json").read_text()) == data
    orange, green = (255, 127, 14), (44, 160, 44)  # tab:orange (smoothed losses), tab:green (validation AP)
    assert orange in colours_in(path, (0, 0, 1500, 375))  # top row: the three loss panels
    assert green in colours_in(path, (500, 375, 1500, 750))  # bottom right: mAP and AP50
    assert green not in colours_in(path, (0, 0, 1500, 375))


def test_training_results_before_any_evaluation_says_so(tmp_path):
    path = charts.write_training_results(tmp_path / "results.png", training_data(evaluated=()))
    assert (255, 127, 14) in colours_in(path, (0, 0, 1500, 375))
    assert (44, 160, 44) not in colours_in(path, (0, 0, 1500, 750))


def test_smoothed_is_a_trailing_mean():
    assert charts.smoothed([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_a_results_folder_with_another_runs_charts_gets_whole_new_ones(tmp_path):
    (tmp_path / "results.png").write_bytes(b"not a png from an older run")
    (tmp_path / "results.json").write_text('{"step": [1, 2, 3], "tot')
    charts.write_training_results(tmp_path / "results.png", training_data(steps=40))
    assert json.loads((tmp_path / "results.json").read_text())["step"] == list(range(1, 41))
    with Image.open(tmp_path / "results.png") as image:
        assert image.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.png"]  # no temp files left


def test_half_written_metrics_json_is_skipped_with_a_warning(tmp_path):
    half = tmp_path / "demo_results.json"
    half.write_text('{"rows": [{"backend": "checkpoint", "precision": "fp32", "mAP": 0.4')
    lines: list[str] = []
    assert charts.read_chart_data(half, lines.append) is None
    assert len(lines) == 1 and lines[0].startswith(f"warning: {half} is not readable JSON (")
    assert lines[0].endswith("its chart is skipped until it is written again")
    half.write_text("[1, 2]")
    assert charts.read_chart_data(half, lines.append) is None and "does not hold a JSON object" in lines[-1]


def test_a_chart_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path):
    (tmp_path / "results.png").mkdir()  # a folder where the PNG goes: the rename onto it fails
    lines: list[str] = []
    assert charts.draw_safely(charts.write_training_results, tmp_path / "results.png", training_data(),
                              log=lines.append) is None
    assert len(lines) == 1 and lines[0].startswith("warning: chart write_training_results not drawn: ")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["results.json", "results.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_charts_need_no_display_and_never_load_pyplot(tmp_path):
    """A desktop-like environment (a DISPLAY, a GUI backend asked for) changes nothing: the canvas is Agg."""
    script = ("import sys; from effdet_rt.classification import charts; "
              f"charts.write_confusion_matrix({str(tmp_path / 'cm.png')!r}, [[3, 1], [0, 4]], ['ants', 'bees']); "
              "print('matplotlib.pyplot' in sys.modules, 'tkinter' in sys.modules)")
    env = {**os.environ, "DISPLAY": ":99", "MPLBACKEND": "TkAgg", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
    data = json.loads((tmp_path / "cm.json").read_text())
    assert data == {"classes": ["ants", "bees"], "counts": [[3, 1], [0, 4]], "normalised": [[0.75, 0.25], [0.0, 1.0]]}
    with Image.open(tmp_path / "cm.png") as image:
        assert image.size == (900, 400)


def test_engine_comparison_is_drawn_from_the_rows_it_is_given(tmp_path):
    rows = [{"backend": "checkpoint", "precision": "fp32", "mAP": 0.42, "AP50": 0.68, "latency_ms": 80.0},
            {"backend": "onnxruntime", "precision": "int8", "mAP": 0.41, "AP50": 0.67, "latency_ms": 12.5}]
    path = charts.write_engine_comparison(tmp_path / "demo_results.png", rows)
    with Image.open(path) as image:
        assert image.size == (800, 450)
    assert (44, 160, 44) in colours_in(path, (400, 0, 800, 450))  # the latency bars
    assert not (tmp_path / "demo_results.json").exists()  # drawn from the demo's own json, which it does not write


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_under_a_time_budget_counts_time_and_epochs():
    clock = Clock()
    progress = TrainingProgress(total_steps=12500, steps_per_epoch=25, num_epochs=500, first_step=0,
                                budget_seconds=600, clock=clock)
    clock.now += 245
    progress.update(575)
    assert progress.describe() == "4:05 of the 10:00 time budget, 23 epoch(s) done (step 575)"
    assert progress.fields() == {"cur_iter": 575, "elapsed_s": 245.0, "time_budget_s": 600.0}
    assert not progress.out_of_time()
    clock.now += 355
    assert progress.out_of_time()


def test_progress_without_a_budget_counts_steps_with_an_eta():
    clock = Clock()
    progress = TrainingProgress(total_steps=100, steps_per_epoch=10, num_epochs=10, first_step=20,
                                budget_seconds=None, clock=clock)
    assert progress.eta_seconds() is None and progress.describe().endswith("eta unknown")
    clock.now += 30
    progress.update(50)  # 30 steps in 30 s: 50 more take 50 s
    assert progress.describe() == "epoch 5/10, step 50/100, eta 0:50"
    assert progress.fields() == {"cur_iter": 50, "elapsed_s": 30.0, "max_iter": 100, "eta_s": 50.0}
    assert not progress.out_of_time()


def test_progress_bar_shows_the_budget_not_the_epoch_limit(monkeypatch):
    from rich.console import Console

    from effdet_rt.utils import status

    monkeypatch.delenv("EFFDET_NO_PROGRESS", raising=False)
    console = Console(record=True, width=120, force_terminal=False)
    monkeypatch.setattr(status, "console", console)
    clock = Clock()
    with TrainingProgress(12500, 25, 500, 0, 600, clock=clock) as progress:
        clock.now += 245
        progress.update(575, "loss 0.5000")
    text = console.export_text()
    assert "4:05 / 10:00" in text and "23 epoch(s) done" in text and "12500" not in text and "eta" not in text


def test_classifier_curves_and_scores_data(tmp_path):
    from effdet_rt.classification import charts as classification_charts

    classification_charts.write_classifier_curves(tmp_path / "tc.png", [1, 2], {"loss": [1.0, 0.5], "val_accuracy": [0.5, 0.75]})
    assert json.loads((tmp_path / "tc.json").read_text()) == {"epochs": [1, 2], "loss": [1.0, 0.5],
                                                              "val_accuracy": [0.5, 0.75]}
    per_class = {"ants": {"precision": 1.0, "recall": 0.8, "f1": 8 / 9}, "bees": {"precision": 0.8, "recall": 1.0,
                                                                                 "f1": 8 / 9}}
    classification_charts.write_class_scores(tmp_path / "cs.png", per_class)
    assert json.loads((tmp_path / "cs.json").read_text()) == {"classes": ["ants", "bees"], "precision": [1.0, 0.8],
                                                              "recall": [0.8, 1.0], "f1": [8 / 9, 8 / 9]}


def test_history_of_an_older_checkpoint_charts_its_total_loss(tmp_path):
    """Checkpoints written before results.png kept only the total loss: the other series come back as NaN."""
    import math

    from effdet_rt.trainer.loop import History

    history = History.from_metadata({"history_steps": [1, 2, 3], "history_losses": [3.0, 2.5, 2.0]})
    assert history.losses == [3.0, 2.5, 2.0] and all(math.isnan(v) for v in history.class_losses)
    history.append(4, 1.5, 1.0, 0.01, 0.08)
    history.evaluations.append({"epoch": 2, "AP": 0.1, "AP50": 0.3})
    data = history.chart_data(2, "resumed")
    assert data["epoch"] == [0.5, 1.0, 1.5, 2.0] and data["evaluation"] == {"epoch": [2], "AP": [0.1], "AP50": [0.3]}
    charts.write_training_results(tmp_path / "results.png", data)
    assert json.loads((tmp_path / "results.json").read_text())["class_loss"][3] == 1.0
    assert History.from_metadata(history.as_metadata()) == history


def test_resuming_takes_back_the_evaluation_its_checkpoint_was_saved_before(tmp_path):
    from effdet_rt.trainer.loop import History

    before = History([1, 2, 3, 4], [4.0, 3.0, 2.0, 1.0], [1.0] * 4, [0.1] * 4, [0.01] * 4)
    chart = {**before.chart_data(2, "run"), "evaluation": {"epoch": [1, 2, 3], "AP": [0.1, 0.2, 0.3],
                                                           "AP50": [0.3, 0.4, 0.5]}}
    resumed = History.from_metadata(before.as_metadata())
    resumed.recover_evaluations(chart, epoch=2)  # epoch 3's evaluation came after the last checkpoint: not taken
    assert resumed.evaluations == [{"epoch": 1, "AP": 0.1, "AP50": 0.3}, {"epoch": 2, "AP": 0.2, "AP50": 0.4}]
    other_run = History.from_metadata(before.as_metadata())
    other_run.recover_evaluations({**chart, "step": [1, 2, 5]}, epoch=2)  # another run's chart
    half_written = History.from_metadata(before.as_metadata())
    half_written.recover_evaluations(None, epoch=2)  # read_chart_data gave up on it (with a warning)
    broken = History.from_metadata(before.as_metadata())
    broken.recover_evaluations({**chart, "evaluation": {"epoch": [1, 2], "AP": [0.1]}}, epoch=2)
    assert other_run.evaluations == half_written.evaluations == broken.evaluations == []


def test_training_charts_are_redrawn_at_checkpoints_and_otherwise_once_a_minute(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(charts.time, "monotonic", lambda: clock[0])
    redraw = charts.RedrawClock(60.0)
    assert redraw.due()  # the first epoch draws
    redraw.drawn()
    clock[0] += 59.0
    assert not redraw.due() and redraw.due(now=True)  # a checkpoint was written: the charts must match it
    clock[0] += 1.0
    assert redraw.due()
    drawings: list[float] = []
    redraw.draw_if_due(lambda: drawings.append(clock[0]))  # due: draws and restarts the minute
    clock[0] += 30.0
    redraw.draw_if_due(lambda: drawings.append(clock[0]))  # not due
    redraw.draw_if_due(lambda: drawings.append(clock[0]), now=True)
    assert drawings == [1060.0, 1090.0] and not redraw.due()
