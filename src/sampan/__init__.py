"""Sampan: an open industrial AI platform.

The public API is imported lazily so that `import sampan` (and `sampan --help`) stays light:
torch is imported only when a function that needs it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sampan.errors import SampanError

__version__ = "0.1.0"

__all__ = ["SampanError", "Store", "__version__", "evaluate", "load", "predict", "train"]

_LAZY = {
    "train": ("sampan.training.api", "train"),
    "evaluate": ("sampan.training.api", "evaluate"),
    "predict": ("sampan.training.api", "predict"),
    "load": ("sampan.runtime.model", "load"),
    "Store": ("sampan.store", "Store"),
}

if TYPE_CHECKING:
    from sampan.runtime.model import load
    from sampan.store import Store
    from sampan.training.api import evaluate, predict, train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'sampan' has no attribute {name!r}")
