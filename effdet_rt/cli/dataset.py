"""dataset-convert, dataset-synth and `dataset import-voc`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from effdet_rt.cli.common import option, results_dir_option
from effdet_rt.errors import UserError

dataset_app = typer.Typer(help="Dataset tools: import Pascal VOC annotations as COCO json.", no_args_is_help=True)


def dataset_convert(
    image_dir: Path = option(None, "-i", "--image-dir", help="Folder of the images (default with --voc: VOC_ROOT/JPEGImages)."),
    annotations_file: Path = option(None, "-a", "--annotations-file", help="COCO detection json."),
    output_dir: Path = option(..., "-o", "--output-dir", help="Where the TFRecords, warnings and label map go."),
    tag: str = option(None, "-t", "--tag", help="File name prefix (default: the json's stem, or the VOC split)."),
    num_shards: int = option(256, "-s", "--num-shards", help="Number of shards (never more than images)."),
    include_mask: bool = option(False, "--include-mask", help="Also write instance masks as PNGs."),
    voc: Path = option(None, "--voc", help="Pascal VOC root instead of -a: converted to COCO json first."),
    split: str = option("train", "--split", help="VOC split (ImageSets/Main/<split>.txt), or 'all' for every XML."),
    workers: int = option(None, "--workers", help="Worker processes (default: min(2, CPU count))."),
    results_dir: Path = results_dir_option,
) -> None:
    """Convert a COCO json (or a Pascal VOC folder) and its images into sharded TFRecords."""
    from effdet_rt.data.coco import load_coco, parse_coco
    from effdet_rt.data.convert import convert_dataset
    from effdet_rt.data.voc import voc_to_coco
    from effdet_rt.utils.status import StatusLogger

    if (voc is None) == (annotations_file is None):
        raise UserError("pass exactly one of -a/--annotations-file (COCO json) or --voc (Pascal VOC root)")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    extra: dict[str, bytes] = {}
    if voc is not None:
        tag = tag or split
        coco = voc_to_coco(voc, split)
        dataset = parse_coco(coco, f"{voc} (split {split})")
        extra[f"{tag}.json"] = json.dumps(coco, indent=1).encode("utf-8")
        image_dir = image_dir or voc / "JPEGImages"
    else:
        if image_dir is None:
            raise UserError("-i/--image-dir is required with -a/--annotations-file")
        tag = tag or annotations_file.stem
        dataset = load_coco(annotations_file)
    report = convert_dataset(dataset, image_dir, output_dir, tag, num_shards, include_mask, workers, extra)
    StatusLogger(results_dir).write(
        "SUCCESS",
        report.summary(),
        kpi={"images": report.images_written, "boxes": report.boxes_kept, "skipped_images": report.images_skipped},
    )
    typer.echo(report.summary())


def dataset_synth(
    output_dir: Path = option(..., "-o", "--output-dir", help="Folder for annotations.json and images/."),
    num_images: int = option(..., "--num-images", help="How many images."),
    seed: int = option(0, "--seed", help="Random seed: the same seed gives byte-identical files."),
    size: int = option(256, "--size", help="Image width and height in pixels."),
) -> None:
    """Write a deterministic synthetic detection set (rectangles, ellipses, triangles) as COCO json + JPEGs."""
    from effdet_rt.data.synth import write_synthetic_dataset

    summary = write_synthetic_dataset(output_dir, num_images, seed, size)
    typer.echo(f"wrote {summary['images']} images with {summary['boxes']} boxes to {output_dir}")


@dataset_app.command("import-voc")
def import_voc(
    voc_root: Path = typer.Argument(..., help="Pascal VOC root (Annotations/, JPEGImages/, ImageSets/Main/)."),
    split: str = option("all", "--split", help="VOC split, or 'all' for every XML."),
    output: Path = option(..., "-o", "--output", help="COCO json to write."),
) -> None:
    """Convert Pascal VOC XML annotations into one COCO json (file names relative to JPEGImages/)."""
    from effdet_rt.data.voc import voc_to_coco
    from effdet_rt.utils.atomic import atomic_write_text

    coco = voc_to_coco(voc_root, split)
    atomic_write_text(output, json.dumps(coco, indent=1))
    typer.echo(f"wrote {output}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
               f"{len(coco['categories'])} categories")


def register(app: typer.Typer) -> None:
    app.command("dataset-convert")(dataset_convert)
    app.command("dataset_convert", help="Alias of `dataset-convert` (TAO's task name).", hidden=True)(dataset_convert)
    app.command("dataset-synth")(dataset_synth)
    app.add_typer(dataset_app, name="dataset")
