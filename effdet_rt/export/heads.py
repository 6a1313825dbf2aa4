"""A Keras wrapper that turns the per-level network outputs into the two tensors the exporter works on."""

from __future__ import annotations

import tf_keras as keras

from effdet_rt.model.efficientdet import flatten_outputs, split_outputs
from effdet_rt.onnx.names import BOX_CODES, CLASS_LOGITS


class FlattenHeads(keras.layers.Layer):
    def __init__(self, num_levels: int, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_levels = num_levels
        self.num_classes = num_classes

    def call(self, outputs):
        classes, boxes = split_outputs(outputs, self.num_levels)
        return flatten_outputs(classes, boxes, self.num_classes)


def raw_heads_model(model: keras.Model, num_levels: int, num_classes: int) -> keras.Model:
    """images (N, H, W, 3) 0..255 -> class_logits (N, A, C), box_codes (N, A, 4) (ty, tx, th, tw)."""
    logits, codes = FlattenHeads(num_levels, num_classes, name="flatten_heads")(model.outputs)
    logits = keras.layers.Activation("linear", name=CLASS_LOGITS, dtype="float32")(logits)
    codes = keras.layers.Activation("linear", name=BOX_CODES, dtype="float32")(codes)
    return keras.Model(model.inputs, [logits, codes], name=f"{model.name}_heads")
