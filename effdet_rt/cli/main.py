"""The `effdet-rt` command. Each task lives in its own module with a ``register(app)`` function."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import typer

from effdet_rt import __version__
from effdet_rt.errors import TrainingInterrupted, UserError

try:
    from click.exceptions import Abort, ClickException
except ImportError:  # typer 0.29 vendors click as typer._click and does not install click
    from typer import Abort
    from typer._click.exceptions import ClickException

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Task modules under effdet_rt/cli/, registered in this order (also the order of `effdet-rt --help`).
COMMAND_MODULES: list[str] = [
    "spec",
    "dataset",
    "train",
    "evaluate",
    "infer",
    "export",
    "build",
    "demo",
    "engine_info",
    "deepstream",
    "models",
    "classification",
]

app = typer.Typer(
    name="effdet-rt",
    help="EfficientDet: train, evaluate, export to ONNX, build TensorRT / ONNX Runtime engines, infer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": os.environ.get("EFFDET_DEBUG") == "1"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"effdet-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    if debug:
        _state["debug"] = True


for _name in COMMAND_MODULES:
    importlib.import_module(f"effdet_rt.cli.{_name}").register(app)


def _fail(message: str, code: int) -> int:
    if _state["debug"]:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by main() and by tests)."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="effdet-rt")
    except UserError as exc:
        return _fail(str(exc), exc.exit_code)
    except TrainingInterrupted as exc:
        return _fail(str(exc), exc.exit_code)
    except Abort:
        print("error: interrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except ClickException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
