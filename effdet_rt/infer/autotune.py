"""`build --precision auto`: build every engine this machine can run, time them in turns, keep the fastest that
stays accurate, as TensorRT times its tactics.

The candidates come from the backend table (effdet_rt/backends.py): each buildable row that is usable here, at
each of its precisions this CPU runs (bf16 needs bfloat16 arithmetic; int8 needs calibration data). Every
candidate is built into a temporary folder beside the output, checked against FP32 (ONNX Runtime on the input
model) on the calibration images, then all are timed in interleaved rounds on the same threads, at batch 1 and at
build.max_batch_size. The winner is the fastest candidate within the accuracy bound; its timings table and the
choice go into its metadata (a sidecar .auto.json for a format without metadata of ours) and it is renamed into
place; the others are deleted. Nothing is written at the output until the choice is made.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.backends import AUTO, BACKENDS, Backend, backend_named
from effdet_rt.detections import Detections
from effdet_rt.engines.build.request import calibration_source, onnx_input_size
from effdet_rt.engines.registry import backend_status, builder_module, precision_status, write_engine_metadata
from effdet_rt.engines.runtime.onnxruntime import read_onnx
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.export.verify import match_detections
from effdet_rt.onnx.tasks import default_model_task, model_task
from effdet_rt.utils.atomic import atomic_write_text
from effdet_rt.utils.cpu import cpu_class, read_cpuinfo, usable_cpus

# Precisions tried per device. On a CPU, fp16 is left out: OpenVINO runs 16-bit weights in bf16 or f32
# arithmetic (the CPU has no fp16 units), so it is the bf16 or fp32 engine with coarser weights.
AUTO_PRECISIONS = {"cpu": ("fp32", "bf16", "int8"), "gpu": ("fp32", "fp16", "int8")}
MATCH_IOU = 0.5  # a candidate's detection matches FP32's: same class, IoU >= this (as the bf16/fp16 tests check)
MAP_DROP = 0.01  # with a validation set: a candidate's mAP may be at most this below FP32's
SIDECAR_SUFFIX = ".auto.json"


@dataclass
class Candidate:
    backend: Backend
    precision: str
    status: str = "pending"  # built, chosen, timed, below bound, skipped, failed
    why: str = ""
    path: Path | None = None
    engine: Any = None
    build_s: float | None = None
    matched: float | None = None  # share of FP32's detections matched
    map: float | None = None
    batch1_ms: list[float] = field(default_factory=list)
    batchn_ms: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.backend.title} {self.precision.upper()}"

    def latency(self, batch: int) -> tuple[float, float] | None:
        """(batch-1 ms, per-image ms at ``batch``): medians of the rounds."""
        if not self.batch1_ms:
            return None
        return statistics.median(self.batch1_ms), statistics.median(self.batchn_ms) / batch

    def score(self, batch: int) -> float:
        """What the choice minimises: the geometric mean of batch-1 latency and per-image time at ``batch``."""
        one, per_image = self.latency(batch)
        return math.sqrt(one * per_image)

    def row(self, batch: int) -> dict[str, Any]:
        latency = self.latency(batch)
        return {"backend": self.backend.name, "precision": self.precision, "status": self.status, "why": self.why,
                "build_s": _round(self.build_s), "matched": _round(self.matched, 4), "mAP": _round(self.map, 4),
                "batch1_ms": _round(latency[0] if latency else None),
                f"batch{batch}_img_s": _round(1000.0 / latency[1] if latency else None),
                "rounds": len(self.batch1_ms)}


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass
class Validation:
    """A validation set for mAP (the spec's dataset.val_tfrecords and val_json_file)."""

    tfrecords: list[str]
    json_file: str
    num_samples: int | None = None


class Clock:
    def __init__(self, budget_s: float | None):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()


def engine_output(output: Path, backend: Backend) -> Path:
    """The output path for ``backend``'s engine: ``output`` itself when its suffix is the backend's, else ``output``
    with the backend's suffix added (an output named without a suffix lets every backend compete)."""
    return output if output.suffix.lower() in backend.suffixes else output.with_name(output.name + backend.suffixes[0])


def candidate_backends(requested: str, output: Path) -> list[Backend]:
    """The rows that may compete: the named backend, or with `auto` every row (one the output's suffix names, if
    it names one); refused when the output's suffix belongs to no backend or to another backend."""
    named = next((b for b in BACKENDS if output.suffix.lower() in b.suffixes), None) if output.suffix else None
    if output.suffix and named is None:
        raise UserError(f"{output}: '{output.suffix}' is no engine file type; with --precision auto name the output "
                        "without a suffix (the chosen backend's is added) or with one backend's suffix")
    if requested != AUTO:
        backend = backend_named(requested)
        if named is not None and named is not backend:
            raise UserError(f"{output}: a {named.title} file, but --backend {backend.name} builds "
                            f"{backend.suffixes[0]} files; name the output *{backend.suffixes[0]} or without a suffix")
        return [backend]
    return [named] if named is not None else list(BACKENDS)


def list_candidates(backends: Iterable[Backend], calibrated: bool) -> list[Candidate]:
    """Every (backend, precision) pair that may compete, those that cannot be built here already marked skipped
    with the reason (one row for a backend that is not usable here, whatever its precisions)."""
    found = []
    for backend in backends:
        precisions = [p for p in AUTO_PRECISIONS[backend.device] if p in backend.precisions]
        if not precisions or not (backend.builder or backend.exporter):  # the checkpoint is no engine
            continue
        usable, why = backend_status(backend) if backend.builder else (False, "")
        if backend.builder is None or not usable:
            hint = f"; {backend.install_hint}" if backend.install_hint and "pip install" not in why else ""
            skipped = Candidate(backend, "/".join(precisions), status="skipped", why=why + hint)
            if backend.builder is None:
                skipped.why = (f"converted from the checkpoint (`effdet-rt export -o model{backend.suffixes[0]}`), "
                               "not built from an ONNX")
            found.append(skipped)
            continue
        for precision in precisions:
            candidate = Candidate(backend, precision)
            if precision == "int8" and not calibrated:
                candidate.status, candidate.why = "skipped", "no calibration data: pass --calib-tfrecords GLOB"
            elif precision != "fp32" and not calibrated:
                candidate.status = "skipped"
                candidate.why = "no calibration images to check it against FP32: pass --calib-tfrecords GLOB"
            else:
                ok, candidate.why = precision_status(backend, precision)
                candidate.status = "pending" if ok else "skipped"
            found.append(candidate)
    order = {p: i for i, p in enumerate(("fp32", "bf16", "fp16", "int8"))}
    return sorted(found, key=lambda c: (order.get(c.precision, len(order)), c.backend.auto_rank
                                        if c.backend.auto_rank is not None else len(BACKENDS)))


def bench_batches(images: np.ndarray | None, input_size: tuple[int, int], batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch-1 and batch-``batch`` inputs: calibration images when there are some, else seeded noise."""
    if images is None or not len(images):
        images = np.random.default_rng(0).uniform(0, 255, (1, *input_size, 3)).astype(np.float32)
    repeats = -(-batch // len(images))
    return images[:1], np.concatenate([images] * repeats)[:batch]


def timed(engine: Any, batch: np.ndarray) -> float:
    start = time.perf_counter()
    engine.run(batch)
    return (time.perf_counter() - start) * 1000.0


def run_all(engine: Any, batches: list[np.ndarray]) -> Detections:
    return Detections.concat([engine.run(b) for b in batches])


def build_candidate(candidate: Candidate, model: Path, work: Path, settings: Any,
                    calibration: Callable[[], Iterable[np.ndarray]] | None, log: Callable[[str], None]) -> None:
    """Build one candidate into ``work`` and open it; a candidate this model cannot become is marked failed."""
    from effdet_rt.engines import load

    path = work / f"{candidate.backend.name}_{candidate.precision}{candidate.backend.suffixes[0]}"
    start = time.perf_counter()
    try:
        builder_module(candidate.backend).build(
            model, path, settings.model_copy(update={"data_type": candidate.precision}),
            calibration=calibration if candidate.precision == "int8" else None, calib_only=False, log=log)
        candidate.engine = load(path)
    except UserError as exc:  # this model cannot be this engine (e.g. a TensorRT-only ONNX on a CPU backend)
        candidate.status, candidate.why = "failed", str(exc)
        return
    candidate.build_s = time.perf_counter() - start
    candidate.path, candidate.status = path, "built"


def check_accuracy(candidate: Candidate, reference: Detections | None, images: list[np.ndarray],
                   validation: Validation | None, reference_map: float | None, settings: Any) -> None:
    if reference is not None:
        report = match_detections(reference, run_all(candidate.engine, images), iou_threshold=MATCH_IOU,
                                  score_tolerance=None)
        candidate.matched = report.rate
    if validation is not None:
        candidate.map = validation_map(candidate.engine, validation, settings)
    low_match = candidate.matched is not None and candidate.matched < settings.auto.min_match
    low_map = candidate.map is not None and reference_map is not None and candidate.map < reference_map - MAP_DROP
    if low_match or low_map:
        candidate.status = "below bound"
        candidate.why = (f"matched {candidate.matched:.1%} of FP32's detections < {settings.auto.min_match:.0%}"
                         if low_match else f"mAP {candidate.map:.4f} < FP32's {reference_map:.4f} - {MAP_DROP}")


def validation_map(engine: Any, validation: Validation, settings: Any) -> float:
    from effdet_rt.infer.evaluate import evaluate_engine

    metrics = evaluate_engine(engine, validation.tfrecords, validation.json_file, num_samples=validation.num_samples,
                              batch_size=settings.max_batch_size)
    return float(metrics["AP"])


def time_rounds(contenders: list[Candidate], single: np.ndarray, batch: np.ndarray, rounds: int, clock: Clock,
                log: Callable[[str], None]) -> list[Candidate]:
    """Warm every contender up once, then run ``rounds`` rounds, each timing every contender in turn (after one
    untimed run) at batch 1 and at the full batch, while the budget lasts; contenders whose first round does not fit are dropped (latest
    built first). Returns those that were timed."""
    estimate = {}
    for candidate in contenders:
        start = time.perf_counter()
        candidate.engine.run(single)
        candidate.engine.run(batch)
        estimate[id(candidate)] = time.perf_counter() - start
    timed_ones = list(contenders)
    while timed_ones and sum(estimate[id(c)] for c in timed_ones) > clock.left():
        dropped = timed_ones.pop()
        dropped.status, dropped.why = "skipped", "built, not timed: the --budget was spent"
    for number in range(rounds if timed_ones else 0):
        round_s = sum(estimate[id(c)] for c in timed_ones)
        if number and round_s > clock.left():
            log(f"auto: {number} timing rounds of {rounds} fit in the --budget")
            break
        shift = number % len(timed_ones)  # each round starts with another candidate: no one always follows the same
        for candidate in timed_ones[shift:] + timed_ones[:shift]:
            # one untimed run first: the previous engine's threads may still be spinning (ONNX Runtime's do after
            # each run) and its data fills the caches; timing straight after it would charge that to this one
            candidate.engine.run(single)
            candidate.batch1_ms.append(timed(candidate.engine, single))
            candidate.batchn_ms.append(timed(candidate.engine, batch))
    return timed_ones


def build_fastest(model: str | Path, settings: Any, *, validation: Validation | None = None,
                  log: Callable[[str], None] = print) -> Path:
    """`build --precision auto`: the fastest accurate engine of ``model`` on this machine, written at
    settings.engine_file (its backend's suffix added when that names none). Returns the path written."""
    model = Path(model)
    clock = Clock(settings.auto.budget_s)
    if not model.is_file():
        raise ModelFileError(f"{model}: model file not found; pass the ONNX file written by `effdet-rt export`")
    if not settings.engine_file:
        raise UserError("no output file: pass -o ENGINE (the chosen backend's suffix is added) or set build.engine_file")
    task = model_task(read_onnx(model))
    if task is not default_model_task():
        raise UserError(f"--precision auto compares detections, and {model} is a {task.noun}; "
                        "build it with --precision fp32 or int8")
    output = Path(settings.engine_file)
    backends = candidate_backends(settings.backend, output)
    for backend in backends:  # the engine must never replace the model it is built from
        if engine_output(output, backend).resolve() == model.resolve():
            raise UserError(f"{output}: the {backend.title} engine would overwrite the input model; choose another -o")
    input_size = onnx_input_size(model)
    calibration = calibration_source(settings.calibration, input_size, log)
    candidates = list_candidates(backends, calibration is not None)
    pending = [c for c in candidates if c.status == "pending"]
    if not pending:
        reasons = "; ".join(f"{c.name}: {c.why}" for c in candidates)
        raise UserError(f"--precision auto: no engine can be built here ({reasons}); install a backend, or name "
                        "--backend and --precision")
    batch = settings.max_batch_size
    images = list(calibration()) if calibration else []
    single, full = bench_batches(np.concatenate(images) if images else None, input_size, batch)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".auto", dir=output.parent))
    try:
        reference_map = build_and_check(pending, model, work, settings, calibration, images, validation, clock, log)
        contenders = [c for c in candidates if c.status == "built"]
        if not contenders and not any(c.status == "below bound" for c in candidates):
            raise nothing_built(candidates, clock)
        timed_ones = time_rounds(contenders, single, full, settings.auto.rounds, clock, log)
        if not timed_ones:
            raise nothing_timed(candidates, contenders, clock)
        chosen = choose(candidates, timed_ones, batch, single, full)
        summary = auto_summary(candidates, chosen, batch, settings, clock)
        summary["reference"] = {"engine": "ONNX Runtime FP32 on the input model", "images": sum(map(len, images)),
                                "mAP": _round(reference_map, 4)}
        target = engine_output(output, chosen.backend)
        for candidate in candidates:
            candidate.engine = None  # close every engine before the files move
        write_chosen(chosen, target, summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in timings_table(candidates, batch, chosen, target).splitlines():
        log(line)
    return target


def build_and_check(pending: list[Candidate], model: Path, work: Path, settings: Any,
                    calibration: Callable[[], Iterable[np.ndarray]] | None, images: list[np.ndarray],
                    validation: Validation | None, clock: Clock, log: Callable[[str], None]) -> float | None:
    """Build each pending candidate while the budget lasts and check it against FP32; returns FP32's mAP (None
    without a validation set)."""
    from effdet_rt.engines.runtime.onnxruntime import OnnxRuntimeEngine

    reference = run_all(OnnxRuntimeEngine(model), images) if images else None
    reference_map = validation_map(OnnxRuntimeEngine(model), validation, settings) if validation else None
    for candidate in pending:
        if clock.left() <= 0:
            candidate.status, candidate.why = "skipped", "not built: the --budget was spent"
            continue
        log(f"auto: building {candidate.name}")
        build_candidate(candidate, model, work, settings, calibration, log)
        if candidate.status == "built":
            check_accuracy(candidate, reference, images, validation, reference_map, settings)
    return reference_map


def nothing_built(candidates: list[Candidate], clock: Clock) -> UserError:
    if clock.budget_s is not None and clock.left() <= 0:
        return UserError(f"--budget {clock.budget_s:g}: too small to build and time one candidate "
                         f"({clock.elapsed():.1f} s spent); give more seconds or leave --budget out")
    failed = "; ".join(f"{c.name}: {c.why}" for c in candidates if c.status in ("failed", "skipped") and c.why)
    return UserError(f"--precision auto: no candidate could be built ({failed})")


def nothing_timed(candidates: list[Candidate], contenders: list[Candidate], clock: Clock) -> UserError:
    if contenders:
        return UserError(f"--budget {clock.budget_s:g}: too small to time one candidate ({clock.elapsed():.1f} s "
                         "spent building); give more seconds or leave --budget out")
    below = "; ".join(f"{c.name}: {c.why}" for c in candidates if c.status == "below bound")
    return UserError(f"--precision auto: no candidate is accurate enough ({below}); lower --min-match or name "
                     "a --precision")


def choose(candidates: list[Candidate], timed_ones: list[Candidate], batch: int, single: np.ndarray,
           full: np.ndarray) -> Candidate:
    """The timed candidate with the lowest score; the ones below the accuracy bound get one timing for the table."""
    chosen = min(timed_ones, key=lambda c: c.score(batch))
    for candidate in timed_ones:
        candidate.status = "chosen" if candidate is chosen else "timed"
    for candidate in candidates:
        if candidate.status == "below bound" and candidate.engine is not None:
            candidate.batch1_ms.append(timed(candidate.engine, single))  # shown, not chosen
            candidate.batchn_ms.append(timed(candidate.engine, full))
    return chosen


def auto_summary(candidates: list[Candidate], chosen: Candidate, batch: int, settings: Any, clock: Clock) -> dict:
    model, flags = read_cpuinfo()
    return {
        "choice": {"backend": chosen.backend.name, "precision": chosen.precision},
        "rule": f"fastest by the geometric mean of batch-1 latency and per-image time at batch {batch}, among "
                f"candidates matching >= {settings.auto.min_match:.0%} of FP32's detections (IoU >= {MATCH_IOU})",
        "cpu": model, "cpu_class": cpu_class(flags), "threads": usable_cpus(), "batch": batch,
        "budget_s": settings.auto.budget_s, "seconds": round(clock.elapsed(), 1),
        "candidates": [c.row(batch) for c in candidates],
    }


def write_chosen(chosen: Candidate, target: Path, summary: dict[str, Any]) -> None:
    """The chosen engine at ``target`` with the summary in its metadata, or beside it when its format has none."""
    if not write_engine_metadata(chosen.backend, chosen.path, target, {"auto_build": summary}):
        import json

        # the engine's files (one, or an .xml with its .bin), the one that is opened last
        for part in sorted(chosen.path.parent.glob(f"{chosen.path.stem}.*"), key=lambda p: p == chosen.path):
            os.replace(part, target.with_suffix(part.suffix))
        atomic_write_text(target.with_name(target.name + SIDECAR_SUFFIX), json.dumps(summary, indent=2))


def timings_table(candidates: list[Candidate], batch: int, chosen: Candidate, target: Path) -> str:
    """The one table `build --precision auto` prints (rich, rendered to text so that `log` carries it)."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"build --precision auto: {chosen.name} -> {target}")
    for column in ("engine", "status", "build s", "matched", "batch 1 ms", f"batch {batch} img/s", "why"):
        table.add_column(column, justify="right" if column[0] in "bm" else "left")
    for candidate in candidates:
        row = candidate.row(batch)
        cells = [row["build_s"], f"{row['matched']:.1%}" if row["matched"] is not None else None, row["batch1_ms"],
                 row[f"batch{batch}_img_s"]]
        table.add_row(candidate.name, candidate.status, *("" if c is None else str(c) for c in cells), candidate.why)
    buffer = io.StringIO()
    Console(file=buffer, width=160, no_color=True).print(table)
    return buffer.getvalue().rstrip()
