"""EfficientDet network, anchors, box coding and post-processing."""
