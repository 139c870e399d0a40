"""Intel GPUs through PyTorch's XPU backend."""

from __future__ import annotations

from sampan.devices.base import DEVICES, DeviceInfo, DeviceKind


@DEVICES.register("xpu")
class XPU(DeviceKind):
    name = "xpu"
    description = "Intel GPUs (XPU)"
    priority = 80
    torch_type = "xpu"
    ort_providers = ("OpenVINOExecutionProvider",)

    def detect(self) -> list[DeviceInfo]:
        try:
            import torch

            xpu = getattr(torch, "xpu", None)
            if xpu is None or not xpu.is_available():
                return []
            return [DeviceInfo("xpu", i, xpu.get_device_name(i)) for i in range(xpu.device_count())]
        except Exception:  # no driver or runtime
            return []
