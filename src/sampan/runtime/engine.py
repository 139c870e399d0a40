"""The engine interface and the backend registry (one file per backend in backends/)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from sampan.package import Package
from sampan.registry import Registry


class Backend(ABC):
    """A loaded network on one device: numpy batch in, numpy batch out."""

    name: str = ""

    @abstractmethod
    def __init__(self, package: Package, device: str | None = None, **options: Any) -> None: ...

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Model inputs (N, ...) -> raw outputs (N, ...), e.g. logits."""

    @property
    @abstractmethod
    def device(self) -> str: ...


BACKENDS: Registry[type[Backend]] = Registry("backend")


def create_engine(
    package: Package, backend: str = "torch", device: str | None = None, **options: Any
) -> Backend:
    import sampan.runtime.backends  # noqa: F401  (registers the built-in backends)

    return BACKENDS.get(backend)(package, device=device, **options)
