"""The Python API behind the CLI: sampan.train, sampan.evaluate, sampan.predict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sampan.config import load_yaml
from sampan.data.images import IMAGE_SUFFIXES
from sampan.errors import ConfigError, DataError
from sampan.store import Store
from sampan.training.config import TrainConfig, train_config
from sampan.training.trainer import Trainer, TrainResult


def train(
    config: TrainConfig | str | Path | None = None, *, store: Store | None = None, **options: Any
) -> TrainResult:
    """Train a model and write its package. config: a TrainConfig, a YAML path, or None;
    keyword options override it (e.g. data='folder', name='parts', arch='resnet18')."""
    if isinstance(config, TrainConfig):
        import dataclasses

        # only what differs from the defaults: the task's own defaults apply to the rest
        defaults = TrainConfig(data=config.data, name=config.name)
        base = {
            k: v
            for k, v in dataclasses.asdict(config).items()
            if v != getattr(defaults, k) or k in ("data", "name")
        }
    else:
        base = load_yaml(config) if config is not None else {}
    return Trainer(train_config(base, options), store).fit()


@dataclass
class EvalReport:
    ref: str
    metrics: dict[str, Any]
    labels: list[str]
    num_samples: int
    skipped: list[str]
    plot: Path | None = None


def evaluate(
    ref: str,
    data: str | Path,
    *,
    batch_size: int = 64,
    device: str | None = None,
    plot: str | Path | None = None,
    store: Store | None = None,
    backend: str = "auto",
) -> EvalReport:
    """Evaluate a package on a labelled dataset (for embeddings: scored pairs); optionally save
    the confusion-matrix plot of a classifier."""
    from sampan.runtime.model import load

    model = load(ref, backend=backend, device=device, store=store)
    task = model.task
    listing = task.scan(data)
    unknown = sorted(set(listing.labels) - set(model.labels))
    if unknown:
        raise DataError(
            f"{data} has label(s) {', '.join(unknown[:5])} that {model.package.ref} "
            f"does not know (it knows: {', '.join(model.labels[:10])})."
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (got {batch_size}).")
    samples = task.load(listing, model.contract)
    index = np.arange(len(samples))
    if samples.segments is not None:  # time series: the test segment, never trained on
        index = np.flatnonzero(samples.segments == 2)
        if len(index) == 0:
            raise DataError(
                f"{data} leaves no whole window in its test segment (its last 15%); give a "
                "longer series."
            )
    elif samples.presplit is not None and samples.presplit.any():
        index = np.flatnonzero(samples.presplit)  # root/train + root/val: score val/ only
    targets = samples.targets[index]  # a package without labels (embeddings): as they are
    if model.labels:
        # The dataset's own label order may differ from the package's: map onto the package's.
        remap = np.array([model.labels.index(label) for label in samples.labels])
        targets = remap[targets]
    outputs = model.outputs_decoded(samples.take(index), batch_size)
    metrics = task.metrics(outputs, targets, model.labels)
    report = EvalReport(model.package.ref, metrics, model.labels, len(targets), samples.skipped)
    if plot is not None and "confusion_matrix" in metrics:
        from sampan.plots import save_confusion_matrix

        report.plot = save_confusion_matrix(
            metrics["confusion_matrix"],
            model.labels,
            Path(plot),
            title=f"{model.package.ref} on {Path(data).name}",
        )
    return report


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; directories expanded to the images they hold (recursively, sorted)."""
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise DataError(f"Folder {item} holds no images to predict.")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item} does not exist.")
    return files


def predict(
    ref: str,
    inputs: Sequence[str | Path],
    *,
    top_k: int = 5,
    device: str | None = None,
    store: Store | None = None,
    backend: str = "auto",
) -> list[dict[str, Any]]:
    """Predict files or folders with a package; one result per file, with its path."""
    from sampan.runtime.model import load

    model = load(ref, backend=backend, device=device, store=store)
    files = expand_inputs(inputs)
    decoded, problems = {}, {}
    for index, path in enumerate(files):
        try:
            decoded[index] = model.task.decode(path, model.contract)
        except DataError as exc:  # one bad file must not cost the others their answers
            problems[index] = str(exc)
    results: dict[int, dict[str, Any]] = {
        i: {"input": str(files[i]), "error": problems[i]} for i in problems
    }
    if decoded:
        order = sorted(decoded)
        outputs = model.outputs_decoded([decoded[i] for i in order])
        for i, result in zip(order, model.task.postprocess(outputs, model.labels, top_k)):
            results[i] = {"input": str(files[i]), **result}
    return [results[i] for i in range(len(files))]
