"""text-embedding: strings in, one L2-normalised vector per string out.

Tokenisation is preprocessing: the package holds the model's own tokenizer.json, loaded once by
bind() with the fast `tokenizers` library (no torch, no transformers), so every backend sees the
same input ids. Batches are padded to their longest text, not to the model's maximum.

Evaluation data are labelled pairs: a CSV with the header `text1,text2,score` (or JSON Lines
with those keys), the score any graded similarity (0-5 as in STS, or 0/1). Loaded, the pairs
are one flat list of texts [a1, b1, a2, b2, ...] with each pair's score repeated for both, so
the texts are embedded in batches like any other inputs and metrics() pairs them up again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sampan.errors import ConfigError, DataError
from sampan.tasks.base import TASKS, Listing, Samples
from sampan.tasks.text import TextTask, read_text_records, text_contract

PAIR_COLUMNS = ("text1", "text2", "score")


@TASKS.register("text-embedding")
class TextEmbedding(TextTask):
    name = "text-embedding"
    description = "Texts to vectors for similarity search and retrieval"
    monitor = "spearman"
    console_form = "embedding"

    def scan(self, source: str | Path) -> Listing:
        """Labelled pairs: items are (text1, text2), targets their float scores."""
        path = Path(source)
        if path.is_file() and not path.read_bytes().strip():
            raise DataError(f"{path} is empty; it needs a header text1,text2,score and pairs.")
        pairs: list[tuple[str, str]] = []
        scores: list[float] = []
        for number, row in enumerate(read_text_records(path, PAIR_COLUMNS), start=1):
            where = f"{path} pair {number}"
            texts = tuple(row[column] for column in PAIR_COLUMNS[:2])
            for column, text in zip(PAIR_COLUMNS, texts):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{where}: {column} is empty or not a string.")
            try:
                score = float(row["score"])
            except (TypeError, ValueError):
                raise DataError(f"{where}: score {row['score']!r} is not a number.") from None
            if not math.isfinite(score):
                raise DataError(f"{where}: score {row['score']!r} is not a finite number.")
            pairs.append((texts[0], texts[1]))
            scores.append(score)
        if len(set(scores)) < 2:
            raise DataError(
                f"{path}: every pair has the same score; a rank correlation needs pairs that "
                "are more and less similar."
            )
        return Listing(str(path), pairs, np.array(scores, dtype=np.float64), [])

    def reference_data(self) -> Path:
        """Pairs to evaluate a pretrained package on when it names none: sampan's own."""
        from sampan.data.text import pairs_path

        return pairs_path()

    def preprocessing(self, listing: Listing | None, options: dict[str, Any]) -> dict[str, Any]:
        return text_contract(options)

    def load(self, listing: Listing, contract: dict[str, Any], min_per_class: int = 1) -> Samples:
        """The pairs as one flat list [a1, b1, a2, b2, ...], each score repeated for both."""
        texts: list[str] = []
        digest = hashlib.sha256()
        for (first, second), score in zip(listing.items, listing.targets.tolist()):
            texts += [self.decode(first, contract), self.decode(second, contract)]
            digest.update(f"{first}\t{second}\t{score!r}\n".encode())
        return Samples(
            inputs=texts,
            targets=np.repeat(listing.targets.astype(np.float64), 2),
            labels=[],
            source=listing.source,
            fingerprint=digest.hexdigest(),
        )

    def output_shape(self, contract: dict[str, Any], labels: Sequence[str]) -> list[int]:
        return [-1]  # the vector's size: the network's, read from the package by v2

    def postprocess(
        self, outputs: np.ndarray, labels: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        return [{"embedding": row.astype(float).tolist()} for row in outputs]

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
    ) -> dict[str, Any]:
        """Pair metrics of embeddings laid out as load() lays out texts: see pair_metrics."""
        return pair_metrics(outputs, targets)

    def loss(self, label_smoothing: float = 0.0) -> Any:
        raise ConfigError("text-embedding packages are imported, not trained (yet).")


def pair_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Spearman and Pearson correlation of each pair's cosine with its score, and recall@1/@5.

    outputs (2N, D) and targets (2N,) hold pair i in rows 2i and 2i+1. Recall@k: for each pair
    scored at or above the middle of the score range, whether its text2 is among the k
    distinct text2s of the set closest to its text1.
    """
    from scipy.stats import spearmanr

    outputs = np.asarray(outputs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if outputs.ndim != 2 or len(outputs) != len(targets) or len(targets) % 2:
        raise DataError(
            f"Pair metrics need (2N, D) outputs and 2N targets, got {outputs.shape} and "
            f"{targets.shape}."
        )
    unit = outputs / np.maximum(np.linalg.norm(outputs, axis=1, keepdims=True), 1e-12)
    first, second, scores = unit[0::2], unit[1::2], targets[0::2]
    cosine = (first * second).sum(1)
    varied = len(scores) > 1 and np.ptp(scores) > 0 and np.ptp(cosine) > 0
    spearman = float(spearmanr(cosine, scores).statistic) if varied else float("nan")
    pearson = float(np.corrcoef(cosine, scores)[0, 1]) if varied else float("nan")
    recall = _recall(first, second, scores, (1, 5))
    return {
        "spearman": spearman,
        "pearson": pearson,
        **{f"recall@{k}": value for k, value in recall.items()},
        "pairs": len(scores),
    }


def _recall(
    first: np.ndarray, second: np.ndarray, scores: np.ndarray, ks: tuple[int, ...]
) -> dict[int, float]:
    # metrics() sees vectors, not texts: a text2 that occurs in several pairs is recognised by
    # its vector. Not by exact equality: dynamic INT8 quantizes activations per batch, so the
    # same text embedded in two batches differs in the last digits.
    similarity = second @ second.T
    representative = np.arange(len(second))
    for row in range(len(second)):
        earlier = np.flatnonzero(similarity[row, :row] > 1 - 1e-4)
        if len(earlier):
            representative[row] = representative[earlier[0]]
    candidates = np.unique(representative)
    positive = np.flatnonzero(scores >= (scores.min() + scores.max()) / 2)
    if not len(positive):
        return {k: float("nan") for k in ks}
    cosines = first[positive] @ second[candidates].T  # (positives, distinct text2s)
    own = (first[positive] * second[positive]).sum(1)
    others = candidates[None, :] != representative[positive][:, None]
    rank = 1 + ((cosines > own[:, None]) & others).sum(1)
    return {k: float(np.mean(rank <= k)) for k in ks}
