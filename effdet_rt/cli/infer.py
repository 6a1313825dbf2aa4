"""`effdet-rt inference` (alias `infer`): run any model file on a folder of images."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import typer

from effdet_rt.cli.common import (
    field_option,
    gpu_index_option,
    key_option,
    option,
    overrides_argument,
    spec_option,
    task_spec,
    use_gpu,
)
from effdet_rt.errors import UserError

EXIT_SOME_FAILED = 1


def infer(
    model: Path = field_option("inference.checkpoint", "-m", "--model", "--model-path",
                               help="Model file: .edrt checkpoint, .onnx, .plan/.engine or OpenVINO .xml."),
    image_dir: Path = field_option("inference.image_dir", "-i", "--image-dir", "--in-image-path",
                                   help="Folder of JPEG/PNG images."),
    output_dir: Path = field_option("inference.output_dir", "-o", "--output-dir", "--out-image-path",
                                    help="Where images_annotated/, labels/ and detections.json go (unset: "
                                         "inference.results_dir, else results_dir, + /inference)."),
    label_dir: Path = option(None, "-l", "--out-label-path", help="Write KITTI label files into this folder "
                             "(turns on inference.dump_label)."),
    spec: Path = spec_option,
    key: str = key_option,
    batch_size: int = field_option("inference.batch_size", "--batch-size", help="Images per batch."),
    min_score: float = field_option("inference.min_score_thresh", "--min-score",
                                    help="Keep detections scoring at least this."),
    max_boxes_to_draw: int = field_option("inference.max_boxes_to_draw", "--max-boxes-to-draw",
                                          help="Boxes drawn per image."),
    label_map: Path = field_option("inference.label_map", "--label-map",
                                   help="label_map.yaml or TAO's labels.txt naming the classes (else ids are shown)."),
    dump_label: bool = field_option("inference.dump_label", "--dump-label/--no-dump-label",
                                    help="Write labels/<image>.txt in KITTI format."),
    annotations: Path = option(None, "-a", "--annotations-file", help="COCO json whose image ids "
                               "detections.json should use (matched by file name); default: file names."),
    gpu_index: int = gpu_index_option,
    overrides: list[str] = overrides_argument,
) -> None:
    """Detect objects in every image of a folder: annotated images, KITTI labels, COCO results json.

    Unreadable images are reported and skipped; the other outputs are still written, then the run exits 1.

    Bad arguments (a missing or empty folder, a wrong key) exit 2 with one error line.
    """
    use_gpu(gpu_index)
    from effdet_rt.engines import load
    from effdet_rt.infer.folder import (
        InferOptions,
        image_ids_from_annotations,
        infer_folder,
        list_images,
        packed_label_map,
        with_inference_nms,
    )
    from effdet_rt.utils.status import StatusLogger, progress_bar

    settings = task_spec(infer, locals())
    conf = settings.inference
    if not conf.checkpoint:
        raise UserError("no model: pass -m/--model (a .edrt, .onnx, .plan or OpenVINO .xml file) or set inference.checkpoint")
    if not conf.image_dir:
        raise UserError("no images: pass -i/--image-dir or set inference.image_dir in the spec")
    output = Path(conf.output_dir) if conf.output_dir else Path(conf.results_dir or settings.results_dir) / "inference"
    options = InferOptions.from_spec(conf, label_dir)
    images = list_images(conf.image_dir)
    image_ids = image_ids_from_annotations(annotations, images) if annotations else None
    engine = load(conf.checkpoint, key=key, spec=with_inference_nms(settings))
    if not options.label_map:  # a .tflite names its classes itself
        options = dataclasses.replace(options, label_map=packed_label_map(engine))
    created = not output.exists()
    status = StatusLogger(output)
    status.write("STARTED", f"inference on {len(images)} image(s) from {conf.image_dir}")
    try:
        with progress_bar() as progress:
            task = progress.add_task("infer", total=len(images), info="")
            summary = infer_folder(engine, conf.image_dir, output, options, image_ids=image_ids,
                                   on_image=lambda _: progress.advance(task))
    except BaseException as exc:  # a model that loads but fails to run: no half-made output folder stays
        if created:
            shutil.rmtree(output, ignore_errors=True)
        else:
            status.write("FAILURE", f"inference stopped: {exc}")
        raise
    kpi = {"images": summary.images, "failed": len(summary.failures), "detections": summary.detections}
    for name, reason in summary.failures:
        typer.echo(f"failed: {name}: {reason}", err=True)
    status.write("FAILURE" if summary.failures else "SUCCESS", summary.line(), kpi=kpi)
    typer.echo(f"{summary.line()}; outputs in {output}" + (f", labels in {label_dir}" if label_dir else ""))
    if summary.failures:
        raise typer.Exit(EXIT_SOME_FAILED)


def register(app: typer.Typer) -> None:
    app.command("inference", help="Detect objects in every image of a folder (TAO's task name; alias `infer`).")(infer)
    app.command("infer")(infer)
