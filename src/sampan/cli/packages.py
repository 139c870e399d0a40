"""`sampan packages list|show|rm`: the local store."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from sampan.progress import console

app = typer.Typer(help="List, show and delete packages in the store.", no_args_is_help=True)


def _size(path: object) -> str:
    from pathlib import Path

    total = sum(p.stat().st_size for p in Path(str(path)).rglob("*") if p.is_file())
    return f"{total / 1e6:.1f} MB"


@app.command("list")
def list_packages() -> None:
    """Every package version in the store."""
    from sampan.store import Store

    store = Store()
    manifests = store.manifests()
    if not manifests:
        console.print(f"No packages in {store.root} yet: train one with `sampan train`.")
        return
    table = Table(title=f"Packages in {store.root}")
    for col in ("package", "task", "architecture", "labels", "accuracy", "parent", "created"):
        table.add_column(col, no_wrap=col in ("package", "accuracy"), overflow="fold")
    for m in manifests:
        acc = m.metrics.get("accuracy")
        table.add_row(
            m.ref,
            m.task,
            m.architecture.get("preset") or m.architecture["name"],
            str(len(m.labels)),
            f"{acc:.4f}" if isinstance(acc, float) else "-",
            m.lineage.get("parent") or "-",
            m.created_at[:16].replace("T", " "),
        )
    console.print(table)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME, NAME@latest or NAME@3."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest."),
) -> None:
    """Verify a package and show its manifest summary."""
    from sampan.store import Store

    package = Store().open(ref)
    m = package.manifest
    if as_json:
        print(json.dumps(m.to_dict(), indent=2))
        return
    table = Table(title=f"{m.ref}  (verified, {_size(package.path)})", show_header=False)
    table.add_column("field")
    table.add_column("value")
    dataset = m.training.get("dataset", {})
    rows = [
        ("path", str(package.path)),
        ("task", m.task),
        (
            "architecture",
            f"{m.architecture.get('preset') or m.architecture['name']} "
            f"({m.architecture.get('params', '?')} params)",
        ),
        ("labels", ", ".join(m.labels)),
        ("preprocessing", json.dumps(m.preprocessing)),
        ("data", f"{dataset.get('source', '-')} ({dataset.get('fingerprint', '-')[:16]}...)"),
        ("lineage", json.dumps(m.lineage)),
        ("files", ", ".join(m.files)),
    ]
    rows += [(k, f"{v:.4f}") for k, v in m.metrics.items() if isinstance(v, float)]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@app.command("rm")
def remove(
    ref: str = typer.Argument(..., help="NAME@3 deletes one version; NAME deletes them all."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete a package version, or every version of a package."""
    from sampan.store import Store

    store = Store()
    store.path_of(ref)  # fails with a clear message before asking
    if not yes and not typer.confirm(f"Delete {ref}?"):
        raise typer.Abort()
    for removed in store.delete(ref):
        console.print(f"deleted {removed}")
