"""The LiteRT (TensorFlow Lite) backend: runs `.tflite` files written by `effdet-rt export -o model.tflite` (and
`effdet-rt classification export`) with the `ai-edge-litert` Interpreter and its XNNPACK CPU delegate.

A detector file ends either in TFLite_Detection_PostProcess (four outputs, boxes in 0..1 of the input, batch 1:
the op's kernel takes one image) or in the raw heads, post-processed on the host from the metadata. The effdet-rt
metadata travels as a JSON entry ``effdet_rt`` of the flatbuffer's `metadata` table, so a file stands alone.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.engines.runtime.base import RunnerEngine, detections_from_outputs
from effdet_rt.engines.runtime.runner import Runner
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.onnx.names import DETECTION_BOXES
from effdet_rt.onnx.tasks import task_of_metadata
from effdet_rt.utils.cpu import usable_cpus

METADATA_NAME = "effdet_rt"
SIGNATURE = "serving_default"
INSTALL_HINT = "pip install 'effdet-rt[litert]' (the ai-edge-litert runtime)"


class LiteRTMissingError(UserError):
    pass


def litert_status() -> tuple[bool, str]:
    try:
        import ai_edge_litert  # noqa: F401
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError as exc:
        return False, f"ai-edge-litert is not installed ({exc}); {INSTALL_HINT}"
    return True, "ai-edge-litert is installed"


def require_litert() -> None:
    usable, why = litert_status()
    if not usable:
        raise LiteRTMissingError(f"LiteRT runtime missing: {why}")


def read_flatbuffer(path: Path, data: bytes | None = None):
    """The file's flatbuffer Model unpacked (weights stay views of ``data``), or a clear error for foreign or
    damaged bytes."""
    require_litert()
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes() if data is None else data
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(f"{path}: not a TensorFlow Lite model (no TFL3 identifier); pass a .tflite written by "
                             "`effdet-rt export -o model.tflite`")
    try:
        # unpacking every table walks every offset (bounds-checked in Python), which LiteRT's C++ interpreter reads
        # without a verifier; a damaged offset ends here, not as a read past the buffer or a Python error later
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # flatbuffers raises struct/index/type errors on damaged bytes
        raise ModelFileError(f"{path}: damaged TensorFlow Lite model ({exc.__class__.__name__}); export it again") from exc
    for code in model.operatorCodes or []:
        # the schema keeps the op code twice (deprecated_builtin_code = min(builtin_code, 127)); LiteRT runs the
        # larger, so one damaged copy swaps the kernel under an op's inputs, and a kernel that trusts its input
        # count (SPLIT) reads past them and crashes the process. (Files older than the second copy leave it 0.)
        if code.builtinCode and code.deprecatedBuiltinCode != min(code.builtinCode, 127):
            raise ModelFileError(f"{path}: damaged TensorFlow Lite model (operator code {code.builtinCode} recorded "
                                 f"as {code.deprecatedBuiltinCode}); export it again")
    check_tensor_sizes(path, model)
    return model


MAX_TENSOR_BYTES = 1 << 31  # far above any activation of a D7x at 1536; a damaged dimension lands far beyond it
ITEM_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8}  # schema TensorType -> bytes


def check_tensor_sizes(path: Path, model: Any) -> None:
    """Refuse a tensor no model of ours has: LiteRT allocates every tensor's shape as written, so one damaged
    dimension would ask for more memory than the machine has instead of failing."""
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            size = ITEM_BYTES.get(tensor.type, 8)
            for dim in tensor.shape if tensor.shape is not None else []:
                size *= max(int(dim), 1)
            if size > MAX_TENSOR_BYTES:
                raise ModelFileError(f"{path}: damaged TensorFlow Lite model (a tensor of shape "
                                     f"{list(tensor.shape)} would need {size} bytes); export it again")


def read_metadata(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """The effdet_rt JSON metadata entry of a .tflite ({} when it has none)."""
    model = read_flatbuffer(path, data)
    for entry in model.metadata or []:
        if entry.name == METADATA_NAME.encode():
            try:
                metadata = json.loads(bytes(model.buffers[entry.buffer].data).decode())
            except (ValueError, TypeError, IndexError) as exc:
                raise ModelFileError(f"{path}: damaged effdet_rt metadata ({exc}); export it again") from exc
            if not isinstance(metadata, dict):
                raise ModelFileError(f"{path}: damaged effdet_rt metadata (not a JSON object); export it again")
            return metadata
    return {}


def read_labels(path: Path, metadata: dict[str, Any]) -> list[str] | None:
    """The class names of the label file packed into the .tflite (an associated file of its TensorFlow Lite
    metadata, the file being also a zip), as MediaPipe reads them; None for a file whose metadata names none."""
    name = metadata.get("labels_file")
    if not name:
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(name).decode()
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: the label file {name} packed into the model is missing or damaged "
                             f"({exc.__class__.__name__}); export it again") from exc
    return text.splitlines()


def interpreter(path: Path, threads: int | None = None, preserve_all_tensors: bool = False):
    require_litert()
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path), num_threads=threads or usable_cpus(),
                             experimental_preserve_all_tensors=preserve_all_tensors)
        # a damaged file LiteRT still builds fails here, not in a caller: a kernel refusing its tensors, a tensor
        # name that is not UTF-8
        interp.allocate_tensors()
        interp._get_ops_details()
        signature_outputs = set(output_indices(interp).values())
    except (ValueError, RuntimeError) as exc:
        why = (str(exc).splitlines() or [exc.__class__.__name__])[0]
        raise ModelFileError(f"{path}: LiteRT cannot load this model ({why}); export it again") from exc
    if not signature_outputs <= {int(d["index"]) for d in interp.get_output_details()}:
        raise ModelFileError(f"{path}: damaged TensorFlow Lite model (its serving signature names tensors that are "
                             "not the graph's outputs); export it again")
    return interp


def output_indices(interp) -> dict[str, int]:
    """Output name -> tensor index, from the serving signature the exporter wrote."""
    signatures = interp._get_full_signature_list()  # the public list gives names only, not tensor indices
    if SIGNATURE in signatures:
        return dict(signatures[SIGNATURE]["outputs"])
    return {detail["name"]: detail["index"] for detail in interp.get_output_details()}


# ai-edge-litert 2.3.0's TFLite_Detection_PostProcess kernel, with use_regular_nms and an interpreter of more than
# one thread, loses every detection of one class (which one depends on the thread count: with 3 classes and 2
# threads the last; with 5 classes, class 2, 3 or 4 for 2, 3 or 4 threads). Per-class NMS is what every other
# backend runs, so files with the op inside run on one thread; `--nms none` files (host NMS) use every core.
POSTPROCESS_THREADS_BUG = "ai-edge-litert 2.3.0 regular-NMS kernel drops a class when num_threads > 1"


class LiteRTRunner(Runner):
    """Any effdet-rt .tflite on the CPU (XNNPACK). Float, int8 or uint8 input: integer inputs are quantized here
    with the file's own scale and zero point, integer outputs dequantized, so callers always pass 0..255 floats."""

    backend = "litert"

    def __init__(self, path: str | Path, threads: int | None = None, preserve_all_tensors: bool = False):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        labels = read_labels(self.path, self.metadata)
        if labels is not None:
            self.metadata["classes"] = labels
        if self.metadata.get("nms") == "tflite":
            threads = 1  # see POSTPROCESS_THREADS_BUG
        self.interp = interpreter(self.path, threads, preserve_all_tensors)
        inputs = self.interp.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4:
            raise ModelFileError(f"{self.path}: expected one NHWC image input")
        self.input = inputs[0]
        self.input_size = (int(self.input["shape"][1]), int(self.input["shape"][2]))
        # a batch dimension of -1 in the signature can be resized; TFLite_Detection_PostProcess takes one image
        self.static_batch = None if int(self.input["shape_signature"][0]) == -1 else int(self.input["shape"][0])
        self.outputs = output_indices(self.interp)
        self.output_names = tuple(self.outputs)
        self.precision = self.metadata.get("precision", "fp32")
        self.threads = threads or usable_cpus()
        self._batch = int(self.input["shape"][0])
        self.interp.allocate_tensors()

    def run_exact(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if not self.static_batch and len(batch) != self._batch:
            self.interp.resize_tensor_input(self.input["index"], [len(batch), *self.input_size, 3])
            self.interp.allocate_tensors()
            self._batch = len(batch)
        self.interp.set_tensor(self.input["index"], quantize(batch, self.input))
        try:
            self.interp.invoke()
        except RuntimeError as exc:  # a damaged file that opened: a constant whose weights are gone, say
            why = (str(exc).splitlines() or [exc.__class__.__name__])[0]
            raise ModelFileError(f"{self.path}: LiteRT cannot run this model ({why}); export it again") from exc
        details = {d["index"]: d for d in self.interp.get_output_details()}
        return {name: dequantize(self.interp.get_tensor(index), details.get(index))
                for name, index in self.outputs.items()}


def quantize(batch: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return batch
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)


def dequantize(value: np.ndarray, detail: dict[str, Any] | None) -> np.ndarray:
    if detail is None or value.dtype == np.float32 or not detail["quantization"][0]:
        return value
    scale, zero = detail["quantization"]
    return ((value.astype(np.float32) - zero) * scale).astype(np.float32)


def open_runner(path: str | Path) -> LiteRTRunner:
    return LiteRTRunner(path)


class LiteRTEngine(RunnerEngine):
    """The detector on a LiteRT runner; TFLite_Detection_PostProcess boxes (y1, x1, y2, x2 in 0..1 of the input,
    the layout MediaPipe and the Task Library read) are turned into x1, y1, x2, y2 input pixels here."""

    backend = "litert"

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__(LiteRTRunner(path, threads))

    def run(self, batch: np.ndarray):
        if self.mode != "nms":
            return super().run(batch)
        outputs = dict(self.runner.run(batch))
        height, width = self.input_size
        yxyx = outputs[DETECTION_BOXES]
        outputs[DETECTION_BOXES] = yxyx[..., [1, 0, 3, 2]] * np.array([width, height, width, height], np.float32)
        return detections_from_outputs(outputs, len(batch))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threads": self.runner.threads}


def xnnpack_partitions(path: Path, threads: int = 1) -> tuple[int, dict[str, int]]:
    """(XNNPACK partitions, {op: count} of the ops it left to LiteRT's own kernels) once the delegate has taken the
    graph. Every op not delegated splits the graph and runs on a slower reference kernel, so this is the list to
    shorten. Read from the execution plan: an op runs on its own when its outputs are no delegate's outputs and are
    needed by a delegate, a graph output or another such op."""
    interp = interpreter(path, threads)
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    delegated_outputs = {int(t) for op in delegates for t in op["outputs"]}
    needed = {int(t) for op in delegates for t in op["inputs"]} | {int(d["index"]) for d in interp.get_output_details()}
    own: dict[int, str] = {}
    changed = True
    while changed:
        changed = False
        for op in ops:
            outputs = {int(t) for t in op["outputs"]}
            if op["op_name"] == "DELEGATE" or op["index"] in own or outputs & delegated_outputs or not outputs & needed:
                continue
            own[op["index"]] = op["op_name"]
            needed |= {int(t) for t in op["inputs"]}
            changed = True
    counts: dict[str, int] = {}
    for name in own.values():
        counts[name] = counts.get(name, 0) + 1
    return len(delegates), dict(sorted(counts.items(), key=lambda item: -item[1]))


def load_engine(path: str | Path, key: str | None = None, spec: Any = None) -> LiteRTEngine:
    return LiteRTEngine(path)


def describe(path: str | Path) -> dict[str, Any]:
    """Inputs, outputs (with quantization), op counts, task and effdet-rt metadata of a .tflite."""
    path = Path(path)
    meta = read_metadata(path)
    labels = read_labels(path, meta)
    if labels is not None:
        meta["classes"] = labels
    interp = interpreter(path, threads=1)
    ops: dict[str, int] = {}
    for op in interp._get_ops_details():  # the public API has no op list; engine-info shows what the file runs
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1

    def tensors(details, io: str, names: dict[int, str]) -> list[dict[str, Any]]:
        return [{"io": io, "name": names.get(d["index"], d["name"]), "shape": [int(s) for s in d["shape_signature"]],
                 "dtype": np.dtype(d["dtype"]).name,
                 **({"quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}
                    if d["quantization"][0] else {})} for d in details]

    out_names = {index: name for name, index in output_indices(interp).items()}
    partitions, fallback = xnnpack_partitions(path)
    return {
        "file": str(path),
        "format": "tflite",
        "task": task_of_metadata(meta, str(path)).name,
        "precision": meta.get("precision", "fp32"),
        "io_type": meta.get("io_type", "float32"),
        "nms": meta.get("nms", "-"),
        "ops": dict(sorted(ops.items(), key=lambda item: -item[1])),
        "xnnpack_partitions": partitions,
        "xnnpack_fallback_ops": fallback,
        "tensors": tensors(interp.get_input_details(), "input", {}) + tensors(interp.get_output_details(), "output", out_names),
        "metadata": meta,
    }
