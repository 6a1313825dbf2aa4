"""The tensor names of an exported detector: the exporter writes them, the NMS subgraphs, the Q/DQ pass and every
runtime look them up, and DeepStream's config lists them, so they are spelled here once."""

from __future__ import annotations

INPUT_NAME = "images"  # (N, H, W, 3) float32 0..255 RGB

CLASS_LOGITS = "class_logits"  # (N, A, C) per-anchor class logits
BOX_CODES = "box_codes"  # (N, A, 4) per-anchor (ty, tx, th, tw)
RAW_OUTPUTS = (CLASS_LOGITS, BOX_CODES)  # `--nms none`: the heads, post-processed on the host

NUM_DETECTIONS = "num_detections"
DETECTION_BOXES = "detection_boxes"
DETECTION_SCORES = "detection_scores"
DETECTION_CLASSES = "detection_classes"
# The graph outputs with NMS inside, in the order EfficientNMS_TRT gives them (DeepStream's parser expects it).
OUTPUT_NAMES = (NUM_DETECTIONS, DETECTION_BOXES, DETECTION_SCORES, DETECTION_CLASSES)
