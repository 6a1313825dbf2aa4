"""Triton Inference Server model repositories for any engine we build, detector or classifier.

`write_repository` writes four model folders for one engine:

- ``NAME_model``: the engine itself, served natively (TensorRT plan -> ``tensorrt_plan``, ONNX -> ONNX Runtime,
  OpenVINO IR -> ``openvino``) or through Triton's Python backend running our own runner (``--runtime python``: any
  backend, on hosts whose Triton lacks the native one). Input and output names, dtypes and dims are read from the
  model file, so the config cannot disagree with it.
- ``NAME_preprocess`` / ``NAME_postprocess``: Python-backend models running the task's own pre- and
  post-processing (for a detector: the one preprocessing function and the NMS-output decode every engine uses).
- ``NAME``: the ensemble clients call with encoded image bytes.

Python-backend models import effdet_rt from the environment that wrote the repository: its ``sys.path`` is written
into each config (Triton's Python stub does not inherit PYTHONPATH), so the repository is tied to that environment.
The task-specific parts (which tensors pre- and post-processing exchange, which classes run them) come as a
`TaskParts`; the detector's are here, the classifier's live with the classifier (classification/triton.py).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt import __version__
from effdet_rt.backends import backend_for_file
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.utils.atomic import atomic_dir

RUNTIMES = ("native", "python")
MARKER = "effdet_rt.json"  # in every model folder we write: what wrote it (and lets a rewrite replace it)
PYTHON_MODEL = "effdet_rt.integrations.triton_python"
# Triton names a model by its folder; keep to characters every filesystem, URL path and gRPC name takes
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int8": "TYPE_INT8",
                "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8",
                "bool": "TYPE_BOOL", "object": "TYPE_STRING", "bytes": "TYPE_STRING"}
# what each backend is in Triton: (platform or backend key, its value, the file name in the version folder)
NATIVE = {"tensorrt": ("platform", "tensorrt_plan", "model.plan"),
          "onnxruntime": ("platform", "onnxruntime_onnx", "model.onnx"),
          "openvino": ("backend", "openvino", "model.xml")}
DEFAULT_MAX_BATCH = 8
QUEUE_DELAY_US = 2000  # how long dynamic batching waits to fill a batch: a small fraction of one CPU inference


class Enum(str):
    """A protobuf enum value: written without quotes."""


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # NumPy dtype name ("float32", "int32", "object" for bytes)
    dims: tuple[int, ...]  # without the batch dimension; -1: variable

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"name": self.name, "data_type": Enum(triton_type(self.dtype)), "dims": list(self.dims), **extra}


@dataclass(frozen=True)
class ModelIO:
    """What a model file takes and gives, as Triton sees it."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    static_batch: int | None  # the file's fixed batch; None: any batch
    max_batch: int | None = None  # the most the file takes (a TensorRT profile's max); None: no limit

    def output(self, name: str) -> Tensor:
        return next(t for t in self.outputs if t.name == name)


@dataclass
class TaskParts:
    """What a task adds around its engine: the ensemble's outputs and the Python classes of its two steps.

    ``preprocess_outputs`` are the tensors preprocessing gives: one is the engine's input (named by
    ``engine_input``), the rest go straight to post-processing with the engine's outputs."""

    preprocess_class: str  # "module:Class" run by NAME_preprocess
    postprocess_class: str  # "module:Class" run by NAME_postprocess
    preprocess_outputs: tuple[Tensor, ...]
    engine_input: str  # which preprocess output feeds the engine's input
    outputs: tuple[Tensor, ...]  # the ensemble's (= post-processing's) outputs
    parameters: dict[str, str] = field(default_factory=dict)  # given to both Python steps
    files: dict[str, str] = field(default_factory=dict)  # file name -> text, written beside NAME_postprocess/config
    engine_output_labels: dict[str, str] = field(default_factory=dict)  # engine output -> label file (classification)


def triton_type(dtype: str) -> str:
    if dtype not in TRITON_TYPES:
        raise ModelFileError(f"tensor type {dtype} has no Triton data type")
    return TRITON_TYPES[dtype]


# --- reading a model file's inputs and outputs -------------------------------------------------------------------

def onnx_io(path: Path) -> ModelIO:
    import onnx

    from effdet_rt.engines.runtime.onnxruntime import read_onnx

    proto = read_onnx(path)
    initializers = {i.name for i in proto.graph.initializer}

    def tensors(values) -> list[tuple[str, str, list[int | None]]]:
        out = []
        for value in values:
            if value.name in initializers:
                continue
            t = value.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
            out.append((value.name, dtype, [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]))
        return out

    return io_from_shapes(path, tensors(proto.graph.input), tensors(proto.graph.output))


def openvino_io(path: Path) -> ModelIO:
    from effdet_rt.engines.runtime.openvino import port_name
    from effdet_rt.engines.runtime.openvino_common import check_ir_pair, import_openvino, weights_file

    ov = import_openvino()
    if not weights_file(path).is_file():
        check_ir_pair(path, {})
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable OpenVINO IR pair ({exc}); rebuild it with "
                             "`effdet-rt build --backend openvino`") from exc

    def tensors(ports, name_of) -> list[tuple[str, str, list[int | None]]]:
        return [(name_of(p), np.dtype(p.get_element_type().to_dtype()).name,
                 [None if d.is_dynamic else d.get_length() for d in p.get_partial_shape()]) for p in ports]

    return io_from_shapes(path, tensors(model.inputs, lambda p: p.get_any_name()), tensors(model.outputs, port_name))


def plan_io(path: Path) -> ModelIO:
    """A plan's bindings and profile from TensorRT itself; without TensorRT on this machine, from the ONNX the plan
    was built from (named in the JSON `effdet-rt build` writes beside it) and the profile that JSON records."""
    from effdet_rt.engines.runtime.tensorrt import describe, read_engine_info, tensorrt_status

    usable, _why = tensorrt_status()
    if usable:
        info = describe(path)
        shapes = [(t["name"], t["dtype"], [None if d < 0 else d for d in t["shape"]], t["io"]) for t in info["tensors"]]
        io = io_from_shapes(path, [s[:3] for s in shapes if s[3] == "input"],
                            [s[:3] for s in shapes if s[3] == "output"])
        high = next(iter(info["profile"].values()))["max"]
        return ModelIO(io.inputs, io.outputs, io.static_batch, int(high[0]))
    info = read_engine_info(path)
    source = Path(str(info.get("onnx", "")))
    if not info.get("profile") or source.suffix.lower() != ".onnx" or not source.is_file():
        raise ModelFileError(f"{path}: TensorRT is not installed here and the plan's build record "
                             f"({path.name}.json with its source ONNX) is missing; write the repository on the "
                             "machine that runs the plan, or keep the ONNX it was built from")
    io = onnx_io(source)
    profile = info["profile"]
    static = None if profile.get("dynamic", profile["min"][0] != profile["max"][0]) else int(profile["max"][0])
    return ModelIO(io.inputs, io.outputs, static, int(profile["max"][0]))


def io_from_shapes(path: Path, inputs: Sequence[tuple[str, str, list[int | None]]],
                   outputs: Sequence[tuple[str, str, list[int | None]]]) -> ModelIO:
    """Split each shape into the batch dimension and the rest; every tensor must share the batch dimension."""
    if len(inputs) != 1 or len(inputs[0][2]) != 4:
        raise ModelFileError(f"{path}: expected one NHWC image input; found {[i[0] for i in inputs]}. Pass a model "
                             "file written by `effdet-rt export` or `effdet-rt build`")
    batch = inputs[0][2][0]

    def tensor(name: str, dtype: str, shape: list[int | None]) -> Tensor:
        if not shape or shape[0] != batch:
            raise ModelFileError(f"{path}: tensor '{name}' has shape {shape}, whose first dimension is not the "
                                 f"batch of the input ({batch}); not a model effdet-rt wrote")
        return Tensor(name, dtype, tuple(-1 if d is None else int(d) for d in shape[1:]))

    return ModelIO(tuple(tensor(*i) for i in inputs), tuple(tensor(*o) for o in outputs), batch)


def model_io(path: Path) -> ModelIO:
    backend = backend_for_file(path).name
    readers = {"onnxruntime": onnx_io, "openvino": openvino_io, "tensorrt": plan_io}
    if backend not in readers:
        raise ModelFileError(f"{path}: a checkpoint is not served by Triton; export it (`effdet-rt export`) and "
                             "pass the .onnx or an engine built from it")
    return readers[backend](path)


def check_cpu_backend_graph(path: Path, backend: str, runtime: str) -> None:
    """An ONNX with TensorRT's EfficientNMS_TRT plugin runs only in TensorRT: refuse it for ONNX Runtime."""
    if backend != "onnxruntime":
        return
    from effdet_rt.engines.runtime.onnxruntime import read_onnx

    if any(node.op_type == "EfficientNMS_TRT" for node in read_onnx(path).graph.node):
        where = "Triton's ONNX Runtime backend" if runtime == "native" else "ONNX Runtime in Triton's Python backend"
        raise ModelFileError(f"{path}: uses TensorRT's EfficientNMS_TRT plugin, which {where} cannot run "
                             "('not a registered function/op'); export with `effdet-rt export --nms onnx` for "
                             "ONNX Runtime, or build a TensorRT plan from it (`effdet-rt build --backend tensorrt`)")


# --- config.pbtxt ------------------------------------------------------------------------------------------------

def pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """A message in protobuf text format: lists of dicts are repeated messages, lists of scalars packed lists."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        items = value if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) else [value]
        for item in items:
            if isinstance(item, dict):
                lines.append(f"{pad}{key} {{\n{pbtxt(item, indent + 1)}{pad}}}")
            else:
                lines.append(f"{pad}{key}: {scalar(item)}")
    return "".join(line + "\n" for line in lines)


def scalar(value: Any) -> str:
    if isinstance(value, list):
        return "[ " + ", ".join(scalar(v) for v in value) + " ]"
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def string_parameters(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"key": key, "value": {"string_value": value}} for key, value in values.items()]


def batching(max_batch: int) -> dict[str, Any]:
    return {"max_batch_size": max_batch, "dynamic_batching": {"max_queue_delay_microseconds": QUEUE_DELAY_US}}


def instance_group(count: int, kind: str) -> dict[str, Any]:
    return {"instance_group": [{"count": count, "kind": Enum(kind)}]}


def python_step(name: str, model_class: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor], max_batch: int,
                instances: int, kind: str, parameters: dict[str, str]) -> dict[str, Any]:
    """A Python-backend model whose model.py runs ``model_class`` from our package."""
    params = {"effdet_rt_class": model_class, "effdet_rt_sys_path": json.dumps(package_sys_path()), **parameters}
    return {"name": name, "backend": "python", **batching(max_batch),
            "input": [t.config() for t in inputs], "output": [t.config() for t in outputs],
            **instance_group(instances, kind), "parameters": string_parameters(params)}


def package_sys_path() -> list[str]:
    """Where this interpreter finds effdet_rt and its dependencies, for the Python stub (no PYTHONPATH there)."""
    import sysconfig

    here = str(Path(__file__).resolve().parents[2])
    # the standard library is the stub's own (its Python version is the one the stub was built for)
    stdlib = {str(Path(sysconfig.get_paths()[key]).resolve()) for key in ("stdlib", "platstdlib")}
    keep = [p for p in sys.path if p and p != here and Path(p).is_dir() and str(Path(p).resolve()) not in stdlib
            and Path(p).name != "lib-dynload"]
    return [here, *keep]


def engine_config(name: str, io: ModelIO, backend: str, runtime: str, max_batch: int, instances: int,
                  device: str, file_name: str, labels: dict[str, str]) -> dict[str, Any]:
    inputs = [t.config() for t in io.inputs]
    outputs = [t.config(**({"label_filename": labels[t.name]} if t.name in labels else {})) for t in io.outputs]
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    if runtime == "python":
        step = python_step(name, f"{PYTHON_MODEL}:EngineStep", io.inputs, io.outputs, max_batch, instances, kind,
                           {"effdet_rt_engine_file": file_name})
        step["output"] = outputs
        return step
    key, value, default_name = NATIVE[backend]
    return {"name": name, key: value, **batching(max_batch), "input": inputs, "output": outputs,
            **instance_group(instances, kind), "default_model_filename": default_name}


def raw_outputs(io: ModelIO) -> tuple[Tensor, ...]:
    """The engine's outputs as post-processing takes them (renamed: its own outputs may share the names)."""
    return tuple(Tensor(f"raw_{t.name}", t.dtype, t.dims) for t in io.outputs)


def ensemble_config(name: str, parts: TaskParts, io: ModelIO, max_batch: int) -> dict[str, Any]:
    image = Tensor("image", "object", (1,))
    engine_in = io.inputs[0].name

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
        return {"model_name": model, "model_version": -1,
                "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
                "output_map": [{"key": k, "value": v} for k, v in outputs.items()]}

    pre_out = {t.name: f"pre_{t.name}" for t in parts.preprocess_outputs}
    engine_out = {t.name: f"engine_{t.name}" for t in io.outputs}
    post_in = {**{f"raw_{t.name}": f"engine_{t.name}" for t in io.outputs},
               **{t.name: f"pre_{t.name}" for t in parts.preprocess_outputs if t.name != parts.engine_input}}
    steps = [step(f"{name}_preprocess", {"image": "image"}, pre_out),
             step(f"{name}_model", {engine_in: pre_out[parts.engine_input]}, engine_out),
             step(f"{name}_postprocess", post_in, {t.name: t.name for t in parts.outputs})]
    return {"name": name, "platform": "ensemble", "max_batch_size": max_batch, "input": [image.config()],
            "output": [t.config() for t in parts.outputs], "ensemble_scheduling": {"step": steps}}


# --- the repository ----------------------------------------------------------------------------------------------

@dataclass
class RepositoryRequest:
    model: Path
    repository: Path
    name: str
    max_batch_size: int | None = None
    instances: int = 1
    runtime: str = "native"


def check_request(request: RepositoryRequest) -> None:
    if not request.model.is_file():
        raise ModelFileError(f"{request.model}: model file not found; pass an exported .onnx or a built "
                             ".plan/.engine or OpenVINO .xml")
    if not NAME_PATTERN.match(request.name):
        raise UserError(f"--name '{request.name}': Triton serves a model under its folder name; use letters, "
                        "digits, '_', '-' and '.' (starting with a letter or digit, at most 100 characters)")
    if request.runtime not in RUNTIMES:
        raise UserError(f"--runtime '{request.runtime}': choose one of {', '.join(RUNTIMES)}")
    if request.instances < 1:
        raise UserError(f"--instances {request.instances}: need at least 1 model instance")
    if request.max_batch_size is not None and request.max_batch_size < 1:
        raise UserError(f"--max-batch-size {request.max_batch_size}: need at least 1")
    check_repository_folder(request.repository, request.name)


def model_folders(name: str) -> tuple[str, ...]:
    return (name, f"{name}_preprocess", f"{name}_model", f"{name}_postprocess")


def check_repository_folder(repository: Path, name: str) -> None:
    """The output may be a new folder or a model repository; refuse to mix our models into anything else, or to
    replace a model folder something else wrote."""
    if repository.exists() and not repository.is_dir():
        raise UserError(f"{repository}: is a file, not a folder; pass -o a folder for the model repository")
    if not repository.is_dir():
        return
    strays = sorted(p.name for p in repository.iterdir() if not p.name.startswith(".")
                    and not (p.is_dir() and (p / "config.pbtxt").is_file()))
    if strays:
        raise UserError(f"{repository}: holds {', '.join(strays[:3])}, which are not Triton model folders; pass -o "
                        "an empty folder or a model repository")
    for folder in model_folders(name):
        path = repository / folder
        if path.exists() and not (path / MARKER).is_file():
            raise UserError(f"{path}: a model folder effdet-rt did not write is already there (another repository's "
                            f"'{folder}'); pass another --name or -o")


def resolve_max_batch(request: RepositoryRequest, io: ModelIO) -> int:
    """The batch Triton may send: a fixed-batch file's batch, at most a TensorRT profile's max, else the option."""
    wanted = request.max_batch_size
    if io.static_batch is not None:
        if request.runtime == "native" and io.static_batch != 1:
            raise ModelFileError(f"{request.model}: has a fixed batch of {io.static_batch}, which Triton cannot fill "
                                 "from single requests; export with a dynamic batch (the default of `effdet-rt "
                                 "export`), or serve it with --runtime python (which pads batches)")
        if wanted and wanted != io.static_batch and request.runtime == "native":
            raise UserError(f"--max-batch-size {wanted}: {request.model} takes batches of {io.static_batch} only")
        return wanted or io.static_batch
    if io.max_batch is not None:
        if wanted and wanted > io.max_batch:
            raise UserError(f"--max-batch-size {wanted}: {request.model} was built for at most {io.max_batch} "
                            "images; rebuild it with a larger --max-batch or pass a smaller value")
        return wanted or io.max_batch
    return wanted or DEFAULT_MAX_BATCH


def model_files(model: Path) -> list[Path]:
    """The files one engine is: an OpenVINO .xml with its .bin, a plan with the JSON `effdet-rt build` wrote."""
    files = [model]
    if model.suffix.lower() == ".xml":
        files.append(model.with_suffix(".bin"))
    if model.with_name(model.name + ".json").is_file():
        files.append(model.with_name(model.name + ".json"))
    return files


def write_repository(request: RepositoryRequest, parts: TaskParts, io: ModelIO | None = None) -> Path:
    """Write the four model folders into ``request.repository``; returns the ensemble's folder."""
    check_request(request)
    backend = backend_for_file(request.model)
    io = io or model_io(request.model)
    check_cpu_backend_graph(request.model, backend.name, request.runtime)
    max_batch = resolve_max_batch(request, io)
    name, device = request.name, backend.device
    engine_file = NATIVE[backend.name][2] if request.runtime == "native" else "model" + request.model.suffix.lower()
    labels = dict(parts.engine_output_labels)
    pre_kind = "KIND_CPU"
    configs = {
        f"{name}_preprocess": python_step(f"{name}_preprocess", parts.preprocess_class, (Tensor("image", "object", (1,)),),
                                          parts.preprocess_outputs, max_batch, request.instances, pre_kind,
                                          parts.parameters),
        f"{name}_model": engine_config(f"{name}_model", io, backend.name, request.runtime, max_batch,
                                       request.instances, device, engine_file, labels),
        f"{name}_postprocess": python_step(
            f"{name}_postprocess", parts.postprocess_class,
            (*raw_outputs(io), *(t for t in parts.preprocess_outputs if t.name != parts.engine_input)), parts.outputs,
            max_batch, request.instances, pre_kind, parts.parameters),
        name: ensemble_config(name, parts, io, max_batch),
    }
    record = {"written_by": f"effdet-rt {__version__}", "source": str(request.model.resolve()),
              "runtime": request.runtime, "backend": backend.name, "max_batch_size": max_batch}
    with atomic_dir(request.repository) as tmp:
        for folder, config in configs.items():
            (tmp / folder / "1").mkdir(parents=True)
            (tmp / folder / "config.pbtxt").write_text(pbtxt(config), encoding="utf-8")
            role = "ensemble" if folder == name else folder[len(name) + 1:]
            (tmp / folder / MARKER).write_text(json.dumps({**record, "name": name, "role": role}, indent=2) + "\n",
                                               encoding="utf-8")
            if config.get("backend") == "python":
                (tmp / folder / "1" / "model.py").write_text(MODEL_PY, encoding="utf-8")
        engine_dir = tmp / f"{name}_model" / "1"
        stem = Path(engine_file).stem
        for source in model_files(request.model):
            target = stem + source.name[len(request.model.stem):]
            shutil.copyfile(source, engine_dir / target)
        for file_name, text in parts.files.items():
            (tmp / f"{name}_postprocess" / file_name).write_text(text, encoding="utf-8")
            if file_name in labels.values():  # Triton's classification extension reads it beside the engine
                (tmp / f"{name}_model" / file_name).write_text(text, encoding="utf-8")
    return request.repository / name


# The model.py of every Python-backend model we write: it puts the writing environment's sys.path in place (the
# Python stub does not inherit PYTHONPATH), then hands the model to the class its config names.
MODEL_PY = '''"""Written by effdet-rt: runs the class named by this model's config parameter effdet_rt_class."""

import importlib
import json
import sys


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        # appended: the stub's own environment (whose numpy the stub was built for, imported before this file runs)
        # keeps precedence; effdet_rt and what it needs come from the environment that wrote the repository
        for entry in json.loads(parameters["effdet_rt_sys_path"]):
            if entry not in sys.path:
                sys.path.append(entry)
        module, name = parameters["effdet_rt_class"].split(":")
        self.model = getattr(importlib.import_module(module), name)(args, config, parameters)

    def execute(self, requests):
        return self.model.execute(requests)

    def finalize(self):
        self.model = None
'''


# --- the detector's parts ----------------------------------------------------------------------------------------

def file_metadata(path: Path) -> dict[str, Any]:
    """The effdet_rt metadata a model file carries: ONNX metadata, a plan's build JSON, an IR's rt_info."""
    if path.suffix.lower() == ".xml":
        from effdet_rt.engines.runtime.openvino_common import import_openvino, read_rt_metadata

        try:
            return read_rt_metadata(import_openvino().Core().read_model(str(path)))
        except ModelFileError:
            raise
        except Exception as exc:
            raise ModelFileError(f"{path}: not a readable OpenVINO IR pair ({exc}); rebuild it with "
                                 "`effdet-rt build --backend openvino`") from exc
    from effdet_rt.integrations.deepstream import model_metadata

    return model_metadata(path)


def detector_parts(model: Path, io: ModelIO, labels: str | Path | None, min_score: float) -> TaskParts:
    """Pre-processing to the engine's input size, post-processing to boxes in the sent image's pixels with the
    dataset's category ids (as `effdet-rt infer` writes them) and their names."""
    from effdet_rt.detections import category_ids
    from effdet_rt.integrations.deepstream import read_labels
    from effdet_rt.onnx.names import OUTPUT_NAMES, RAW_OUTPUTS

    names = {t.name for t in io.outputs}
    if not (set(OUTPUT_NAMES) <= names or set(RAW_OUTPUTS) <= names):
        raise ModelFileError(f"{model}: outputs {sorted(names)} are not an effdet-rt detector's; expected "
                             f"{list(OUTPUT_NAMES)} or {list(RAW_OUTPUTS)} (export it with `effdet-rt export`)")
    metadata = file_metadata(model)
    if set(RAW_OUTPUTS) <= names and "anchors" not in metadata:
        raise ModelFileError(f"{model}: raw-heads model without anchor metadata; re-export it with effdet-rt")
    if not 0.0 <= min_score < 1.0:
        raise UserError(f"--min-score {min_score}: need 0 <= value < 1")
    height, width = io.inputs[0].dims[:2]
    if labels is not None:
        class_names = read_labels(labels)
    else:
        count = metadata.get("num_classes") or (io.output(RAW_OUTPUTS[0]).dims[-1] if RAW_OUTPUTS[0] in names
                                                else None)
        if not count:
            raise UserError(f"triton needs --labels labels.txt|label_map.yaml: {model} does not record its number "
                            "of classes (metadata effdet_rt.num_classes)")
        class_names = [f"class_{category_ids(index)}" for index in range(int(count))]
    count_dims = (-1,)
    return TaskParts(
        preprocess_class=f"{PYTHON_MODEL}:DetectorPreprocess",
        postprocess_class=f"{PYTHON_MODEL}:DetectorPostprocess",
        preprocess_outputs=(Tensor("images", "float32", (height, width, 3)), Tensor("scale", "float32", (1,)),
                            Tensor("image_size", "int32", (2,))),
        engine_input="images",
        outputs=(Tensor("num_detections", "int32", (1,)), Tensor("detection_boxes", "float32", (*count_dims, 4)),
                 Tensor("detection_scores", "float32", count_dims), Tensor("detection_classes", "int32", count_dims),
                 Tensor("detection_labels", "object", count_dims)),
        parameters={"effdet_rt_input_size": json.dumps([height, width]), "effdet_rt_min_score": repr(min_score),
                    "effdet_rt_metadata": json.dumps(metadata)},
        files={"labels.txt": "\n".join(class_names) + "\n"},
    )


def write_detector_repository(request: RepositoryRequest, labels: str | Path | None, min_score: float) -> Path:
    check_request(request)
    io = model_io(request.model)
    return write_repository(request, detector_parts(request.model, io, labels, min_score), io)


def served_engine(repository: Path, model: Path, name: str | None = None) -> tuple[str, int]:
    """(model name, max batch) of the engine folder `effdet-rt triton` wrote into ``repository`` from ``model``
    (that of the repository entry ``name`` when given)."""
    if not repository.is_dir():
        raise UserError(f"{repository}: model repository not found; write it first with `effdet-rt triton -m "
                        f"{model} -o {repository} --name NAME`")
    found, damaged = [], []
    for marker in sorted(repository.glob(f"*/{MARKER}")):
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict):
            damaged.append(marker)  # another folder's damaged record need not stop this one; named if none is found
            continue
        if record.get("role") == "model" and record.get("source") == str(model.resolve()) and \
                name in (None, record.get("name")):
            found.append((marker.parent.name, recorded_max_batch(marker, record)))
    if len(found) != 1:
        if found:
            raise UserError(f"{repository}: holds {len(found)} engines written from {model} "
                            f"({', '.join(f[0] for f in found)}); pick one with --triton-name NAME")
        entry = f" as '{name}'" if name else ""
        unreadable = f" ({damaged[0]} is damaged: not a JSON object)" if damaged else ""
        raise UserError(f"{repository}: holds no engine written from {model}{entry} by `effdet-rt triton`"
                        f"{unreadable}; write one with `effdet-rt triton -m {model} -o {repository} --name NAME`")
    return found[0]


def recorded_max_batch(marker: Path, record: dict[str, Any]) -> int:
    value = record.get("max_batch_size")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelFileError(f"{marker}: damaged record (max_batch_size {value!r} is not a positive integer); write "
                             "the repository again with `effdet-rt triton`")
    return value
