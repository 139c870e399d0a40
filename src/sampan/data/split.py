"""Seeded, stratified train/validation split."""

from __future__ import annotations

import numpy as np

from sampan.errors import DataError


def stratified_split(
    targets: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class contributes round(n * val_fraction) >= 1 to val."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, not {val_fraction}.")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for cls in np.unique(targets):
        members = np.flatnonzero(targets == cls)
        members = members[rng.permutation(len(members))]
        n_val = max(1, round(len(members) * val_fraction))
        if n_val >= len(members):
            raise DataError(
                f"Class index {cls} has only {len(members)} usable sample(s): need at least 2 "
                "per class to hold one out for validation. Add samples or drop the class."
            )
        val_idx.append(members[:n_val])
        train_idx.append(members[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
