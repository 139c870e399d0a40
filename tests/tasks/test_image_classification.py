from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sampan.errors import DataError
from sampan.tasks import get_task
from sampan.tasks.metrics import classification_metrics

TASK = get_task("image-classification")
CONTRACT = {
    "kind": "image",
    "input_size": [12, 10],
    "channels": 3,
    "resample": "bilinear",
    "mean": [0.5, 0.4, 0.3],
    "std": [0.2, 0.25, 0.3],
}


def rgb(seed: int, size=(20, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_decode_is_the_same_for_path_bytes_array_and_pil(tmp_path: Path):
    array = rgb(0)
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    decoded = [
        TASK.decode(raw, CONTRACT)
        for raw in (path, str(path), path.read_bytes(), array, Image.fromarray(array))
    ]
    assert decoded[0].shape == (12, 10, 3) and decoded[0].dtype == np.uint8
    for other in decoded[1:]:
        assert np.array_equal(decoded[0], other)


def test_collate_normalises_to_nchw():
    samples = np.stack([TASK.decode(rgb(i), CONTRACT) for i in range(2)])
    batch = TASK.collate(samples, CONTRACT)
    assert batch.shape == (2, 3, 12, 10) and batch.dtype == np.float32
    expected = (samples[1, 4, 5, 2] / 255.0 - 0.3) / 0.3
    assert batch[1, 2, 4, 5] == pytest.approx(expected, abs=1e-6)
    mean, std = np.array(CONTRACT["mean"]), np.array(CONTRACT["std"])
    every = ((samples / 255.0 - mean) / std).transpose(0, 3, 1, 2)  # each channel its own
    assert batch.flags.c_contiguous and np.allclose(batch, every, atol=1e-5)
    # a list of images (the server's, LitServe's) gives the same floats as the stacked array
    assert np.array_equal(TASK.collate(list(samples), CONTRACT), batch)
    one = TASK.collate([samples[1]], CONTRACT)
    assert one.shape == (1, 3, 12, 10) and np.array_equal(one[0], batch[1])


def test_grayscale_contract_converts_colour_input():
    gray = {**CONTRACT, "channels": 1, "mean": [0.5], "std": [0.2]}
    assert TASK.decode(rgb(1), gray).shape == (12, 10, 1)


def test_corrupt_and_bomb_images_are_data_errors(tmp_path: Path, monkeypatch):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="Cannot read image"):
        TASK.decode(bad, CONTRACT)
    import sampan.data.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(DataError, match="pixel limit"):
        TASK.decode(_png_bytes(rgb(2)), CONTRACT)


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rgb(hash((label, i)) % 1000)).save(root / label / f"{i}.png")
    return root


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path):
    root = _folder(tmp_path / "data", {"a": 3, "b": 3})
    (root / "a" / "broken.png").write_bytes(b"junk")
    listing = TASK.scan(root)
    samples = TASK.load(listing, TASK.preprocessing(listing, {"input_size": 8}), min_per_class=2)
    assert len(samples) == 6 and len(samples.skipped) == 1 and "broken.png" in samples.skipped[0]


def test_too_few_readable_images_in_a_class_fails(tmp_path: Path):
    root = _folder(tmp_path / "data", {"a": 3, "b": 1})
    (root / "b" / "broken.jpg").write_bytes(b"junk")
    listing = TASK.scan(root)
    with pytest.raises(DataError, match=r"class\(es\) b \(1\)"):
        TASK.load(listing, TASK.preprocessing(listing, {"input_size": 8}), min_per_class=2)


def test_missing_empty_and_classless_folders(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        TASK.scan(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        TASK.scan(tmp_path / "empty")
    _folder(tmp_path / "partial", {"a": 2})
    (tmp_path / "partial" / "b").mkdir()
    with pytest.raises(DataError, match=r"b in .* hold no images"):
        TASK.scan(tmp_path / "partial")


def test_csv_manifest_and_train_val_folders(tmp_path: Path):
    root = _folder(tmp_path / "imgs", {"a": 2, "b": 2})
    csv = tmp_path / "data.csv"
    csv.write_text("path,label\nimgs/a/0.png,a\nimgs/a/1.png,a\nimgs/b/0.png,b\n")
    listing = TASK.scan(csv)
    assert listing.labels == ["a", "b"] and listing.targets.tolist() == [0, 0, 1]
    _folder(tmp_path / "split" / "train", {"a": 2, "b": 2})
    _folder(tmp_path / "split" / "val", {"a": 1, "b": 1})
    listing = TASK.scan(tmp_path / "split")
    assert listing.presplit is not None and listing.presplit.sum() == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx,y\n")
    with pytest.raises(DataError, match="'path' and 'label' columns"):
        TASK.scan(bad)
    assert root.exists()


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, top_k_accuracy_score

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 7))
    targets = rng.integers(0, 7, 200)
    ours = classification_metrics(logits, targets, [str(i) for i in range(7)])
    predicted = logits.argmax(1)
    assert ours["accuracy"] == pytest.approx(accuracy_score(targets, predicted))
    assert ours["macro_f1"] == pytest.approx(f1_score(targets, predicted, average="macro"))
    assert ours["top5_accuracy"] == pytest.approx(top_k_accuracy_score(targets, logits, k=5))
    assert ours["confusion_matrix"] == confusion_matrix(targets, predicted).tolist()


def test_postprocess_gives_sorted_top_k():
    results = TASK.postprocess(np.array([[0.0, 3.0, 1.0]]), ["a", "b", "c"], top_k=2)
    assert results[0]["label"] == "b" and [t["label"] for t in results[0]["top_k"]] == ["b", "c"]
    assert sum(t["score"] for t in TASK.postprocess(np.zeros((1, 3)), "abc", 3)[0]["top_k"]) == (
        pytest.approx(1.0)
    )


def test_augment_is_seeded_and_keeps_shapes():
    batch = np.stack([rgb(i, (16, 16)) for i in range(4)])
    one = TASK.augment(batch, np.random.default_rng(5), "shift+flip")
    two = TASK.augment(batch, np.random.default_rng(5), "shift+flip")
    assert one.shape == batch.shape and np.array_equal(one, two) and not np.array_equal(one, batch)
    assert TASK.augment(batch, np.random.default_rng(5), "none") is batch


def test_data_too_large_to_decode_in_memory_is_refused(tmp_path: Path, monkeypatch):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    monkeypatch.setenv("SAMPAN_MAX_DECODED_GB", "0.000001")
    listing = TASK.scan(root)
    with pytest.raises(DataError, match="lower --input-size"):
        TASK.load(listing, TASK.preprocessing(listing, {"input_size": 224}))


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path: Path):
    deep = np.full((8, 8), 40_000, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    gray = {**CONTRACT, "input_size": [8, 8], "channels": 1, "mean": [0.5], "std": [0.2]}
    assert TASK.decode(path, gray)[0, 0, 0] == round(40_000 / 257)
    floats = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))
    assert TASK.decode(floats, gray)[0, 0, 0] == 128


def test_csv_with_byte_order_mark_and_bad_encoding(tmp_path: Path):
    _folder(tmp_path / "imgs", {"a": 2})
    csv = tmp_path / "excel.csv"
    csv.write_bytes("\ufeffpath,label\nimgs/a/0.png,a\n".encode())
    assert TASK.scan(csv).labels == ["a"]
    csv.write_bytes(b"path,label\n\xff\xfe,a\n")
    with pytest.raises(DataError, match="not a readable UTF-8 CSV"):
        TASK.scan(csv)


def test_split_keeps_one_sample_on_each_side_and_names_the_class():
    from sampan.data.split import stratified_split

    train, val = stratified_split(np.array([0, 0, 1, 1, 1]), 0.9, seed=0)
    assert len(train) == 2 and len(val) == 3
    with pytest.raises(DataError, match="Class lonely has only 1"):
        stratified_split(np.array([0, 0, 1]), 0.2, seed=0, labels=["many", "lonely"])


def test_cheap_to_decode_reads_the_header_not_the_file_size():
    import io

    task = get_task("image-classification")

    def png(size: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", (size, size)).save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()

    small, huge = png(64), png(4000)
    assert len(huge) < 64 * 1024  # a tiny file holding 16 megapixels
    assert task.cheap_to_decode(small) is True
    assert task.cheap_to_decode(huge) is False
    assert task.cheap_to_decode(b"not an image") is True  # decode refuses it at once
    assert task.cheap_to_decode(np.zeros((8, 8), np.uint8)) is False
