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
    from sampan.data.digits import LICENSE, export_digits
    from sampan.store import sampan_home
    from sampan.training.api import evaluate, predict, train

    home = sampan_home()
    root = export_digits(home / "datasets" / "digits-starter", holdout=3)
    holdout = root.parent / f"{root.name}-holdout"
    console.print(f"[bold]1/3 Train[/] small_cnn on {root} ({LICENSE})")
    result = train(
        data=str(root),
        name=name,
        arch="small_cnn",
        input_size=32,
        epochs=epochs,
        augment="shift",
        device=device,
    )
    console.print(metrics_table(result.metrics, f"{result.package.ref}: validation split"))
    console.print(f"[bold]2/3 Evaluate[/] on {holdout} (30 images never seen in training)")
    report = evaluate(result.package.ref, holdout, device=device)
    console.print(f"held-out accuracy: {report.metrics['accuracy']:.4f}")
    console.print("[bold]3/3 Predict[/] a few held-out images")
    picks = sorted(holdout.glob("*/*.png"))[::6]
    results = predict(result.package.ref, [str(p) for p in picks], top_k=3, device=device)
    console.print(predictions_table(results, "predictions (the folder name is the true digit)"))
    console.print(f"\nValidation accuracy: [bold]{result.metrics['accuracy']:.4f}[/]")
    console.print(f"Package [bold]{result.package.ref}[/] is at {result.package.path}")
    console.print(
        f'Use it: sampan predict {name} IMAGE   or   sampan.load("{name}").predict([...])'
    )
