"""TAO command lines work as TAO users type them: every flag of the efficientdet_tf1 tasks in
../shared/seeds/efficientdet_tf1_tasks.txt is accepted with its TAO meaning, and options reach the spec."""

import re
from pathlib import Path

import pytest
import typer

from effdet_rt.cli.main import app, run, split_log_file

SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "efficientdet_tf1_tasks.txt"
COMMAND = typer.main.get_command(app)

# task -> {TAO flag: the parameter it must fill}; every flag here is checked against the seed's text below.
TAO_FLAGS = {
    "dataset_convert": {"-i": "image_dir", "--image_dir": "image_dir", "-a": "annotations_file",
                        "--annotations_file": "annotations_file", "-o": "output_dir", "--output_dir": "output_dir",
                        "-t": "tag", "--tag": "tag", "-s": "num_shards", "--num_shards": "num_shards",
                        "--include_mask": "include_mask"},
    "train": {"-e": "spec", "--experiment_spec_file": "spec", "-d": "results_dir", "--model_dir": "results_dir",
              "-k": "key", "--key": "key", "--gpus": "gpus", "--gpu_index": "gpu_index"},
    "evaluate": {"-e": "spec", "--experiment_spec_file": "spec", "-m": "model", "--model_path": "model",
                 "-k": "key", "--key": "key", "--gpu_index": "gpu_index"},
    "inference": {"-m": "model", "--model_path": "model", "-i": "image_dir", "--in_image_path": "image_dir",
                  "-o": "output_dir", "--out_image_path": "output_dir", "-k": "key", "--key": "key",
                  "-e": "spec", "--experiment_spec_file": "spec", "-l": "label_dir", "--out_label_path": "label_dir",
                  "--label_map": "label_map", "--gpu_index": "gpu_index"},
    "prune": {"-m": "model", "--model": "model", "-o": "output", "--output_dir": "output", "-k": "key", "--key": "key",
              "-n": "normalizer", "-eq": "equalization_criterion", "--equalization_criterion": "equalization_criterion",
              "-pg": "granularity", "-pth": "threshold", "-nf": "min_num_filters",
              "--min_num_filters": "min_num_filters", "-el": "excluded_layers", "--excluded_layers": "excluded_layers",
              "--gpu_index": "gpu_index"},
    "export": {"-m": "model", "--model_path": "model", "-k": "key", "--key": "key", "-e": "spec",
               "--experiment_spec": "spec", "-o": "output", "--output_path": "output", "--gpu_index": "gpu_index"},
}
SWITCHES = {("dataset_convert", "--include_mask"), ("export", "--verbose")}


def seed_sections() -> dict[str, str]:
    """The seed's text for each task, from its usage line ("tao model efficientdet_tf1 TASK [-h]") to the next."""
    text = SEED.read_text(encoding="utf-8")
    starts = [(m.start(), m.group(1).replace("-", "_")) for m in
              re.finditer(r"tao model efficientdet_tf1 ([a-z_-]+) \[-h\]", text)]
    return {task: text[start:(starts[i + 1][0] if i + 1 < len(starts) else len(text))]
            for i, (start, task) in enumerate(starts)}


def usage_flags(section: str) -> set[str]:
    """Flags on the usage lines (up to the first argument list), which the seed writes one per line."""
    usage = re.split(r"Required Arguments|You can use the following arguments", section)[0]
    return set(re.findall(r"(?<![\w<-])(--?[a-z][a-z_]*)", usage)) - {"-h"}


@pytest.fixture(scope="module")
def sections():
    if not SEED.is_file():
        pytest.skip(f"TAO seed not found at {SEED} (the shared/ folder beside the checkout)")
    return seed_sections()


def test_the_table_is_the_seeds(sections):
    """Every usage-line flag of each task is in TAO_FLAGS (or is --log_file, handled for every task), and every
    flag in TAO_FLAGS appears in that task's part of the seed."""
    for task, flags in TAO_FLAGS.items():
        section = sections[task]
        assert usage_flags(section) - {"--log_file"} <= set(flags) | {name for t, name in SWITCHES if t == task}, task
        for flag in flags:
            assert re.search(rf"(?<!-){re.escape(flag)}(?![\w])", section), (task, flag)  # the seed glues some flags to the text before


@pytest.mark.parametrize("task", sorted(TAO_FLAGS))
def test_each_flag_fills_its_parameter(task):
    command = COMMAND.commands[task]
    for flag, parameter in TAO_FLAGS[task].items():
        switch = (task, flag) in SWITCHES
        sample = "True" if switch else "7"  # a value every option type reads (int, float, str, path)
        context = command.make_context(task, [flag] if switch else [flag, sample], resilient_parsing=True)
        value = context.params[parameter]
        value = value[0] if isinstance(value, list | tuple) and len(value) == 1 else value
        assert str(value) in (sample, sample + ".0"), (task, flag, context.params[parameter])


def test_export_verbose_and_help_flags():
    assert COMMAND.commands["export"].make_context("export", ["--verbose"], resilient_parsing=True).params["verbose"]
    for task in TAO_FLAGS:
        assert "-h" in COMMAND.commands[task].get_help_option_names(COMMAND.make_context("effdet-rt", [task]))


def test_log_file_anywhere_on_the_line(tmp_path, capsys):
    assert split_log_file(["train", "-e", "s.yaml", "--log_file", "t.log", "a=1"]) == (["train", "-e", "s.yaml", "a=1"], "t.log")
    assert split_log_file(["--log-file=x.log", "models"]) == (["models"], "x.log")
    log = tmp_path / "run.log"
    assert run(["spec", "default", "--log_file", str(log)]) == 0
    printed = capsys.readouterr().out
    assert "efficientdet-d0" in printed and log.read_text() == printed
    assert run(["spec", "show", "-e", str(tmp_path / "missing.yaml"), "--log_file", str(log)]) == 2
    assert "error: " in log.read_text().splitlines()[-1] and "missing.yaml" in log.read_text()


def test_options_reach_the_spec_and_are_validated_once(tmp_path, capsys):
    """An option is an override of the field its help names: an invalid value is a spec error naming that field,
    and nothing runs."""
    code = run(["inference", "-m", str(tmp_path / "m.onnx"), "-i", str(tmp_path), "--min-score", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and "inference.min_score_thresh = 1.5 is not allowed" in err
    code = run(["build", "-m", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "e.onnx"), "--backend", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "build.backend = 'cuda' is not allowed" in err
    batch = next(p for p in COMMAND.commands["inference"].params if p.name == "batch_size")
    assert batch.help.endswith("[spec: inference.batch_size]")


def test_tf1_spec_given_to_a_task_names_what_was_dropped(tmp_path, capsys):
    spec = tmp_path / "tf1.txt"
    spec.write_text('training_config {\n  train_batch_size: 4\n  use_xla: true\n}\n'
                    'eval_config {\n  eval_batch_size: 2\n}\n')
    assert run(["spec", "show", "-e", str(spec)]) == 0
    captured = capsys.readouterr()
    assert "train.batch_size" not in captured.err
    assert "notice: " in captured.err and "training_config.use_xla" in captured.err
    assert "batch_size: 4" in captured.out


def test_tao_tlt_checkpoint_is_refused_plainly(tmp_path):
    from effdet_rt.checkpoint import load_checkpoint
    from effdet_rt.errors import CheckpointError

    (tmp_path / "efficientnet-b0_500.tlt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"TAO's \.tlt models are encrypted in NVIDIA's own format"):
        load_checkpoint(tmp_path / "efficientnet-b0_500.tlt", "nvidia_tlt")


def test_tao_label_txt_is_a_label_map(tmp_path):
    from effdet_rt.data.labels import load_label_map

    (tmp_path / "labels.txt").write_text("RBC\nWBC\n\nPlatelets\n")
    assert load_label_map(tmp_path / "labels.txt") == {1: "RBC", 2: "WBC", 3: "Platelets"}
