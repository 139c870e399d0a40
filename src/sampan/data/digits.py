"""scikit-learn's 1,797 real handwritten digits (8x8, 16 grey levels) as an ImageFolder tree.

The data ships inside scikit-learn (BSD-3-Clause); it is the test set of the UCI "Optical
Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998, CC BY 4.0).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

LICENSE = (
    "UCI Optical Recognition of Handwritten Digits (CC BY 4.0), "
    "as shipped by scikit-learn (BSD-3-Clause)"
)


def export_digits(target: Path, holdout: int = 0) -> Path:
    """Write target/<digit>/<index>.png (idempotent); the last `holdout` images per class go to
    target-holdout/ for prediction demos instead. Returns target."""
    from PIL import Image
    from sklearn.datasets import load_digits

    marker = target / ".complete"
    if marker.is_file():
        return target
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".digits-"))
    held = target.parent / f"{target.name}-holdout"
    tmp_held = Path(tempfile.mkdtemp(dir=target.parent, prefix=".digits-holdout-"))
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        for n, index in enumerate(members):
            is_held = holdout > 0 and n >= len(members) - holdout
            folder = (tmp_held if is_held else tmp) / str(label)
            folder.mkdir(exist_ok=True)
            Image.fromarray(images[index]).save(folder / f"{index:04d}.png")
    (tmp / "LICENSE.txt").write_text(LICENSE + "\n", encoding="utf-8")
    (tmp / ".complete").write_text("", encoding="utf-8")
    staged_pairs = [(held, tmp_held)] if holdout > 0 else []
    if holdout == 0:
        shutil.rmtree(tmp_held)
    for final, staged in (*staged_pairs, (target, tmp)):
        if final.exists():
            shutil.rmtree(final)
        os.rename(staged, final)
    return target
