"""The user documentation stays true: docs/cli.md matches the CLI, and README's links and commands are there."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "results" / "HISTORY.md"]


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", REPO / "docs" / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_the_app():
    gen_cli = _gen_cli()
    current = gen_cli.CLI_MD.read_text(encoding="utf-8")
    assert gen_cli.updated(current) == current, "docs/cli.md is out of date: run python docs/gen_cli.py"


def test_cli_reference_lists_every_option_of_every_command():
    import typer

    from effdet_rt.cli.main import app

    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = {s.split("`", 1)[0]: s for s in text.split("\n### `effdet-rt ")[1:]}
    checked = 0
    stack = [([], typer.main.get_command(app))]
    while stack:
        path, command = stack.pop()
        if getattr(command, "commands", None) is not None:
            stack += [([*path, name], sub) for name, sub in command.commands.items()]
            continue
        section = sections.get(" ".join(path))
        assert section is not None, f"docs/cli.md has no section for effdet-rt {' '.join(path)}"
        if "Alias of" in section:
            continue
        shown = [p for p in command.params if not getattr(p, "hidden", False)]  # gen_cli.py leaves hidden ones out
        for option in (o for p in shown for o in getattr(p, "opts", []) if o.startswith("-")):
            assert f"`{option}`" in section, f"docs/cli.md: effdet-rt {' '.join(path)} {option} is missing"
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        target = link.split("#", 1)[0]
        if target and not re.match(r"[a-z]+://", target):
            assert (page.parent / target).exists(), f"{page.name}: link {link} points nowhere"


def test_readme_keeps_the_two_commands_and_stays_short():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- demo-command -->\n```bash\npython3 -m venv .venv && .venv/bin/pip install -q -e '.[torch-weights]' torch==2.13.0 && " in readme
    assert "<!-- test-command -->\n```bash\npython3 -m venv .venv && .venv/bin/pip install -q -e '.[dev,torch-weights]' torch==2.13.0 && " in readme
    assert len(readme.splitlines()) <= 160


def test_readme_demo_figures_are_recorded_runs():
    """Every mAP / AP50 and latency in README's demo section is a figure of a run kept in benchmarks/results."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Demo output"):readme.index("## Your own data")]
    history = (REPO / "benchmarks" / "results" / "HISTORY.md").read_text(encoding="utf-8")
    figures = re.findall(r"\b0\.\d{3}\b|\b\d+\.\d ms\b", section)
    assert len(figures) >= 12
    missing = [f for f in figures if f not in history]
    assert missing == [], f"README figures not in HISTORY.md: {missing}"
    assert "| epochs |" in section and "machine" in section
