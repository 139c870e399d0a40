"""`sampan predict`: top-k labels for files or folders."""

from __future__ import annotations

import json

import typer

from sampan.cli.render import predictions_table
from sampan.progress import console


def predict(
    package: str = typer.Argument(..., help="NAME, NAME@latest, NAME@3 or a package folder."),
    inputs: list[str] = typer.Argument(..., help="Files or folders."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Labels to show per input."),
    device: str = typer.Option(None, help="auto, cpu, cuda, ..."),
    backend: str = typer.Option("auto", help="auto, torch, onnxruntime."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Predict with a package: top-k labels with scores for each input."""
    from sampan.errors import DataError
    from sampan.training.api import predict as run_prediction

    results = run_prediction(package, inputs, top_k=top_k, device=device, backend=backend)
    failed = [r for r in results if "error" in r]
    if failed and len(failed) == len(results):
        raise DataError(
            failed[0]["error"] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
        )
    if as_json:
        for result in results:
            print(json.dumps(result))
        return
    console.print(predictions_table(results, f"{package}: {len(results)} input(s)"))
    if failed:
        console.print(f"[yellow]{len(failed)} of {len(results)} input(s) could not be read.[/]")
