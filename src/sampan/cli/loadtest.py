"""`sampan loadtest`: drive a model server and report requests/s, latency and errors."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sampan.progress import console


def loadtest(
    url: str = typer.Argument(..., help="The server, e.g. http://127.0.0.1:8000."),
    model: str = typer.Option(..., "--model", "-m", help="The model to call."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", help="Callers at once."),
    requests: int = typer.Option(1000, "--requests", "-n", help="Requests to send in all."),
    duration: float = typer.Option(
        60.0, help="Stop sending after this many seconds, even with requests left."
    ),
    timeout: float = typer.Option(30.0, help="Seconds to wait for each answer."),
    rate: float = typer.Option(
        None,
        help="Start this many requests a second whatever the answers, up to --concurrency at "
        "once (open loop; a late one's latency counts from when it was due) [default: each "
        "caller sends on its last answer].",
    ),
    protocol: str = typer.Option("native", help="native (/v1 predict) or v2 (Open Inference)."),
    input_file: Path = typer.Option(
        None, "--input", help="An input file (an image, a text) sent as the request's instance."
    ),
    body: Path = typer.Option(None, help="A JSON request body, sent as it is."),
    api_key: str = typer.Option(
        None, envvar="SAMPAN_API_KEY", help="An API key, for servers that ask for one."
    ),
    cacert: Path = typer.Option(
        None, help="PEM CA certificates to trust for an https server [default: the system's]."
    ),
    out: Path = typer.Option(None, help="JSON file [default: loadtest-MODEL.json]."),
) -> None:
    """Load-test a model server: requests/s, p50/p90/p99 latency, errors by status."""
    from sampan.serving.loadtest import load_test

    report = load_test(
        url,
        model,
        concurrency=concurrency,
        requests=requests,
        duration=duration,
        timeout=timeout,
        rate=rate,
        protocol=protocol,
        input_file=input_file,
        body_file=body,
        api_key=api_key,
        cacert=cacert,
    )
    pace = f", {rate:g} requests/s" if rate else ""
    title = f"{model} at {report.url} ({report.protocol}, concurrency {concurrency}{pace})"
    table = Table(title=title)
    for column in ("sent", "ok", "errors", "seconds", "req/s", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(column, justify="right")
    lat = report.latency_ms
    table.add_row(
        str(report.sent),
        str(report.ok),
        str(sum(report.errors.values())),
        f"{report.seconds:.2f}",
        f"{report.requests_per_s:.1f}",
        *("-" if lat[p] is None else f"{lat[p]:.2f}" for p in ("p50", "p90", "p99")),
    )
    console.print(table)
    for kind, count in report.errors.items():
        console.print(f"  {kind}: {count} ({report.error_samples[kind][:120]})", markup=False)
    if report.stopped_by == "duration":
        console.print(
            f"Stopped after {duration:g} s with {requests - report.sent} requests unsent."
        )
    path = out or Path(f"loadtest-{model}.json")
    path.write_text(report.to_json() + "\n")
    console.print(f"Written: {path}")
