"""Export the reference of benchmarks/engine_latency.py: rwightman's effdet D0 as an ONNX model of its raw heads.

The issue's reference figure (effdet's D0 in ONNX Runtime: 58 ms at batch 1 on a 2-core EPYC) was taken on another
machine type; measuring that model beside ours in the same run turns our figures into ratios the noise of a shared
machine does not move. It needs PyTorch and effdet, which effdet-rt does not depend on, so it runs in its own
environment (nothing is downloaded at run time: random weights, no pretrained backbone):

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 effdet onnx
    /tmp/refvenv/bin/python benchmarks/effdet_reference.py -o /tmp/effdet_d0.onnx [--num-classes 3] [--size 512]
    .venv/bin/python benchmarks/engine_latency.py --reference /tmp/effdet_d0.onnx ...

Input `images` is NCHW float32, already normalised (effdet normalises on the host); outputs are the 5 class and
5 box maps, no anchors decoding and no NMS (effdet does both on the host), so the reference carries less work
than our models, whose input is NHWC 0-255 and whose graph holds normalisation, decoding and NMS.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def export_reference(output: Path, model_name: str, num_classes: int, size: int, opset: int) -> None:
    import torch
    from effdet import create_model
    from timm.layers import set_layer_config

    torch.manual_seed(0)
    with set_layer_config(exportable=True):  # timm's export-friendly "same" padding: static Pad, no shape ops
        model = create_model(model_name, bench_task="", num_classes=num_classes, pretrained=False,
                             pretrained_backbone=False, image_size=(size, size))
    model.eval()
    example = torch.zeros(1, 3, size, size)
    levels = range(3, 8)
    names = [f"class_p{lv}" for lv in levels] + [f"box_p{lv}" for lv in levels]

    class Flat(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            classes, boxes = self.inner(images)
            return (*classes, *boxes)

    with torch.no_grad():
        torch.onnx.export(Flat(model), (example,), str(output), input_names=["images"], output_names=names,
                          dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                          opset_version=opset, dynamo=False)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {output}: effdet {model_name}, {num_classes} classes, {size}x{size}, {params:,} parameters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--model", default="tf_efficientdet_d0", help="effdet model name (tf_ = automl's padding)")
    parser.add_argument("--num-classes", type=int, default=3, help="3 = BCCD, as the engines it is compared with")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args()
    export_reference(args.output, args.model, args.num_classes, args.size, args.opset)


if __name__ == "__main__":
    main()
