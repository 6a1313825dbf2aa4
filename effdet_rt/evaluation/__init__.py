"""COCO metrics (pycocotools): inputs checked, AP tables, per-class AP, PR curves, metrics JSON."""
