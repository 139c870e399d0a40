"""`sampan demo`: the main job of `make run` - train, evaluate and use the digits starter model."""

from __future__ import annotations

import typer

from sampan.cli.render import metrics_table, predictions_table
from sampan.progress import console


def demo(
    name: str = typer.Option("digits-starter", help="Package name for the starter model."),
    epochs: int = typer.Option(15, help="Maximum epochs."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
) -> None:
    """Train the starter digit classifier on real data, evaluate it and predict held-out images."""
    from sampan.starter import train_starter
    from sampan.store import Store
    from sampan.training.api import predict

    result, _, holdout = train_starter(Store(), console, epochs, device, name)
    console.print(metrics_table(result.metrics, f"{result.package.ref}: validation split"))
    console.print("[bold]Predictions[/] on a few held-out images")
    picks = sorted(holdout.glob("*/*.png"))[::6]
    results = predict(result.package.ref, [str(p) for p in picks], top_k=3, device=device)
    console.print(predictions_table(results, "predictions (the folder name is the true digit)"))
    console.print(f"\nValidation accuracy: [bold]{result.metrics['accuracy']:.4f}[/]")
    console.print(f"Package [bold]{result.package.ref}[/] is at {result.package.path}")
    console.print(
        f'Use it: sampan predict {name} IMAGE   or   sampan.load("{name}").predict([...])'
    )
