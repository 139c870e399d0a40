import json
from pathlib import Path

import pytest

from sampan.errors import NotFoundError, PackageError
from sampan.package import MANIFEST
from sampan.store import PackageRef, Store

FIELDS = {
    "task": "image-classification",
    "architecture": {"name": "small_cnn", "config": {}},
    "labels": ["ok", "<script>alert(1)</script>"],
    "preprocessing": {"kind": "image"},
    "metrics": {"accuracy": 0.5},
}


def write(store: Store, name: str = "parts", payload: bytes = b"weights") -> Path:
    return store.write(
        name, FIELDS, lambda d: (d / "weights.safetensors").write_bytes(payload)
    ).path


def test_versions_and_latest_resolve(home: Path):
    store = Store()
    first, second = write(store), write(store, payload=b"other")
    assert (first.name, second.name) == ("1", "2")
    assert store.path_of("parts") == second
    assert store.path_of("parts@latest") == second
    assert store.path_of("parts@1") == first
    assert store.path_of("parts@v1") == first
    assert [m.ref for m in store.manifests()] == ["parts@1", "parts@2"]


def test_manifest_lists_every_file_with_its_checksum(home: Path):
    package = Store().open(write(Store()).as_posix())
    assert set(package.manifest.files) == {"weights.safetensors", "README.md"}
    data = json.loads((package.path / MANIFEST).read_text())
    assert data["format_version"] == 1 and len(data["files"]["README.md"]["sha256"]) == 64


def test_flipped_byte_fails_naming_the_file(home: Path):
    path = write(Store())
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"weights\.safetensors is corrupt"):
        Store().open("parts@1")


def test_missing_file_and_broken_manifest(home: Path):
    path = write(Store())
    (path / "README.md").unlink()
    with pytest.raises(PackageError, match=r"README\.md is missing"):
        Store().open("parts")
    (path / MANIFEST).write_text("{not json")
    with pytest.raises(PackageError, match=r"manifest\.json is corrupt"):
        Store().open("parts")


def test_crash_while_writing_leaves_no_version(home: Path):
    store = Store()

    def crash(folder: Path) -> None:
        (folder / "weights.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.write("parts", FIELDS, crash)
    assert store.versions("parts") == []
    assert [p.name for p in (store.root / "parts").iterdir() if p.name != ".lock"] == []


def test_delete_one_version_or_all(home: Path):
    store = Store()
    write(store), write(store), write(store)
    assert store.delete("parts@2") == ["parts@2"]
    assert store.versions("parts") == [1, 3]
    assert store.delete("parts") == ["parts@1", "parts@3"]
    with pytest.raises(NotFoundError, match="No package named 'parts'"):
        store.path_of("parts")


def test_unknown_names_and_versions(home: Path):
    write(Store())
    with pytest.raises(NotFoundError, match="has no version 9"):
        Store().path_of("parts@9")
    for bad in ("../etc", "a/b", "", "parts@x"):
        with pytest.raises(PackageError):
            PackageRef.parse(bad)


def test_model_card_escapes_html_in_labels(home: Path):
    card = (write(Store()) / "README.md").read_text()
    assert "<script>" not in card and "&lt;script&gt;" in card
    assert "| accuracy | 0.5000 |" in card and 'sampan.load("parts@1")' in card


def test_a_deleted_version_number_is_never_reused(home: Path):
    store = Store()
    write(store), write(store)
    store.delete("parts@2")
    assert write(store).name == "3"
    store.delete("parts")
    assert write(store).name == "4"


def test_manifest_that_lists_no_model_file_is_refused(home: Path):
    path = write(Store())
    data = json.loads((path / MANIFEST).read_text())
    data["files"] = {}
    (path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(PackageError, match="lists no model file"):
        Store().open("parts")
    data["files"] = {
        "../../etc/passwd": {"sha256": "x"},
        "README.md": {},
        "weights.safetensors": {},
    }
    (path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(PackageError, match="outside the package"):
        Store().open("parts")
    data["labels"] = "not a list"
    (path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(PackageError, match="wrong types"):
        Store().open("parts")
