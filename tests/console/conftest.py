"""A real server with the console and the platform gate (API keys required), on loopback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving.conftest import RunningServer, free_port

HOSTILE = ['<script>window.__xss = "label"</script>', '<img src=x onerror="window.__xss=1">']


@dataclass
class Console:
    server: RunningServer
    home: Path
    admin_key: str
    predict_key: str
    digits_ref: str
    image: Path  # a real digit image (its true label is digit)
    digit: str

    @property
    def url(self) -> str:
        return self.server.url


def hostile_package(store, parent_ref: str) -> str:
    """A copy of parent whose labels and data source hold HTML, as a careless or malicious
    uploader might write them."""
    from sampan.export.base import derived_fields
    from sampan.io import atomic_write_json
    from sampan.package import file_entries

    parent = store.open(parent_ref)
    labels = list(parent.manifest.labels)
    labels[0], labels[1] = HOSTILE
    training = {**parent.manifest.training, "dataset": {"source": "<script>alert(1)</script>"}}

    def write(folder: Path) -> None:
        for name in parent.manifest.files:
            if name != "README.md":
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(parent.path / name, target)

    fields = derived_fields(parent, "relabel", labels=labels, training=training)
    package = store.write("evil", fields, write)
    # Raw HTML in the card itself, as an imported model's own README might hold; the
    # manifest's checksums are brought up to date so the package still verifies.
    card = package.path / "README.md"
    card.write_text(card.read_text() + "\n<script>window.__xss = 'card'</script>\n")
    manifest = json.loads((package.path / "manifest.json").read_text())
    manifest["files"] = file_entries(package.path)
    atomic_write_json(package.path / "manifest.json", manifest)
    return package.ref


@pytest.fixture
def console(serve_home, digits_holdout: Path) -> Iterator[Console]:
    from sampan.console import console_router
    from sampan.platform.db import Database
    from sampan.platform.gate import build_gate
    from sampan.platform.keys import Keys
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    store = Store(home)
    evil_ref = hostile_package(store, onnx_ref)
    db = Database(home=home)
    keys = Keys(db, actor="test")
    keys.create_app("ops")
    keys.create_app("shop")
    admin_key, _ = keys.create_key("ops", ["admin", "predict:*"])
    predict_key, _ = keys.create_key("shop", ["predict:digits*"])
    gate = build_gate(db, interval=0.2)
    settings = ServeSettings(backend="onnxruntime")
    app = build_app(
        [onnx_ref, evil_ref], settings, store, extension=gate, routers=[console_router(store)]
    )
    image = sorted((digits_holdout / "7").glob("*.png"))[0]
    with RunningServer(app, free_port()) as running:
        yield Console(running, home, admin_key, predict_key, onnx_ref, image, "7")
