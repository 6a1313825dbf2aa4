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


MIN_MATCH_RATE = 0.99


@dataclass(frozen=True)
class Figure:
    """One figure a verification measured and the limit it is held to (None: reported, not held to one).
    ``text`` is how the summary writes it, a format string over ``value``, ``limit`` and ``images``."""

    name: str
    value: float
    limit: float | None
    text: str

    def passed(self) -> bool:
        return self.limit is None or self.value <= self.limit

    def summary(self, images: int) -> str:
        return self.text.format(value=self.value, limit=self.limit, images=images)


@dataclass(frozen=True)
class DetectionAgreement:
    """Detections of the reference matched in the candidate. ``compared`` says which detections were compared;
    when there were none, ``when_none`` is added to the summary and ``none_passes`` decides."""

    match: MatchReport
    compared: str
    when_none: str = ""
    none_passes: bool = True

    def any_compared(self) -> bool:
        return self.match.reference + self.match.candidate > 0

    def passed(self) -> bool:
        return self.match.rate >= MIN_MATCH_RATE if self.any_compared() else self.none_passes

    def summary(self) -> str:
        total = max(self.match.reference, self.match.candidate)
        return (f"detections matched {self.match.matched}/{total} = {self.match.rate:.1%} ({self.compared}; "
                f"limit {MIN_MATCH_RATE:.0%})" + ("" if self.any_compared() else self.when_none))


@dataclass(frozen=True)
class VerifyReport:
    """What `--verify` measured between the checkpoint and an exported file, for any task and format: the figures
    with their limits, and for a detector the detections matched. It passes when every part is within its limit."""

    images: int
    figures: tuple[Figure, ...]
    detections: DetectionAgreement | None = None
    heading: str = "verify on {images} images: "

    def figure(self, name: str) -> Figure:
        return next(figure for figure in self.figures if figure.name == name)

    def value(self, name: str) -> float:
        return self.figure(name).value

    def passed(self) -> bool:
        return all(f.passed() for f in self.figures) and (self.detections is None or self.detections.passed())

    def summary(self) -> str:
        text = self.heading.format(images=self.images) + ", ".join(f.summary(self.images) for f in self.figures)
        return text if self.detections is None else f"{text}; {self.detections.summary()}"
