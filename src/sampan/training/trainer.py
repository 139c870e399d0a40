"""The training loop: AdamW, warm-up + cosine, label smoothing, clipping, AMP, early stopping,
a checkpoint every epoch and an exact resume.

Exact resume rests on one rule: every random draw of epoch e comes from generators seeded
with (seed, e), never from state carried across epochs. Resuming from the checkpoint of epoch
e-1 therefore replays epoch e exactly as an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sampan.devices import resolve_device
from sampan.models.base import build_network, count_parameters, load_pretrained_weights
from sampan.package import WEIGHTS, Package
from sampan.progress import make_progress
from sampan.store import Store
from sampan.training.checkpoint import (
    CHECKPOINT,
    check_compatible,
    load_checkpoint,
    run_dir,
    save_checkpoint,
)
from sampan.training.config import TrainConfig
from sampan.training.prepare import Prepared, prepare
from sampan.training.schedule import warmup_cosine

# The options a resume must keep: they decide the split, the schedule and every batch.
RESUME_SETTINGS = (
    "seed",
    "val_fraction",
    "batch_size",
    "epochs",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "min_lr_ratio",
    "label_smoothing",
    "grad_clip",
    "augment",
    "drop_rate",
    "pretrained",
    "amp",
    "max_length",
    "window",
    "horizon",
    "period",
    "columns",
    "time_column",
    "series_column",
)


@dataclass
class TrainResult:
    package: Package
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_early: bool
    skipped: list[str] = field(default_factory=list)


@dataclass
class Loop:
    """Mutable state of one run (all of it lands in the checkpoint)."""

    epoch: int = 0  # epochs completed
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, Any] | None = None


def as_tensors(torch: Any, batch: Any) -> Any:
    """A collated numpy batch (an array, or named arrays) as torch tensors, sharing memory."""
    if isinstance(batch, dict):
        return {name: torch.from_numpy(array) for name, array in batch.items()}
    return torch.from_numpy(batch)


def length_grouped(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Batches of samples of similar length, so padding to each batch's longest wastes little:
    the shuffled order is cut into windows of 50 batches, each window sorted by length and cut
    into batches, and the batches shuffled. Every sample stays in exactly one batch, and the
    same rng gives the same batches (exact resume holds)."""
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        part = order[start : start + window]
        part = part[np.argsort(lengths[start : start + window], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _amp_dtype(config: TrainConfig, device: Any) -> Any:
    import torch

    if config.amp == "on" and device.type != "cuda":
        warnings.warn(
            f"amp=on needs CUDA; training on {device} in full precision.",
            RuntimeWarning,
            stacklevel=3,
        )
    if config.amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _param_groups(network: Any, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation parameters (1-D tensors)."""
    decay = [p for p in network.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in network.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class Trainer:
    def __init__(self, config: TrainConfig, store: Store | None = None) -> None:
        import torch

        self.torch = torch
        self.config = config
        self.store = store or Store()
        self.device = resolve_device(config.device)  # before decoding: a typo fails fast
        self.prep: Prepared = prepare(config, self.store)
        self.amp_dtype = _amp_dtype(config, self.device)
        torch.manual_seed(config.seed)
        local = self.prep.pretrained not in (None, "timm")
        network = build_network(
            self.prep.spec,
            **self.prep.build_args,
            pretrained=None if local else self.prep.pretrained,
        )
        if local:
            load_pretrained_weights(
                network, str(self.prep.pretrained), skip_head=not self.prep.keep_head
            )
        self.network = network.to(self.device)
        self.loss_fn = self.prep.task.loss(config.label_smoothing)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.network, config.weight_decay), lr=config.lr
        )
        self.steps_per_epoch = math.ceil(len(self.prep.train_idx) / config.batch_size)
        total = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, total, warmup, config.min_lr_ratio)
        )
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.loop = Loop()
        self.run_path = run_dir(self.store.home, config.name)
        if config.resume:
            self._restore()

    # -- checkpoints ---------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        spec = self.prep.spec
        return {
            "task": self.prep.task.name,
            "labels": self.prep.samples.labels,
            "architecture": {"name": spec.name, "config": {**spec.config, **self.prep.build_args}},
            "fingerprint": self.prep.samples.fingerprint,
            "settings": {
                k: v for k, v in dataclasses.asdict(self.config).items() if k in RESUME_SETTINGS
            },
            "loop": {k: v for k, v in dataclasses.asdict(self.loop).items() if k != "best_state"},
        }

    def _save(self) -> None:
        state = {
            "model": self.network.state_dict(),
            "best_state": self.loop.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        save_checkpoint(self.run_path / CHECKPOINT, state, self._meta())

    def _restore(self) -> None:
        path = self.run_path / CHECKPOINT
        state, meta = load_checkpoint(path)
        check_compatible(meta, self._meta(), path)
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.loop = Loop(**meta["loop"], best_state=state["best_state"])

    # -- the loop ------------------------------------------------------------------------------

    def _batches(self, epoch: int) -> Any:
        """(inputs, targets) tensors of one epoch, the next prepared while the model computes."""
        torch, prep, config = self.torch, self.prep, self.config
        rng = np.random.default_rng([config.seed, epoch])
        order = prep.train_idx[rng.permutation(len(prep.train_idx))]
        aug_rng = np.random.default_rng([config.seed, epoch, 1])
        batches = [
            order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
        ]
        if prep.lengths is not None:
            batches = length_grouped(order, prep.lengths[order], config.batch_size, rng)

        def make(index: np.ndarray) -> tuple[Any, Any]:
            samples = prep.task.augment(prep.samples.take(index), aug_rng, config.augment)
            inputs = as_tensors(torch, prep.task.collate(samples, prep.bound))
            targets = torch.from_numpy(prep.samples.targets[index])
            return inputs, targets

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(make, batches[0])
            for i in range(len(batches)):
                batch = pending.result()
                if i + 1 < len(batches):
                    pending = pool.submit(make, batches[i + 1])
                yield batch

    def _train_epoch(self, epoch: int, progress: Any, bar: Any) -> float:
        torch, config = self.torch, self.config
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout and the like
        self.network.train()
        total_loss, count = 0.0, 0
        for inputs, targets in self._batches(epoch):
            targets = targets.to(self.device, non_blocking=True)
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                loss = self.loss_fn(self._forward(inputs), targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if config.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total_loss += float(loss.detach()) * len(targets)
            count += len(targets)
            progress.update(bar, advance=1, info=f"loss {total_loss / count:.4f}")
        return total_loss / max(count, 1)

    def _forward(self, inputs: Any) -> Any:
        """The network on a batch: one tensor, or named tensors (text) passed by name."""
        if isinstance(inputs, dict):
            moved = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
            return self.network(**moved)
        return self.network(inputs.to(self.device, non_blocking=True))

    def logits(self, index: np.ndarray) -> np.ndarray:
        """Model outputs for samples at index, in eval mode, batched."""
        torch, prep = self.torch, self.prep
        self.network.eval()
        parts = []
        with torch.inference_mode():
            for start in range(0, len(index), 256):
                batch = prep.task.collate(prep.samples.take(index[start : start + 256]), prep.bound)
                with torch.autocast(
                    self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
                ):
                    out = self._forward(as_tensors(torch, batch))
                parts.append(out.float().cpu().numpy())
        return np.concatenate(parts)

    def _validate(self) -> dict[str, Any]:
        prep = self.prep
        outputs = self.logits(prep.val_idx)
        return prep.task.metrics(outputs, prep.samples.targets[prep.val_idx], prep.samples.labels)

    def _end_epoch(self, epoch: int, train_loss: float, seconds: float) -> bool:
        """Record the epoch, keep the best weights, checkpoint; True when it is time to stop."""
        metrics = self._validate()
        monitor = float(metrics[self.prep.task.monitor])
        loop = self.loop
        loop.epoch = epoch
        loop.history.append(
            {
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                f"val_{self.prep.task.monitor}": monitor,
                "val_macro_f1": metrics.get("macro_f1"),
                "train_seconds": round(seconds, 3),
                "lr": self.optimizer.param_groups[0]["lr"],
            }
        )
        if monitor > loop.best_metric:
            loop.best_metric, loop.best_epoch, loop.bad_epochs = monitor, epoch, 0
            loop.best_state = {
                k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()
            }
        else:
            loop.bad_epochs += 1
        self._save()
        patience = self.config.patience
        return patience > 0 and loop.bad_epochs >= patience

    def fit(self) -> TrainResult:
        config, loop = self.config, self.loop
        # A run resumed after it had already met its early-stopping rule trains no further.
        stopped_early = config.patience > 0 and loop.bad_epochs >= config.patience
        first = config.epochs + 1 if stopped_early else loop.epoch + 1
        with make_progress(config.quiet) as progress:
            for epoch in range(first, config.epochs + 1):
                bar = progress.add_task(
                    f"epoch {epoch}/{config.epochs}", total=self.steps_per_epoch, info=""
                )
                started = time.perf_counter()
                train_loss = self._train_epoch(epoch, progress, bar)
                seconds = time.perf_counter() - started
                stop = self._end_epoch(epoch, train_loss, seconds)
                last = loop.history[-1]
                progress.update(
                    bar,
                    info=f"loss {train_loss:.4f}  val "
                    f"{self.prep.task.monitor} {last[f'val_{self.prep.task.monitor}']:.4f}",
                )
                if stop:
                    stopped_early = True
                    break
        if loop.best_state is not None:
            self.network.load_state_dict(loop.best_state)
        return self._package(stopped_early)

    # -- the package ---------------------------------------------------------------------------

    def _calibrate(self) -> None:
        """Let the task settle what depends on the trained network's validation outputs (an
        anomaly threshold); a changed contract rebuilds the network with the same weights."""
        prep = self.prep
        outputs = self.logits(prep.val_idx)
        contract = prep.task.calibrate(outputs, prep.samples.targets[prep.val_idx], prep.contract)
        if contract == prep.contract:
            return
        prep.contract = contract
        prep.build_args.update(prep.task.network_args(contract))
        network = build_network(prep.spec, **prep.build_args, pretrained=None)
        learned = {name for name, _ in self.network.named_parameters()}
        state = {k: v for k, v in self.network.state_dict().items() if k in learned}
        network.load_state_dict(state, strict=False)
        self.network = network.to(self.device)

    def _package(self, stopped_early: bool) -> TrainResult:
        from safetensors.torch import save_model

        prep, config = self.prep, self.config
        self._calibrate()
        metrics = self._validate()
        spec = prep.spec
        arch_config = {**spec.config, **prep.build_args}
        network = self.network.cpu()

        def write(folder: Any) -> None:
            save_model(network, str(folder / WEIGHTS))
            for name, source in prep.files.items():
                shutil.copyfile(source, folder / name)

        samples = prep.samples
        fields = {
            "task": prep.task.name,
            "architecture": {
                "name": spec.name,
                "preset": spec.preset,
                "config": arch_config,
                "params": count_parameters(spec, **prep.build_args),
            },
            "labels": samples.labels,
            "preprocessing": prep.contract,
            "training": {
                "dataset": {
                    "source": samples.source,
                    "fingerprint": samples.fingerprint,
                    "num_train": len(prep.train_idx),
                    "num_val": len(prep.val_idx),
                    "skipped": len(samples.skipped),
                    "skipped_examples": samples.skipped[:10],
                },
                "seed": config.seed,
                "config": {
                    k: v
                    for k, v in dataclasses.asdict(config).items()
                    if k not in ("resume", "quiet")
                },
                "epochs_run": self.loop.epoch,
                "best_epoch": self.loop.best_epoch,
                "stopped_early": stopped_early,
                "device": str(self.device),
                "amp": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "off",
                "history": self.loop.history,
            },
            "metrics": metrics,
            "lineage": {
                "parent": prep.parent,
                "operation": "train",
                "pretrained": config.pretrained,
            },
        }
        package = self.store.write(config.name, fields, write)
        return TrainResult(
            package,
            metrics,
            self.loop.history,
            self.loop.best_epoch,
            stopped_early,
            samples.skipped,
        )
