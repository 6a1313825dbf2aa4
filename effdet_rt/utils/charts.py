"""The charts people look at, drawn with matplotlib, each PNG written beside a JSON file of the numbers it plots.

Figures are made with matplotlib's object-oriented API on an Agg canvas, never through pyplot, so drawing needs no
display and cannot open a window or pick a GUI backend on a desktop. Every file is written to a temporary name
and renamed, so a folder holding another run's charts gets whole new ones or keeps the old ones, never half a PNG.
A chart is never worth a failed run: callers draw through ``draw_safely``, which turns any error into a warning.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from effdet_rt.utils.atomic import atomic_write_bytes, atomic_write_text

DPI = 100
GRID = {"alpha": 0.3, "linestyle": "--"}
# Training charts are redrawn at every checkpoint and evaluation, and between them at most this often: drawing a
# chart costs more than a training step of a small model, so short epochs would spend most of a run on pictures.
REDRAW_SECONDS = 60.0


class RedrawClock:
    """Says when a training run's charts are due: always when ``now`` is asked for (a checkpoint or an evaluation
    was just written, so the pictures match the files beside them), else once ``REDRAW_SECONDS`` have passed since
    the last drawing. The first epoch always draws, so a run has its charts from the start."""

    def __init__(self, seconds: float = REDRAW_SECONDS) -> None:
        self.seconds = seconds
        self.last = -math.inf

    def due(self, now: bool = False) -> bool:
        return now or time.monotonic() - self.last >= self.seconds

    def drawn(self) -> None:
        self.last = time.monotonic()

    def draw_if_due(self, draw: Callable[[], object], now: bool = False) -> None:
        if self.due(now):
            draw()
            self.drawn()


def data_path(png_path: str | os.PathLike) -> Path:
    """The JSON file beside a chart: ``results.png`` -> ``results.json``."""
    return Path(png_path).with_suffix(".json")


def new_figure(width: float, height: float, rows: int = 1, columns: int = 1) -> tuple[Any, Any]:
    """A Figure on an Agg canvas (no display, no pyplot) and its axes (an array when rows x columns > 1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns)
    return figure, axes


def save_chart(figure: Any, path: str | os.PathLike, data: Mapping[str, Any] | None) -> Path:
    """Write the PNG and its JSON data file (data first: a PNG on disk always has its numbers beside it).
    ``data=None``: the chart was drawn from a JSON file already beside it."""
    target = Path(path)
    if data is not None:
        atomic_write_text(data_path(target), json.dumps(data, indent=1, default=_plain) + "\n")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(target, buffer.getvalue())


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def draw_safely(draw: Callable[..., Path | None], *args: Any, log: Callable[[str], None] = print,
                **kwargs: Any) -> Path | None:
    """Run one chart function; any failure (an unwritable or odd results folder, bad numbers, a broken font cache)
    becomes one warning line, so training and evaluation go on without that picture."""
    try:
        return draw(*args, **kwargs)
    except Exception as exc:  # a chart must never end the run it illustrates
        log(f"warning: chart {getattr(draw, '__name__', draw)} not drawn: {type(exc).__name__}: {exc}")
        return None


def read_chart_data(path: str | os.PathLike, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """A metrics JSON file to draw from, or None with a warning when it is missing, half written or not an object."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        log(f"warning: {source} not found; its chart is skipped")
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log(f"warning: {source} is not readable JSON ({exc}); its chart is skipped until it is written again")
        return None
    if not isinstance(data, dict):
        log(f"warning: {source} does not hold a JSON object; its chart is skipped")
        return None
    return data


def finite(values: Sequence[float]) -> list[float]:
    return [float(v) if v is not None and math.isfinite(float(v)) else float("nan") for v in values]


# ------------------------------------------------------------------ training (detector)

TRAINING_PANELS = (("class_loss", "class loss"), ("box_loss", "box loss"), ("total_loss", "total loss"),
                   ("learning_rate", "learning rate"), ("AP", "val mAP (AP 0.50:0.95)"), ("AP50", "val AP50"))


def smoothed(values: Sequence[float], window: int) -> list[float]:
    """A trailing moving average, so the trend shows through per-step noise."""
    out, total, kept = [], 0.0, []
    for value in values:
        kept.append(value)
        total += value
        if len(kept) > window:
            total -= kept.pop(0)
        out.append(total / len(kept))
    return out


def write_training_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """results.png: class, box and total loss and the learning rate against epochs (per logged step, raw and
    smoothed), and validation mAP / AP50 per evaluated epoch. ``results`` is what results.json holds."""
    figure, axes = new_figure(15, 7.5, 2, 3)
    epochs = list(results.get("epoch", []))
    evaluation = results.get("evaluation", {})
    window = max(1, len(epochs) // 50)
    for ax, (name, title) in zip(axes.flat, TRAINING_PANELS, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, **GRID)
        if name in ("AP", "AP50"):
            _evaluation_panel(ax, list(evaluation.get("epoch", [])), finite(evaluation.get(name, [])), name)
            continue
        values = finite(results.get(name, []))
        if not values:
            ax.text(0.5, 0.5, "no steps yet", ha="center", va="center", transform=ax.transAxes)
            continue
        if name == "learning_rate":
            ax.plot(epochs, values, color="tab:purple", label="learning rate")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        else:
            ax.plot(epochs, values, color="tab:blue", alpha=0.35, linewidth=0.8, label="per step")
            ax.plot(epochs, smoothed(values, window), color="tab:orange", linewidth=1.8,
                    label=f"mean of {window} step(s)" if window > 1 else "per step")
            ax.set_ylabel("loss")
        ax.legend(loc="best", fontsize="small")
    figure.suptitle(str(results.get("title", "training")))
    return save_chart(figure, path, results)


def _evaluation_panel(ax: Any, epochs: list[int], values: list[float], name: str) -> None:
    if not epochs:
        ax.text(0.5, 0.5, "not evaluated yet", ha="center", va="center", transform=ax.transAxes)
        return
    ax.plot(epochs, values, marker="o", color="tab:green", label=f"{name} (last {values[-1]:.3f})")
    ax.set_ylim(0.0, max(1e-3, max((v for v in values if math.isfinite(v)), default=0.0)) * 1.15)
    ax.legend(loc="lower right", fontsize="small")


def write_loss_curve(path: str | os.PathLike, steps: Sequence[int], losses: Sequence[float],
                     title: str = "training loss") -> Path:
    """loss_curve.png: the total loss at every step (kept beside results.png for the tools that read it)."""
    figure, ax = new_figure(8, 5)
    values = finite(losses)
    if values:
        ax.plot(list(steps), values, color="tab:blue", linewidth=1.0, label="total loss")
        ax.legend(loc="best")
    ax.set(title=title, xlabel="step", ylabel="loss")
    ax.grid(True, **GRID)
    return save_chart(figure, path, {"step": list(steps), "total_loss": values})


# ------------------------------------------------------------------ detector evaluation

def write_pr_curves(path: str | os.PathLike, recall: Sequence[float], classes: Mapping[str, Mapping[str, Any]],
                    means: Mapping[str, Sequence[float]], title: str = "precision / recall (IoU 0.50, area all)") -> Path:
    """One precision/recall curve per class at IoU 0.50 with its AP50 and AP in the legend, and the class means
    at IoU 0.50 / 0.75 / 0.50:0.95 dashed."""
    figure, ax = new_figure(9, 6.5)
    recall = [float(r) for r in recall]
    colours = _class_colours(len(classes))
    for colour, (name, curve) in zip(colours, classes.items(), strict=True):
        ax.plot(recall, curve["precision"], color=colour, linewidth=1.6,
                label=f"{name}  AP50 {curve['AP50']:.3f}  AP {curve['AP']:.3f}")
    for style, (label, curve) in zip(("--", "-.", ":"), means.items(), strict=False):
        ax.plot(recall, list(curve), color="black", linestyle=style, linewidth=1.4, label=f"all classes, {label}")
    ax.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(True, **GRID)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    return save_chart(figure, path, {"recall": recall, "classes": classes, "means": means})


def write_class_ap_bars(path: str | os.PathLike, ap: Mapping[str, float], ap50: Mapping[str, float]) -> Path:
    """Per-class AP (0.50:0.95) and AP50 side by side, one pair of bars per class."""
    import numpy as np

    names = list(ap)
    figure, ax = new_figure(max(6.0, 0.6 * len(names) + 3), 5)
    x = np.arange(len(names))
    for offset, (label, values, colour) in zip((-0.2, 0.2), (("AP 0.50:0.95", ap, "tab:blue"),
                                                              ("AP50", ap50, "tab:orange")), strict=True):
        heights = [max(0.0, float(values[n])) for n in names]
        bars = ax.bar(x + offset, heights, width=0.4, label=label, color=colour)
        ax.bar_label(bars, labels=[f"{float(values[n]):.2f}" if values[n] >= 0 else "n/a" for n in names],
                     fontsize="x-small")
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set(title="AP per class", ylabel="AP", ylim=(0, 1.1))
    ax.grid(True, axis="y", **GRID)
    ax.legend(loc="upper right")
    return save_chart(figure, path, {"classes": names, "AP": [ap[n] for n in names], "AP50": [ap50[n] for n in names]})


def _class_colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


# ------------------------------------------------------------------ the demo

def write_engine_comparison(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
                            data: Mapping[str, Any] | None = None) -> Path:
    """mAP / AP50 and batch-1 latency per engine (backend + precision): demo_results.json's rows."""
    import numpy as np

    labels = [f"{r['backend']}\n{r['precision']}" for r in rows]
    figure, (quality, speed) = new_figure(max(8.0, 1.6 * len(rows) + 3), 4.5, 1, 2)
    x = np.arange(len(rows))
    for offset, (name, colour) in zip((-0.2, 0.2), (("mAP", "tab:blue"), ("AP50", "tab:orange")), strict=True):
        bars = quality.bar(x + offset, [float(r[name]) for r in rows], width=0.4, label=name, color=colour)
        quality.bar_label(bars, fmt="%.3f", fontsize="x-small")
    quality.set_xticks(x, labels)
    quality.set(title="validation mAP / AP50", ylim=(0, 1.1))
    quality.legend(loc="upper right")
    bars = speed.bar(x, [float(r["latency_ms"]) for r in rows], color="tab:green")
    speed.bar_label(bars, fmt="%.1f", fontsize="x-small")
    speed.set_xticks(x, labels)
    speed.set(title="latency per image, batch 1", ylabel="ms (lower is better)")
    for ax in (quality, speed):
        ax.grid(True, axis="y", **GRID)
    return save_chart(figure, path, data)
