"""KITTI label files, drawn detections, the metrics table and eval_results.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from effdet_rt.errors import DataError
from effdet_rt.evaluation.report import format_metrics_table, write_metrics_json
from effdet_rt.infer.draw import draw_detections
from effdet_rt.infer.kitti import kitti_line
from effdet_rt.utils.colours import class_colour
from tests.support.kitti import parse_kitti_file, write_kitti_labels


def test_kitti_line_layout():
    line = kitti_line("RBC", [10.0, 20.5, 30.126, 40.0], 0.875)
    assert line == "RBC 0.00 0 0.00 10.00 20.50 30.13 40.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.875"
    assert kitti_line("traffic light", [0, 0, 1, 1], 1.0).split()[0] == "traffic_light"
    assert kitti_line("a", [0, 0, 1, 1], 1.0).endswith(" 1.0")


def test_kitti_file_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    boxes = (rng.random((5, 4)) * 500).astype(np.float32)
    scores = rng.random(5).astype(np.float32)
    names = ["RBC", "WBC", "Platelets", "red cell", "RBC"]
    path = write_kitti_labels(tmp_path / "img_001.txt", boxes, scores, names)
    parsed = parse_kitti_file(path)
    assert [name for name, _, _ in parsed] == ["RBC", "WBC", "Platelets", "red_cell", "RBC"]
    assert np.array_equal(np.array([box for _, box, _ in parsed]), np.round(boxes.astype(np.float64), 2))
    assert np.array_equal(np.array([score for _, _, score in parsed], np.float32), scores)  # exact float32
    assert all(len(line.split()) == 16 for line in path.read_text().splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img_001.txt"]


def test_kitti_empty_file_and_ground_truth_lines(tmp_path):
    empty = write_kitti_labels(tmp_path / "none.txt", np.zeros((0, 4)), np.zeros(0), [])
    assert empty.read_bytes() == b"" and parse_kitti_file(empty) == []
    gt = tmp_path / "gt.txt"
    gt.write_text("Car 0.00 0 0.00 1.00 2.00 3.00 4.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00\n")
    assert parse_kitti_file(gt) == [("Car", (1.0, 2.0, 3.0, 4.0), None)]
    gt.write_text("Car 0.00 0 0.00 1.00 2.00\n")
    with pytest.raises(DataError, match=r"gt.txt:1: expected 15 or 16 KITTI fields, found 6"):
        parse_kitti_file(gt)


@pytest.fixture()
def grey_image() -> np.ndarray:
    return np.full((128, 160, 3), 128, np.uint8)


def test_draw_keeps_size_and_draws_the_box_edge(grey_image):
    picture = draw_detections(grey_image, np.array([[40, 50, 120, 110]]), np.array([0.9]), np.array([2]),
                              label_map={2: "WBC"}, min_score=0.5, max_boxes=10)
    assert picture.size == (160, 128) and picture.mode == "RGB"
    pixels = np.asarray(picture)
    assert tuple(pixels[80, 40]) == class_colour(2)  # left edge, mid-height
    assert tuple(pixels[80, 120]) == class_colour(2)  # right edge
    assert tuple(pixels[105, 80]) == (128, 128, 128)  # inside the box, away from the tag
    assert tuple(pixels[5, 5]) == (128, 128, 128)  # untouched corner
    assert not np.array_equal(pixels[38:50, 40:80], grey_image[38:50, 40:80])  # the "WBC 0.90" tag above the box
    assert np.array_equal(grey_image, np.full((128, 160, 3), 128, np.uint8))  # input not modified


def test_draw_filters_by_score_and_count_and_colours_by_class(grey_image):
    boxes = np.array([[10, 60, 30, 100], [60, 60, 80, 100], [110, 60, 130, 100]], np.float32)
    picture = draw_detections(grey_image, boxes, np.array([0.3, 0.8, 0.7]), np.array([1, 1, 3]),
                              min_score=0.5, max_boxes=1)
    pixels = np.asarray(picture)
    assert tuple(pixels[80, 10]) == (128, 128, 128)  # below min_score
    assert tuple(pixels[80, 60]) == class_colour(1)  # the best one
    assert tuple(pixels[80, 110]) == (128, 128, 128)  # beyond max_boxes
    both = np.asarray(draw_detections(grey_image, boxes, np.array([0.3, 0.8, 0.7]), np.array([1, 1, 3])))
    assert tuple(both[80, 110]) == class_colour(3) != class_colour(1)


def test_cached_tag_text_gives_the_pixels_of_drawing_the_text_directly(grey_image):
    from PIL import Image, ImageDraw, ImageFont

    from effdet_rt.infer import draw as drawing
    from effdet_rt.utils.colours import text_colour_on

    box, colour = [40, 50, 120, 110], class_colour(2)
    cached = np.asarray(draw_detections(grey_image, np.array([box]), np.array([0.9]), np.array([2]),
                                        label_map={2: "WBC"}))
    # the same picture drawn the plain way: box, tag rectangle, then ImageDraw.text with the default font
    picture = Image.fromarray(grey_image.copy())
    pen = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=10)
    pen.rectangle(box, outline=colour, width=2)
    left, top, right, bottom = pen.textbbox((0, 0), "WBC 0.90", font=font)
    tag_w, tag_h = right - left + 4, bottom - top + 4
    pen.rectangle([40, 50 - tag_h, 40 + tag_w, 50], fill=colour)
    pen.text((42 - left, 52 - tag_h - top), "WBC 0.90", fill=text_colour_on(colour), font=font)
    assert np.array_equal(cached, np.asarray(picture))
    hits = drawing._tag_text.cache_info().hits
    draw_detections(grey_image, np.array([box, [10, 80, 30, 120]]), np.array([0.9, 0.9]), np.array([2, 2]),
                    label_map={2: "WBC"})
    assert drawing._tag_text.cache_info().hits == hits + 2  # "WBC 0.90" rendered once, reused for both boxes


def test_class_colours_are_distinct():
    colours = {class_colour(i) for i in range(20)}
    assert len(colours) == 20


def test_metrics_table_orders_rows_and_shows_missing_as_na():
    metrics = {"AP/WBC": 0.5, "ARl": -1.0, "AP": 0.62345, "AP/RBC": 0.25}
    table = format_metrics_table(metrics)
    assert [cell for cell in table.columns[0]._cells] == ["AP", "ARl", "AP/RBC", "AP/WBC"]
    assert [cell for cell in table.columns[1]._cells] == ["0.6234", "n/a", "0.2500", "0.5000"]
    console = Console(width=120, record=True)
    console.print(table)
    assert "AP @[IoU=0.50:0.95 | area=all | maxDets=max]" in console.export_text()


def test_write_metrics_json(tmp_path):
    path = write_metrics_json(tmp_path / "results", {"AP": np.float64(0.5), "AP50": 1.0})
    assert path == tmp_path / "results" / "eval_results.json"
    assert json.loads(path.read_text()) == {"AP": 0.5, "AP50": 1.0}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["eval_results.json"]
