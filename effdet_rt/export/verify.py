"""Compare detections and raw heads between two backends (TensorFlow vs ONNX Runtime, FP32 vs INT8, ...)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from effdet_rt.detections import Detections
from effdet_rt.model.boxes import pairwise_iou


@dataclass(frozen=True)
class MatchReport:
    reference: int  # detections in the reference
    matched: int  # of those, matched in the candidate (same class, IoU >= threshold, score within tolerance)
    candidate: int  # detections in the candidate

    @property
    def rate(self) -> float:
        total = max(self.reference, self.candidate)
        return 1.0 if total == 0 else self.matched / total


def match_detections(
    reference: Detections, candidate: Detections, iou_threshold: float = 0.99, score_tolerance: float | None = 1e-4
) -> MatchReport:
    """Greedy one-to-one matching per image, best IoU first."""
    matched = ref_total = cand_total = 0
    for i in range(len(reference)):
        rb, rs, rc = reference.per_image(i)
        cb, cs, cc = candidate.per_image(i)
        ref_total += len(rb)
        cand_total += len(cb)
        if not len(rb) or not len(cb):
            continue
        iou = pairwise_iou(rb, cb)
        ok = (iou >= iou_threshold) & (rc[:, None] == cc[None, :])
        if score_tolerance is not None:
            ok &= np.abs(rs[:, None] - cs[None, :]) <= score_tolerance
        scores = np.where(ok, iou, -1.0)
        used = np.zeros(len(cb), bool)
        for r in np.argsort(-scores.max(axis=1)):
            candidates = np.where(ok[r] & ~used)[0]
            if len(candidates):
                used[candidates[np.argmax(scores[r, candidates])]] = True
                matched += 1
    return MatchReport(ref_total, matched, cand_total)
