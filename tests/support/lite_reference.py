"""An independent EfficientNet-Lite0 in PyTorch, written for the tests from the architecture's published description
(Tan & Le, "EfficientNet", ICML 2019, table 1 for the B0 stages; the EfficientNet-Lite README of
tensorflow/tpu/models/official/efficientnet/lite for what Lite changes), not from effdet-rt's Keras code:

- stem: 3x3 conv, stride 2, 32 filters; BatchNorm; activation.
- seven MBConv stages (expand ratio, kernel, stride, output filters, repeats):
  (1,3,1,16,1) (6,3,2,24,2) (6,5,2,40,2) (6,3,2,80,3) (6,5,1,112,3) (6,5,2,192,4) (6,3,1,320,1);
  a block is [1x1 expand conv + BN + act] (when the ratio is not 1), depthwise kxk conv + BN + act, 1x1 project
  conv + BN (no activation), plus the input when stride is 1 and the widths match.
- head: 1x1 conv to 1280, BN, activation, global average pool, (dropout), fully connected to 1000 logits.
- Lite: no squeeze-and-excite, ReLU6 instead of swish, stem and head not scaled (Lite0 scales nothing anyway).
- TensorFlow conventions, as the weights were trained with them: 'SAME' padding (for stride 2 the extra row and
  column go bottom/right), BatchNorm epsilon 1e-3, inputs scaled as (x - 127) / 128.

Parameter names follow the published PyTorch state dicts (``_conv_stem``, ``_blocks.N._expand_conv`` ...) so that
loading checks every tensor has its place.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, HEAD, CLASSES, BN_EPS = 32, 1280, 1000, 1e-3


def same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's 'SAME': output ceil(size / stride); the odd padding pixel goes after (bottom/right)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad takes the last axis first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class SameConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(same_padding(x, self.kernel_size[0], self.stride[0]))


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> SameConv:
    return SameConv(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)


def norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv, self._bn0 = conv(cin, mid, 1), norm(mid)
        self._depthwise_conv, self._bn1 = conv(mid, mid, kernel, stride, groups=mid), norm(mid)
        self._project_conv, self._bn2 = conv(mid, cout, 1), norm(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem, self._bn0 = conv(3, STEM, 3, 2), norm(STEM)
        blocks, cin = [], STEM
        for expand, kernel, stride, cout, repeats in STAGES:
            for index in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if index == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = conv(cin, HEAD, 1), norm(HEAD)
        self._fc = nn.Linear(HEAD, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: N,H,W,3 RGB pixel values 0..255 (float); returns N,1000 logits (dropout is off in eval)."""
        x = (images.permute(0, 3, 1, 2) - 127.0) / 128.0
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def lite0_from_state_dict(state: dict[str, torch.Tensor]) -> EfficientNetLite0:
    """The reference with ``state`` loaded: every tensor of it has a place, and every parameter and BatchNorm
    statistic of the reference comes from it (only BatchNorm's step counters may be absent)."""
    model = EfficientNetLite0()
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys), result.missing_keys
    return model.eval().to(memory_format=torch.channels_last)  # NHWC images: the faster layout on CPU
