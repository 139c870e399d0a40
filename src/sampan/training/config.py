"""TrainConfig: every training option, typed, validated up front."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sampan.config import build_config
from sampan.errors import ConfigError, SampanError
from sampan.package import check_name


@dataclass
class TrainConfig:
    data: str
    name: str
    task: str = "image-classification"
    arch: str | None = None  # a preset or timm name; default small_cnn (or a parent's)
    pretrained: str | None = None  # 'timm', a .safetensors file, an HF-format folder, or name@ver
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    amp: Literal["auto", "on", "off"] = "auto"  # mixed precision: auto = on where CUDA is
    patience: int = 5  # epochs without improvement before early stopping; 0 turns it off
    val_fraction: float = 0.2
    seed: int = 0
    input_size: int | list[int] | None = None  # default: 32 for small_cnn, the net's own otherwise
    channels: int | None = None  # default: 1 if the images are grayscale, else 3
    augment: Literal["none", "shift", "flip", "shift+flip"] = "none"
    drop_rate: float | None = None
    max_length: int | None = None  # text: tokens kept per text [default: the pretrained model's]
    window: int | None = None  # time series: readings the model sees [default: 96]
    horizon: int | None = None  # time series: steps it forecasts [default: 24]
    period: int | None = None  # time series: the season in steps [default: from the interval]
    columns: str | None = None  # time series: value columns, comma-separated [default: all]
    time_column: str | None = None  # time series: the timestamp column [default: found]
    series_column: str | None = None  # time series: the series id column [default: found]
    device: str = "auto"
    resume: bool = False
    quiet: bool = False

    def validate(self) -> None:
        problems = []
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        problems += [f"{k} must be > 0 (got {v})" for k, v in positive.items() if v <= 0]
        if not 0 < self.val_fraction < 1:
            problems.append(f"val_fraction must be between 0 and 1 (got {self.val_fraction})")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        for key in ("weight_decay", "warmup_epochs", "grad_clip", "patience"):
            if getattr(self, key) < 0:
                problems.append(f"{key} must be >= 0 (got {getattr(self, key)})")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})")
        try:
            check_name(self.name)
        except SampanError as exc:
            problems.append(str(exc).rstrip("."))
        if self.seed < 0:
            problems.append(f"seed must be >= 0 (got {self.seed})")
        if self.drop_rate is not None and not 0 <= self.drop_rate < 1:
            problems.append(f"drop_rate must be in [0, 1) (got {self.drop_rate})")
        sizes = [self.input_size] if isinstance(self.input_size, int) else self.input_size
        if sizes is not None and (len(sizes) not in (1, 2) or min(sizes) < 1):
            problems.append(
                f"input_size must be one positive side or [height, width] (got {self.input_size})"
            )
        if self.max_length is not None and self.max_length < 2:
            problems.append(f"max_length must be >= 2 (got {self.max_length})")
        if self.channels not in (None, 1, 3):
            problems.append(f"channels must be 1 or 3 (got {self.channels})")
        if problems:
            raise ConfigError("Invalid training configuration: " + "; ".join(problems) + ".")


def train_config(file_values: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a config file's values and flags (None = not given), over the
    defaults of its task (fine-tuning a transformer wants another learning rate than training
    a small convnet from scratch)."""
    from sampan.tasks.base import get_task

    task = overrides.get("task") or file_values.get("task") or TrainConfig.task
    defaults = get_task(str(task)).train_defaults
    return build_config(TrainConfig, {**defaults, **file_values}, overrides)
