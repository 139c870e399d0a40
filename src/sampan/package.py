"""The model package: a versioned, immutable directory with a JSON manifest and safetensors weights.

Layout of one package version::

    manifest.json          format version, task, architecture, labels, preprocessing contract,
                           training summary, metrics, lineage, files with their sha256
    weights.safetensors    the network's state dict
    README.md              the generated model card
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sampan.errors import PackageError
from sampan.io import sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
CARD = "README.md"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    """Return name if it is a valid package name, else raise a PackageError saying why."""
    if not _NAME.match(name) or ".." in name:
        raise PackageError(
            f"Invalid package name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


@dataclass
class Manifest:
    """The manifest of one package version, as stored in manifest.json."""

    name: str
    version: int
    task: str
    architecture: dict[str, Any]
    labels: list[str]
    preprocessing: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, Any] = field(default_factory=dict)  # e.g. {"onnx": {file, opset, ...}}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_at: str = ""
    sampan_version: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "sampan_version": self.sampan_version,
            "task": self.task,
            "architecture": self.architecture,
            "labels": self.labels,
            "preprocessing": self.preprocessing,
            "training": self.training,
            "metrics": self.metrics,
            "lineage": self.lineage,
            "exports": self.exports,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> Manifest:
        fmt = data.get("format_version")
        if fmt != FORMAT_VERSION:
            raise PackageError(
                f"{source}: package format {fmt!r} is not supported by this sampan "
                f"(it reads format {FORMAT_VERSION}); upgrade sampan or re-export the package."
            )
        required = ("name", "version", "task", "architecture", "labels", "preprocessing", "files")
        missing = [key for key in required if key not in data]
        if missing:
            raise PackageError(
                f"{source}: manifest lacks {', '.join(missing)}; the package is "
                "damaged, rebuild it or restore it from a backup."
            )
        types_ok = (
            isinstance(data["labels"], list)
            and all(isinstance(x, str) for x in data["labels"])
            and isinstance(data["architecture"], dict)
            and isinstance(data["architecture"].get("name"), str)
            and isinstance(data["preprocessing"], dict)
            and isinstance(data["files"], dict)
            and isinstance(data["version"], int)
            and isinstance(data["name"], str)
        )
        if not types_ok:
            raise PackageError(
                f"{source}: manifest fields have the wrong types; the package is "
                "damaged, rebuild it or restore it from a backup."
            )
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)


@dataclass
class Package:
    """A package version on disk, verified on load."""

    path: Path
    manifest: Manifest

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def has_weights(self) -> bool:
        return WEIGHTS in self.manifest.files

    def export_path(self, fmt: str) -> Path | None:
        """The file of an export (e.g. 'onnx'), or None when the package has none."""
        entry = self.manifest.exports.get(fmt)
        return self.path / entry["file"] if entry else None

    def file(self, name: str) -> Path:
        return self.path / name


def read_manifest(path: Path) -> Manifest:
    manifest_path = path / MANIFEST
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(
            f"{manifest_path} is missing: {path} is not a sampan package or is damaged."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(
            f"{manifest_path} is corrupt ({exc}); restore the package or delete it with "
            "`sampan packages rm`."
        ) from None
    if not isinstance(data, dict):
        raise PackageError(f"{manifest_path} is corrupt (not a JSON object).")
    return Manifest.from_dict(data, manifest_path)


def verify_files(path: Path, manifest: Manifest) -> None:
    """Check every listed file's sha256; raise naming the first file that differs.

    The card and a model (weights or an export) must be listed, so emptying the file list
    cannot switch verification off.
    """
    model_files = {WEIGHTS} | {
        e.get("file") for e in manifest.exports.values() if isinstance(e, dict)
    }
    if CARD not in manifest.files or not model_files & set(manifest.files):
        raise PackageError(
            f"{path / MANIFEST} lists no model file or no card; the package is damaged, rebuild it."
        )
    for name in manifest.files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise PackageError(
                f"{path / MANIFEST} lists a file outside the package ({name!r}); "
                "refusing to load it."
            )
    for name, meta in sorted(manifest.files.items()):
        file_path = path / name
        if not file_path.is_file():
            raise PackageError(
                f"{file_path} is missing from package {manifest.ref}; "
                "restore it or rebuild the package."
            )
        if sha256_file(file_path) != meta.get("sha256"):
            raise PackageError(
                f"{file_path} is corrupt: its sha256 does not match the manifest of "
                f"{manifest.ref}. Restore it or rebuild the package."
            )


def open_package(path: Path, verify: bool = True) -> Package:
    """Read a package directory; with verify, check every file's checksum."""
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)
    return Package(path=path, manifest=manifest)


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under root except the manifest."""
    entries: dict[str, dict[str, Any]] = {}
    for file_path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file_path.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        entries[rel] = {"sha256": sha256_file(file_path), "size": file_path.stat().st_size}
    return entries


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _md_escape(text: str) -> str:
    """Escape a string for a Markdown table cell, including raw HTML."""
    for char, repl in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(char, repl)
    return text.replace("\n", " ")


def render_model_card(manifest: Manifest) -> str:
    """The package's README.md: what it is, labels, metrics table, how to call it."""
    arch = manifest.architecture
    training = manifest.training
    dataset = training.get("dataset", {})
    lines = [
        f"# {manifest.name} v{manifest.version}",
        "",
        f"A **{manifest.task}** model, architecture `{arch.get('preset') or arch.get('name')}`"
        f" ({arch.get('params', '?')} parameters), packaged by sampan {manifest.sampan_version}"
        f" on {manifest.created_at}.",
        "",
    ]
    parent = manifest.lineage.get("parent")
    lines += [
        f"Made by `{manifest.lineage.get('operation', 'train')}`"
        + (f" from `{parent}`." if parent else " from scratch or pretrained weights."),
        "",
    ]
    if dataset:
        lines += [
            "## Training data",
            "",
            f"- source: `{_md_escape(str(dataset.get('source', '?')))}`",
            f"- fingerprint: `{dataset.get('fingerprint', '?')}`",
            f"- samples: {dataset.get('num_train', '?')} train, {dataset.get('num_val', '?')} "
            f"validation, {dataset.get('skipped', 0)} skipped as unreadable",
            f"- seed: {training.get('seed', '?')}",
            "",
        ]
    lines += ["## Labels", "", "| index | label |", "|---:|---|"]
    lines += [f"| {i} | {_md_escape(label)} |" for i, label in enumerate(manifest.labels)]
    lines.append("")
    scalars = {k: v for k, v in manifest.metrics.items() if isinstance(v, (int, float))}
    if scalars:
        lines += ["## Metrics (validation split)", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {_md_escape(k)} | {_fmt(v)} |" for k, v in sorted(scalars.items())]
        lines.append("")
    for fmt, entry in sorted(manifest.exports.items()):
        lines += [f"## Export: {fmt}", "", "| field | value |", "|---|---|"]
        for key, value in sorted(entry.items()):
            if isinstance(value, dict):
                value = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(value.items()))
            lines.append(f"| {_md_escape(key)} | {_md_escape(_fmt(value))} |")
        lines.append("")
    pre = manifest.preprocessing
    lines += ["## Preprocessing contract", "", "```json", json.dumps(pre, indent=2), "```", ""]
    lines += [
        "## How to call it",
        "",
        "```bash",
        f"sampan predict {manifest.ref} INPUT",
        f"sampan eval {manifest.ref} DATA",
        "```",
        "",
        "```python",
        "import sampan",
        f'model = sampan.load("{manifest.ref}")',
        "results = model.predict([INPUT])",
        "```",
        "",
    ]
    return "\n".join(lines)
