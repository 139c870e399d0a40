"""The task contract: what every problem family (images, text, time series...) provides.

Training, evaluation and serving call these methods and never branch on a task's name.
The preprocessing contract is a JSON-able dict stored in the package manifest; decode and
collate are pure functions of (input, contract), so every station preprocesses identically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sampan.registry import Registry


@dataclass
class Listing:
    """What a dataset source holds before decoding: items (paths, records), labels, targets."""

    source: str
    items: list[Any]
    targets: np.ndarray  # int64, index into labels
    labels: list[str]
    # Optional fixed split given by the data itself (e.g. train/ and val/ folders).
    presplit: np.ndarray | None = None  # bool mask: True = validation


@dataclass
class Samples:
    """Decoded samples ready for collate, with their targets and what was skipped."""

    inputs: Any  # np.ndarray (N, ...) or a list of per-sample arrays
    targets: np.ndarray
    labels: list[str]
    source: str
    fingerprint: str
    skipped: list[str] = field(default_factory=list)
    presplit: np.ndarray | None = None
    # A split the data's own order decides (time series): 0 train, 1 validation, 2 test.
    segments: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, index: np.ndarray) -> Any:
        if isinstance(self.inputs, np.ndarray):
            return self.inputs[index]
        return [self.inputs[i] for i in index]


class Task(ABC):
    """One problem family. Subclasses are registered with @TASKS.register(name)."""

    name: str = ""
    description: str = ""

    @abstractmethod
    def scan(self, source: str | Path) -> Listing:
        """List a dataset source without decoding it; raise DataError when it is unusable."""

    @abstractmethod
    def preprocessing(self, listing: Listing | None, options: dict[str, Any]) -> dict[str, Any]:
        """The preprocessing contract for a new model (before fitting statistics)."""

    @abstractmethod
    def load(self, listing: Listing, contract: dict[str, Any], min_per_class: int = 1) -> Samples:
        """Decode every item of a listing; unreadable items are skipped and counted."""

    def fit(self, contract: dict[str, Any], train_inputs: Any) -> dict[str, Any]:
        """Fill statistics the contract learns from the training split; default: none."""
        return contract

    def as_inputs(self, inputs: Any) -> list[Any]:
        """One input or a sequence of them, as a list of single raw inputs."""
        if isinstance(inputs, (str, Path, bytes, bytearray)) or not isinstance(inputs, Iterable):
            return [inputs]
        return list(inputs)

    def from_json(self, value: Any) -> Any:
        """One input as a JSON request carries it, as a raw input decode() takes."""
        return value

    def to_json(self, raw: bytes) -> Any:
        """A file's bytes as a JSON request carries that input (from_json's inverse), or None
        where this task's inputs are not single files."""
        return None

    def input_details(self, contract: dict[str, Any]) -> dict[str, Any]:
        """What a caller must know, beyond the input's shape, to send an input (the model's
        description at GET /v1/models/{name} shows it): {} for most tasks."""
        return {}

    def example_json(
        self, input_shape: Sequence[int], details: Mapping[str, Any] | None = None
    ) -> Any:
        """A made-up input, as a JSON request carries it, for a model whose collated sample
        has input_shape and whose input_details are details (what `sampan loadtest` sends
        when given none), or None where this task cannot make one up."""
        return None

    @abstractmethod
    def decode(self, raw: Any, contract: dict[str, Any]) -> Any:
        """One raw input (path, bytes, array...) into one decoded sample."""

    @abstractmethod
    def input_spec(self, contract: dict[str, Any]) -> Any:
        """(shape of one collated sample, dtype) that the network takes; for several inputs a
        dict name -> (shape, dtype), -1 marking an axis of any length."""

    def output_shape(self, contract: dict[str, Any], labels: Sequence[str]) -> list[int]:
        """The shape of one sample's output, -1 where it varies (what v2 metadata reports):
        one score per label for classifiers; tasks with other outputs say so."""
        return [len(labels) or -1]

    def units(self, batch: Any) -> int:
        """What a collated batch counts for usage and quotas in task units: its rows (images);
        tasks with a better unit (text: tokens) say so."""
        if isinstance(batch, dict):
            return len(next(iter(batch.values())))
        return len(batch)

    def bind(self, contract: dict[str, Any], package_dir: Path) -> dict[str, Any]:
        """The contract with what it names inside the package loaded (a tokenizer, say), for
        decode and collate to use. Default: the contract as it is."""
        return contract

    @abstractmethod
    def collate(self, samples: Any, contract: dict[str, Any]) -> np.ndarray:
        """Decoded samples into the model's input batch (numpy)."""

    def cheap_to_decode(self, raw: Any) -> bool:
        """Whether decode(raw) surely takes well under a millisecond, so a server may do it on
        its event loop instead of in a thread. Default: no."""
        return False

    def notes(self, sample: Any) -> dict[str, Any]:
        """What a response should add about one decoded input (text: that it was truncated);
        default: nothing."""
        return {}

    def augment(self, samples: Any, rng: np.random.Generator, mode: str) -> Any:
        """Random training-time changes to decoded samples; default: none."""
        return samples

    @abstractmethod
    def postprocess(
        self, outputs: np.ndarray, labels: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        """Model outputs into one result per input."""

    @abstractmethod
    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
    ) -> dict[str, Any]:
        """Metrics of outputs against targets; scalar values are comparable numbers."""

    @abstractmethod
    def loss(self, label_smoothing: float = 0.0) -> Any:
        """A torch loss module (imported lazily)."""

    monitor: str = "accuracy"  # the metric early stopping and best-checkpoint selection watch
    # The console's try-it form for this task: image, text, embedding, forecast, anomaly, or
    # json (a box of JSON instances, for tasks that name no form).
    console_form: str = "json"
    # Where pretrained weights come from: "image" (timm, a safetensors file, an image package)
    # or "hf" (a transformer encoder: a text package or a Hugging Face directory).
    pretrained_kind: str = "image"
    # Training options that differ from TrainConfig's defaults for this task.
    train_defaults: ClassVar[dict[str, Any]] = {}

    def calibrate(
        self, outputs: np.ndarray, targets: np.ndarray, contract: dict[str, Any]
    ) -> dict[str, Any]:
        """After training: the contract with what the validation outputs settle (an anomaly
        threshold, say); the network is rebuilt with network_args of the new contract.
        Default: nothing to settle."""
        return contract

    def reference_data(self) -> Path | None:
        """Labelled data to evaluate a package on when it names none (no training data, as
        for an imported pretrained model); default: none."""
        return None

    def network_args(self, contract: dict[str, Any]) -> dict[str, Any]:
        """What the network is built with from the contract, beyond the number of classes."""
        return {}

    def lengths(self, samples: Any) -> np.ndarray | None:
        """Per-sample sizes when batches pad to their longest sample (text), so training can
        batch similar sizes together; None when every sample has the same size."""
        return None


TASKS: Registry[type[Task]] = Registry("task")


def get_task(name: str) -> Task:
    import sampan.tasks  # noqa: F401  (registers the built-in tasks)

    return TASKS.get(name)()
