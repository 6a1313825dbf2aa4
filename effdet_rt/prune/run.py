"""`effdet-rt prune` as a library call: checkpoint in, smaller encrypted checkpoint + status.json out.

`prune_to_file` is the run every task shares; `prune_checkpoint` opens a detector for it (another task passes its
own opener)."""

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
from effdet_rt.onnx.tasks import default_model_task, task_of_metadata
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
    task = task_of_metadata(checkpoint.metadata, str(path))
    if task is not default_model_task():
        raise UserError(f"{path}: is a {task.noun} checkpoint; prune it with `{task.command} prune`")
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


@dataclass
class PruneSource:
    """A trained network opened for pruning, and what its pruned checkpoint carries over from it."""

    model: Any  # the float network with the checkpoint's weights
    base_counts: dict[str, int]  # the filter counts it was already pruned to ({} for a stock network)
    spec_yaml: str  # stored in the pruned checkpoint, so loading it rebuilds the same network
    metadata: dict[str, Any]  # the source checkpoint's metadata the pruned one keeps
    passthrough: tuple[type, ...] = ()  # the task's own channel-preserving layer classes (see pruner)


def prune_to_file(settings: PruneSettings, checkpoint: str, output: str, *, key: str | None, spec_key: str | None,
                  load: Callable[[Path, str], PruneSource], fields: tuple[str, str],
                  log: Callable[[str], None] = print) -> PruneSummary:
    """The prune run of any task: open ``checkpoint`` with ``load``, prune it, write the encrypted smaller
    checkpoint (filter counts and settings in its metadata) and status.json; ``fields`` name the spec's
    checkpoint and output fields for the error messages. Nothing is written unless the whole run succeeds."""

    settings.check()
    model_field, output_field = fields
    if not checkpoint:
        raise UserError(f"no checkpoint to prune: pass -m model.edrt (or set {model_field})")
    if not output:
        raise UserError(f"no output folder: pass -o OUT_DIR (or set {output_field})")
    target = output_file(Path(output), settings)
    key = resolve_key(key, spec_key or None)
    with progress_bar(transient=True) as progress:
        task = progress.add_task("pruning", total=3, info="loading")
        source = load(Path(checkpoint), key)
        progress.update(task, advance=1, info="choosing filters")
        result = prune_model(source.model, settings, source.base_counts, source.passthrough)
        progress.update(task, advance=1, info="saving")
        metadata = dict(source.metadata)
        metadata[FILTERS_KEY] = result.filter_counts
        metadata["pruning"] = {**settings.__dict__, "excluded_layers": list(settings.excluded_layers),
                               "source_checkpoint": Path(checkpoint).name,
                               "params_before": result.params_before, "params_after": result.params_after}
        save_checkpoint(target, model_weights(result.model), key=key, spec_yaml=source.spec_yaml, metadata=metadata)
        progress.update(task, advance=1, info="done")
    summary = PruneSummary(target, result.params_before, result.params_after, os.path.getsize(target),
                           len(result.filter_counts))
    for line in summary.lines():
        log(line)
    StatusLogger(target.parent).write("SUCCESS", "Pruning finished successfully.", kpi=summary.kpi())
    return summary


def prune_checkpoint(spec: Any, *, key: str | None, log: Callable[[str], None] = print) -> PruneSummary:
    """Prune the detector checkpoint prune.checkpoint into prune.output_path as the spec's prune section says."""

    def load(path: Path, resolved: str) -> PruneSource:
        checkpoint, model_spec, model, counts = load_detector(path, resolved, spec)
        kept = {name: checkpoint.metadata[name] for name in KEPT_METADATA if name in checkpoint.metadata}
        return PruneSource(model, counts, _spec_text(checkpoint, model_spec), kept)

    return prune_to_file(settings_from_spec(spec.prune), spec.prune.checkpoint, spec.prune.output_path, key=key,
                         spec_key=getattr(spec, "encryption_key", None), load=load,
                         fields=("prune.checkpoint", "prune.output_path"), log=log)


def _spec_text(source: Any, model_spec: Any) -> str:
    return source.spec_yaml if source.spec_yaml.strip() else spec_to_yaml(model_spec)


def split_excluded(values: Sequence[str] | None) -> list[str] | None:
    """-el values: repeated, comma-separated, or (TAO) space-separated names."""
    if not values:
        return None
    return [name for value in values for name in value.replace(",", " ").split() if name]
