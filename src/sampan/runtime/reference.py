"""Reference samples of a package: its validation split rebuilt from the data it was trained on
(checked against the recorded fingerprint), any labelled data the user names, or, for a
pretrained package with neither, the evaluation data its task ships (text-embedding: sampan's
industrial pairs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sampan.data.split import stratified_split
from sampan.errors import DataError
from sampan.package import Package
from sampan.tasks.base import Task, get_task


@dataclass
class Reference:
    inputs: Any  # decoded samples
    targets: np.ndarray  # indices into the package's labels; for a package without labels
    # (embeddings) the task's own targets, e.g. pair scores
    source: str
    split: str  # "val" or "train"; "all" when a package without labels takes every sample
    bundled: bool = False  # the task's own evaluation data, shipped with sampan

    def describe(self) -> str:
        """Where the samples come from, for a manifest's evaluated_on."""
        count = f"{len(self.targets)} samples"
        if self.split != "all":
            return f"{self.source} ({self.split} split, {count})"
        origin = "bundled with sampan, " if self.bundled else ""
        return f"{self.source} ({origin}all {count}, in order)"


def bundled_data(task: Task) -> Path | None:
    """The evaluation data a task ships for pretrained packages, if it has any."""
    return task.reference_data()


def reference_samples(
    package: Package,
    data: str | Path | None = None,
    split: Literal["val", "train"] = "val",
    limit: int | None = None,
    seed: int = 0,
) -> Reference:
    """Decoded, labelled samples for parity checks, calibration and accuracy before/after.

    A package without labels (embeddings) takes every sample in file order, never a split or
    a random subset: its samples are pairs, rows 2i and 2i+1, and limit does not apply.
    """
    manifest = package.manifest
    task = get_task(manifest.task)
    training = manifest.training
    recorded = training.get("dataset", {})
    source = str(data) if data is not None else recorded.get("source")
    bundled = None
    if data is None and not source and not manifest.labels:
        bundled = bundled_data(task)
        source = str(bundled) if bundled is not None else None
    if not source or not Path(source).exists():
        raise DataError(
            f"The training data of {package.ref} ({source}) is not here; pass "
            "labelled data with --data."
        )
    listing = task.scan(source)
    unknown = sorted(set(listing.labels) - set(manifest.labels))
    if unknown:
        raise DataError(
            f"{source} has label(s) {', '.join(unknown[:5])} that {package.ref} does not know."
        )
    samples = task.load(listing, manifest.preprocessing)
    if samples.segments is not None:  # time series: the data's own chronological segments
        if data is None and samples.fingerprint != recorded.get("fingerprint"):
            raise DataError(
                f"{source} has changed since {package.ref} was trained (fingerprint "
                "differs); pass the data with --data."
            )
        index = np.flatnonzero(samples.segments == (1 if split == "val" else 0))
        if limit is not None and len(index) > limit:
            index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
        return Reference(samples.take(index), samples.targets[index], source, split)
    if not manifest.labels:
        if data is None and bundled is None and samples.fingerprint != recorded.get("fingerprint"):
            raise DataError(
                f"{source} has changed since {package.ref} was made (fingerprint differs); "
                "pass labelled data with --data."
            )
        return Reference(samples.inputs, samples.targets, source, "all", bundled is not None)
    remap = np.array([manifest.labels.index(label) for label in samples.labels])
    targets = remap[samples.targets]
    index = np.arange(len(targets))
    if data is None:
        if samples.fingerprint != recorded.get("fingerprint"):
            raise DataError(
                f"{source} has changed since {package.ref} was trained (fingerprint "
                "differs); pass labelled data with --data."
            )
        if samples.presplit is not None and samples.presplit.any():
            val_mask = samples.presplit
            index = np.flatnonzero(val_mask if split == "val" else ~val_mask)
        else:
            config = training.get("config", {})
            train_idx, val_idx = stratified_split(
                targets, config.get("val_fraction", 0.2), training.get("seed", 0)
            )
            index = val_idx if split == "val" else train_idx
    if limit is not None and len(index) > limit:
        index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
    return Reference(samples.take(index), targets[index], source, split)
