"""Image classifiers from timm: any timm model name, plus curated presets."""

from __future__ import annotations

from typing import Any

from sampan.errors import NotFoundError
from sampan.models.base import (
    ARCHITECTURES,
    ArchitectureSpec,
    load_pretrained_weights,
    register_preset,
)

TASK = "image-classification"


@ARCHITECTURES.register("timm")
def build_timm(
    model_name: str,
    num_classes: int,
    in_chans: int = 3,
    input_size: list[int] | None = None,
    pretrained: str | None = None,
    drop_rate: float = 0.0,
) -> Any:
    """A timm model; pretrained is None, 'timm' (download via timm) or a local weights path."""
    import timm

    kwargs: dict[str, Any] = {
        "num_classes": num_classes,
        "in_chans": in_chans,
        "drop_rate": drop_rate,
    }
    cfg = timm.get_pretrained_cfg(model_name)
    if input_size and cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = tuple(input_size)  # ViT-style models bake the size into the patches
    try:
        network = timm.create_model(model_name, pretrained=pretrained == "timm", **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if pretrained != "timm":
            raise
        raise NotFoundError(
            f"Could not fetch timm's pretrained weights for {model_name} "
            f"({str(exc).splitlines()[0][:120]}); without a network, pass a local "
            ".safetensors file or Hugging Face folder to --pretrained."
        ) from None
    if pretrained not in (None, "timm"):
        load_pretrained_weights(network, pretrained)
    return network


def timm_normalisation(model_name: str) -> tuple[list[float], list[float]]:
    """The mean/std a timm model's pretrained weights expect."""
    import timm

    cfg = timm.get_pretrained_cfg(model_name)
    if cfg is None:
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return list(cfg.mean), list(cfg.std)


@register_preset(TASK)
def resnet18() -> ArchitectureSpec:
    """ResNet-18: a strong, fast baseline for sorting parts and defect types."""
    return ArchitectureSpec("timm", {"model_name": "resnet18"})


@register_preset(TASK)
def resnet50() -> ArchitectureSpec:
    """ResNet-50: more capacity for many classes or subtle defects."""
    return ArchitectureSpec("timm", {"model_name": "resnet50"})


@register_preset(TASK)
def mobilenetv3_small_100() -> ArchitectureSpec:
    """MobileNetV3-Small: for edge CPUs on the factory floor."""
    return ArchitectureSpec("timm", {"model_name": "mobilenetv3_small_100"})


@register_preset(TASK)
def efficientnet_b0() -> ArchitectureSpec:
    """EfficientNet-B0: a good accuracy per FLOP."""
    return ArchitectureSpec("timm", {"model_name": "efficientnet_b0"})


@register_preset(TASK)
def convnext_atto() -> ArchitectureSpec:
    """ConvNeXt-Atto: a modern convnet at 3.7M parameters."""
    return ArchitectureSpec("timm", {"model_name": "convnext_atto"})


@register_preset(TASK)
def vit_tiny() -> ArchitectureSpec:
    """ViT-Tiny/16: a small vision transformer (input size fixed at build)."""
    return ArchitectureSpec("timm", {"model_name": "vit_tiny_patch16_224"})
