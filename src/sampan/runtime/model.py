"""A loaded model: task + preprocessing contract + engine. What `sampan.load()` returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sampan.errors import DataError
from sampan.package import Package
from sampan.runtime.engine import Backend, create_engine
from sampan.store import Store
from sampan.tasks.base import Task, get_task


class Model:
    """Predict with a package: raw inputs -> decode -> collate -> engine -> postprocess."""

    def __init__(self, package: Package, engine: Backend, task: Task) -> None:
        self.package = package
        self.engine = engine
        self.task = task
        self._contract = task.bind(package.manifest.preprocessing, package.path)

    @property
    def labels(self) -> list[str]:
        return self.package.manifest.labels

    @property
    def contract(self) -> dict[str, Any]:
        return self._contract

    def _decoded(self, inputs: Any) -> list[Any]:
        return [self.task.decode(raw, self.contract) for raw in self.task.as_inputs(inputs)]

    def outputs(self, inputs: Any, batch_size: int = 64) -> np.ndarray:
        """Raw model outputs (logits) for inputs."""
        return self.outputs_decoded(self._decoded(inputs), batch_size)

    def outputs_decoded(
        self, samples: Sequence[Any] | np.ndarray, batch_size: int = 64
    ) -> np.ndarray:
        if len(samples) == 0:
            raise DataError("Nothing to predict: give at least one input.")
        parts = []
        for start in range(0, len(samples), batch_size):
            batch = self.task.collate(samples[start : start + batch_size], self.contract)
            parts.append(self.engine.predict(batch))
        return np.concatenate(parts)

    def predict(self, inputs: Any, top_k: int = 5, batch_size: int = 64) -> list[dict[str, Any]]:
        """One result per input (for classification: label, score, top_k)."""
        return self.task.postprocess(self.outputs(inputs, batch_size), self.labels, top_k)


def load(
    ref: str,
    backend: str = "auto",
    device: str | None = "auto",
    store: Store | None = None,
    **options: Any,
) -> Model:
    """Load a package (name, name@latest, name@3 or a package directory) for prediction.

    backend='auto' takes what `sampan bench` found fastest on this hardware, else onnxruntime
    when the package has an ONNX export, else torch.
    """
    store = store or Store()
    package = store.open(ref)
    if backend == "auto":
        from sampan.runtime.tuning import choose_backend

        backend, tuned = choose_backend(package, store.home)
        options = {**tuned, **options}
    engine = create_engine(package, backend=backend, device=device, **options)
    return Model(package, engine, get_task(package.manifest.task))
