"""`effdet-rt spec default|show|convert` through the in-process CLI."""

from __future__ import annotations

from pathlib import Path

import yaml

from effdet_rt.cli.main import run
from effdet_rt.spec import default_spec, load_spec, spec_to_yaml

REPO = Path(__file__).resolve().parents[1]
TF1_SAMPLE = Path(__file__).parent / "data" / "spec_tf1_sample.txt"


def test_default_prints_the_complete_default_yaml(capsys):
    assert run(["spec", "default"]) == 0
    out = capsys.readouterr().out
    assert out == spec_to_yaml(default_spec())
    assert set(yaml.safe_load(out)) == {
        "dataset", "model", "train", "evaluate", "inference", "export", "prune", "build",
        "encryption_key", "results_dir", "num_gpus", "gpu_ids",
    }


def test_show_applies_overrides(capsys):
    assert run(["spec", "show", "-e", str(REPO / "specs" / "coco_d0.yaml"), "train.num_epochs=7", "model.input_width=256"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["train"]["num_epochs"], shown["model"]["input_width"], shown["train"]["batch_size"]) == (7, 256, 20)


def test_show_bad_override_is_one_error_line(capsys):
    assert run(["spec", "show", "train.batch_size=-3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: override: train.batch_size = -3 is not allowed: must be a positive integer\n"


def test_show_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert run(["spec", "show", "-e", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: spec file not found; check the -e/--experiment-spec path\n"


def test_convert_writes_yaml_and_lists_unmapped(capsys, tmp_path):
    out = tmp_path / "new" / "spec.yaml"
    assert run(["spec", "convert", str(TF1_SAMPLE), "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"wrote {out}",
        "4 TF1 field(s) have no TF2 equivalent and were dropped:",
        "  training_config.iterations_per_loop",
        "  training_config.profile_skip_steps",
        "  eval_config.eval_epoch_cycle",
        "  eval_config.eval_after_training",
    ]
    converted = load_spec(out)
    assert (converted.train.batch_size, converted.train.lr_schedule.learning_rate) == (16, 0.1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["spec.yaml"]


def test_convert_bad_input_writes_nothing(capsys, tmp_path):
    bad = tmp_path / "old.txt"
    bad.write_text("training_config { train_batch_size: -1 }\n")
    out = tmp_path / "new.yaml"
    assert run(["spec", "convert", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: not a valid TF1 EfficientDet spec (line 1, column 37: ")
    assert err.count("\n") == 1 and "Value out of range: -1" in err
    assert list(tmp_path.iterdir()) == [bad]


def test_show_takes_the_task_from_the_spec_sections(capsys, tmp_path):
    from effdet_rt.classification.spec import classification_spec_to_yaml, load_classification_spec

    classification = REPO / "specs" / "hymenoptera_b0.yaml"
    assert run(["spec", "show", "-e", str(classification), "train.num_epochs=3"]) == 0
    out = capsys.readouterr().out
    assert out == classification_spec_to_yaml(load_classification_spec(classification, ["train.num_epochs=3"]))
    assert yaml.safe_load(out)["train"]["num_epochs"] == 3 and "dataset" not in yaml.safe_load(out)
    # a detector spec, a TF1 prototxt (always a detector's) and no spec at all stay detection
    assert run(["spec", "show", "-e", str(REPO / "specs" / "coco_d0.yaml")]) == 0
    assert "dataset" in yaml.safe_load(capsys.readouterr().out)
    assert run(["spec", "show", "-e", str(TF1_SAMPLE)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["batch_size"] == 16
    # an explicit --task that contradicts the sections is still one error line naming the right command
    assert run(["spec", "show", "-e", str(classification), "--task", "detection"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this is a classification spec" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    assert run(["spec", "show", "-e", str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {broken}")


def test_spec_tasks_come_from_the_task_registry(capsys, monkeypatch, tmp_path):
    """`--task` takes detection and every task that registered a spec part; a registered task's part prints its
    spec, so a new task needs no edit here."""
    from effdet_rt import tasks
    from effdet_rt.spec.loader import SPEC_PART, SpecShape, task_names

    assert task_names() == ["detection", "classification"]
    assert run(["spec", "default", "--task", "segmentation"]) == 2
    assert capsys.readouterr().err == ("error: --task segmentation is not allowed: choose one of detection, "
                                       "classification\n")
    shown: list = []
    fake = SpecShape(lambda data: "masks" in data, "a segmentation spec", lambda: "masks: {}\n",
                     lambda path, overrides, log: shown.append((path, list(overrides))) or "masks: {shown: 1}\n")
    monkeypatch.setitem(tasks._parts[SPEC_PART], "segmentation", fake)
    assert run(["spec", "default", "--task", "segmentation"]) == 0
    assert capsys.readouterr().out == "masks: {}\n"
    spec = tmp_path / "seg.yaml"
    spec.write_text("masks: {}\n")
    assert run(["spec", "show", "-e", str(spec), "a.b=1"]) == 0  # the task taken from the file's sections
    assert capsys.readouterr().out == "masks: {shown: 1}\n" and shown == [(spec, ["a.b=1"])]
    assert run(["spec", "default", "--task", "nothing"]) == 2
    assert "choose one of detection, classification, segmentation\n" in capsys.readouterr().err
