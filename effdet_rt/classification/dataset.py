"""Class-folder datasets (``root/<class name>/<image>``) and the seeded, resumable training batches.

Class indices are the sorted folder names of the training set (written to ``classmap.json``). Every random choice of
an epoch comes from generators seeded by (random_seed, epoch[, sample]), so a run resumed at an epoch boundary sees
exactly the batches a straight run sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from effdet_rt.classification.images import ImageFormat, eval_image, open_image, train_image
from effdet_rt.data.preprocess import IMAGE_SUFFIXES
from effdet_rt.errors import DataError
from effdet_rt.infer.files import fixed_batches, image_files
from effdet_rt.utils.atomic import atomic_write_text


@dataclass
class FolderDataset:
    root: Path
    classes: list[str]  # index -> name
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.paths)


def scan_class_folders(root: str | Path, field_name: str) -> FolderDataset:
    """Every image under ``root/<class>/``; an empty class folder or a root without class folders is an error."""
    root = Path(root) if root else None
    if root is None:
        raise DataError(f"{field_name} is empty; set it to a folder with one sub-folder of images per class")
    if not root.is_dir():
        raise DataError(f"{field_name}: {root} is not a folder; it must hold one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{field_name}: {root} has no class sub-folders; put each class's images in root/<class>/")
    dataset = FolderDataset(root, classes)
    for index, name in enumerate(classes):
        files = image_files(root / name)
        if not files:
            raise DataError(f"{field_name}: class folder {root / name} holds no {'/'.join(IMAGE_SUFFIXES)} images; "
                            "add images or remove the folder")
        dataset.paths.extend(files)
        dataset.labels.extend([index] * len(files))
    return dataset


def relabel(dataset: FolderDataset, classes: Sequence[str], field_name: str) -> FolderDataset:
    """Map a validation/evaluation set onto the training classes; a class the model does not know is an error."""
    unknown = [c for c in dataset.classes if c not in classes]
    if unknown:
        raise DataError(f"{field_name}: class folder(s) {unknown} of {dataset.root} are not classes of the model "
                        f"({', '.join(classes)}); rename or remove them")
    index = {name: i for i, name in enumerate(classes)}
    labels = [index[dataset.classes[label]] for label in dataset.labels]
    return FolderDataset(dataset.root, list(classes), list(dataset.paths), labels, list(dataset.skipped))


def drop_unreadable(dataset: FolderDataset, fmt: ImageFormat, workers: int = 2) -> FolderDataset:
    """Decode every image once; the ones that fail are left out and listed in ``skipped``."""
    def check(path: Path) -> str | None:
        try:
            open_image(path, fmt.channels, fmt.depth)
        except DataError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(check, dataset.paths))
    kept = [(p, label) for p, label, problem in zip(dataset.paths, dataset.labels, problems, strict=True) if problem is None]
    skipped = [(str(p), problem) for p, problem in zip(dataset.paths, problems, strict=True) if problem is not None]
    return FolderDataset(dataset.root, dataset.classes, [p for p, _ in kept], [label for _, label in kept],
                         dataset.skipped + skipped)


def write_classmap(path: Path, classes: Sequence[str]) -> Path:
    """classmap.json as TAO writes it: {class name: index}."""
    return atomic_write_text(path, json.dumps({name: i for i, name in enumerate(classes)}, indent=2) + "\n")


def read_classmap(path: str | Path) -> list[str]:
    """Class names in index order from a classmap.json ({name: index})."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: classmap not found; pass the classmap.json that training wrote") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable classmap.json ({exc}); pass the file training wrote") from exc
    if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
        raise DataError(f"{path}: a classmap maps each class name to its index 0..N-1; this one does not")
    return [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]


@dataclass(frozen=True)
class BatchPlan:
    batch_size: int
    steps_per_epoch: int
    seed: int


def plan_batches(num_images: int, batch_size: int, seed: int) -> BatchPlan:
    if num_images < batch_size:
        raise DataError(f"train.batch_size_per_gpu is {batch_size} but the training set has only {num_images} "
                        "readable image(s); lower the batch size or add images")
    return BatchPlan(batch_size, num_images // batch_size, seed)


def epoch_order(plan: BatchPlan, num_images: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([plan.seed, epoch]).permutation(num_images)


def mix_batch(images: np.ndarray, targets: np.ndarray, alpha: float, rng: np.random.Generator):
    """Mixup: each sample blended with another of the batch, weight lambda ~ Beta(alpha, alpha) per sample."""
    lam = rng.beta(alpha, alpha, size=len(images)).astype(np.float32)
    partner = rng.permutation(len(images))
    blend = lam[:, None, None, None]
    return (blend * images + (1.0 - blend) * images[partner],
            lam[:, None] * targets + (1.0 - lam[:, None]) * targets[partner])


def training_batches(dataset: FolderDataset, fmt: ImageFormat, augment, plan: BatchPlan, first_epoch: int,
                     num_epochs: int, workers: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(epoch, images (B, H, W, C) float32, one-hot targets (B, K)) for epochs first_epoch..num_epochs (1-based).

    Images are decoded by ``workers`` threads (Pillow releases the GIL), a few batches ahead of the consumer.
    """
    num_classes = len(dataset.classes)
    eye = np.eye(num_classes, dtype=np.float32)

    def sample(epoch: int, index: int) -> np.ndarray:
        rng = np.random.default_rng([plan.seed, epoch, index])
        return train_image(dataset.paths[index], fmt, augment, rng)

    def batches() -> Iterator[tuple[int, int, list[int]]]:
        for epoch in range(first_epoch, num_epochs + 1):
            order = epoch_order(plan, len(dataset), epoch)
            for step in range(plan.steps_per_epoch):
                yield epoch, step, [int(i) for i in order[step * plan.batch_size:(step + 1) * plan.batch_size]]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list = []
        source = batches()

        def submit() -> bool:
            item = next(source, None)
            if item is None:
                return False
            epoch, step, indices = item
            pending.append((epoch, step, indices, [pool.submit(sample, epoch, i) for i in indices]))
            return True

        for _ in range(3):
            submit()
        while pending:
            epoch, step, indices, futures = pending.pop(0)
            submit()
            images = np.stack([f.result() for f in futures])
            targets = eye[[dataset.labels[i] for i in indices]]
            if augment.mixup_alpha > 0:
                images, targets = mix_batch(images, targets, augment.mixup_alpha,
                                            np.random.default_rng([plan.seed, epoch, step, 1 << 20]))
            yield epoch, images.astype(np.float32), targets.astype(np.float32)


def eval_batches(paths: Sequence[Path], fmt: ImageFormat, batch_size: int, workers: int,
                 on_error: Callable[[Path, str], None] | None = None) -> Iterator[tuple[list[int], np.ndarray]]:
    """(indices, images) batches preprocessed with `eval_image`; unreadable files go to ``on_error`` (else raise)."""
    return fixed_batches(paths, lambda path: eval_image(path, fmt), batch_size, workers, on_error)
