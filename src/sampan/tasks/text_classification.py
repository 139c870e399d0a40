"""text-classification: one label per text (routing tickets, complaints, documents).

Data: a CSV with a header naming `text` and `label`, or JSON Lines with those keys. A model is
a pretrained transformer encoder fine-tuned with a classification head (`--pretrained` names a
text package or a Hugging Face directory); the tokenizer comes with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sampan.errors import DataError
from sampan.tasks.base import TASKS, Listing, Samples
from sampan.tasks.metrics import classification_metrics, top_k_results
from sampan.tasks.text import TextTask, read_text_records, text_contract


@TASKS.register("text-classification")
class TextClassification(TextTask):
    name = "text-classification"
    description = "One label per text; input a string, output top-k labels with scores."
    monitor = "accuracy"
    console_form = "text"
    pretrained_kind = "hf"
    # Fine-tuning a pretrained encoder: a small learning rate, few epochs, short texts.
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 5e-5,
        "epochs": 4,
        "batch_size": 32,
        "warmup_epochs": 0.5,
        "weight_decay": 0.01,
        "label_smoothing": 0.0,
        "patience": 2,
        "max_length": 128,
    }

    def scan(self, source: str | Path) -> Listing:
        path = Path(source)
        rows = read_text_records(path, ("text", "label"))
        texts = [row["text"] if row["text"] is not None else "" for row in rows]
        per_row = [str(row["label"] if row["label"] is not None else "").strip() for row in rows]
        blank = [i for i, label in enumerate(per_row) if not label]
        if blank:
            raise DataError(
                f"{path}: row {blank[0] + 1} has no label ({len(blank)} row(s) in all); "
                "label every row or remove it."
            )
        labels = sorted(set(per_row))
        if not labels:
            raise DataError(f"{path} holds no labelled rows.")
        index = {label: i for i, label in enumerate(labels)}
        targets = np.array([index[label] for label in per_row], dtype=np.int64)
        return Listing(str(path), texts, targets, labels)

    def preprocessing(self, listing: Listing | None, options: dict[str, Any]) -> dict[str, Any]:
        return text_contract(options)

    def load(self, listing: Listing, contract: dict[str, Any], min_per_class: int = 1) -> Samples:
        texts: list[str] = []
        keep: list[int] = []
        skipped: list[str] = []
        for row, raw in enumerate(listing.items):
            try:
                texts.append(self.decode(raw, contract))
                keep.append(row)
            except DataError as exc:
                skipped.append(f"{listing.source} row {row + 1}: {exc}")
        if not texts:
            raise DataError(f"None of the rows of {listing.source} holds a usable text.")
        targets = listing.targets[keep]
        counts = np.bincount(targets, minlength=len(listing.labels))
        short = [f"{listing.labels[i]} ({n})" for i, n in enumerate(counts) if n < min_per_class]
        if short:
            raise DataError(
                f"Too few texts in class(es) {', '.join(short)} of {listing.source} (need "
                f"{min_per_class} each). Add examples or remove the class."
            )
        digest = hashlib.sha256()
        for label_index, text in sorted(zip(targets.tolist(), texts)):
            digest.update(f"{listing.labels[label_index]}\t{text}\n".encode())
        return Samples(
            inputs=texts,
            targets=targets,
            labels=listing.labels,
            source=listing.source,
            fingerprint=digest.hexdigest(),
            skipped=skipped,
        )

    def postprocess(
        self, outputs: np.ndarray, labels: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        return top_k_results(outputs, labels, top_k)

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
    ) -> dict[str, Any]:
        return classification_metrics(outputs, targets, labels)

    def loss(self, label_smoothing: float = 0.0) -> Any:
        import torch

        return torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
