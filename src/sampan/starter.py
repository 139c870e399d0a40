"""The starter model: a digit classifier trained on scikit-learn's real digits, exported to ONNX,
so a new user has a working model to call within a minute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from sampan.package import Package
from sampan.store import Store

STARTER = "digits-starter"


def starter_data(store: Store) -> tuple[Path, Path]:
    """(training folder, held-out folder) of the starter data, written on first use."""
    from sampan.data.digits import export_digits

    root = export_digits(store.home / "datasets" / STARTER, holdout=3)
    return root, root.parent / f"{root.name}-holdout"


def train_starter(
    store: Store, console: Console, epochs: int = 15, device: str = "auto", name: str = STARTER
) -> tuple[Any, Any, Path]:
    """Train the starter model and evaluate it on held-out digits: (result, report, holdout)."""
    from sampan.data.digits import LICENSE
    from sampan.training.api import evaluate, train

    root, holdout = starter_data(store)
    console.print(f"[bold]Training the starter model[/] (small_cnn) on {root} ({LICENSE})")
    result = train(
        data=str(root),
        name=name,
        arch="small_cnn",
        input_size=32,
        epochs=epochs,
        augment="shift",
        device=device,
        store=store,
    )
    report = evaluate(result.package.ref, holdout, device=device, store=store)
    console.print(
        f"validation accuracy {result.metrics['accuracy']:.4f}, held-out accuracy "
        f"{report.metrics['accuracy']:.4f} ({report.num_samples} images never seen)"
    )
    console.print(f"Package {result.package.ref} is at {result.package.path}")
    return result, report, holdout


def build_starter(
    store: Store, console: Console, epochs: int = 15, device: str = "auto"
) -> Package:
    """Train, evaluate and export the starter model; return its ONNX package."""
    from sampan.export import export

    result, _, _ = train_starter(store, console, epochs, device)
    exported = export(result.package.ref, "onnx", store=store)
    console.print(f"Exported to ONNX: {exported.ref} at {exported.path}")
    return exported


def ensure_starter(store: Store, console: Console) -> Package:
    """The latest starter package with an ONNX export, built if the store has none."""
    if store.versions(STARTER):
        package = store.open(STARTER)
        if package.export_path("onnx") is not None:
            return package
        from sampan.export import export

        return export(package.ref, "onnx", store=store)
    return build_starter(store, console)
