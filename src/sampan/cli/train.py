"""`sampan train`: train a model on a dataset and write a package."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sampan.progress import console


def train(
    data: str = typer.Argument(
        None, help="ImageFolder tree or CSV (path,label); text: CSV/JSONL (text,label)."
    ),
    name: str = typer.Option(None, "--name", "-n", help="Package name to write."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file of options; flags win."),
    task: str = typer.Option(
        None, help="image-classification, text-classification, ts-forecast [default: image-...]."
    ),
    arch: str = typer.Option(None, help="Preset or timm model name [default: small_cnn]."),
    pretrained: str = typer.Option(
        None, help="'timm', a .safetensors file, an HF folder, or a package to fine-tune."
    ),
    epochs: int = typer.Option(None, help="Maximum epochs [default: 20]."),
    batch_size: int = typer.Option(None, help="[default: 64]"),
    lr: float = typer.Option(None, help="Peak learning rate [default: 2e-3]."),
    weight_decay: float = typer.Option(None, help="AdamW weight decay [default: 0.05]."),
    warmup_epochs: float = typer.Option(None, help="[default: 1]"),
    label_smoothing: float = typer.Option(None, help="[default: 0.1]"),
    grad_clip: float = typer.Option(None, help="Max gradient norm, 0 = off [default: 1]."),
    amp: str = typer.Option(None, help="Mixed precision: auto, on, off [default: auto]."),
    patience: int = typer.Option(None, help="Early-stopping patience, 0 = off [default: 5]."),
    val_fraction: float = typer.Option(None, help="[default: 0.2]"),
    seed: int = typer.Option(None, help="[default: 0]"),
    input_size: int = typer.Option(None, help="Square input side in pixels."),
    max_length: int = typer.Option(None, help="Text: tokens kept per text [default: 128]."),
    window: int = typer.Option(None, help="Time series: readings the model sees [96]."),
    horizon: int = typer.Option(None, help="Time series: steps to forecast [24]."),
    period: int = typer.Option(None, help="Time series: season in steps [from the interval]."),
    columns: str = typer.Option(None, help="Time series: value columns, a,b,c [all numeric]."),
    time_column: str = typer.Option(None, help="Time series: timestamp column [found]."),
    series_column: str = typer.Option(
        None, help="Time series: series id column, one model for several machines [found]."
    ),
    channels: int = typer.Option(None, help="1 or 3 [default: detected]."),
    augment: str = typer.Option(None, help="none, shift, flip, shift+flip [default: none]."),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:1, mps [default: auto]."),
    resume: bool = typer.Option(None, "--resume/--no-resume", help="Continue the run NAME."),
) -> None:
    """Train a model on your data and write a versioned package to the store."""
    flags = {k: v for k, v in locals().items() if k != "config"}
    from sampan.config import load_yaml
    from sampan.training.config import train_config
    from sampan.training.trainer import Trainer

    file_values = load_yaml(config) if config is not None else {}
    cfg = train_config(file_values, flags)
    result = Trainer(cfg).fit()
    table = Table(title=f"{result.package.ref} (best epoch {result.best_epoch})")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    for key, value in result.metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    if result.skipped:
        console.print(
            f"[yellow]Skipped {len(result.skipped)} unreadable file(s)[/], e.g. {result.skipped[0]}"
        )
    if result.stopped_early:
        console.print("Stopped early: validation stopped improving.")
    console.print(f"Package [bold]{result.package.ref}[/] written to {result.package.path}")
