"""Anomaly detectors over a window of readings, each returning scores over a calibrated
threshold, so above 1 means anomalous:

- mlp_autoencoder: the window squeezed through a small code by an MLP and rebuilt;
- conv_autoencoder: the same through strided 1-D convolutions, for long windows;
- mlp_residual: the newest reading predicted from the window's earlier ones.

The autoencoders return each step's reconstruction error (mean over channels, in the
package's normalised units, each window's mean level removed) divided by the threshold.
Normalisation and threshold are buffers, so every backend and the ONNX export score alike; a
model trained per series (`series_stats`) takes each window's series' mean and std as the
window's last two rows instead (see patch_mixer.normalisation)."""

from __future__ import annotations

from typing import Any

from sampan.errors import ConfigError
from sampan.models.base import ARCHITECTURES, ArchitectureSpec, register_preset
from sampan.models.patch_mixer import add_normalisation, normalisation


@ARCHITECTURES.register("mlp_autoencoder")
def build_mlp_autoencoder(
    window: int = 48,
    channels: int = 1,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    series_stats: bool = False,
    threshold: float = 1.0,
    width: int = 128,
    code: int = 8,
    pretrained: Any = None,
    **_: Any,
) -> Any:
    import torch
    from torch import nn

    size = window * channels

    class Autoencoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            add_normalisation(self, mean, std, channels, series_stats)
            self.register_buffer("threshold", torch.tensor(float(threshold)))
            self.encode = nn.Sequential(nn.Linear(size, width), nn.GELU(), nn.Linear(width, code))
            self.decode = nn.Sequential(nn.Linear(code, width), nn.GELU(), nn.Linear(width, size))

        def forward(self, x: Any) -> Any:  # (N, window [+ 2], channels) -> (N, window)
            n = x.shape[0]
            x, mean, std = normalisation(self, x)
            x = (x - mean) / std
            # Each window's own level is taken out: a slow change of level (a season, a
            # trend) is not an anomaly, a reading that breaks the window's shape is.
            x = (x - x.mean(dim=1, keepdim=True)).reshape(n, size)
            rebuilt = self.decode(self.encode(x))
            error = ((rebuilt - x) ** 2).reshape(n, window, channels).mean(dim=2)
            return error / self.threshold

    return Autoencoder().eval()


@register_preset("ts-anomaly")
def mlp_autoencoder() -> ArchitectureSpec:
    """MLP autoencoder over a window; scores are reconstruction error / threshold."""
    return ArchitectureSpec("mlp_autoencoder", {})


@ARCHITECTURES.register("conv_autoencoder")
def build_conv_autoencoder(
    window: int = 48,
    channels: int = 1,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    series_stats: bool = False,
    threshold: float = 1.0,
    width: int = 16,
    depth: int = 3,
    code: int = 8,
    pretrained: Any = None,
    **_: Any,
) -> Any:
    """Strided Conv1d layers halve the window `depth` times (to width, 2 x width, then 4 x
    width channels), a linear layer maps the result to `code` numbers and back, and
    transposed convolutions rebuild the window. The code spans the whole window, as the
    MLP's does, so the rebuild follows the window's longer pattern, not only each reading's
    neighbours."""
    import torch
    from torch import nn

    if depth < 1:
        raise ConfigError(f"conv_autoencoder needs depth >= 1 (got {depth}).")
    stride = 2**depth
    length = -(-window // stride) * stride  # the window, left-padded to whole strides
    steps = length // stride
    widths = [width * 2 ** min(i, 2) for i in range(depth)]  # e.g. 16, 32, 64
    top = widths[-1]

    def down(cin: int, cout: int) -> Any:  # (B, cin, L) -> (B, cout, L / 2)
        return nn.Sequential(nn.Conv1d(cin, cout, 5, stride=2, padding=2), nn.GELU())

    def up(cin: int, cout: int) -> Any:  # (B, cin, L) -> (B, cout, 2 L)
        return nn.Sequential(nn.ConvTranspose1d(cin, cout, 4, stride=2, padding=1), nn.GELU())

    class ConvAutoencoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            add_normalisation(self, mean, std, channels, series_stats)
            self.register_buffer("threshold", torch.tensor(float(threshold)))
            self.encode = nn.Sequential(*map(down, [channels, *widths[:-1]], widths))
            self.squeeze = nn.Sequential(nn.Flatten(), nn.Linear(top * steps, code))
            self.expand = nn.Sequential(nn.Linear(code, top * steps), nn.GELU())
            self.decode = nn.Sequential(
                *map(up, widths[::-1], [*widths[-2::-1], width]),
                nn.Conv1d(width, channels, 3, padding=1),
            )

        def forward(self, x: Any) -> Any:  # (N, window [+ 2], channels) -> (N, window)
            n = x.shape[0]
            x, mean, std = normalisation(self, x)
            x = (x - mean) / std
            x = (x - x.mean(dim=1, keepdim=True)).transpose(1, 2)  # (N, C, window)
            # Zeros (the window's level, once removed) before the oldest reading, so the
            # newest one keeps the same place in every layer; cropped off again below.
            padded = nn.functional.pad(x, (length - window, 0))
            hidden = self.expand(self.squeeze(self.encode(padded)))
            rebuilt = self.decode(hidden.reshape(n, top, steps))[:, :, length - window :]
            return ((rebuilt - x) ** 2).mean(dim=1) / self.threshold

    return ConvAutoencoder().eval()


@register_preset("ts-anomaly")
def conv_autoencoder() -> ArchitectureSpec:
    """1-D convolutional autoencoder for long windows; reconstruction error / threshold."""
    return ArchitectureSpec("conv_autoencoder", {})


@ARCHITECTURES.register("mlp_residual")
def build_mlp_residual(
    window: int = 48,
    channels: int = 1,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    series_stats: bool = False,
    threshold: float = 1.0,
    width: int = 128,
    drop_rate: float = 0.1,
    pretrained: Any = None,
    **_: Any,
) -> Any:
    """The forecasting-residual detector: the newest reading predicted from the window's
    earlier ones; the score is the squared miss (mean over channels, normalised units) over
    the threshold, as (N, 1). A frozen or shifted sensor breaks the expected shape even when
    each reading alone looks ordinary."""
    import torch
    from torch import nn

    history = (window - 1) * channels

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            add_normalisation(self, mean, std, channels, series_stats)
            self.register_buffer("threshold", torch.tensor(float(threshold)))
            self.predict = nn.Sequential(
                nn.Linear(history, width),
                nn.GELU(),
                nn.Dropout(drop_rate),
                nn.Linear(width, channels),
            )
            self.linear = nn.Linear(history, channels)  # the linear part learns seasons fast

        def forward(self, x: Any) -> Any:  # (N, window [+ 2], channels) -> (N, 1)
            n = x.shape[0]
            x, mean, std = normalisation(self, x)
            x = (x - mean) / std
            past, newest = x[:, :-1], x[:, -1]
            level = past.mean(dim=1)
            flat = (past - level.unsqueeze(1)).reshape(n, history)
            guess = self.predict(flat) + self.linear(flat) + level
            return ((guess - newest) ** 2).mean(dim=1, keepdim=True) / self.threshold

    return Residual().eval()


@register_preset("ts-anomaly")
def mlp_residual() -> ArchitectureSpec:
    """Forecasting-residual detector: the newest reading's miss, over the threshold."""
    return ArchitectureSpec("mlp_residual", {})
