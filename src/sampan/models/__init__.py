"""The model library. Importing this package registers every built-in architecture and preset."""

from sampan.models import hf_encoder, patch_mixer, small_cnn, timm_family, ts_autoencoder  # noqa: F401
from sampan.models.base import (
    ARCHITECTURES,
    PRESETS,
    ArchitectureSpec,
    build_network,
    count_parameters,
    resolve_architecture,
)

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "ArchitectureSpec",
    "build_network",
    "count_parameters",
    "resolve_architecture",
]
