import json

import pytest

from sampan.errors import ExportError
from sampan.export import export
from sampan.store import Store


def test_export_writes_a_new_version_with_parity(exported):
    home, onnx_ref, _ = exported
    package = Store(home).open(onnx_ref)
    m = package.manifest
    assert m.lineage["operation"] == "export:onnx" and m.lineage["parent"].startswith("digits@")
    entry = m.exports["onnx"]
    assert entry["precision"] == "fp32" and entry["dynamic_axes"]["input"] == ["batch"]
    assert entry["parity"]["top1_agreement"] == 1.0 and entry["parity"]["max_abs_diff"] < 1e-3
    assert {"model.onnx", "weights.safetensors", "README.md"} <= set(m.files)
    assert "## Export: onnx" in (package.path / "README.md").read_text()


def test_parity_outside_tolerance_fails_and_writes_nothing(trained):
    home, ref = trained
    store = Store(home)
    before = store.versions("digits")
    with pytest.raises(ExportError, match=r"differs from torch.*Nothing was written"):
        export(ref, "onnx", store=store, atol=0.0)
    assert store.versions("digits") == before


def test_export_of_moved_training_data_asks_for_data(trained, tmp_path):
    import shutil

    home, ref = trained
    copy_home = tmp_path / "h"
    shutil.copytree(home, copy_home)
    store = Store(copy_home)
    manifest_path = store.path_of(ref) / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["training"]["dataset"]["source"] = str(tmp_path / "gone")
    manifest_path.write_text(json.dumps(data))
    from sampan.errors import DataError

    with pytest.raises(DataError, match="pass labelled data with --data"):
        export(ref, "onnx", store=store)


def test_relative_parity_is_per_sample():
    """Forecasts of a series near 10,000 and one near 0.5 in one batch: the small one 3 units
    off is caught (the whole batch's ratio, 3 / 10,000, would pass a 1e-3 tolerance)."""
    import numpy as np

    from sampan.export.onnx import max_relative_diff, parity

    expected = np.array([[10_000.0, 9_990.0], [0.5, 0.52]], np.float32)
    got = expected + np.array([[0.0, 0.0], [3.0, 0.0]], np.float32)
    assert max_relative_diff(expected, got) == pytest.approx(3.0 / 0.52)
    report = parity(expected[:, :, None], got[:, :, None], np.zeros((2, 2, 1), np.float32))
    assert report["max_rel_diff"] == pytest.approx(3.0 / 0.52)
    close = expected * np.float32(1 + 1e-6)
    assert max_relative_diff(expected, close) < 1e-5
    # Class scores keep their own check: agreement and accuracy, no relative difference.
    logits = np.array([[2.0, 1.0], [0.0, 3.0]], np.float32)
    scores = parity(logits, logits + 0.5, np.array([0, 1]))
    assert "max_rel_diff" not in scores and scores["top1_agreement"] == 1.0
