"""Trainable parameters and multiply-adds of every EfficientDet variant, for any class count, without building one.

Building and tracing all of D0..D7x and the Lite models takes minutes; `effdet-rt models` answers from this table
instead (`--build` still builds). Parameters and tfprof's float-op counts are exactly linear in the class count: only
the class predictor depends on it, with (fpn channels + 1) x anchors weights per class and the float ops of its
pointwise convolution and bias (class_head_float_ops_per_class). So each model keeps its counts for one class and
the increase per class, taken from built and traced networks (effdet_rt.model.flops);
tests/test_model_cost_table.py checks the table against built networks and automl's counts.

Multiply-adds come out as flops.detector_cost computes them, so the table prints the same numbers: float ops halved
(rounding down) and, for sides that are multiples of 2^max_level, the linear fit in H*W through the traces at
2^max_level and twice that; other sides (Lite0's 320, Lite2's 448) keep the count traced at the native size.
"""

from __future__ import annotations

from dataclasses import dataclass

from effdet_rt.model.configs import get_config


@dataclass(frozen=True)
class CostTerms:
    """A detector's trainable parameters and its multiply-adds traced at the sides 2^max_level and twice that,
    which fix its multiply-adds at any input size whose sides are multiples of 2^max_level."""

    trainable_params: int
    small_side: int
    small: int
    double: int

    def multiply_adds(self, size: tuple[int, int]) -> int:
        side = self.small_side
        per_pixel = (self.double - self.small) / (3 * side * side)
        fixed = self.small - per_pixel * side * side
        return int(round(per_pixel * size[0] * size[1] + fixed))


# Each count as (value with 1 class, increase per class). Float ops are tfprof's raw counts (two per multiply-add),
# which are exactly linear in the class count; halving them (flops._traced_multiply_adds) is done after, as there.
# name: (trainable params, float ops traced at 2^max_level, float ops traced at twice that side)
FITTED: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "efficientdet-d0": ((3828002, 585), (284608118, 395901), (1134638728, 1583604)),
    "efficientdet-d1": ((6554609, 801), (444344453, 543213), (1770680672, 2172852)),
    "efficientdet-d2": ((8006526, 1017), (554559006, 690525), (2210303264, 2762100)),
    "efficientdet-d3": ((11903335, 1449), (935329731, 985149), (3730095414, 3940596)),
    "efficientdet-d4": ((20543450, 2025), (1612453230, 1377981), (6431013728, 5511924)),
    "efficientdet-d5": ((33421826, 2601), (2566567694, 1770813), (10235230144, 7083252)),
    "efficientdet-d6": ((51563397, 3465), (4325866377, 2360061), (17258407644, 9440244)),
    "efficientdet-d7": ((51563397, 3465), (4325866377, 2360061), (17258407644, 9440244)),
    "efficientdet-d7x": ((76838781, 3465), (22019896529, 9447165), (88007949092, 37788660)),
    "efficientdet-lite1": ((4177029, 801), (390013033, 543213), (1560052036, 2172852)),
    "efficientdet-lite3": ((8221901, 1449), (850043969, 985149), (3400175732, 3940596)),
    "efficientdet-lite3x": ((9119861, 1809), (1011955369, 1230669), (4047821332, 4922676)),
    "efficientdet-lite4": ((14950669, 2025), (1494834025, 1377981), (5979335932, 5511924)),
}
# name: (trainable params, float ops traced at the native size): sides that are not multiples of 2^max_level
TRACED_AT_NATIVE_SIZE: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "efficientdet-lite0": ((3191405, 585), (1732580336, 2477574)),
    "efficientdet-lite2": ((5161821, 1017), (6010530975, 8466525)),
}


def _at(pair: tuple[int, int], classes: int) -> int:
    return pair[0] + pair[1] * (classes - 1)


@dataclass(frozen=True)
class TabledCost:
    name: str
    input_size: tuple[int, int]
    trainable_params: int
    multiply_adds: int


def tabled_cost(name: str, num_classes: int = 90) -> TabledCost:
    """Parameters and multiply-adds at the model's native input size with ``num_classes`` real classes: the numbers
    flops.detector_cost gives for the built network."""
    cfg = get_config(name)
    size = (cfg.image_size, cfg.image_size)
    if cfg.name in TRACED_AT_NATIVE_SIZE:
        params, ops = TRACED_AT_NATIVE_SIZE[cfg.name]
        return TabledCost(cfg.name, size, _at(params, num_classes), _at(ops, num_classes) // 2)
    params, small, double = FITTED[cfg.name]
    terms = CostTerms(_at(params, num_classes), 2**cfg.max_level, _at(small, num_classes) // 2,
                      _at(double, num_classes) // 2)
    return TabledCost(cfg.name, size, terms.trainable_params, terms.multiply_adds(size))


def class_head_float_ops_per_class(name: str, size: tuple[int, int]) -> int:
    """tfprof float ops one more class adds: the class predictor's pointwise convolution (2 per multiply-add) and
    bias (1 per output) over every level's map, for each anchor."""
    from effdet_rt.model.anchors import feature_sizes

    cfg = get_config(name)
    pixels = sum(h * w for h, w in feature_sizes(size, cfg.min_level, cfg.max_level))
    return cfg.num_anchors * (2 * cfg.fpn_num_filters + 1) * pixels
