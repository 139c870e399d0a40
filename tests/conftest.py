"""Shared fixtures: an isolated store, small real image folders, and one trained package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_digits_folder(root: Path, per_class: int, classes: int = 10, offset: int = 0) -> Path:
    """An ImageFolder of real scikit-learn digits: root/<digit>/<index>.png."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    for label in range(classes):
        members = np.flatnonzero(digits.target == label)[offset : offset + per_class]
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for index in members:
            Image.fromarray(images[index]).save(folder / f"{index:04d}.png")
    return root


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SAMPAN_HOME."""
    path = tmp_path / "sampan-home"
    monkeypatch.setenv("SAMPAN_HOME", str(path))
    monkeypatch.setenv("SAMPAN_QUIET", "1")
    return path


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 real digits per class, 10 classes."""
    return write_digits_folder(tmp_path_factory.mktemp("digits") / "train", per_class=40)


@pytest.fixture(scope="session")
def digits_holdout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 other digits per class, never in digits_dir."""
    return write_digits_folder(tmp_path_factory.mktemp("holdout") / "data", per_class=5, offset=100)


TINY = {
    "arch": "small_cnn_tiny",
    "input_size": 16,
    "epochs": 3,
    "batch_size": 32,
    "patience": 0,
    "device": "cpu",
    "quiet": True,
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, digits_dir: Path) -> tuple[Path, str]:
    """(store home, package ref) of a small classifier trained once per session."""
    import sampan
    from sampan.store import Store

    home = tmp_path_factory.mktemp("trained-home")
    result = sampan.train(
        data=str(digits_dir),
        name="digits",
        store=Store(home),
        **{**TINY, "epochs": 8, "augment": "shift"},
    )
    return home, result.package.ref


@pytest.fixture(scope="session")
def exported(
    trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """(store home, fp32 ONNX package ref, INT8 package ref) made from the trained package, in
    a copy of its store: tests that copy `trained` find it as trained, whatever ran before."""
    import shutil

    from sampan.compress import compress
    from sampan.export import export
    from sampan.store import Store

    home = tmp_path_factory.mktemp("exported-home") / "home"
    shutil.copytree(trained[0], home)
    ref = trained[1]
    onnx = export(ref, "onnx", store=Store(home))
    int8 = compress(onnx.ref, store=Store(home), max_drop=0.05)
    return home, onnx.ref, int8.ref


@pytest.fixture
def serve_home(exported, tmp_path: Path) -> tuple[Path, str, str]:
    """A private copy of the exported store (home, onnx ref, int8 ref) a server may change."""
    import shutil

    home, onnx_ref, int8_ref = exported
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    return copy, onnx_ref, int8_ref
