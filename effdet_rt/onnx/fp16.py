"""FP16 ONNX for strongly typed TensorRT (11+), where precision comes from the model, not builder flags.

Weights and activations become float16; graph inputs and outputs stay float32 so callers feed and read
the same arrays as with the FP32 model. NMS ops stay in float32 (their scores and boxes need the range).
"""

from __future__ import annotations

from pathlib import Path

from effdet_rt.errors import ModelFileError
from effdet_rt.utils.atomic import atomic_path

# Ops kept in float32 beyond the converter's own list: TensorRT's NMS plugin.
EXTRA_FP32_OPS = ("EfficientNMS_TRT",)
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def load_onnx(path: str | Path):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: ONNX model not found; export one with `effdet-rt export`")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelFileError(f"{path}: not a readable ONNX model ({exc}); re-export it") from exc
    from effdet_rt.onnx.graph import read_metadata

    read_metadata(proto, str(path))  # a damaged metadata entry is named with the file here, before any use of it
    return proto


def op_types(model) -> set[str]:
    """Every op type in the main graph (subgraphs of If/Loop are not searched; our exports have none)."""
    return {node.op_type for node in model.graph.node}


def has_qdq_nodes(model) -> bool:
    return bool(op_types(model) & QDQ_OPS)


def convert_to_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write an FP16 copy of the ONNX model ``src`` to ``dst`` with float32 inputs and outputs."""
    from onnxconverter_common import float16

    model = load_onnx(src)
    if has_qdq_nodes(model):
        raise ModelFileError(f"{src}: is an INT8 Q/DQ model; FP16 conversion needs the FP32 export")
    blocked = list(float16.DEFAULT_OP_BLOCK_LIST) + list(EXTRA_FP32_OPS)
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    import onnx

    with atomic_path(dst) as tmp:
        onnx.save(converted, str(tmp))
    return Path(dst)
