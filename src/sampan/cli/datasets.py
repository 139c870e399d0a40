"""`sampan datasets`: ready data sets that ship with installed packages."""

from __future__ import annotations

from pathlib import Path

import typer

from sampan.progress import console

app = typer.Typer(help="Ready data sets (no download needed).", no_args_is_help=True)


@app.command("digits")
def digits(
    out: Path = typer.Option(None, help="Target folder [default: SAMPAN_HOME/datasets/digits]."),
) -> None:
    """scikit-learn's 1,797 handwritten digits as an ImageFolder tree (0/ ... 9/)."""
    from sampan.data.digits import LICENSE, export_digits
    from sampan.store import sampan_home

    target = export_digits(out or sampan_home() / "datasets" / "digits")
    console.print(f"digits ImageFolder at {target}  ({LICENSE})")
    print(target)
