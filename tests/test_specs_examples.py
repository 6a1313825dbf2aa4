"""The example specs in specs/: each loads, keeps every value it writes, and names only real commands.

A spec's comments tell a new user what to run (`effdet-rt dataset-convert ...`); a command there that does not
exist, or an option it does not take, fails here instead of on the user's machine.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from effdet_rt.cli.main import app
from effdet_rt.spec import load_spec

try:
    from click.exceptions import ClickException
except ImportError:  # typer 0.29 vendors click as typer._click and does not install click
    from typer._click.exceptions import ClickException

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))
ROOT_COMMAND = typer.main.get_command(app)


def comment_commands(text: str) -> list[str]:
    """The `effdet-rt ...` commands in the comments of ``text``: comment lines that start with ``effdet-rt``, and
    commands quoted in backticks (prose that merely names effdet-rt is not a command)."""
    commands = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped.startswith("#"):
            continue
        comment = stripped.lstrip("#").strip()
        if comment.startswith("effdet-rt "):
            commands.append(comment.removeprefix("effdet-rt ").strip())
            continue
        commands += [m.strip() for m in re.findall(r"`effdet-rt\s+([^`]*)`", comment)]
    return commands


def resolve(words: list[str]) -> tuple[list[str], object, list[str]]:
    """(command path, the leaf command, its arguments) for ``effdet-rt WORDS``; raises ValueError when it does
    not exist."""
    command = ROOT_COMMAND
    path: list[str] = []
    rest = list(words)
    while getattr(command, "commands", None) is not None:  # a group
        if not rest or rest[0].startswith("-"):
            raise ValueError(f"`effdet-rt {' '.join(path)}` needs a subcommand: {', '.join(command.commands)}")
        name = rest.pop(0)
        if name not in command.commands:
            where = f"effdet-rt {' '.join(path)}".strip()
            raise ValueError(f"`{where}` has no command {name!r}; it has: {', '.join(command.commands)}")
        path.append(name)
        command = command.commands[name]
    return path, command, rest


def check_command_line(line: str) -> None:
    """Raise ValueError unless ``effdet-rt LINE`` names an existing command and its options parse."""
    path, command, args = resolve(shlex.split(line))
    try:
        command.make_context(" ".join(["effdet-rt", *path]), args, resilient_parsing=False)
    except typer.Exit:
        pass
    except ClickException as exc:
        raise ValueError(f"`effdet-rt {line}`: {exc.format_message()}") from exc


def yaml_leaves(data: dict, prefix: tuple[str, ...] = ()):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from yaml_leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def test_there_are_example_specs():
    assert {p.name for p in SPECS} >= {"bccd_d0.yaml", "coco_d0.yaml"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_example_spec_loads_with_every_value_it_sets(path):
    raw = yaml.safe_load(path.read_text())
    if "dataset" not in raw and "data" in raw:  # TAO's classification spec
        from effdet_rt.classification.spec import load_classification_spec

        spec = load_classification_spec(path, [])
    else:
        spec = load_spec(path)
    leaves = list(yaml_leaves(raw))
    assert leaves, f"{path.name} sets no fields"
    for keys, value in leaves:
        loaded = spec
        for key in keys:
            loaded = getattr(loaded, key)
        if isinstance(value, str) and isinstance(loaded, list):  # TAO's "C,H,W" strings are read as numbers
            value = [int(part) for part in value.split(",")]
        assert loaded == value, f"{path.name}: {'.'.join(keys)} is {value!r} in the file but {loaded!r} once loaded"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_example_spec_comments_name_real_commands(path):
    commands = comment_commands(path.read_text())
    assert commands, f"{path.name}: its header should say which commands use it"
    for line in commands:
        check_command_line(line)


def test_bccd_spec_names_the_whole_flow():
    names = {" ".join(resolve(shlex.split(line))[0]) for line in comment_commands((SPECS[0].parent / "bccd_d0.yaml").read_text())}
    assert {"dataset-convert", "train", "evaluate", "export", "build", "infer"} <= names


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("dataset convert --voc ../shared/data/bccd/BCCD -o out", "has no command 'convert'"),
        ("spec", "needs a subcommand"),
        ("trian -e spec.yaml", "has no command 'trian'"),
        ("dataset-convert --voc VOC --splitt train -o out", "--splitt"),
    ],
)
def test_a_wrong_command_line_is_caught(line, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_command_line(line)


def test_commands_are_read_from_comments_only():
    text = ("# run `effdet-rt models --no-flops` first; effdet-rt cannot read .tlt\n"
            "#   effdet-rt spec show -e a.yaml\nname: effdet-rt x  # `effdet-rt spec default`\n")
    assert comment_commands(text) == ["models --no-flops", "spec show -e a.yaml"]
