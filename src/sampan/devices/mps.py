"""Apple GPUs through Metal Performance Shaders."""

from __future__ import annotations

from sampan.devices.base import DEVICES, DeviceInfo, DeviceKind


@DEVICES.register("mps")
class MPS(DeviceKind):
    name = "mps"
    description = "Apple GPUs (Metal)"
    priority = 50
    torch_type = "mps"
    ort_providers = ("CoreMLExecutionProvider",)

    def detect(self) -> list[DeviceInfo]:
        try:
            import torch

            if torch.backends.mps.is_available():
                return [DeviceInfo("mps", None, "Apple GPU (MPS)")]
        except Exception:  # older torch without the mps backend
            pass
        return []
