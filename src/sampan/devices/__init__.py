"""Hardware adaptation: what devices are here, and which one a run or an engine uses.

A requested device that is not here falls back to the CPU with a warning, never silently.
"""

from __future__ import annotations

import warnings
from typing import Any

from sampan.devices import cpu, cuda, mlu, mps, musa, npu, rocm, xpu  # noqa: F401  (registers)
from sampan.devices.base import DEVICES, DeviceInfo, DeviceKind, PluginDeviceKind
from sampan.errors import NotFoundError

__all__ = [
    "DEVICES",
    "DeviceInfo",
    "DeviceKind",
    "PluginDeviceKind",
    "list_devices",
    "parse_device",
    "resolve_device",
]


def list_devices() -> list[DeviceInfo]:
    """Every device detected, most capable kinds first, the CPU last."""
    kinds = sorted((cls() for _, cls in DEVICES.items()), key=lambda k: -k.priority)
    return [info for kind in kinds for info in kind.detect()]


def parse_device(requested: str) -> tuple[str, int | None]:
    """'cuda:1' -> ('cuda', 1); an unknown kind is an error listing the known ones."""
    kind, _, index = requested.lower().partition(":")
    if kind not in DEVICES:
        raise NotFoundError(
            f"Unknown device {requested!r}; known kinds: "
            f"{', '.join(DEVICES)} (or 'auto'). `sampan devices` shows what is here."
        )
    if index and not index.isdigit():
        raise NotFoundError(f"Device index in {requested!r} must be a number, e.g. {kind}:0.")
    return kind, int(index) if index else None


def resolve_device(requested: str | None = None) -> Any:
    """A torch.device for requested ('auto', 'cpu', 'cuda:1', 'npu', ...); CPU with a warning
    when the requested one is not here."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        for info in list_devices():
            return DEVICES.get(info.kind)().torch_device(info.index)
    kind_name, index = parse_device(requested)
    kind = DEVICES.get(kind_name)()
    present = [d.index for d in kind.detect()]
    if present and (index is None or index in present):
        return kind.torch_device(index)
    warnings.warn(
        f"Device {requested!r} is not available here; falling back to the CPU. "
        "`sampan devices` lists what is.",
        RuntimeWarning,
        stacklevel=2,
    )
    return DEVICES.get("cpu")().torch_device(None)
