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


@app.command("tickets")
def tickets(
    out: Path = typer.Option(None, help="Target folder [default: SAMPAN_HOME/datasets/tickets]."),
    count: int = typer.Option(1800, min=60, help="Training tickets."),
    holdout: int = typer.Option(600, min=0, help="Held-out tickets (texts unseen in training)."),
) -> None:
    """Generated maintenance tickets (6 teams) as text,label CSVs: tickets.csv to train on,
    tickets-holdout.csv to evaluate with."""
    from sampan.data.tickets import LICENSE, export_tickets
    from sampan.store import sampan_home

    train, held = export_tickets(out or sampan_home() / "datasets" / "tickets", count, holdout)
    console.print(f"{train}  {held}  ({LICENSE})")
    print(train)


@app.command("series")
def series(
    name: str = typer.Argument(..., help="electricity (pmdarima) or co2 (statsmodels)."),
    out: Path = typer.Option(None, help="Target folder [default: SAMPAN_HOME/datasets/series]."),
    anomalies: bool = typer.Option(
        False, help="Inject documented anomalies into the last 30% and add a label column."
    ),
    seed: int = typer.Option(0, help="Seed of the injected anomalies."),
) -> None:
    """A real sensor-style time series from an installed package, as timestamp,value CSV."""
    from sampan.data.series import SOURCES, export_series
    from sampan.store import sampan_home

    path = export_series(name, out or sampan_home() / "datasets" / "series")
    if anomalies:
        import pandas as pd

        from sampan.data.anomalies import inject_anomalies

        frame = pd.read_csv(path)
        columns = [c for c in frame.columns if c != "timestamp"]
        target = path.with_name(f"{name}-anomalies.csv")
        inject_anomalies(frame, columns, seed=seed).to_csv(target, index=False)
        path = target
    console.print(f"{path}  ({SOURCES[name]})")
    print(path)
