"""`effdet-rt prune` as a library call: checkpoint in, smaller encrypted checkpoint + status.json out."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effdet_rt.checkpoint import assign_weights, load_checkpoint, model_weights, resolve_key, save_checkpoint
from effdet_rt.engines.runtime.checkpoint import spec_from_yaml
from effdet_rt.errors import CheckpointError, UserError
from effdet_rt.model.factory import build_model_from_spec, setup_from_spec
from effdet_rt.model.pruned import FILTERS_KEY, filter_counts_from_metadata
from effdet_rt.prune.criteria import PruneSettings
from effdet_rt.prune.pruner import prune_model
from effdet_rt.spec.loader import spec_to_yaml
from effdet_rt.utils.status import StatusLogger, progress_bar

KEPT_METADATA = ("model_name", "num_classes", "input_size")


@dataclass(frozen=True)
class PruneSummary:
    output: Path
    params_before: int
    params_after: int
    file_size: int
    pruned_layers: int

    @property
    def ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def kpi(self) -> dict[str, Any]:
        return {"pruning_ratio": round(self.ratio, 6), "param_count_before": self.params_before,
                "param_count_after": self.params_after, "size_bytes": self.file_size,
                "pruned_layers": self.pruned_layers}

    def lines(self) -> list[str]:
        return [f"parameters before pruning: {self.params_before:,}",
                f"parameters after pruning: {self.params_after:,}",
                f"pruning ratio (pruned model / original model): {self.ratio:.4f}",
                f"pruned model: {self.output} ({self.file_size / 2**20:.2f} MiB)"]


def settings_from_spec(prune: Any) -> PruneSettings:
    """The spec's prune.* settings (command-line options reach them as overrides)."""
    return PruneSettings(
        threshold=prune.threshold, normalizer=prune.normalizer, equalization_criterion=prune.equalization_criterion,
        granularity=prune.granularity, min_num_filters=prune.min_num_filters,
        excluded_layers=tuple(prune.excluded_layers),
    ).check()


def output_file(output: Path, settings: PruneSettings) -> Path:
    """TAO's name ``model_th=<threshold>_eq=<criterion>.edrt`` inside ``output``, unless it names a .edrt file."""
    if output.suffix.lower() == ".edrt":
        return output
    return output / f"model_th={float(settings.threshold)}_eq={settings.equalization_criterion}.edrt"


def _detector_spec(checkpoint: Any, path: Path, spec: Any) -> Any:
    if checkpoint.spec_yaml.strip():
        return spec_from_yaml(checkpoint.spec_yaml, f"{path} (stored spec)")
    if spec is not None and checkpoint.metadata.get("model_name"):
        return spec
    raise UserError(f"{path}: not an EfficientDet detector checkpoint (it carries no spec or model name); "
                    "pass a .edrt written by effdet-rt train")


def load_detector(path: Path, key: str, spec: Any) -> tuple[Any, Any, Any, dict[str, int]]:
    """(checkpoint, its spec, the float network with its weights, the filter counts it was already pruned to)."""

    checkpoint = load_checkpoint(path, key)
    model_spec = _detector_spec(checkpoint, path, spec)
    if model_spec.train.qat:
        raise UserError(f"{path}: is a QAT checkpoint (train.qat); prune the float checkpoint it started from, "
                        "then retrain the pruned model with train.qat=true")
    counts = filter_counts_from_metadata(checkpoint.metadata, str(path))
    model = build_model_from_spec(model_spec, setup_from_spec(model_spec), filter_counts=counts)
    try:
        assign_weights(model, checkpoint.weights, strict=True)
    except CheckpointError as exc:
        raise UserError(f"{path}: not an EfficientDet detector checkpoint of {model_spec.model.name} "
                        f"({exc}); pass a .edrt written by effdet-rt train") from None
    return checkpoint, model_spec, model, counts


def prune_checkpoint(spec: Any, *, key: str | None, log: Callable[[str], None] = print) -> PruneSummary:
    """Prune prune.checkpoint into prune.output_path as the spec's prune section says."""

    settings = settings_from_spec(spec.prune)
    if not spec.prune.checkpoint:
        raise UserError("no checkpoint to prune: pass -m model.edrt (or set prune.checkpoint)")
    if not spec.prune.output_path:
        raise UserError("no output folder: pass -o OUT_DIR (or set prune.output_path)")
    checkpoint, output = Path(spec.prune.checkpoint), Path(spec.prune.output_path)
    target = output_file(Path(output), settings)
    key = resolve_key(key, getattr(spec, "encryption_key", None) or None)
    with progress_bar(transient=True) as progress:
        task = progress.add_task("pruning", total=3, info="loading")
        source, model_spec, model, base_counts = load_detector(Path(checkpoint), key, spec)
        progress.update(task, advance=1, info="choosing filters")
        result = prune_model(model, settings, base_counts)
        progress.update(task, advance=1, info="saving")
        metadata = {name: source.metadata[name] for name in KEPT_METADATA if name in source.metadata}
        metadata[FILTERS_KEY] = result.filter_counts
        metadata["pruning"] = {**settings.__dict__, "excluded_layers": list(settings.excluded_layers),
                               "source_checkpoint": Path(checkpoint).name,
                               "params_before": result.params_before, "params_after": result.params_after}
        save_checkpoint(target, model_weights(result.model), key=key, spec_yaml=_spec_text(source, model_spec),
                        metadata=metadata)
        progress.update(task, advance=1, info="done")
    summary = PruneSummary(target, result.params_before, result.params_after, os.path.getsize(target),
                           len(result.filter_counts))
    for line in summary.lines():
        log(line)
    StatusLogger(target.parent).write("SUCCESS", "Pruning finished successfully.", kpi=summary.kpi())
    return summary


def _spec_text(source: Any, model_spec: Any) -> str:
    return source.spec_yaml if source.spec_yaml.strip() else spec_to_yaml(model_spec)


def split_excluded(values: Sequence[str] | None) -> list[str] | None:
    """-el values: repeated, comma-separated, or (TAO) space-separated names."""
    if not values:
        return None
    return [name for value in values for name in value.replace(",", " ").split() if name]
