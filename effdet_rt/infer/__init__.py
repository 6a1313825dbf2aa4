"""Running an engine over images: batched inference, annotated pictures, KITTI labels, COCO evaluation of a dataset."""
