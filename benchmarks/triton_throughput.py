"""Images/s through Triton (the ensemble of `effdet-rt triton --runtime python`: decode + preprocess, engine,
post-process) at client concurrency 1, 4 and 8 with dynamic batching, next to `effdet-rt infer` (infer_folder:
read, preprocess, run, draw + write) on the same engine file and images, in one run.

Run: .venv/bin/python benchmarks/triton_throughput.py [--images 32] [--input-size 512] [--concurrency 1,4,8]
     [--backends onnxruntime,openvino] [--batch-size 8]
The model is EfficientDet-D0 with random weights (3 classes), exported with `--nms onnx` (and built for OpenVINO
FP32); the server is PyPI's PyTriton build of tritonserver (CPU), started as tests/support/triton.py starts it, on
loopback. Each client thread sends one image per request over gRPC. Writes benchmarks/results/
triton_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BCCD_IMAGES = REPO.parent / "shared" / "data" / "bccd" / "BCCD" / "JPEGImages"
RESULTS = REPO / "benchmarks" / "results"
KEY = "benchmark"


def export_model(folder: Path, input_size: int) -> Path:
    """A random-weight D0 checkpoint exported with --nms onnx (dynamic batch)."""
    import tf_keras as keras
    import yaml

    from effdet_rt.checkpoint import model_weights, save_checkpoint
    from effdet_rt.cli.main import run
    from effdet_rt.model.factory import build_model_from_spec
    from effdet_rt.spec.validation import validate_spec

    keras.utils.set_random_seed(0)
    spec = {"model": {"name": "efficientdet-d0", "input_width": input_size, "input_height": input_size},
            "dataset": {"num_classes": 4}}
    model = build_model_from_spec(validate_spec(spec, "benchmark"))
    checkpoint = save_checkpoint(folder / "d0.edrt", model_weights(model), key=KEY, spec_yaml=yaml.safe_dump(spec),
                                 metadata={"epoch": 0})
    onnx_path = folder / "d0.onnx"
    assert run(["export", "-m", str(checkpoint), "-o", str(onnx_path), "-k", KEY, "--nms", "onnx"]) == 0
    return onnx_path


def engine_files(folder: Path, onnx_path: Path, backends: list[str]) -> dict[str, Path]:
    from effdet_rt.cli.main import run

    files = {}
    for backend in backends:
        if backend == "onnxruntime":
            files[backend] = onnx_path
        elif backend == "openvino":
            files[backend] = folder / "d0.xml"
            assert run(["build", "-m", str(onnx_path), "-o", str(files[backend]), "--backend", "openvino"]) == 0
        else:
            raise SystemExit(f"--backends: {backend} is not served on a CPU here (onnxruntime, openvino)")
    return files


def infer_images_per_s(model: Path, image_dir: Path, out: Path, batch_size: int, repeats: int) -> float:
    """`effdet-rt infer`'s own loop (infer_folder) on a loaded engine: best of ``repeats``."""
    from effdet_rt.engines import load
    from effdet_rt.infer.folder import InferOptions, infer_folder

    engine = load(model)
    options = InferOptions(batch_size=batch_size)
    best = 0.0
    for index in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        summary = infer_folder(engine, image_dir, out / f"infer_{index}", options)
        rate = summary.images / (time.perf_counter() - start)
        best = max(best, rate) if index else best
    return best


def triton_images_per_s(url: str, model: str, images: list[bytes], concurrency: int, repeats: int) -> float:
    import numpy as np
    import tritonclient.grpc as grpc_client

    clients = [grpc_client.InferenceServerClient(url) for _ in range(concurrency)]

    def send(worker: int) -> int:
        client = clients[worker]
        for data in images[worker::concurrency]:
            request = grpc_client.InferInput("image", [1, 1], "BYTES")
            request.set_data_from_numpy(np.array([[data]], dtype=object))
            client.infer(model, [request])
        return len(images[worker::concurrency])

    best = 0.0
    with ThreadPoolExecutor(concurrency) as pool:
        for index in range(repeats + 1):
            start = time.perf_counter()
            sent = sum(pool.map(send, range(concurrency)))
            rate = sent / (time.perf_counter() - start)
            best = max(best, rate) if index else best
    return best


def markdown(result: dict) -> str:
    lines = ["| backend | `effdet-rt infer` img/s (batch {}) | ".format(result["batch_size"])
             + " | ".join(f"Triton c={c} img/s" for c in result["concurrency"])
             + " | " + " | ".join(f"c={c} / infer" for c in result["concurrency"]) + " |",
             "| --- | --- | " + " | ".join("---" for _ in result["concurrency"] * 2) + " |"]
    for row in result["rows"]:
        rates = [row["triton"][str(c)] for c in result["concurrency"]]
        lines.append(f"| {row['backend']} | {row['infer']:.2f} | " + " | ".join(f"{r:.2f}" for r in rates) + " | "
                     + " | ".join(f"{r / row['infer']:.2f}" for r in rates) + " |")
    lines += ["", f"D0 at {result['input_size']}x{result['input_size']}, random weights, --nms onnx, "
              f"{result['images']} BCCD 640x480 JPEGs, best of {result['repeats']}; Triton {result['server']} "
              "(PyPI nvidia-pytriton, CPU), ensemble with --runtime python (engine on our runner in the Python "
              "backend), dynamic batching, one image per gRPC request, client threads on the same machine; "
              f"`effdet-rt infer` is infer_folder (read, preprocess, run, draw, write). CPU: {result['cpu']}; "
              f"load average (1/5/15 min) at the end: {' / '.join(map(str, result.get('load_average', [])))} "
              "(other work on the machine shares the cores).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    paths = sorted(BCCD_IMAGES.glob("*.jpg"))[:args.images]

    from effdet_rt.cli.main import run
    from tests.support.triton import install_tools, triton_server

    install_tools()
    rows = []
    with tempfile.TemporaryDirectory(prefix="triton-bench-") as tmp:
        folder = Path(tmp)
        image_dir = folder / "images"
        image_dir.mkdir()
        for path in paths:
            (image_dir / path.name).write_bytes(path.read_bytes())
        files = engine_files(folder, export_model(folder, args.input_size), args.backends.split(","))
        repo = folder / "repo"
        for backend, model in files.items():
            assert run(["triton", "-m", str(model), "-o", str(repo), "--name", f"d0_{backend}", "--runtime",
                        "python", "--max-batch-size", str(args.batch_size)]) == 0
        encoded = [p.read_bytes() for p in paths]
        with triton_server(repo, folder / "tritonserver.log") as server:
            import tritonclient.grpc as grpc_client

            version = grpc_client.InferenceServerClient(server.grpc_url).get_server_metadata().version
            for backend in files:
                rates = {str(c): triton_images_per_s(server.grpc_url, f"d0_{backend}", encoded, c, args.repeats)
                         for c in concurrency}
                rows.append({"backend": backend, "triton": rates})
                print(backend, rates, flush=True)
        # the server is stopped: `effdet-rt infer` gets the whole machine, as Triton did
        for row in rows:
            row["infer"] = infer_images_per_s(files[row["backend"]], image_dir, folder, args.batch_size, args.repeats)
            print(row["backend"], "infer", row["infer"], flush=True)
    result = {"input_size": args.input_size, "images": len(paths), "concurrency": concurrency,
              "batch_size": args.batch_size, "repeats": args.repeats, "server": version, "cpu": describe_cpu(),
              "load_average": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "triton_throughput.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "triton_throughput.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
