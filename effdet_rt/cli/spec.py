"""`effdet-rt spec`: print the default or resolved spec, convert a legacy TF1 spec."""

from __future__ import annotations

import typer

from effdet_rt.cli.common import option, overrides_argument, path_or_none, spec_notice, spec_option
from effdet_rt.errors import UserError

spec_app = typer.Typer(
    name="spec", help="Experiment specs: defaults, resolved view, TF1 conversion.", no_args_is_help=True
)


task_option = typer.Option("detection", "--task", help="detection (EfficientDet) or classification (EfficientNet).")
show_task_option = typer.Option(None, "--task", show_default=False,
                                help="detection (EfficientDet) or classification (EfficientNet). Default: what the "
                                     "-e spec's sections say (data:/augment: is classification), else detection.")


def _task_spec_shape(task: str):
    """The registered spec part of ``task``, refusing a task nobody registered."""
    from effdet_rt.spec.loader import SPEC_PART, task_names
    from effdet_rt.tasks import parts

    names = task_names()
    if task not in names:
        raise UserError(f"--task {task} is not allowed: choose one of {', '.join(names)}")
    return parts(SPEC_PART)[task]


@spec_app.command("default")
def default_command(task: str = task_option) -> None:
    """Print the complete default spec as YAML."""
    typer.echo(_task_spec_shape(task).default_yaml(), nl=False)


@spec_app.command("show")
def show_command(
    spec: str | None = spec_option,
    task: str | None = show_task_option,
    overrides: list[str] | None = overrides_argument,
) -> None:
    """Print the spec after loading it and applying overrides, and the preset values its unset model fields take."""
    from effdet_rt.spec.loader import spec_file_task
    from effdet_rt.tasks import default_task

    if task is None:
        task = spec_file_task(spec) if spec else default_task()
    shape = _task_spec_shape(task)
    typer.echo(shape.resolved_yaml(path_or_none(spec), overrides or [], spec_notice), nl=False)


@spec_app.command("convert")
def convert_command(
    tf1_spec: str = typer.Argument(..., help="Legacy TF1 prototxt spec (training_config { ... } ...)."),
    output: str = option(..., "-o", "--output", help="Where to write the TF2 YAML spec."),
) -> None:
    """Convert a TAO TF1 prototxt spec to a YAML spec and list the TF1 fields that have no equivalent."""
    from effdet_rt.spec import convert_tf1, spec_to_yaml
    from effdet_rt.utils.atomic import atomic_write_text

    spec, unmapped = convert_tf1(tf1_spec)
    written = atomic_write_text(output, spec_to_yaml(spec))
    typer.echo(f"wrote {written}")
    if unmapped:
        typer.echo(f"{len(unmapped)} TF1 field(s) have no TF2 equivalent and were dropped:")
        for name in unmapped:
            typer.echo(f"  {name}")
    else:
        typer.echo("every TF1 field was mapped")


def register(app: typer.Typer) -> None:
    app.add_typer(spec_app, name="spec")
