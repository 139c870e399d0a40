"""Run checkpoints: written atomically each epoch, read with torch.load(weights_only=True)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from sampan.errors import ResumeError
from sampan.io import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"


def run_dir(home: Path, name: str) -> Path:
    return home / "runs" / name


def save_checkpoint(path: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Tensors and primitive state go through torch.save; descriptive meta as a JSON string."""
    import torch

    buffer = io.BytesIO()
    torch.save({**state, "meta": json.dumps(meta, sort_keys=True)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    if not path.is_file():
        raise ResumeError(
            f"Nothing to resume: {path} does not exist. Start the run without --resume."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise ResumeError(
            f"Checkpoint {path} is unreadable ({type(exc).__name__}); start "
            "the run again without --resume."
        ) from None
    return state, json.loads(state.pop("meta"))


def check_compatible(meta: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """A resume must keep the labels, architecture and data of the checkpoint."""
    checks = [
        ("labels", "labels"),
        ("architecture", "architecture"),
        ("fingerprint", "training data"),
        ("task", "task"),
    ]
    for key, what in checks:
        if meta.get(key) != current.get(key):
            raise ResumeError(
                f"Cannot resume {path}: its {what} differ from this run's "
                f"({_short(meta.get(key))} vs {_short(current.get(key))}). Use the same "
                "settings, or start a new run without --resume."
            )
    # Settings that decide the split, the schedule or the batches: a change breaks exactness.
    before, now = meta.get("settings", {}), current.get("settings", {})
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        details = ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ResumeError(
            f"Cannot resume {path} exactly: {details}. Use the checkpoint's "
            "settings, or start a new run without --resume."
        )


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
