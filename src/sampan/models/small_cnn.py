"""SmallCNN: our own compact convnet for tiny images (8-64 px), where ImageNet nets overkill."""

from __future__ import annotations

from typing import Any

from sampan.models.base import (
    ARCHITECTURES,
    ArchitectureSpec,
    load_pretrained_weights,
    register_preset,
)

TASK = "image-classification"


def _make_class() -> Any:
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class SmallCNN(nn.Module):
        """Three conv blocks (width w, 2w, 4w) with 2x pooling between, then a linear head."""

        def __init__(self, num_classes: int, in_chans: int, width: int, drop_rate: float):
            super().__init__()
            self.features = nn.Sequential(
                block(in_chans, width),
                nn.MaxPool2d(2),  # (B, w, H/2, W/2)
                block(width, 2 * width),
                nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
                block(2 * width, 4 * width),  # (B, 4w, H/4, W/4)
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(4 * width, num_classes)

        def get_classifier(self) -> Any:
            return self.head

        def forward_features(self, x: Any) -> Any:
            return self.features(x)

        def forward_head(self, x: Any) -> Any:
            return self.head(self.drop(self.pool(x).flatten(1)))  # (B, num_classes)

        def forward(self, x: Any) -> Any:
            return self.forward_head(self.forward_features(x))

    return SmallCNN


@ARCHITECTURES.register("small_cnn")
def build_small_cnn(
    num_classes: int,
    in_chans: int = 3,
    input_size: list[int] | None = None,
    width: int = 32,
    drop_rate: float = 0.1,
    pretrained: str | None = None,
) -> Any:
    network = _make_class()(num_classes, in_chans, width, drop_rate)
    if pretrained is not None:
        load_pretrained_weights(network, pretrained)
    return network


@register_preset(TASK)
def small_cnn() -> ArchitectureSpec:
    """SmallCNN-32: our compact convnet for small grayscale or colour images."""
    return ArchitectureSpec("small_cnn", {"width": 32})


@register_preset(TASK)
def small_cnn_tiny() -> ArchitectureSpec:
    """SmallCNN-16: the smallest, for tests and very small data."""
    return ArchitectureSpec("small_cnn", {"width": 16})
