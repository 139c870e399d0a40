"""`sampan bench`: latency and throughput per backend and batch size; remembers the fastest."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from sampan.progress import console


def bench(
    package: str = typer.Argument(..., help="NAME, NAME@latest or NAME@3."),
    backends: str = typer.Option(
        None, help="Comma-separated [default: every one that can run it]."
    ),
    batch: str = typer.Option("1,8,32", help="Comma-separated batch sizes."),
    threads: int = typer.Option(None, help="CPU threads per engine [default: the backend's]."),
    seconds: float = typer.Option(2.0, help="Timing per backend and batch size."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    out: Path = typer.Option(None, help="JSON file [default: NAME-vN-bench.json]."),
    record: bool = typer.Option(True, help="Remember the fastest backend for this hardware."),
) -> None:
    """Measure p50/p99 latency and throughput; engines then use the fastest by default."""
    from sampan.errors import ConfigError
    from sampan.runtime.bench import benchmark, best
    from sampan.runtime.tuning import hardware_fingerprint
    from sampan.runtime.tuning import record as save_record
    from sampan.store import Store

    try:
        sizes = tuple(int(b) for b in batch.split(","))
    except ValueError:
        raise ConfigError(f"--batch must be comma-separated integers, not {batch!r}.") from None
    if not sizes or min(sizes) < 1:
        raise ConfigError("--batch sizes must be >= 1.")
    store = Store()
    pkg = store.open(package)
    chosen = backends.split(",") if backends else None
    rows = benchmark(pkg.ref, chosen, sizes, threads, seconds, store=store, device=device)
    table = Table(title=f"{pkg.ref} on this machine ({hardware_fingerprint()})")
    for col in ("backend", "device", "batch", "p50 ms", "p99 ms", "samples/s"):
        table.add_column(col, justify="left" if col in ("backend", "device") else "right")
    for r in rows:
        table.add_row(
            r.backend,
            r.device,
            str(r.batch),
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.throughput:.1f}",
        )
    console.print(table)
    winner = best(rows)
    out = out or Path(f"{pkg.ref.replace('@', '-v')}-bench.json")
    out.write_text(
        json.dumps(
            {
                "package": pkg.ref,
                "hardware": hardware_fingerprint(),
                "rows": [asdict(r) for r in rows],
                "best": winner,
            },
            indent=2,
        )
    )
    console.print(
        f"fastest: {winner['backend']} ({winner['throughput']:.1f} samples/s at batch "
        f"{winner['measured_batch']}); results in {out}"
    )
    if record:
        save_record(pkg, winner, store.home)
        console.print("Recorded: sampan.load(..., backend='auto') now uses it on this hardware.")
