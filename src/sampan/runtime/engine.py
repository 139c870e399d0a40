"""The engine interface and the backend registry (one file per backend in backends/).

An engine is a package loaded on one backend and device: predict(batch) -> batch on numpy.
Input checks live here, once, so every backend refuses bad batches the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from sampan.errors import DataError, NotFoundError, PackageError
from sampan.package import Package
from sampan.registry import Registry
from sampan.tasks.base import get_task


class Backend(ABC):
    """A loaded network on one device: numpy batch in, numpy batch out."""

    name: str = ""
    needs: str = ""  # what the package must hold, e.g. 'weights.safetensors' or 'onnx export'

    def __init__(self, package: Package, device: str | None = None, **options: Any) -> None:
        self.package = package
        spec = get_task(package.manifest.task).input_spec(package.manifest.preprocessing)
        # One input: (shape of a sample, dtype). Several (text: ids and mask): a dict of them,
        # -1 marking an axis of any length (the sequence).
        self.named_inputs: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None
        if isinstance(spec, dict):
            self.named_inputs = {k: (tuple(v[0]), np.dtype(v[1])) for k, v in spec.items()}
            spec = next(iter(spec.values()))
        self.input_shape: tuple[int, ...] = tuple(spec[0])
        self.input_dtype = np.dtype(spec[1])

    @classmethod
    def can_run(cls, package: Package) -> bool:
        """Whether this backend is installed here and the package holds what it needs."""
        return True

    @property
    @abstractmethod
    def device(self) -> str:
        """Where it runs, e.g. 'cpu', 'cuda:0', 'CUDAExecutionProvider'."""

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray: ...

    def check(self, batch: Any) -> Any:
        """A DataError naming what is wrong, unless batch is (N, *input_shape) of input_dtype
        (or, for several inputs, a dict of such arrays with one N)."""
        if self.named_inputs is not None:
            return self._check_named(batch)
        if not isinstance(batch, np.ndarray):
            raise DataError(f"A batch must be a numpy array, not {type(batch).__name__}.")
        if batch.dtype != self.input_dtype:
            raise DataError(
                f"Batch dtype is {batch.dtype}; {self.package.ref} takes {self.input_dtype}."
            )
        if batch.ndim != len(self.input_shape) + 1 or batch.shape[1:] != self.input_shape:
            raise DataError(
                f"Batch shape is {batch.shape}; {self.package.ref} takes "
                f"(N, {', '.join(map(str, self.input_shape))})."
            )
        if batch.shape[0] == 0:
            raise DataError("The batch is empty: give at least one input.")
        return batch

    def _check_named(self, batch: Any) -> dict[str, np.ndarray]:
        assert self.named_inputs is not None
        if not isinstance(batch, dict) or set(batch) != set(self.named_inputs):
            raise DataError(
                f"{self.package.ref} takes a dict of arrays named {', '.join(self.named_inputs)}."
            )
        rows = {len(v) if isinstance(v, np.ndarray) else -1 for v in batch.values()}
        for name, (shape, dtype) in self.named_inputs.items():
            value = batch[name]
            if not isinstance(value, np.ndarray) or value.dtype != dtype:
                raise DataError(f"Input {name!r} must be a numpy array of {dtype}.")
            fits = value.ndim == len(shape) + 1 and all(
                want in (-1, got) for want, got in zip(shape, value.shape[1:])
            )
            if not fits:
                raise DataError(
                    f"Input {name!r} has shape {value.shape}; {self.package.ref} takes "
                    f"(N, {', '.join('any' if d == -1 else str(d) for d in shape)})."
                )
        if len(rows) != 1 or rows == {0}:
            raise DataError("The inputs must hold the same number of rows, at least one.")
        return batch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Model inputs (N, ...) -> raw outputs (N, ...), e.g. logits."""
        return self._run(self.check(batch))


BACKENDS: Registry[type[Backend]] = Registry("backend")


def require_onnx(package: Package) -> Path:
    """The package's ONNX file, or a PackageError naming the command that makes one."""
    path = package.export_path("onnx")
    if path is None:
        raise PackageError(
            f"{package.ref} has no ONNX export; make one with "
            f"`sampan export {package.ref} --format onnx`."
        )
    return path


def _load_backends() -> None:
    import sampan.runtime.backends  # noqa: F401  (registers the built-in backends)


def available_backends(package: Package) -> list[str]:
    """Backends that can run this package here, fastest kind first."""
    _load_backends()
    return [name for name, cls in BACKENDS.items() if cls.can_run(package)]


def create_engine(
    package: Package, backend: str = "torch", device: str | None = None, **options: Any
) -> Backend:
    _load_backends()
    if backend not in BACKENDS:
        raise NotFoundError(f"Unknown backend {backend!r}; available: {', '.join(BACKENDS)}.")
    return BACKENDS.get(backend)(package, device=device, **options)
