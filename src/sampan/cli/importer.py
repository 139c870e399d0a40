"""`sampan import hf DIR`: pretrained models into packages."""

from __future__ import annotations

from pathlib import Path

import typer

from sampan.progress import console

app = typer.Typer(help="Import pretrained models as packages.", no_args_is_help=True)


@app.command("hf")
def hf(
    source: Path = typer.Argument(..., help="A Hugging Face-format model directory."),
    task: str = typer.Option("text-embedding", help="What the model is for."),
    name: str = typer.Option(..., help="The package name."),
) -> None:
    """config.json + tokenizer.json + model.safetensors -> a new package version."""
    from sampan.importers.hf import import_hf

    package = import_hf(source, task, name)
    training = package.manifest.training
    console.print(
        f"Package [bold]{package.ref}[/] ({task}, {training['dimension']}-d vectors, licence "
        f"{training['license']}) is at {package.path}"
    )
