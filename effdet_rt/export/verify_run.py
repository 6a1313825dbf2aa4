"""`export --verify`: TensorFlow vs ONNX Runtime on sample images, raw heads and detections."""

from __future__ import annotations

import numpy as np

from effdet_rt.detections import Detections, category_ids
from effdet_rt.engines.runtime.onnxruntime import OnnxRuntimeRunner
from effdet_rt.errors import UserError
from effdet_rt.export.verify import (
    DetectionAgreement,
    Figure,
    MatchReport,
    VerifyReport,
    match_detections,
)
from effdet_rt.onnx.names import BOX_CODES, CLASS_LOGITS

MAX_HEAD_DIFF = 1e-4
# Scores below this, and scores within TIE_MARGIN of the last kept box when the per-image cap is hit, are near-ties
# whose order float rounding decides (a weak or untrained model has thousands of them); they are not compared.
COMPARE_MIN_SCORE = 0.05
TIE_MARGIN = 1e-4
# A weak model may score nothing >= COMPARE_MIN_SCORE: each image's best COMPARE_TOP_K detections are compared too
# (down to a relative gap in the reference's scores wider than 2 x TIE_MARGIN), with both sides' NMS keeping every
# score (VERIFY_MIN_SCORE), however small: an untrained or collapsed model still has a best ten.
COMPARE_TOP_K = 10
VERIFY_MIN_SCORE = 0.0


HEADS = "raw heads"
EXPORTED_GRAPH = "the exported graph"  # what a runner over a graph not yet written names in its messages
LAYOUT_KERNELS = "layout kernels"
COMPARED = (f"same class, IoU >= 0.99, scores >= {COMPARE_MIN_SCORE} or each image's best {COMPARE_TOP_K}, clear of "
            "the top-k cut")
ALL_TIED = ("; no detection's rank is decided (every score within 1e-4 relative of the next, an order float rounding "
            "picks), so the raw heads alone decide")
NONE_TO_COMPARE = "; no detections to compare: the check fails"


def onnx_report(max_abs_diff: float, match: MatchReport, images: int, layout_kernels_diff: float | None = None,
                all_tied: bool = False) -> VerifyReport:
    """max_abs_diff: the exported graph as ONNX Runtime runs it with its portable graph optimisations (the level
    `build --precision fp32` saves), the figure the limit applies to. layout_kernels_diff: the same heads with every
    optimisation, i.e. also ONNX Runtime's NCHWc CPU kernels, which sum in another order; on a trained D0 at 512 that
    alone moved the heads by 2.8e-4 while the graph itself matched TF to 6e-6, so it is reported, not limited. The
    detections are compared as engines run (every optimisation). all_tied: the reference had detections, but every
    one's rank was a near-tie (a collapsed or barely trained model whose scores all sit within TIE_MARGIN of each
    other): which of them NMS keeps is float rounding's choice, so no detection can be compared and the raw heads
    alone decide."""
    figures = [Figure(HEADS, max_abs_diff, MAX_HEAD_DIFF, "raw heads max |TF - ONNX| = {value:.2e} (limit {limit:.0e})")]
    if layout_kernels_diff is not None:
        figures.append(Figure(LAYOUT_KERNELS, layout_kernels_diff, None, "{value:.2e} with ORT's CPU layout kernels"))
    detections = DetectionAgreement(match, COMPARED, ALL_TIED if all_tied else NONE_TO_COMPARE, none_passes=all_tied)
    return VerifyReport(images, tuple(figures), detections)


def top_k_floor(scores: np.ndarray, k: int = COMPARE_TOP_K) -> float:
    """A score floor keeping about the best ``k`` of one image's descending ``scores``: the middle of the lowest gap
    wider than 2 x TIE_MARGIN of the score above it, so float rounding cannot move a detection across it (inf:
    none)."""
    for j in range(min(k, len(scores)) - 1, -1, -1):
        below = scores[j + 1] if j + 1 < len(scores) else -1.0
        if scores[j] - below > 2 * TIE_MARGIN * scores[j]:
            return float(scores[j] + below) / 2
    return float("inf")


def comparable(reference: Detections, candidate: Detections, cap: int) -> tuple[Detections, Detections]:
    """Both sides restricted, per image, to scores the ranking decides (see COMPARE_MIN_SCORE)."""
    floors = np.full(len(reference), COMPARE_MIN_SCORE, np.float32)
    for i in range(len(reference)):
        floors[i] = min(floors[i], top_k_floor(reference.scores[i, :int(reference.num_detections[i])]))
        if reference.num_detections[i] >= cap:
            floors[i] = max(floors[i], reference.scores[i, cap - 1] + TIE_MARGIN)
    return reference.filtered(floors), candidate.filtered(floors)


def exported_runner(proto, layout_kernels: bool = False) -> OnnxRuntimeRunner:
    """An exported graph, not yet written, on ONNX Runtime as `--verify` measures it: with the portable graph
    optimisations (the level `build --precision fp32` saves, what the limits hold), or with every optimisation
    (``layout_kernels``: also ORT's NCHWc CPU kernels, as engines run). A batch runs in one session call, padded to
    a fixed-batch graph's size by the runner."""
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if layout_kernels else \
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return OnnxRuntimeRunner(EXPORTED_GRAPH, proto, micro_batch=1 << 30, graph_level=level)


def verify_export(keras_engine, raw_proto, nms_proto, batch: np.ndarray) -> VerifyReport:
    """Compare the Keras network with the ONNX raw heads, and the checkpoint engine's detections with the
    ONNX `--nms onnx` graph's on the same preprocessed batch."""
    from effdet_rt.export.heads import raw_heads_model

    setup = keras_engine.setup
    heads = raw_heads_model(keras_engine.model, setup.num_levels, setup.num_classes)
    tf_logits, tf_codes = (t.numpy() for t in heads(batch, training=False))

    def heads_diff(layout_kernels: bool) -> float:
        onnx = exported_runner(raw_proto, layout_kernels).run(batch)
        return float(max(np.abs(tf_logits - onnx[CLASS_LOGITS]).max(), np.abs(tf_codes - onnx[BOX_CODES]).max()))

    diff = heads_diff(False)
    layout_diff = heads_diff(True)
    # the detections as engines run the graph: every optimisation, the whole batch in one session call
    num, boxes, scores, classes = exported_runner(nms_proto, layout_kernels=True).run(batch).values()
    onnx_dets = Detections(boxes, scores, category_ids(classes), num[:, 0])
    full = keras_engine.run(batch)
    reference, candidate = comparable(full, onnx_dets, keras_engine.nms_config.max_detections)
    all_tied = int(full.num_detections.sum()) > 0 and int(reference.num_detections.sum()) == 0
    return onnx_report(diff, match_detections(reference, candidate), len(batch), layout_diff, all_tied)


def require_passed(report: VerifyReport) -> None:
    if not report.passed():
        raise UserError(f"export verification failed: {report.summary()}")


def settle_verification(report: VerifyReport, strict: bool, log) -> None:
    """Raise on a failed verification when strict, else log a warning and let the export go on."""
    if strict:
        require_passed(report)
    elif not report.passed():
        log("warning: export verification is outside its limits (see the line above); the model was written anyway")
