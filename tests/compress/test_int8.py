import pytest

from sampan.compress import compress
from sampan.errors import CompressionError, PackageError
from sampan.store import Store


def test_int8_package_records_accuracy_and_size(exported):
    home, onnx_ref, int8_ref = exported
    package = Store(home).open(int8_ref)
    m = package.manifest
    entry = m.exports["onnx"]
    assert entry["precision"] == "int8" and m.lineage["parent"] == onnx_ref
    assert entry["accuracy_before"] - entry["accuracy_after"] <= 0.05
    assert entry["size_after_bytes"] < entry["size_before_bytes"]
    assert m.metrics["accuracy"] == entry["accuracy_after"]
    assert "weights.safetensors" not in m.files  # INT8 only: torch cannot run it
    card = (package.path / "README.md").read_text()
    assert "accuracy_after" in card and "| precision | int8 |" in card


def test_compress_needs_an_fp32_onnx_export(exported, trained):
    home, _, int8_ref = exported
    with pytest.raises(PackageError, match="sampan export"):
        compress(trained[1], store=Store(home))
    with pytest.raises(PackageError, match="already int8"):
        compress(int8_ref, store=Store(home))


def test_too_large_an_accuracy_drop_is_refused(exported):
    home, onnx_ref, _ = exported
    store = Store(home)
    before = store.versions("digits")
    with pytest.raises(CompressionError, match="nothing was written"):
        compress(onnx_ref, store=store, max_drop=-1.0)  # no drop at all is allowed
    assert store.versions("digits") == before


def test_fp16_keeps_accuracy_and_halves_the_size(serve_home, digits_holdout):
    import numpy as np

    import sampan

    home, onnx_ref, _ = serve_home  # a copy: the session's exported store keeps its versions
    fp16 = compress(onnx_ref, method="fp16", store=Store(home))
    entry = fp16.manifest.exports["onnx"]
    assert entry["precision"] == "fp16" and fp16.manifest.lineage["operation"] == "compress:fp16"
    assert abs(entry["accuracy_before"] - entry["accuracy_after"]) <= 0.01
    assert entry["size_after_bytes"] < 0.6 * entry["size_before_bytes"]
    files = sorted(digits_holdout.glob("*/*.png"))
    half = sampan.load(fp16.ref, backend="onnxruntime", store=Store(home)).outputs(files)
    full = sampan.load(onnx_ref, backend="onnxruntime", store=Store(home)).outputs(files)
    assert half.dtype == np.float32 and np.mean(half.argmax(1) == full.argmax(1)) >= 0.98
