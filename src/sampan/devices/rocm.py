"""AMD GPUs through ROCm (PyTorch's ROCm build exposes them as 'cuda' devices)."""

from __future__ import annotations

from sampan.devices.base import DEVICES, DeviceInfo, DeviceKind
from sampan.devices.cuda import torch_gpus


@DEVICES.register("rocm")
class ROCm(DeviceKind):
    name = "rocm"
    description = "AMD GPUs (ROCm)"
    priority = 90
    torch_type = "cuda"
    ort_providers = ("MIGraphXExecutionProvider", "ROCMExecutionProvider")

    def detect(self) -> list[DeviceInfo]:
        return torch_gpus("rocm")
