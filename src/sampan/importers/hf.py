"""`sampan import hf DIR`: a Hugging Face-format model directory as a sampan package.

The directory needs config.json, tokenizer.json and model.safetensors (the layout that
transformers' save_pretrained and sentence-transformers write). The encoder's weights are
checked against the architecture the config describes, the tokenizer becomes part of the
package and its preprocessing contract, and the source and licence go into the manifest.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from sampan.errors import ConfigError, NotFoundError, PackageError
from sampan.package import Package
from sampan.store import Store

TASKS = ("text-embedding",)
NEEDED = ("config.json", "tokenizer.json", "model.safetensors")


def _licence(source: Path) -> str:
    """The licence a model card's front matter names ('apache-2.0'), or 'unknown'."""
    card = source / "README.md"
    if card.is_file():
        match = re.search(r"^license:\s*(\S+)", card.read_text(encoding="utf-8"), re.M)
        if match:
            return match[1]
    return "unknown"


def _settings(source: Path) -> dict[str, Any]:
    """Pooling, normalisation and length as sentence-transformers stored them, if it did."""
    settings: dict[str, Any] = {
        "pooling": "mean",
        "normalize": True,
        "max_length": 256,
        "lowercase": False,
    }
    bert = source / "sentence_bert_config.json"
    if bert.is_file():
        data = json.loads(bert.read_text())
        settings["max_length"] = int(data.get("max_seq_length", 256))
        settings["lowercase"] = bool(data.get("do_lower_case", False))
    pooling = source / "1_Pooling" / "config.json"
    if pooling.is_file() and json.loads(pooling.read_text()).get("pooling_mode_cls_token"):
        settings["pooling"] = "cls"
    modules = source / "modules.json"
    if modules.is_file():
        kinds = [m.get("type", "") for m in json.loads(modules.read_text())]
        settings["normalize"] = any(k.endswith("Normalize") for k in kinds)
    return settings


def read_hf_directory(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the transformers config, pooling/length settings) of a Hugging Face model directory;
    a clear error when it is not one."""
    if not directory.is_dir():
        raise NotFoundError(
            f"{directory} is not a directory; give a Hugging Face model directory "
            "(config.json, tokenizer.json, model.safetensors)."
        )
    missing = [f for f in NEEDED if not (directory / f).is_file()]
    if missing:
        raise PackageError(
            f"{directory} is not a Hugging Face model directory: it lacks {', '.join(missing)}."
        )
    try:
        hf_config = json.loads((directory / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PackageError(f"{directory / 'config.json'} is not valid JSON.") from None
    if not isinstance(hf_config, dict) or "model_type" not in hf_config:
        raise PackageError(f"{directory / 'config.json'} names no model_type.")
    return hf_config, _settings(directory)


def import_hf(source: str | Path, task: str, name: str, store: Store | None = None) -> Package:
    """Write a new version of package `name` from a Hugging Face-format directory."""
    import torch
    from safetensors.torch import load_file, save_model

    from sampan.models.base import ArchitectureSpec, build_network
    from sampan.tasks.base import get_task

    if task not in TASKS:
        raise ConfigError(f"--task {task!r}: importable tasks are {', '.join(TASKS)}.")
    directory = Path(source).expanduser()
    hf_config, settings = read_hf_directory(directory)
    spec = ArchitectureSpec(
        "hf_encoder",
        {
            "hf_config": hf_config,
            "pooling": settings["pooling"],
            "normalize": settings["normalize"],
        },
        task=task,
    )
    network = build_network(spec)
    state = load_file(str(directory / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items()}  # BertModel saved in a head
    expected = network.encoder.state_dict()
    absent = sorted(set(expected) - set(state))
    if absent:
        raise PackageError(
            f"{directory / 'model.safetensors'} lacks {len(absent)} weights of a "
            f"{hf_config['model_type']} encoder (e.g. {absent[0]})."
        )
    with torch.no_grad():
        network.encoder.load_state_dict({k: state[k] for k in expected}, strict=True)
    contract = get_task(task).preprocessing(None, settings)

    def write(tmp: Path) -> None:
        save_model(network, str(tmp / "weights.safetensors"))
        shutil.copyfile(directory / "tokenizer.json", tmp / contract["tokenizer_file"])

    return (store or Store()).write(
        name,
        {
            "task": task,
            "architecture": {"name": spec.name, "config": spec.config, "preset": None},
            "labels": [],
            "preprocessing": contract,
            "training": {
                "source": str(directory),
                "imported_from": "huggingface",
                "license": _licence(directory),
                "dimension": int(hf_config.get("hidden_size", 0)),
            },
        },
        write,
    )
