"""The exporter registry and the one function that writes an exported package version."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sampan.errors import NotFoundError
from sampan.package import WEIGHTS, Package
from sampan.registry import Registry
from sampan.store import Store

# An exporter takes (package, folder to write into, options) and returns its manifest entry.
Exporter = Callable[..., dict[str, Any]]
EXPORTERS: Registry[Exporter] = Registry("export format")


def _load() -> None:
    import sampan.export.onnx  # noqa: F401  (registers the built-in exporters)


def copy_contract_files(parent: Package, folder: Path) -> None:
    """Copy the files the preprocessing contract names (a tokenizer, say) into a derived
    version, which preprocesses with the same contract."""
    for value in parent.manifest.preprocessing.values():
        if isinstance(value, str) and value in parent.manifest.files:
            shutil.copyfile(parent.file(value), folder / value)


def derived_fields(parent: Package, operation: str, **changes: Any) -> dict[str, Any]:
    """Manifest fields of a new version made from parent: same model, lineage naming parent."""
    m = parent.manifest
    fields: dict[str, Any] = {
        "task": m.task,
        "architecture": m.architecture,
        "labels": m.labels,
        "preprocessing": m.preprocessing,
        "training": m.training,
        "metrics": m.metrics,
        "exports": dict(m.exports),
        "lineage": {"parent": m.ref, "operation": operation},
    }
    fields.update(changes)
    return fields


def export(
    ref: str,
    fmt: str = "onnx",
    *,
    name: str | None = None,
    store: Store | None = None,
    **options: Any,
) -> Package:
    """Export package ref to fmt and write the result as a new version (of name, default: the
    same package name). Fails with ExportError when the export or its parity check fails."""
    _load()
    store = store or Store()
    parent = store.open(ref)
    if fmt not in EXPORTERS:
        raise NotFoundError(f"Unknown export format {fmt!r}; available: {', '.join(EXPORTERS)}.")
    exporter = EXPORTERS.get(fmt)
    entry: dict[str, Any] = {}

    def write(folder: Path) -> None:
        entry.update(exporter(parent, folder, **options))
        if parent.has_weights:
            shutil.copyfile(parent.weights_path, folder / WEIGHTS)
        copy_contract_files(parent, folder)

    fields = derived_fields(parent, f"export:{fmt}")
    fields["exports"][fmt] = entry  # filled by write() before the manifest is written
    return store.write(name or parent.manifest.name, fields, write)
