"""COCO metrics (pycocotools), KITTI label files, drawing detections, metric tables and JSON."""
