"""Device selection for torch work. A requested device that is missing falls back loudly."""

from __future__ import annotations

import warnings
from typing import Any


def resolve_device(requested: str | None = None) -> Any:
    """A torch.device for requested ('auto', 'cpu', 'cuda', 'cuda:1', 'mps'); warns on fallback."""
    import torch

    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
    }.get(device.type, False)
    if device.type == "cuda" and available and device.index is not None:
        available = device.index < torch.cuda.device_count()
    if not available:
        warnings.warn(
            f"Device {requested!r} is not available here; falling back to the CPU.",
            RuntimeWarning,
            stacklevel=2,
        )
        return torch.device("cpu")
    return device
