"""`sampan eval`: metrics of a package on a labelled dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sampan.cli.render import confusion_table, metrics_table, per_class_table
from sampan.progress import console


def evaluate(
    package: str = typer.Argument(..., help="NAME, NAME@latest, NAME@3 or a package folder."),
    data: str = typer.Argument(..., help="ImageFolder tree or CSV (path,label)."),
    plot: Path = typer.Option(None, help="Confusion-matrix PNG [default: NAME-vN-confusion.png]."),
    batch_size: int = typer.Option(64),
    device: str = typer.Option(None, help="auto, cpu, cuda, ..."),
    backend: str = typer.Option("auto", help="auto, torch, onnxruntime."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a package: accuracy, top-k, macro-F1, per-class and a confusion matrix."""
    from sampan.store import Store
    from sampan.training.api import evaluate as run_evaluation

    ref = Store().open(package, verify=False).ref
    plot = plot or Path(f"{ref.replace('@', '-v')}-confusion.png")
    report = run_evaluation(
        package, data, batch_size=batch_size, device=device, plot=plot, backend=backend
    )
    if as_json:
        print(json.dumps({"package": report.ref, **report.metrics}, indent=2))
        return
    console.print(metrics_table(report.metrics, f"{report.ref} on {data}"))
    console.print(per_class_table(report.metrics["per_class"]))
    console.print(confusion_table(report.metrics["confusion_matrix"], report.labels))
    if report.skipped:
        console.print(f"[yellow]Skipped {len(report.skipped)} unreadable file(s)[/]")
    console.print(f"Confusion matrix plot: {report.plot}")
