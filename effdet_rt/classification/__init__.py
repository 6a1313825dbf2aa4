"""EfficientNet image classification (TAO's classification task), built from the detector's parts.

The backbone is `effdet_rt.model.efficientnet`, checkpoints are `.edrt` archives (`effdet_rt.checkpoint`), progress and
status.json come from `effdet_rt.utils.status`, TensorBoard events from `effdet_rt.trainer.callbacks`, and the ONNX
export, ONNX Runtime FP32/INT8 builds and DeepStream configs go through `effdet_rt.export` / `effdet_rt.engines` /
`effdet_rt.calib`, which tell a classifier from a detector by the ONNX metadata key ``effdet_rt.task``: the row
of that key's value, like the shape of this task's spec file, is registered from `task.py` (`effdet_rt.tasks`).
"""
