"""The `effdet-rt` command. Each task lives in its own module with a ``register(app)`` function."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import traceback

import typer

from effdet_rt import __version__
from effdet_rt.cli.stderr_filter import install_stderr_filter
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
    "prune",
    "infer",
    "export",
    "build",
    "demo",
    "engine_info",
    "deepstream",
    "triton",
    "models",
    "weights",
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
LOG_FILE_FLAGS = ("--log-file", "--log_file")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"effdet-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    log_file: str = typer.Option(None, *LOG_FILE_FLAGS, help="Also write everything printed to this file "
                                 "(TAO's --log_file; may stand anywhere on the command line, e.g. after the task)."),
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


def split_log_file(argv: list[str]) -> tuple[list[str], str | None]:
    """TAO's --log_file, valid for every task and anywhere on the line: (the other arguments, its value)."""
    rest, path, args = [], None, iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in LOG_FILE_FLAGS:
            path = value if eq else next(args, None)
            if not path:
                raise UserError("--log_file needs a file name, e.g. --log_file train.log")
        else:
            rest.append(arg)
    return rest, path


class _Tee(io.TextIOBase):
    """Writes to the terminal stream and to the log file."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self):  # rich and click ask the stream for its encoding
        return getattr(self.stream, "encoding", "utf-8")


@contextlib.contextmanager
def copied_to(path: str | None):
    """Everything printed (stdout and stderr) also goes to ``path``, appended."""
    if path is None:
        yield
        return
    try:
        log = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UserError(f"{path}: cannot write the log file ({exc.strerror}); pass a writable --log_file path") from None
    with log, contextlib.redirect_stdout(_Tee(sys.stdout, log)), contextlib.redirect_stderr(_Tee(sys.stderr, log)):
        yield


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by main() and by tests)."""
    try:
        argv, log_file = split_log_file(list(sys.argv[1:] if argv is None else argv))
        with copied_to(log_file):
            return _dispatch(argv)
    except UserError as exc:
        return _fail(str(exc), exc.exit_code)


def _dispatch(argv: list[str]) -> int:
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
    install_stderr_filter()
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
