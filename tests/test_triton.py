"""`effdet-rt triton`: every config.pbtxt parsed with Triton's own ModelConfig proto and checked against the model
file's inputs and outputs (native TensorRT / ONNX Runtime / OpenVINO and the Python runtime), the ensemble's wiring,
bad input; and a real Triton server (PyPI's PyTriton build, CPU only) serving the repository over HTTP and gRPC with
the detections `effdet-rt infer` writes for the same photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from effdet_rt.cli.main import run
from tests.support.cli import one_error_line
from tests.support.fake_tensorrt import tiny_detector_onnx, tiny_onnx
from tests.support.triton import install_tools, parse_config

TYPES = {"float32": "TYPE_FP32", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


@pytest.fixture(scope="module")
def proto():
    install_tools()
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


@pytest.fixture()
def detector(tmp_path) -> Path:
    path = Path(tiny_detector_onnx(tmp_path / "det.onnx", size=32))
    (tmp_path / "labels.txt").write_text("RBC\nWBC\nPlatelets\n")
    return path


def onnx_tensors(path: Path, which: str) -> list[tuple[str, str, list[int]]]:
    """(name, Triton type, dims without the batch) of an ONNX file's inputs or outputs, read with onnx itself."""
    graph = onnx.load(str(path)).graph
    out = []
    for value in getattr(graph, which):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim][1:]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        out.append((value.name, TYPES[dtype], dims))
    return out


def config_tensors(proto, tensors) -> list[tuple[str, str, list[int]]]:
    return [(t.name, proto.DataType.Name(t.data_type), list(t.dims)) for t in tensors]


def configs(repo: Path, name: str) -> dict[str, object]:
    return {folder: parse_config(repo / folder / "config.pbtxt")
            for folder in (name, f"{name}_preprocess", f"{name}_model", f"{name}_postprocess")}


def check_ensemble(proto, parsed: dict[str, object], name: str) -> None:
    """Every step's inputs are exactly its model's inputs, fed by the ensemble input or an earlier step's output of
    the same type and dims; every ensemble output is produced."""
    ensemble = parsed[name]
    assert ensemble.platform == "ensemble" and [t.name for t in ensemble.input] == ["image"]
    assert proto.DataType.Name(ensemble.input[0].data_type) == "TYPE_STRING"
    available = {"image": (ensemble.input[0].data_type, list(ensemble.input[0].dims))}
    for step in ensemble.ensemble_scheduling.step:
        model = parsed[step.model_name]
        inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        assert set(step.input_map) == set(inputs), step.model_name
        for key, tensor in step.input_map.items():
            assert available[tensor] == inputs[key], (step.model_name, key)
        for key, tensor in step.output_map.items():
            available[tensor] = outputs[key]
        assert model.max_batch_size == ensemble.max_batch_size
    for output in ensemble.output:
        assert available[output.name] == (output.data_type, list(output.dims))


def test_onnx_runtime_native_config_matches_the_file(detector, tmp_path, proto, capsys):
    repo = tmp_path / "repo"
    assert run(["triton", "-m", str(detector), "-o", str(repo), "--name", "cells", "--max-batch-size", "4",
                "--instances", "2", "--labels", str(tmp_path / "labels.txt")]) == 0
    parsed = configs(repo, "cells")
    engine = parsed["cells_model"]
    assert engine.platform == "onnxruntime_onnx" and engine.max_batch_size == 4
    assert engine.default_model_filename == "model.onnx"
    assert config_tensors(proto, engine.input) == onnx_tensors(detector, "input") == [("images", "TYPE_FP32", [32, 32, 3])]
    assert config_tensors(proto, engine.output) == onnx_tensors(detector, "output")
    assert [(g.count, proto.ModelInstanceGroup.Kind.Name(g.kind)) for g in engine.instance_group] == [(2, "KIND_CPU")]
    assert engine.dynamic_batching.max_queue_delay_microseconds > 0
    assert (repo / "cells_model" / "1" / "model.onnx").read_bytes() == detector.read_bytes()
    check_ensemble(proto, parsed, "cells")
    assert [t.name for t in parsed["cells"].output] == ["num_detections", "detection_boxes", "detection_scores",
                                                        "detection_classes", "detection_labels"]
    assert (repo / "cells_postprocess" / "labels.txt").read_text() == "RBC\nWBC\nPlatelets\n"
    post = parsed["cells_postprocess"]
    assert post.backend == "python" and post.parameters["effdet_rt_min_score"].string_value == "0.4"
    sys_path = json.loads(post.parameters["effdet_rt_sys_path"].string_value)
    assert sys_path[0] == str(Path(__file__).resolve().parents[1])  # this checkout's effdet_rt


def test_python_runtime_config_runs_the_file_on_our_runner(detector, tmp_path, proto):
    repo = tmp_path / "repo"
    assert run(["triton", "-m", str(detector), "-o", str(repo), "--name", "cells", "--runtime", "python",
                "--labels", str(tmp_path / "labels.txt")]) == 0
    parsed = configs(repo, "cells")
    engine = parsed["cells_model"]
    assert engine.backend == "python" and engine.max_batch_size == 8
    assert engine.parameters["effdet_rt_class"].string_value.endswith(":EngineStep")
    assert config_tensors(proto, engine.output) == onnx_tensors(detector, "output")
    assert (repo / "cells_model" / "1" / "model.onnx").read_bytes() == detector.read_bytes()
    assert (repo / "cells_model" / "1" / "model.py").is_file()
    check_ensemble(proto, parsed, "cells")


def test_tensorrt_plan_config_from_the_build_record(detector, tmp_path, proto, capsys):
    """Without TensorRT here, a plan's tensors come from the ONNX its build JSON names, its batch from the
    profile the JSON records."""
    plan = tmp_path / "det.plan"
    plan.write_bytes(b"PLAN")
    profile = {"min": [1, 32, 32, 3], "opt": [2, 32, 32, 3], "max": [6, 32, 32, 3], "dynamic": True}
    (tmp_path / "det.plan.json").write_text(json.dumps({"precision": "fp16", "onnx": str(detector),
                                                        "profile": profile}))
    repo = tmp_path / "repo"
    assert run(["triton", "-m", str(plan), "-o", str(repo), "--name", "cells", "--labels",
                str(tmp_path / "labels.txt")]) == 0
    parsed = configs(repo, "cells")
    engine = parsed["cells_model"]
    assert engine.platform == "tensorrt_plan" and engine.max_batch_size == 6
    assert [(g.count, proto.ModelInstanceGroup.Kind.Name(g.kind)) for g in engine.instance_group] == [(1, "KIND_GPU")]
    assert config_tensors(proto, engine.output) == onnx_tensors(detector, "output")
    assert (repo / "cells_model" / "1" / "model.plan").read_bytes() == b"PLAN"
    check_ensemble(proto, parsed, "cells")
    one_error_line(["triton", "-m", str(plan), "-o", str(tmp_path / "r2"), "--name", "c", "--max-batch-size", "7",
                    "--labels", str(tmp_path / "labels.txt")], capsys, "--max-batch-size 7", "at most 6 images")
    assert not (tmp_path / "r2").exists()


def test_tensorrt_plan_config_from_tensorrt_itself(detector, tmp_path, proto, monkeypatch):
    """With TensorRT (here the fake one, which runs what it builds), the plan's own bindings and profile."""
    import sys

    from effdet_rt.engines.build.tensorrt import build_tensorrt_engine
    from tests.support.fake_tensorrt import fake_cudart, fake_tensorrt, install_fake_cuda

    cuda = install_fake_cuda(monkeypatch, fake_cudart())
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.3.0", input_shape=None, cuda=cuda))
    plan = build_tensorrt_engine(str(detector), tmp_path / "det.plan", precision="fp32", workspace_gb=1,
                                 min_batch=1, opt_batch=2, max_batch=4, timing_cache=None, calibration=None,
                                 calib_cache=None, log=lambda m: None)
    (tmp_path / "det.plan.json").unlink()  # nothing but the plan: its bindings and profile say it all
    repo = tmp_path / "repo"
    assert run(["triton", "-m", str(plan), "-o", str(repo), "--name", "cells", "--labels",
                str(tmp_path / "labels.txt")]) == 0
    engine = parse_config(repo / "cells_model" / "config.pbtxt")
    assert engine.platform == "tensorrt_plan" and engine.max_batch_size == 4
    assert config_tensors(proto, engine.input) == onnx_tensors(detector, "input")
    assert config_tensors(proto, engine.output) == onnx_tensors(detector, "output")
    check_ensemble(proto, configs(repo, "cells"), "cells")


def test_openvino_native_config_matches_the_ir(detector, tmp_path, proto):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'effdet-rt[openvino]')")
    from effdet_rt.engines.runtime.openvino_common import import_openvino

    xml = tmp_path / "det.xml"
    assert run(["build", "-m", str(detector), "-o", str(xml), "--backend", "openvino"]) == 0
    repo = tmp_path / "repo"
    assert run(["triton", "-m", str(xml), "-o", str(repo), "--name", "cells", "--labels",
                str(tmp_path / "labels.txt")]) == 0
    parsed = configs(repo, "cells")
    engine = parsed["cells_model"]
    assert engine.backend == "openvino" and engine.default_model_filename == "model.xml"
    model = import_openvino().Core().read_model(str(xml))
    from effdet_rt.engines.runtime.openvino import port_name

    assert [t.name for t in engine.output] == [port_name(p) for p in model.outputs]
    assert [list(t.dims) for t in engine.output] == [list(p.get_partial_shape().get_min_shape())[1:]
                                                     for p in model.outputs]
    assert list(engine.input[0].dims) == [32, 32, 3]
    assert (repo / "cells_model" / "1" / "model.bin").read_bytes() == xml.with_suffix(".bin").read_bytes()
    check_ensemble(proto, parsed, "cells")


def with_efficient_nms(source: Path, target: Path) -> Path:
    model = onnx.load(str(source))
    model.graph.node.append(onnx.helper.make_node("EfficientNMS_TRT", ["detection_boxes"], ["unused"],
                                                  domain="TRT"))
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("runtime", ["native", "python"])
def test_efficient_nms_onnx_is_refused_for_onnx_runtime(detector, tmp_path, capsys, runtime):
    model = with_efficient_nms(detector, tmp_path / "trt_only.onnx")
    one_error_line(["triton", "-m", str(model), "-o", str(tmp_path / "repo"), "--name", "cells", "--runtime",
                    runtime, "--labels", str(tmp_path / "labels.txt")], capsys,
                   "trt_only.onnx", "EfficientNMS_TRT", "--nms onnx", "--backend tensorrt")
    assert not (tmp_path / "repo").exists()


def test_bad_input_is_one_error_line_and_nothing_is_written(detector, tmp_path, capsys):
    labels = ["--labels", str(tmp_path / "labels.txt")]
    repo = tmp_path / "repo"
    common = ["triton", "-m", str(detector), "-o", str(repo)]
    foreign = Path(tiny_onnx(tmp_path / "foreign.onnx", size=16))
    one_error_line(["triton", "-m", str(foreign), "-o", str(repo), "--name", "x", *labels], capsys,
                   "foreign.onnx", "outputs ['scores']", "effdet-rt export")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    one_error_line(["triton", "-m", str(tmp_path / "junk.onnx"), "-o", str(repo), "--name", "x"], capsys,
                   "junk.onnx", "not an ONNX model")
    one_error_line(["triton", "-m", str(tmp_path / "missing.onnx"), "-o", str(repo), "--name", "x"], capsys,
                   "missing.onnx: model file not found")
    for bad in ("a/b", ".hidden", "has space", ""):
        one_error_line([*common, "--name", bad, *labels], capsys, f"--name '{bad}'", "letters, digits")
    one_error_line([*common, "--name", "x", "--runtime", "java", *labels], capsys, "--runtime 'java'",
                   "native, python")
    one_error_line([*common, "--name", "x"], capsys, "needs --labels", "det.onnx")
    assert not repo.exists()
    other = repo / "cells_model"
    other.mkdir(parents=True)
    (other / "config.pbtxt").write_text('name: "cells_model"\nbackend: "pytorch"\n')
    one_error_line([*common, "--name", "cells", *labels], capsys, "cells_model", "effdet-rt did not write",
                   "another --name")
    assert sorted(p.name for p in repo.iterdir()) == ["cells_model"]
    (repo / "notes.txt").write_text("mine")
    one_error_line([*common, "--name", "fresh", *labels], capsys, "notes.txt", "not Triton model folders")
    assert sorted(p.name for p in repo.iterdir()) == ["cells_model", "notes.txt"]
    (repo / "notes.txt").unlink()
    assert run([*common, "--name", "fresh", *labels]) == 0  # beside another repository's model: fine
    assert run([*common, "--name", "fresh", *labels, "--max-batch-size", "2"]) == 0  # its own folders: rewritten
    assert parse_config(repo / "fresh" / "config.pbtxt").max_batch_size == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo.")]  # no staging folder left


# --- a real server ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint, bccd_root):
    """The tiny detector exported with --nms onnx, `effdet-rt infer` on four BCCD photos, and tritonserver serving
    the repository `effdet-rt triton --runtime python` wrote for the same ONNX."""
    from tests.support.infer import KEY, bccd_images
    from tests.support.triton import ServerUnavailable, triton_server

    root = tmp_path_factory.mktemp("triton_served")
    model = root / "tiny.onnx"
    assert run(["export", "-m", str(tiny_checkpoint), "-o", str(model), "-k", KEY, "--nms", "onnx"]) == 0
    images = root / "images"
    images.mkdir()
    for path in bccd_images(bccd_root, 4):
        shutil.copy(path, images / path.name)
    assert run(["infer", "-m", str(model), "-i", str(images), "-o", str(root / "infer")]) == 0
    expected: dict[str, list[dict]] = {path.name: [] for path in images.iterdir()}
    for entry in json.loads((root / "infer" / "detections.json").read_text()):
        expected[entry["image_id"]].append(entry)
    repo = root / "repo"
    assert run(["triton", "-m", str(model), "-o", str(repo), "--name", "cells", "--runtime", "python"]) == 0
    # raw heads (--nms none): NMS on the host, in the post-processing step
    raw = root / "tiny_raw.onnx"
    assert run(["export", "-m", str(tiny_checkpoint), "-o", str(raw), "-k", KEY, "--nms", "none"]) == 0
    assert run(["infer", "-m", str(raw), "-i", str(images), "-o", str(root / "infer_raw")]) == 0
    expected_raw: dict[str, list[dict]] = {path.name: [] for path in images.iterdir()}
    for entry in json.loads((root / "infer_raw" / "detections.json").read_text()):
        expected_raw[entry["image_id"]].append(entry)
    assert run(["triton", "-m", str(raw), "-o", str(repo), "--name", "cells_raw", "--runtime", "python"]) == 0
    try:
        with triton_server(repo, root / "tritonserver.log") as server:
            yield server, images, {"cells": expected, "cells_raw": expected_raw}
    except ServerUnavailable as exc:  # the binary cannot run on this machine (a model that fails to load fails)
        pytest.skip(f"tritonserver cannot run here: {exc}")


def encoded(path: Path) -> np.ndarray:
    return np.array([[path.read_bytes()]], dtype=object)


def as_records(result, name: str) -> list[dict]:
    count = int(result.as_numpy("num_detections")[0, 0])
    boxes, scores = result.as_numpy("detection_boxes")[0], result.as_numpy("detection_scores")[0]
    classes, labels = result.as_numpy("detection_classes")[0], result.as_numpy("detection_labels")[0]
    return [{"image_id": name, "category_id": int(classes[i]), "label": labels[i].decode(),
             "bbox": [float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2] - boxes[i, 0]),
                      float(boxes[i, 3] - boxes[i, 1])], "score": float(scores[i])} for i in range(count)]


def assert_same_detections(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["category_id"] == w["category_id"] and g["label"] == f"class_{w['category_id']}"
        assert np.allclose(g["bbox"], w["bbox"], atol=1.0), (g, w)
        assert g["score"] == pytest.approx(w["score"], abs=1e-4)


@pytest.mark.slow
def test_ensemble_over_http_and_grpc_gives_the_detections_of_effdet_rt_infer(served):
    import tritonclient.grpc as grpc_client
    import tritonclient.http as http_client

    server, images, by_model = served
    expected = by_model["cells"]
    paths = sorted(images.iterdir())
    assert sum(len(v) for v in expected.values()) > 0
    grpc = grpc_client.InferenceServerClient(server.grpc_url)
    for path in paths:
        request = grpc_client.InferInput("image", [1, 1], "BYTES")
        request.set_data_from_numpy(encoded(path))
        assert_same_detections(as_records(grpc.infer("cells", [request]), path.name), expected[path.name])
    # all four at once over HTTP: the engine step gets them as dynamic batches
    http = http_client.InferenceServerClient(server.http_url, concurrency=4)
    pending = []
    for path in paths:
        request = http_client.InferInput("image", [1, 1], "BYTES")
        request.set_data_from_numpy(encoded(path))
        pending.append((path.name, http.async_infer("cells", [request])))
    for name, job in pending:
        assert_same_detections(as_records(job.get_result(), name), expected[name])


@pytest.mark.slow
def test_raw_heads_model_gets_host_nms_in_post_processing(served):
    import tritonclient.grpc as grpc_client

    server, images, by_model = served
    expected = by_model["cells_raw"]
    assert sum(len(v) for v in expected.values()) > 0
    client = grpc_client.InferenceServerClient(server.grpc_url)
    for path in sorted(images.iterdir()):
        request = grpc_client.InferInput("image", [1, 1], "BYTES")
        request.set_data_from_numpy(encoded(path))
        assert_same_detections(as_records(client.infer("cells_raw", [request]), path.name), expected[path.name])


@pytest.mark.slow
def test_a_corrupt_image_fails_its_request_and_the_server_keeps_serving(served):
    import tritonclient.http as http_client
    from tritonclient.utils import InferenceServerException

    server, images, by_model = served
    expected = by_model["cells"]
    client = http_client.InferenceServerClient(server.http_url)
    broken = http_client.InferInput("image", [1, 1], "BYTES")
    broken.set_data_from_numpy(np.array([[b"\xff\xd8\xff\xe0 truncated jpeg"]], dtype=object))
    with pytest.raises(InferenceServerException, match="image 0 of the request: not a readable image.*JPEG or PNG"):
        client.infer("cells", [broken])
    path = sorted(images.iterdir())[0]
    good = http_client.InferInput("image", [1, 1], "BYTES")
    good.set_data_from_numpy(encoded(path))
    assert_same_detections(as_records(client.infer("cells", [good]), path.name), expected[path.name])
    assert client.is_model_ready("cells")


# --- a classifier ----------------------------------------------------------------------------------------------

CLASSES = ["ants", "bees", "wasps"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A fresh B0 at 32x32 with an amplified head (so answers differ between images), exported to ONNX, and a few
    non-square PNGs (eval_image resizes and centre-crops them)."""
    import tf_keras as keras
    from PIL import Image

    from effdet_rt.classification.export import classifier_to_onnx
    from effdet_rt.classification.images import ImageFormat
    from effdet_rt.classification.model import build_classifier, with_softmax
    from effdet_rt.classification.spec import load_classification_spec
    from effdet_rt.export.exporter import write_onnx

    root = tmp_path_factory.mktemp("triton_classifier")
    spec = load_classification_spec(None, ["model.input_image_size=3,32,32"])
    keras.utils.set_random_seed(5)
    model = build_classifier(spec, len(CLASSES))
    (dense,) = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 5000.0, bias])
    wrapped = type("Wrapped", (), {"model": with_softmax(model), "fmt": ImageFormat.from_spec(spec),
                                   "classes": CLASSES, "spec": spec})()
    path = Path(write_onnx(classifier_to_onnx(wrapped, None, 17), root / "classifier.onnx"))
    rng = np.random.default_rng(5)
    (root / "images").mkdir()
    colours = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (128, 128, 128), (250, 250, 250), (5, 5, 5)]
    for i, colour in enumerate(colours):
        pixels = np.clip(np.asarray(colour) + rng.normal(0, 10, (40, 52, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
    return path


def test_classifier_repository_configs_and_labels(classifier, tmp_path, proto, capsys):
    repo = tmp_path / "repo"
    assert run(["triton", "-m", str(classifier), "-o", str(repo), "--name", "insects", "--top-k", "2"]) == 0
    parsed = configs(repo, "insects")
    engine = parsed["insects_model"]
    assert engine.platform == "onnxruntime_onnx"
    assert config_tensors(proto, engine.input) == onnx_tensors(classifier, "input")
    assert config_tensors(proto, engine.output) == onnx_tensors(classifier, "output") == [
        ("probabilities", "TYPE_FP32", [3])]
    assert engine.output[0].label_filename == "labels.txt"
    assert (repo / "insects_model" / "labels.txt").read_text() == "ants\nbees\nwasps\n"
    assert [(t.name, list(t.dims)) for t in parsed["insects"].output] == [
        ("classes", [2]), ("scores", [2]), ("class_names", [2])]
    check_ensemble(proto, parsed, "insects")
    (tmp_path / "names.txt").write_text("ant\nbee\n")
    one_error_line(["triton", "-m", str(classifier), "-o", str(repo), "--name", "x", "--labels",
                    str(tmp_path / "names.txt")], capsys, "names.txt", "2 name(s)", "3 classes")


@pytest.mark.slow
def test_classifier_ensemble_gives_the_top_k_of_the_classifier_engine(classifier, tmp_path):
    from effdet_rt.classification.engines import load_classifier
    from effdet_rt.classification.images import eval_image
    from tests.support.triton import ServerUnavailable, triton_server

    repo = tmp_path / "repo"
    assert run(["triton", "-m", str(classifier), "-o", str(repo), "--name", "insects", "--top-k", "2",
                "--runtime", "python"]) == 0
    engine = load_classifier(classifier)
    paths = sorted((classifier.parent / "images").iterdir())
    probabilities = engine.predict(np.stack([eval_image(p, engine.fmt) for p in paths]))
    assert np.ptp(probabilities, axis=0).max() > 0.01  # not one answer whatever the image
    try:
        server_context = triton_server(repo, tmp_path / "tritonserver.log")
        server = server_context.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(f"tritonserver cannot run here: {exc}")
    try:
        import tritonclient.grpc as grpc_client
        import tritonclient.http as http_client

        client = grpc_client.InferenceServerClient(server.grpc_url)
        for path, row in zip(paths, probabilities, strict=True):
            request = grpc_client.InferInput("image", [1, 1], "BYTES")
            request.set_data_from_numpy(encoded(path))
            result = client.infer("insects", [request])
            top = np.argsort(-row)[:2]
            assert result.as_numpy("classes")[0].tolist() == top.tolist()
            np.testing.assert_allclose(result.as_numpy("scores")[0], row[top], atol=1e-5)
            assert [n.decode() for n in result.as_numpy("class_names")[0]] == [CLASSES[i] for i in top]
        # Triton's classification extension on the engine, from the labels file beside it
        http = http_client.InferenceServerClient(server.http_url)
        images = http_client.InferInput("images", [1, 32, 32, 3], "FP32")
        images.set_data_from_numpy(eval_image(paths[0], engine.fmt)[None])
        result = http.infer("insects_model", [images],
                            outputs=[http_client.InferRequestedOutput("probabilities", class_count=1)])
        score, index, label = result.as_numpy("probabilities")[0][0].decode().split(":")
        best = int(probabilities[0].argmax())
        assert (int(index), label) == (best, CLASSES[best]) and float(score) == pytest.approx(probabilities[0, best],
                                                                                             abs=1e-5)
    finally:
        server_context.__exit__(None, None, None)


def test_deepstream_config_with_triton_writes_the_nvinferserver_config(detector, classifier, tmp_path, capsys):
    repo, out = tmp_path / "repo", tmp_path / "ds"
    labels = str(tmp_path / "labels.txt")
    one_error_line(["deepstream-config", "-m", str(detector), "-o", str(out), "--labels", labels, "--triton",
                    str(repo)], capsys, f"{repo}: model repository not found", "effdet-rt triton")
    assert run(["triton", "-m", str(detector), "-o", str(repo), "--name", "cells", "--labels", labels]) == 0
    other = tmp_path / "other.onnx"
    shutil.copy(detector, other)
    one_error_line(["deepstream-config", "-m", str(other), "-o", str(out), "--labels", labels, "--triton",
                    str(repo)], capsys, "holds no engine written from", "other.onnx")
    assert not out.exists()  # nothing written when the repository does not serve the model
    assert run(["deepstream-config", "-m", str(detector), "-o", str(out), "--labels", labels, "--triton",
                str(repo)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config_infer_primary_effdet.txt",
                                                     "config_infer_primary_effdet_triton.txt", "labels.txt"]
    text = (out / "config_infer_primary_effdet_triton.txt").read_text()
    for line in ('model_name: "cells_model"', "max_batch_size: 8", f'root: "{repo.resolve()}"',
                 "tensor_order: TENSOR_ORDER_NHWC", "maintain_aspect_ratio: 1", "channel_offsets: [ 0, 0, 0 ]",
                 'labelfile_path: "labels.txt"', "num_detected_classes: 3",
                 'custom_parse_bbox_func: "NvDsInferParseCustomEfficientNMS"', "threshold: 0.3",
                 "process_mode: PROCESS_MODE_FULL_FRAME"):
        assert f"\n{line.strip()}\n" in "\n" + "\n".join(x.strip() for x in text.splitlines()) + "\n", line
    # a classifier: the secondary-classifier nvinferserver config on its own engine
    assert run(["triton", "-m", str(classifier), "-o", str(repo), "--name", "insects"]) == 0
    assert run(["deepstream-config", "-m", str(classifier), "-o", str(tmp_path / "ds2"), "--triton", str(repo)]) == 0
    text = (tmp_path / "ds2" / "config_infer_secondary_classifier_triton.txt").read_text()
    for line in ('model_name: "insects_model"', "process_mode: PROCESS_MODE_CLIP_OBJECTS", "maintain_aspect_ratio: 0",
                 "classification {"):
        assert line in text, line


def test_docs_commands_run_as_typed(detector, classifier, tmp_path, monkeypatch, capsys, proto):
    """Every `effdet-rt` line of docs/triton.md, run as typed in a folder holding the files it names."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[1] / "docs" / "triton.md").read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
             if line.startswith("effdet-rt ")]
    assert len(lines) == 4
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(detector, work / "model.onnx")
    shutil.copy(tmp_path / "labels.txt", work / "labels.txt")
    shutil.copy(classifier, work / "classifier.onnx")
    monkeypatch.chdir(work)
    for line in lines:
        assert run(shlex.split(line)[1:]) == 0, (line, capsys.readouterr().err)
    assert sorted(p.name for p in (work / "repo").iterdir()) == sorted(
        f"{name}{suffix}" for name in ("cells", "cells_cpu", "insects")
        for suffix in ("", "_preprocess", "_model", "_postprocess"))
    assert parse_config(work / "repo" / "cells_cpu_model" / "config.pbtxt").instance_group[0].count == 2
    assert (work / "ds" / "config_infer_primary_effdet_triton.txt").is_file()
