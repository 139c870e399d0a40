"""`sampan eval`: metrics of a package on a labelled dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sampan.cli.render import confusion_table, metrics_table, per_class_table
from sampan.progress import console


def evaluate(
    package: str = typer.Argument(..., help="NAME, NAME@latest, NAME@3 or a package folder."),
    data: str = typer.Argument(
        None,
        help="ImageFolder tree or CSV (path,label); text: CSV/JSONL (text,label) or, for "
        "embeddings, scored pairs (text1,text2,score).",
        show_default=False,
    ),
    data_option: str = typer.Option(None, "--data", help="The same as DATA, as an option."),
    plot: Path = typer.Option(None, help="Confusion-matrix PNG [default: NAME-vN-confusion.png]."),
    batch_size: int = typer.Option(64),
    device: str = typer.Option(None, help="auto, cpu, cuda, ..."),
    backend: str = typer.Option("auto", help="auto, torch, onnxruntime."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a package: accuracy, top-k, macro-F1, per-class and a confusion matrix; for
    embeddings, Spearman/Pearson of cosine vs score and recall@k on pairs."""
    from sampan.errors import ConfigError
    from sampan.store import Store
    from sampan.training.api import evaluate as run_evaluation

    if (data is None) == (data_option is None):
        raise ConfigError("Name the labelled data once: `sampan eval NAME DATA` or --data DATA.")
    data = data or data_option
    ref = Store().open(package, verify=False).ref
    plot = plot or Path(f"{ref.replace('@', '-v')}-confusion.png")
    report = run_evaluation(
        package, data, batch_size=batch_size, device=device, plot=plot, backend=backend
    )
    if as_json:
        print(json.dumps({"package": report.ref, **report.metrics}, indent=2))
        return
    console.print(metrics_table(report.metrics, f"{report.ref} on {data}"))
    if "per_class" in report.metrics:
        console.print(per_class_table(report.metrics["per_class"]))
    if "confusion_matrix" in report.metrics:
        console.print(confusion_table(report.metrics["confusion_matrix"], report.labels))
    if report.skipped:
        shown = "; ".join(report.skipped[:3])
        console.print(f"[yellow]Skipped ({len(report.skipped)}):[/] {shown}")
    if report.plot is not None:
        console.print(f"Confusion matrix plot: {report.plot}")
