"""The raw heads of an exported file, cut out of it, so `export --verify` checks the graph actually written.

An `--nms efficient` export ends in EfficientNMS_TRT, which ONNX Runtime cannot run; its heads (``class_logits``,
``box_codes``) are still tensors inside the file. Making them the outputs and dropping what follows gives a graph
ONNX Runtime runs, holding exactly the written file's network nodes and weights.
"""

from __future__ import annotations

import onnx

HEAD_NAMES = ("class_logits", "box_codes")


def written_heads(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` cut back to its raw-head outputs (the file as it is when its outputs already are the heads)."""
    import onnx_graphsurgeon as gs

    if [o.name for o in proto.graph.output] == list(HEAD_NAMES):
        return proto
    graph = gs.import_onnx(proto)
    tensors = graph.tensors()
    missing = [name for name in HEAD_NAMES if name not in tensors]
    if missing:
        raise ValueError(f"exported graph has no tensor(s) {missing}")
    graph.outputs = [tensors[name] for name in HEAD_NAMES]
    graph.cleanup()
    heads = gs.export_onnx(graph)
    heads.ir_version = proto.ir_version
    del heads.opset_import[:]
    heads.opset_import.extend(o for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return heads
