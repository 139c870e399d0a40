"""Entry point. Subcommands import torch only inside their functions, so `--help` is light."""

from __future__ import annotations

import sys

import typer

from sampan.cli import (
    bench,
    compress,
    datasets,
    demo,
    devices,
    evaluate,
    export,
    importer,
    loadtest,
    models,
    packages,
    platform,
    predict,
    serve,
    train,
)
from sampan.errors import SampanError

app = typer.Typer(
    name="sampan",
    help="Sampan: an open industrial AI platform - train, package, evaluate and predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("models")(models.models)
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("predict")(predict.predict)
app.command("export")(export.export)
app.command("compress")(compress.compress)
app.command("devices")(devices.devices)
app.command("bench")(bench.bench)
app.command("serve")(serve.serve)
app.command("loadtest")(loadtest.loadtest)
app.command("demo")(demo.demo)
app.add_typer(packages.app, name="packages")
app.add_typer(datasets.app, name="datasets")
app.add_typer(importer.app, name="import")
app.add_typer(platform.apps, name="apps")
app.add_typer(platform.keys, name="keys")
app.command("usage")(platform.usage)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a SampanError becomes one line on stderr and a non-zero exit."""
    try:
        app(args=argv, standalone_mode=False)
    except SampanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if isinstance(exc, _usage_errors()):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage-error classes: click's own, and the copy newer typer releases vendor as
    typer._click (an unknown command raised that one, and printed a traceback)."""
    import importlib

    found: list[type[Exception]] = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


if __name__ == "__main__":
    main()
