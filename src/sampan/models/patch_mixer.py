"""patch_mixer: a small forecaster over patches of a window (in the spirit of PatchTST and
TSMixer): each channel's window is normalised by its own mean and spread, cut into patches,
embedded, mixed across patches and across features by MLPs, and projected to the horizon.

The package's normalisation (mean/std fitted on the training split) is built into the network,
so it takes raw readings (N, window, channels) and returns raw readings (N, horizon, channels),
on every backend and in ONNX alike. A model trained per series (`series_stats`) takes each
window followed by its series' mean and std, (N, window + 2, channels), and answers in that
series' units."""

from __future__ import annotations

from typing import Any

from sampan.models.base import ARCHITECTURES, ArchitectureSpec, register_preset


def add_normalisation(
    module: Any,
    mean: list[float] | None,
    std: list[float] | None,
    channels: int,
    series_stats: bool = False,
) -> None:
    """The contract's per-column mean and std as buffers shaped (1, 1, channels), so a
    network reads raw readings (N, window, channels) on every backend and in ONNX; with
    series_stats, none: each input row brings its own (see `normalisation`)."""
    import torch

    module.series_stats = series_stats
    if not series_stats:
        module.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(1, 1, -1))
        module.register_buffer("std", torch.tensor(std or [1.0] * channels).view(1, 1, -1))


def normalisation(module: Any, x: Any) -> tuple[Any, Any, Any]:
    """(readings (N, window, C), mean, std (N or 1, 1, C)) of an input: the buffers', or, for
    a network with series_stats, the last two rows of each input (its series' mean and std,
    put there by the task's collate)."""
    if module.series_stats:
        return x[:, :-2], x[:, -2:-1], x[:, -1:]
    return x, module.mean, module.std


@ARCHITECTURES.register("patch_mixer")
def build_patch_mixer(
    window: int = 96,
    horizon: int = 24,
    channels: int = 1,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    series_stats: bool = False,
    patch: int = 8,
    width: int = 64,
    depth: int = 2,
    drop_rate: float = 0.1,
    pretrained: Any = None,
    **_: Any,
) -> Any:
    import torch
    from torch import nn

    patch = max(1, min(patch, window))
    patches = -(-window // patch)  # the window is left-padded to a whole number of patches

    class MixerBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(width)
            self.across = nn.Sequential(
                nn.Linear(patches, patches * 2), nn.GELU(), nn.Linear(patches * 2, patches)
            )
            self.norm2 = nn.LayerNorm(width)
            self.within = nn.Sequential(
                nn.Linear(width, width * 2),
                nn.GELU(),
                nn.Dropout(drop_rate),
                nn.Linear(width * 2, width),
            )

        def forward(self, x: Any) -> Any:  # (B, patches, width)
            x = x + self.across(self.norm1(x).transpose(1, 2)).transpose(1, 2)
            return x + self.within(self.norm2(x))

    class PatchMixer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            add_normalisation(self, mean, std, channels, series_stats)
            self.embed = nn.Linear(patch, width)
            self.position = nn.Parameter(torch.zeros(1, patches, width))
            self.blocks = nn.Sequential(*[MixerBlock() for _ in range(depth)])
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(patches * width, horizon)
            # A direct linear map from the window to the horizon (as in DLinear) beside the
            # mixer: it learns periodic structure in a few steps, the mixer the rest.
            self.linear = nn.Linear(window, horizon)
            for layer in (self.head, self.linear):  # start from "the window's level"
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

        def forward(self, x: Any) -> Any:  # (N, window [+ 2], channels) raw readings
            n = x.shape[0]
            x, mean, std = normalisation(self, x)
            x = (x - mean) / std
            level = x.mean(dim=1, keepdim=True)
            spread = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
            x = (x - level) / spread
            series = x.transpose(1, 2).reshape(n * channels, window)
            pad = patches * patch - window
            if pad:
                series = torch.cat([series[:, :1].expand(-1, pad), series], dim=1)
            tokens = self.embed(series.reshape(n * channels, patches, patch)) + self.position
            tokens = self.norm(self.blocks(tokens))
            future = self.head(tokens.reshape(n * channels, patches * width))
            future = future + self.linear(series[:, -window:])
            future = future.reshape(n, channels, horizon).transpose(1, 2)
            return (future * spread + level) * std + mean

    return PatchMixer().eval()


@register_preset("ts-forecast")
def patch_mixer() -> ArchitectureSpec:
    """Patch MLP mixer forecaster with a linear skip, per-window normalisation."""
    return ArchitectureSpec("patch_mixer", {})
