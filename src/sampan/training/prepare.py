"""Everything a run needs before its first step: task, architecture, decoded data, split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sampan.data.split import stratified_split
from sampan.errors import ConfigError, DataError, NotFoundError
from sampan.models.base import ArchitectureSpec, resolve_architecture
from sampan.store import Store
from sampan.tasks.base import Samples, Task, get_task
from sampan.training.config import TrainConfig

# Time-series options a run passes to its task's contract.
SERIES_OPTIONS = ("window", "horizon", "period", "columns", "time_column", "series_column")


@dataclass
class Prepared:
    task: Task
    spec: ArchitectureSpec
    samples: Samples
    train_idx: np.ndarray
    val_idx: np.ndarray
    contract: dict[str, Any]
    build_args: dict[str, Any]  # what the network is built with, pretrained aside
    pretrained: str | None = None  # a weights path, 'timm' or None
    parent: str | None = None  # the package this run fine-tunes, if any
    keep_head: bool = True  # load the pretrained classifier head too
    notes: list[str] = field(default_factory=list)
    bound: dict[str, Any] = field(default_factory=dict)  # the contract for collate (bind())
    files: dict[str, Path] = field(default_factory=dict)  # name in the package -> source file
    lengths: np.ndarray | None = None  # per-sample sizes when batches pad (text)


@dataclass
class _Setup:
    """Where a run's network and contract options come from."""

    spec: ArchitectureSpec
    options: dict[str, Any]
    pretrained: str | None  # a weights path, 'timm' or None
    parent: Any  # the package fine-tuned, or None
    files_from: Path | None = None  # the folder holding the files the contract names


def default_input_size(spec: ArchitectureSpec) -> list[int]:
    if spec.name == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(spec.config["model_name"])
        if cfg is not None:
            return list(cfg.input_size[1:])
        return [224, 224]
    return [32, 32]


def resolve_pretrained(value: str | None, store: Store) -> tuple[str | None, Any]:
    """(weights source, parent package or None) for the --pretrained option."""
    if value in (None, "", "none"):
        return None, None
    if value == "timm" or Path(value).exists():
        return value, None
    try:
        package = store.open(value)
    except NotFoundError:
        raise NotFoundError(
            f"--pretrained {value!r} is neither 'timm', an existing weights file or folder, "
            "nor a package in the store."
        ) from None
    return str(package.weights_path), package


def _image_setup(config: TrainConfig, store: Store) -> _Setup:
    """Architecture and contract options for an image task (timm, local weights, a package)."""
    pretrained, parent = resolve_pretrained(config.pretrained, store)
    options: dict[str, Any] = {"input_size": config.input_size, "channels": config.channels}
    options.update({k: getattr(config, k) for k in SERIES_OPTIONS if getattr(config, k)})
    if parent is not None:
        arch = parent.manifest.architecture
        names = {arch.get("preset"), arch["config"].get("model_name"), arch["name"]}
        if config.arch is not None and config.arch not in names:
            raise ConfigError(
                f"--arch {config.arch} conflicts with {parent.ref}, which is "
                f"{arch.get('preset') or arch['name']}: fine-tuning keeps the parent's "
                "architecture. Drop --arch, or pretrain from another source."
            )
        config_keys = {
            k: v
            for k, v in arch["config"].items()
            if k not in ("num_classes", "in_chans", "input_size")
        }
        spec = ArchitectureSpec(arch["name"], config_keys, arch.get("preset"), config.task)
        options = {
            **{
                k: parent.manifest.preprocessing.get(k)
                for k in ("input_size", "channels", "mean", "std")
            },
            **{k: v for k, v in options.items() if v is not None},
        }
    else:
        spec = resolve_architecture(config.arch or "small_cnn", config.task)
        if pretrained == "timm" and spec.name != "timm":
            raise ConfigError(
                f"{config.arch or 'small_cnn'} has no timm weights; use a timm "
                "architecture, or --pretrained with a local weights file."
            )
        if pretrained is not None and spec.name == "timm":
            from sampan.models.timm_family import timm_normalisation

            options["mean"], options["std"] = timm_normalisation(spec.config["model_name"])
    options["input_size"] = options.get("input_size") or default_input_size(spec)
    return _Setup(spec, options, pretrained, parent)


def _hf_setup(config: TrainConfig, store: Store) -> _Setup:
    """A transformer encoder with a new head, from a text package or a Hugging Face folder;
    the tokenizer comes from the same place."""
    from sampan.importers.hf import read_hf_directory

    if config.pretrained in (None, "", "none", "timm"):
        raise ConfigError(
            f"{config.task} fine-tunes a pretrained transformer: give --pretrained with a text "
            "package (`sampan import hf DIR --task text-embedding --name minilm` makes one) "
            "or a Hugging Face model directory."
        )
    if config.arch is not None:
        raise ConfigError(
            f"--arch does not apply to {config.task}: the architecture is the pretrained "
            "encoder's. Drop --arch."
        )
    folder = Path(config.pretrained).expanduser()
    options: dict[str, Any] = {}
    if folder.exists():  # a path: it must be a Hugging Face directory (clear error if not)
        hf_config, settings = read_hf_directory(folder)
        options = {"max_length": settings["max_length"], "lowercase": settings["lowercase"]}
        arch_config = {"hf_config": hf_config, "pooling": settings["pooling"]}
        spec = ArchitectureSpec("hf_classifier", arch_config, None, config.task)
        return _Setup(spec, options, str(folder / "model.safetensors"), None, folder)
    try:
        parent = store.open(config.pretrained)
    except NotFoundError:
        raise NotFoundError(
            f"--pretrained {config.pretrained!r} is neither a Hugging Face model directory "
            "nor a package in the store (`sampan packages` lists them)."
        ) from None
    arch = parent.manifest.architecture
    if arch["name"] not in ("hf_encoder", "hf_classifier") or not parent.has_weights:
        raise ConfigError(
            f"{parent.ref} is not a transformer encoder package with weights (it is "
            f"{arch['name']}); give a text-embedding or text-classification package."
        )
    contract = parent.manifest.preprocessing
    options = {"max_length": contract.get("max_length"), "lowercase": contract.get("lowercase")}
    arch_config = {"hf_config": arch["config"]["hf_config"]}
    arch_config["pooling"] = arch["config"].get("pooling", "mean")
    spec = ArchitectureSpec("hf_classifier", arch_config, None, config.task)
    return _Setup(spec, options, str(parent.weights_path), parent, parent.path)


def prepare(config: TrainConfig, store: Store) -> Prepared:
    task = get_task(config.task)
    setup = (
        _hf_setup(config, store) if task.pretrained_kind == "hf" else _image_setup(config, store)
    )
    spec, options, parent = setup.spec, setup.options, setup.parent
    if config.max_length is not None:
        options["max_length"] = config.max_length
    positions = spec.config.get("hf_config", {}).get("max_position_embeddings")
    if positions and options.get("max_length"):
        # RoBERTa-style models start positions after the padding index: 2 fewer usable
        roberta = spec.config["hf_config"].get("model_type") in ("roberta", "xlm-roberta")
        usable = positions - (2 if roberta else 0)
        if int(options["max_length"]) > usable:
            raise ConfigError(
                f"--max-length {options['max_length']} is over the {usable} positions this "
                f"encoder has; use --max-length {usable} or less."
            )
    listing = task.scan(config.data)
    if len(listing.labels) == 1:  # classes to tell apart; evaluating one class is fine
        raise DataError(
            f"{config.data} has one label ({listing.labels[0]}); a classifier needs at least 2."
        )
    contract = task.preprocessing(listing, options)
    samples = task.load(listing, contract, min_per_class=2)
    if samples.segments is not None:  # chronological: the data's order decides
        train_idx = np.flatnonzero(samples.segments == 0)
        val_idx = np.flatnonzero(samples.segments == 1)
        if len(val_idx) == 0:
            raise DataError(f"{config.data} is too short to leave any validation window.")
    elif samples.presplit is not None and samples.presplit.any() and not samples.presplit.all():
        train_idx = np.flatnonzero(~samples.presplit)
        val_idx = np.flatnonzero(samples.presplit)
    else:
        train_idx, val_idx = stratified_split(
            samples.targets, config.val_fraction, config.seed, samples.labels
        )
    if len(train_idx) == 0:
        raise DataError(f"{config.data} leaves no training samples after the split.")
    contract = task.fit(contract, samples.take(train_idx))
    build_args: dict[str, Any] = {
        "num_classes": len(samples.labels),
        **task.network_args(contract),
    }
    if config.drop_rate is not None:
        build_args["drop_rate"] = config.drop_rate
    # Files the contract names (a tokenizer) travel from where the weights came from.
    files = {}
    if setup.files_from is not None:
        for value in contract.values():
            if isinstance(value, str) and (setup.files_from / value).is_file():
                files[value] = setup.files_from / value
    bound = task.bind(contract, setup.files_from) if setup.files_from is not None else contract
    # A parent whose labels differ (even in number alone) gives no useful classifier head.
    keep_head = parent is None or parent.manifest.labels == samples.labels
    return Prepared(
        task,
        spec,
        samples,
        train_idx,
        val_idx,
        contract,
        build_args,
        setup.pretrained,
        parent.ref if parent is not None else None,
        keep_head,
        bound=bound,
        files=files,
        lengths=task.lengths(samples.inputs),
    )
