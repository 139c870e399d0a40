import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import sampan
from sampan.errors import ConfigError, ResumeError
from sampan.store import Store
from tests.conftest import TINY, write_digits_folder


def test_train_writes_a_complete_package(trained):
    home, ref = trained
    package = Store(home).open(ref)
    m = package.manifest
    assert m.task == "image-classification" and m.labels == [str(i) for i in range(10)]
    assert m.architecture["preset"] == "small_cnn_tiny" and m.architecture["params"] > 0
    assert m.preprocessing["input_size"] == [16, 16] and m.preprocessing["channels"] == 1
    assert len(m.preprocessing["mean"]) == 1
    dataset = m.training["dataset"]
    assert (dataset["num_train"], dataset["num_val"]) == (320, 80)
    assert len(dataset["fingerprint"]) == 64 and m.training["seed"] == 0
    assert len(m.training["history"]) == 8 and m.lineage == {
        "parent": None,
        "operation": "train",
        "pretrained": None,
    }
    assert 0.0 <= m.metrics["accuracy"] <= 1.0 and len(m.metrics["confusion_matrix"]) == 10
    assert "| 9 | 9 |" in (package.path / "README.md").read_text()


def test_reloading_gives_bit_identical_logits(trained, digits_holdout):
    home, ref = trained
    files = sorted(digits_holdout.glob("*/*.png"))
    first = sampan.load(ref, store=Store(home), device="cpu").outputs(files)
    second = sampan.load(ref, store=Store(home), device="cpu").outputs(files)
    assert first.shape == (50, 10) and np.array_equal(first, second)


def test_predict_takes_one_array_or_a_batch(trained, digits_holdout):
    from PIL import Image

    home, ref = trained
    model = sampan.load(ref, store=Store(home), device="cpu")
    image = np.asarray(Image.open(sorted(digits_holdout.glob("4/*.png"))[0]))
    assert len(model.predict(image)) == 1 and len(model.predict(np.stack([image] * 3))) == 3
    assert np.array_equal(model.outputs(image), model.outputs([image]))


def test_training_and_serving_preprocess_identically(trained, digits_dir):
    """The trainer's validation logits equal the loaded model's logits on the same files."""
    home, ref = trained
    from sampan.training.config import TrainConfig
    from sampan.training.trainer import Trainer

    trainer = Trainer(TrainConfig(data=str(digits_dir), name="digits", **TINY), Store(home))
    trainer.network.load_state_dict(
        {
            k: __import__("torch").from_numpy(v)
            for k, v in load_file(str(Store(home).open(ref).weights_path)).items()
        }
    )
    index = trainer.prep.val_idx[:20]
    from_trainer = trainer.logits(index)
    paths = [trainer.prep.task.scan(digits_dir).items[i] for i in index]
    from_model = sampan.load(ref, store=Store(home), device="cpu").outputs(paths)
    assert np.array_equal(from_trainer, from_model)


def test_evaluate_and_predict(trained, digits_holdout, tmp_path):
    home, ref = trained
    report = sampan.evaluate(ref, digits_holdout, plot=tmp_path / "cm.png", store=Store(home))
    assert report.num_samples == 50 and sum(map(sum, report.metrics["confusion_matrix"])) == 50
    assert report.plot.stat().st_size > 1000
    results = sampan.predict(ref, [digits_holdout / "3"], top_k=2, store=Store(home))
    assert len(results) == 5 and all(len(r["top_k"]) == 2 for r in results)
    assert all(r["input"].endswith(".png") for r in results)


def test_fine_tuning_a_package_records_its_parent(trained, digits_dir, tmp_path):
    home, ref = trained
    options = {k: v for k, v in TINY.items() if k != "arch"}
    result = sampan.train(
        data=str(digits_dir),
        name="digits-ft",
        pretrained=ref,
        store=Store(home),
        **{**options, "epochs": 1},
    )
    m = result.package.manifest
    assert m.lineage["parent"] == ref and m.architecture["preset"] == "small_cnn_tiny"
    with pytest.raises(ConfigError, match="conflicts with"):
        sampan.train(
            data=str(digits_dir),
            name="x",
            pretrained=ref,
            store=Store(home),
            **{**options, "arch": "resnet18"},
        )


def test_fine_tuning_on_other_labels_starts_a_new_head(trained, tmp_path):
    """Same number of classes, other labels: the parent's head must not be copied."""
    import torch
    from safetensors.torch import load_file as load_torch

    home, ref = trained
    data = write_digits_folder(tmp_path / "d", per_class=6)
    for folder in sorted(data.iterdir()):
        folder.rename(data / f"part-{folder.name}")
    options = {k: v for k, v in TINY.items() if k != "arch"}
    result = sampan.train(
        data=str(data),
        name="other",
        pretrained=ref,
        store=Store(home),
        **{**options, "epochs": 1, "lr": 1e-9},
    )
    parent = load_torch(str(Store(home).open(ref).weights_path))
    child = load_torch(str(result.package.weights_path))
    assert torch.allclose(parent["features.2.0.weight"], child["features.2.0.weight"], atol=1e-6)
    assert not torch.allclose(parent["head.weight"], child["head.weight"], atol=1e-3)


def test_resume_refuses_other_labels_or_architecture(tmp_path):
    data = write_digits_folder(tmp_path / "d", per_class=6, classes=3)
    store = Store(tmp_path / "home")
    sampan.train(data=str(data), name="r", store=store, **{**TINY, "epochs": 1})
    with pytest.raises(ResumeError, match="architecture differ"):
        sampan.train(
            data=str(data), name="r", store=store, resume=True, **{**TINY, "arch": "small_cnn"}
        )
    other = write_digits_folder(tmp_path / "e", per_class=6, classes=4)
    with pytest.raises(ResumeError, match="labels differ"):
        sampan.train(data=str(other), name="r", store=store, resume=True, **TINY)
    with pytest.raises(ResumeError, match=r"seed 0 -> 5"):
        sampan.train(data=str(data), name="r", store=store, resume=True, **{**TINY, "seed": 5})
    with pytest.raises(ResumeError, match="Nothing to resume"):
        sampan.train(data=str(data), name="never", store=store, resume=True, **TINY)


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path):
    data = write_digits_folder(tmp_path / "d", per_class=8, classes=3)
    result = sampan.train(
        data=str(data),
        name="es",
        store=Store(tmp_path / "h"),
        **{**TINY, "epochs": 40, "patience": 2, "lr": 1e-9},
    )
    assert result.stopped_early and len(result.history) < 40
    assert result.best_epoch == max(result.history, key=lambda h: h["val_accuracy"])["epoch"]
    assert json.loads(json.dumps(result.package.manifest.training))["stopped_early"] is True


def test_bad_name_and_seed_fail_before_any_work(tmp_path):
    for options, message in (
        ({"name": "../escape"}, "Invalid package name"),
        ({"name": "ok", "seed": -1}, "seed must be >= 0"),
        ({"name": "ok", "device": "gpu"}, "Unknown device 'gpu'"),
    ):
        with pytest.raises(sampan.SampanError, match=message):
            sampan.train(
                data=str(tmp_path / "missing"), store=Store(tmp_path / "h"), **{**TINY, **options}
            )


def test_eval_on_a_train_val_folder_scores_val_only(trained, tmp_path):
    home, ref = trained
    write_digits_folder(tmp_path / "split" / "train", per_class=3)
    write_digits_folder(tmp_path / "split" / "val", per_class=2, offset=50)
    report = sampan.evaluate(ref, tmp_path / "split", store=Store(home))
    assert report.num_samples == 20


def test_predict_reports_unreadable_files_and_answers_the_rest(trained, digits_holdout, tmp_path):
    import shutil

    home, ref = trained
    folder = tmp_path / "mixed"
    shutil.copytree(digits_holdout / "2", folder)
    (folder / "broken.png").write_bytes(b"not a png")
    results = sampan.predict(ref, [folder], store=Store(home))
    assert len(results) == 6 and sum("error" in r for r in results) == 1
    assert all("label" in r for r in results if "error" not in r)
