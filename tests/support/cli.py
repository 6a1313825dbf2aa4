"""What every bad-input test checks of a CLI run: exit code 2 and exactly one `error:` line on stderr."""

from __future__ import annotations

from effdet_rt.cli.main import run


def one_error_line(args: list[str], capsys, *needles: str) -> str:
    """Runs the CLI on ``args`` (discarding what was printed before) and returns its one error line, which must
    contain every needle."""
    capsys.readouterr()
    code = run(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]
