"""Classification metrics as pure numpy functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def confusion_matrix(targets: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (targets, predicted), 1)
    return counts


def classification_metrics(
    logits: np.ndarray, targets: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, top-k, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    num_classes = len(labels)
    targets = np.asarray(targets, dtype=np.int64)
    predicted = logits.argmax(axis=1)
    counts = confusion_matrix(targets, predicted, num_classes)
    true_pos = np.diag(counts).astype(np.float64)
    predicted_pos = counts.sum(axis=0)
    actual_pos = counts.sum(axis=1)
    precision = np.divide(
        true_pos, predicted_pos, out=np.zeros_like(true_pos), where=predicted_pos > 0
    )
    recall = np.divide(true_pos, actual_pos, out=np.zeros_like(true_pos), where=actual_pos > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    present = actual_pos > 0
    k = min(5, num_classes)
    # Rank of the true class among the logits: top-k hit when fewer than k logits beat it.
    true_logit = logits[np.arange(len(targets)), targets]
    topk_hits = (logits > true_logit[:, None]).sum(axis=1) < k
    n = max(len(targets), 1)
    return {
        "accuracy": float(true_pos.sum() / n),
        f"top{k}_accuracy": float(topk_hits.mean()) if len(targets) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "num_samples": len(targets),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual_pos[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": counts.tolist(),
    }


def top_k_results(logits: np.ndarray, labels: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """One result per row: the best label, its probability, and the top-k list."""
    probs = softmax(logits.astype(np.float64))
    k = max(1, min(top_k, len(labels)))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    results = []
    # Python lists, not numpy scalars: a served answer is built per request, and indexing
    # numpy arrays element by element was a third of this function's time.
    for row, idx in zip(probs.tolist(), order.tolist()):
        top = [{"label": labels[i], "score": row[i]} for i in idx]
        results.append({"label": top[0]["label"], "score": top[0]["score"], "top_k": top})
    return results
