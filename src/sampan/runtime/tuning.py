"""What `sampan bench` found fastest, per hardware fingerprint, and the backend choice for 'auto'.

The fingerprint is read without torch (from /proc and onnxruntime), so choosing stays light.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from sampan.io import atomic_write_json
from sampan.package import Package
from sampan.store import sampan_home

TUNING = "tuning.json"


def hardware_fingerprint() -> str:
    """A short hash of CPU model and ISA, NVIDIA GPUs and onnxruntime's providers."""
    from sampan.devices.cpu import CPU

    cpu = CPU().detect()[0]
    parts = [
        platform.machine(),
        cpu.name,
        ",".join(cpu.details["isa"]),
        str(cpu.details["usable_cores"]),
    ]
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir():
        parts += sorted(
            (p / "information").read_text(errors="replace").splitlines()[0]
            for p in gpus.iterdir()
            if (p / "information").is_file()
        )
    try:
        import onnxruntime

        parts += onnxruntime.get_available_providers()
    except ImportError:
        pass
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _path(home: Path | None) -> Path:
    return (home or sampan_home()) / TUNING


def _read(home: Path | None) -> dict[str, Any]:
    try:
        data = json.loads(_path(home).read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # no record, or a damaged one: choose by the rules instead


def record(package: Package, best: dict[str, Any], home: Path | None = None) -> None:
    data = _read(home)
    data.setdefault(hardware_fingerprint(), {})[package.ref] = best
    atomic_write_json(_path(home), data)


def lookup(package: Package, home: Path | None = None) -> dict[str, Any] | None:
    found: dict[str, Any] | None = _read(home).get(hardware_fingerprint(), {}).get(package.ref)
    return found


def choose_backend(package: Package, home: Path | None = None) -> tuple[str, dict[str, Any]]:
    """(backend, options) for backend='auto': the benchmarked best here, else onnxruntime when
    the package has an ONNX export, else torch."""
    from sampan.errors import PackageError
    from sampan.runtime.engine import available_backends

    available = available_backends(package)
    tuned = lookup(package, home)
    if tuned and tuned.get("backend") in available:
        return tuned["backend"], {k: v for k, v in tuned.items() if k == "threads" and v}
    for backend in ("onnxruntime", "torch"):
        if backend in available:
            return backend, {}
    if available:
        return available[0], {}
    raise PackageError(
        f"No installed backend can run {package.ref}: it needs torch (for "
        "weights.safetensors) or onnxruntime (for an ONNX export)."
    )
