"""Tables shared by the commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, int):
            table.add_row(key, str(value))
    return table


def per_class_table(per_class: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="Per class")
    for col in ("label", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, row in per_class.items():
        table.add_row(
            label,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    return table


def confusion_table(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> Table:
    table = Table(title="Confusion matrix (rows: true, columns: predicted)")
    table.add_column("true \\ pred")
    for label in labels:
        table.add_column(label, justify="right")
    for label, row in zip(labels, matrix):
        table.add_row(
            label,
            *[
                f"[bold]{v}[/]" if i == list(labels).index(label) else str(v)
                for i, v in enumerate(row)
            ],
        )
    return table


def predictions_table(results: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("input", overflow="fold")
    table.add_column("label")
    table.add_column("score", justify="right")
    table.add_column("top-k")
    for result in results:
        if "error" in result:
            table.add_row(str(result["input"]), "[red]-[/]", "-", f"[red]{result['error']}[/]")
            continue
        rest = ", ".join(f"{t['label']} {t['score']:.3f}" for t in result["top_k"][1:])
        table.add_row(str(result["input"]), result["label"], f"{result['score']:.4f}", rest)
    return table
