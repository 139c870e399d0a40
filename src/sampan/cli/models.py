"""`sampan models`: tasks, architectures and presets with parameter counts."""

from __future__ import annotations

import typer
from rich.table import Table

from sampan.progress import console


def models(task: str = typer.Option(None, help="Only presets of this task.")) -> None:
    """List tasks, architectures and curated presets (any timm model name also works)."""
    from sampan.models import ARCHITECTURES, PRESETS, count_parameters
    from sampan.tasks import TASKS

    tasks = Table(title="Tasks")
    tasks.add_column("task")
    tasks.add_column("what it does")
    for name, cls in TASKS.items():
        tasks.add_row(name, cls.description)
    console.print(tasks)
    presets = Table(title="Architecture presets")
    for col, justify in (
        ("preset", "left"),
        ("task", "left"),
        ("architecture", "left"),
        ("params (10 classes; 96-step window)", "right"),
        ("summary", "left"),
    ):
        presets.add_column(col, justify=justify, no_wrap=col != "summary")  # type: ignore[arg-type]
    for name, preset in PRESETS.items():
        if task and preset.task != task:
            continue
        spec = preset.make()
        params = count_parameters(spec, num_classes=10, in_chans=3, input_size=[224, 224])
        presets.add_row(name, preset.task, spec.name, f"{params / 1e6:.2f}M", preset.description)
    console.print(presets)
    console.print(
        f"Architectures: {', '.join(ARCHITECTURES)}. Any timm model name works with "
        "--arch (e.g. --arch regnety_002)."
    )
