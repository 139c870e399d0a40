"""Rich progress bars and the console every long step reports through."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=False)
err_console = Console(stderr=True)


def make_progress(quiet: bool = False) -> Progress:
    """A progress bar with count, elapsed and remaining time; disabled when quiet."""
    disable = quiet or os.environ.get("SAMPAN_QUIET") == "1"
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(file=sys.stderr),
        disable=disable,
    )
