"""`effdet-rt infer` (alias `inference`): run any model file on a folder of images."""

from __future__ import annotations

from pathlib import Path

import typer

from effdet_rt.cli.common import key_option, overrides_argument, spec_option

EXIT_SOME_FAILED = 1


def infer(
    model: Path = typer.Option(None, "-m", "--model", help="Model file: .edrt checkpoint, .onnx, .plan/.engine or OpenVINO .xml "
                               "(default: the spec's inference.checkpoint)."),
    image_dir: Path = typer.Option(None, "-i", "--image-dir", help="Folder of JPEG/PNG images "
                                   "(default: inference.image_dir)."),
    output_dir: Path = typer.Option(None, "-o", "--output-dir", help="Where images_annotated/, labels/ and "
                                    "detections.json go (default: inference.output_dir, else results_dir/inference)."),
    spec: Path = spec_option,
    key: str = key_option,
    batch_size: int = typer.Option(None, "--batch-size", help="Images per batch (default: inference.batch_size)."),
    min_score: float = typer.Option(None, "--min-score", help="Keep detections scoring at least this "
                                    "(default: inference.min_score_thresh)."),
    max_boxes_to_draw: int = typer.Option(None, "--max-boxes-to-draw", help="Boxes drawn per image "
                                          "(default: inference.max_boxes_to_draw)."),
    label_map: Path = typer.Option(None, "--label-map", help="label_map.yaml naming the classes "
                                   "(default: inference.label_map; else ids are shown)."),
    dump_label: bool = typer.Option(None, "--dump-label/--no-dump-label", help="Write labels/<image>.txt in KITTI "
                                    "format (default: inference.dump_label)."),
    annotations: Path = typer.Option(None, "-a", "--annotations-file", help="COCO json whose image ids "
                                     "detections.json should use (matched by file name); default: file names."),
    overrides: list[str] = overrides_argument,
) -> None:
    """Detect objects in every image of a folder: annotated images, KITTI labels, COCO results json.

    Unreadable images are reported and skipped; the other outputs are still written, then the run exits 1.

    Bad arguments (a missing or empty folder, a wrong key) exit 2 with one error line.
    """
    from effdet_rt.data.labels import load_label_map
    from effdet_rt.engines import load
    from effdet_rt.errors import UserError
    from effdet_rt.infer.folder import InferOptions, image_ids_from_annotations, infer_folder, list_images
    from effdet_rt.spec.loader import load_task_spec
    from effdet_rt.utils.status import StatusLogger, progress_bar

    settings = load_task_spec(spec, overrides)
    conf = settings.inference
    model = model or _path_or_none(conf.checkpoint)
    image_dir = image_dir or _path_or_none(conf.image_dir)
    output_dir = output_dir or _path_or_none(conf.output_dir) or Path(conf.results_dir or settings.results_dir) / "inference"
    if model is None:
        raise UserError("no model: pass -m/--model (a .edrt, .onnx, .plan or OpenVINO .xml file) or set inference.checkpoint")
    if image_dir is None:
        raise UserError("no images: pass -i/--image-dir or set inference.image_dir in the spec")
    options = InferOptions(
        batch_size=_positive("--batch-size", batch_size if batch_size is not None else conf.batch_size),
        min_score=min_score if min_score is not None else conf.min_score_thresh,
        max_boxes_to_draw=_positive("--max-boxes-to-draw",
                                    max_boxes_to_draw if max_boxes_to_draw is not None else conf.max_boxes_to_draw),
        dump_label=dump_label if dump_label is not None else conf.dump_label,
        label_map=load_label_map(label_map or conf.label_map) if (label_map or conf.label_map) else {},
    )
    if not 0.0 <= options.min_score <= 1.0:
        raise UserError(f"--min-score {options.min_score} is not allowed; use a value from 0 to 1")
    images = list_images(image_dir)
    image_ids = image_ids_from_annotations(annotations, images) if annotations else None
    engine = load(model, key=key, spec=settings)
    status = StatusLogger(output_dir)
    status.write("STARTED", f"inference on {len(images)} image(s) from {image_dir}")
    with progress_bar() as progress:
        task = progress.add_task("infer", total=len(images), info="")
        summary = infer_folder(engine, image_dir, output_dir, options, image_ids=image_ids,
                               on_image=lambda _: progress.advance(task))
    kpi = {"images": summary.images, "failed": len(summary.failures), "detections": summary.detections}
    for name, reason in summary.failures:
        typer.echo(f"failed: {name}: {reason}", err=True)
    status.write("FAILURE" if summary.failures else "SUCCESS", summary.line(), kpi=kpi)
    typer.echo(f"{summary.line()}; outputs in {output_dir}")
    if summary.failures:
        raise typer.Exit(EXIT_SOME_FAILED)


def _path_or_none(text: str) -> Path | None:
    return Path(text) if text else None


def _positive(option: str, value: int) -> int:
    from effdet_rt.errors import UserError

    if value < 1:
        raise UserError(f"{option} {value} is not allowed; use 1 or more")
    return value


def register(app: typer.Typer) -> None:
    app.command("infer")(infer)
    app.command("inference", help="Alias of `infer` (TAO's task name).")(infer)
