"""`build --backend openvino`: an exported ONNX model -> OpenVINO IR (`OUT.xml` + `OUT.bin`), FP32, FP16 or INT8.

The IR keeps the exported graph (NMS inside, or raw heads) and our ONNX metadata in its rt_info, plus the .bin's
digest so that the pair is checked when loaded. Both files are written into a temporary folder beside the output
and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.backends import backend_named
from effdet_rt.engines.runtime.openvino_common import (
    BIN_DIGEST_KEY,
    file_digest,
    import_openvino,
    set_rt_metadata,
    weights_file,
)
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.utils.status import library_progress_hidden

PRECISIONS = backend_named("openvino").precisions
HEADS = ("class_logits", "box_codes")


def read_source_onnx(onnx_path: Path):
    """The exported ONNX model, refused when OpenVINO cannot run it or it is not an effdet-rt detector."""
    from effdet_rt.engines.runtime.onnxruntime import read_detector_onnx, read_onnx

    proto = read_onnx(onnx_path)
    if any(node.op_type == "EfficientNMS_TRT" for node in proto.graph.node):
        raise ModelFileError(
            f"{onnx_path}: this model uses TensorRT's EfficientNMS_TRT plugin, which only TensorRT runs; export with "
            "--nms onnx (or --nms none) for OpenVINO, or build it with --backend tensorrt"
        )
    return read_detector_onnx(onnx_path)


def convert_onnx(ov: Any, onnx_path: Path) -> Any:
    """ONNX -> ov.Model with OpenVINO's offline transformations (the ones `ovc` applies: swish fusion, folding)."""
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpConversionFailure and friends all derive from RuntimeError/Exception
        first = str(exc).strip().splitlines()
        raise ModelFileError(f"{onnx_path}: OpenVINO cannot convert this model ({' '.join(first[-3:])})") from exc


@contextlib.contextmanager
def atomic_ir(output: Path) -> Iterator[Path]:
    """Yield a temporary .xml path; on success its .bin then its .xml are renamed onto the output pair."""
    from effdet_rt.utils.atomic import _ensure_parent

    _ensure_parent(output)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        tmp_xml = work / "model.xml"
        yield tmp_xml
        for part in (weights_file(tmp_xml), tmp_xml):
            with open(part, "rb+") as handle:
                os.fsync(handle.fileno())
        # the .bin first: the .xml (what `load` opens) appears last, and a leftover .xml from an earlier build no
        # longer matches the new .bin's digest, so a crash in between is refused at load, never run
        os.replace(weights_file(tmp_xml), weights_file(output))
        os.replace(tmp_xml, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def save_ir(ov: Any, model: Any, output: Path, metadata: dict[str, Any], compress_to_fp16: bool) -> Path:
    """Write the IR pair with our metadata and the .bin digest in rt_info."""
    with atomic_ir(output) as tmp_xml:
        set_rt_metadata(model, metadata)
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        # the digest can only be known after writing the .bin; writing again stores it (the .bin is unchanged)
        digest = file_digest(weights_file(tmp_xml))
        set_rt_metadata(model, {BIN_DIGEST_KEY: digest})
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        if file_digest(weights_file(tmp_xml)) != digest:
            raise RuntimeError("OpenVINO wrote a different .bin the second time; the IR pair cannot be checked")
    return output


def postprocess_op_names(model: Any) -> list[str]:
    """Friendly names of the ops from the raw heads to the outputs (decode, top-k, NMS): kept in float."""
    heads: list[Any] = []
    for op in model.get_ordered_ops():
        for port in op.outputs():
            if port.get_names() & set(HEADS):
                heads.extend(target.get_node() for target in port.get_target_inputs())
    seen: dict[str, None] = {}
    pending = list(heads)
    while pending:
        op = pending.pop()
        name = op.get_friendly_name()
        if name in seen or op.get_type_name() == "Result":
            continue
        seen[name] = None
        pending.extend(target.get_node() for port in op.outputs() for target in port.get_target_inputs())
    return list(seen)


def input_normalization_op_names(model: Any) -> list[str]:
    """The per-channel 1x1 Conv that normalises the 0..255 input: kept in float (the image is not an activation)."""
    from effdet_rt.onnx.graph import NORMALIZE_NODE

    return [op.get_friendly_name() for op in model.get_ordered_ops() if NORMALIZE_NODE in op.get_friendly_name()]


def quantize_with_nncf(model: Any, batches: list[np.ndarray], log: Callable[[str], None]) -> Any:
    """NNCF post-training quantization of the converted model on our calibration batches.

    Why NNCF, and these settings (benchmarks/openvino_int8.py compares them on the trained BCCD D0; its results are
    in benchmarks/results/openvino_int8_*.md):
    - NNCF rather than our symmetric Q/DQ ONNX (`--int8-profile tensorrt`) read by OpenVINO: same accuracy, faster.
      The Q/DQ model quantizes only convolution inputs, so every Swish, Add and the squeeze-excite Multiply run in
      float between INT8 convolutions; NNCF also quantizes the Adds, Multiplies, pooling and resizes, which
      OpenVINO's CPU plugin then runs on INT8 and fuses with the convolutions.
    - The decode/top-k/NMS subgraph and the input normalisation are ignored. With NNCF's defaults they are not:
      it puts FakeQuantize on the final detection scores and on the concatenated boxes that NMS gathers from (both
      snapped to 256 levels, which ties scores and moves boxes: lower mAP), and on the raw 0..255 image, and the
      top-k and NMS kernels, which only exist in float, then run between quantize/dequantize steps.
    - The PERFORMANCE preset (symmetric activations): as accurate as MIXED (asymmetric activations) and not slower.
    """
    try:
        import nncf
    except ImportError as exc:
        raise UserError(f"INT8 with OpenVINO needs NNCF ({exc}); pip install 'effdet-rt[openvino]'") from exc
    # NNCF logs a line per node it leaves unquantized (hundreds, the whole NMS subgraph): that is our ignored scope
    # working as meant, not news for the user; its warnings and errors still show.
    nncf.set_log_level(logging.WARNING)
    ignored = nncf.IgnoredScope(names=[*input_normalization_op_names(model), *postprocess_op_names(model)],
                                validate=False)
    with library_progress_hidden():  # NNCF's own progress bar honours EFFDET_NO_PROGRESS as ours do
        return nncf.quantize(
            model,
            nncf.Dataset(batches),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(batches),
            ignored_scope=ignored,
        )


def build_openvino_engine(
    onnx_path: str | Path,
    output: str | Path,
    *,
    precision: str,
    calibration: Callable[[], Iterable[np.ndarray]] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Build OUT.xml + OUT.bin from an exported ONNX model; INT8 is calibrated on `calibration()`'s batches."""
    onnx_path, output = Path(onnx_path), Path(output)
    if output.suffix.lower() != ".xml":
        raise UserError(f"{output}: an OpenVINO model is an .xml file (with its .bin beside it); name the output *.xml")
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision} is not available with OpenVINO: choose one of {', '.join(PRECISIONS)}")
    ov = import_openvino()
    if precision == "bf16":  # refused before any work on a CPU that cannot run it
        from effdet_rt.engines.runtime.openvino import check_bf16

        check_bf16(ov.Core())
    from effdet_rt.onnx.fp16 import has_qdq_nodes
    from effdet_rt.onnx.graph import read_metadata

    source = read_source_onnx(onnx_path)
    metadata = read_metadata(source)
    quantized_input = has_qdq_nodes(source)
    if quantized_input and precision != "int8":
        raise UserError(f"{onnx_path}: this model holds QuantizeLinear/DequantizeLinear nodes, so it is INT8; "
                        "build it with --precision int8")
    if precision == "int8" and not quantized_input and calibration is None:
        raise UserError("int8 needs calibration data: pass --calib-tfrecords GLOB (or build.calibration.tfrecords)")
    model = convert_onnx(ov, onnx_path)
    metadata.update({"precision": precision, "openvino_version": ov.__version__})
    if precision == "int8" and quantized_input:
        metadata["int8_source"] = "qdq in the input model"
        log(f"{onnx_path} already holds QuantizeLinear/DequantizeLinear nodes: calibration skipped, its scales kept")
    elif precision == "int8":
        batches = list(calibration())
        if not batches:
            raise UserError("no calibration batches: the calibration TFRecords hold fewer images than one batch")
        model = quantize_with_nncf(model, batches, log)
        metadata.update({"int8_source": "nncf", "calibration_batches": len(batches)})
    save_ir(ov, model, output, metadata, compress_to_fp16=precision == "fp16")
    log(f"OpenVINO {precision.upper()} IR -> {output} + {weights_file(output).name}")
    return output


def write_metadata(built: Path, output: Path, values: dict[str, Any]) -> None:
    """The IR pair ``built`` rewritten as ``output`` with ``values`` added to its rt_info metadata."""
    from effdet_rt.engines.runtime.openvino_common import read_rt_metadata

    ov = import_openvino()
    model = ov.Core().read_model(str(built))
    metadata = {**read_rt_metadata(model), **values}
    save_ir(ov, model, output, metadata, compress_to_fp16=metadata.get("precision") == "fp16")


def build(model: Path, output: Path, settings: Any, *, calibration: Callable[[], Iterable[np.ndarray]] | None,
          calib_only: bool, log: Callable[[str], None]) -> Path:
    """The backend table's entry point (effdet_rt/backends.py): the spec's build section -> this builder."""
    return build_openvino_engine(model, output, precision=settings.data_type, calibration=calibration, log=log)
