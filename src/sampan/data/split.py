"""Seeded, stratified train/validation split."""

from __future__ import annotations

import numpy as np

from sampan.errors import DataError


def stratified_split(
    targets: np.ndarray, val_fraction: float, seed: int, labels: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class contributes round(n * val_fraction) >= 1 to val."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, not {val_fraction}.")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for cls in np.unique(targets):
        members = np.flatnonzero(targets == cls)
        members = members[rng.permutation(len(members))]
        if len(members) < 2:
            name = labels[cls] if labels is not None else f"index {cls}"
            raise DataError(
                f"Class {name} has only {len(members)} usable sample: need at least 2 per class "
                "to hold one out for validation. Add samples or drop the class."
            )
        # At least one sample in each part, whatever the fraction.
        n_val = min(max(1, round(len(members) * val_fraction)), len(members) - 1)
        val_idx.append(members[:n_val])
        train_idx.append(members[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
