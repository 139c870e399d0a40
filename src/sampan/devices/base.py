"""The device registry: one file per kind of hardware, each detected behind a guarded import."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sampan.registry import Registry


@dataclass
class DeviceInfo:
    """One detected device."""

    kind: str  # registry name: cpu, cuda, rocm, mps, xpu, npu, ...
    index: int | None
    name: str
    memory_gb: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


class DeviceKind:
    """A kind of hardware. Subclasses register with @DEVICES.register(name)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    priority: ClassVar[int] = 0  # 'auto' picks the available kind with the highest priority
    torch_type: ClassVar[str] = ""  # the torch device type string, e.g. 'cuda', 'npu'
    plugin: ClassVar[str | None] = None  # the vendor's PyTorch plugin module, if any
    ort_providers: ClassVar[tuple[str, ...]] = ()  # onnxruntime providers, best first

    def load_plugin(self) -> Any | None:
        """Import the vendor plugin (which registers its device with torch); None if absent."""
        if self.plugin is None:
            return None
        try:
            return importlib.import_module(self.plugin)
        except Exception:  # a broken vendor install must not break detection of the rest
            return None

    def detect(self) -> list[DeviceInfo]:
        """Devices of this kind present now; [] when none (never raises)."""
        return []

    def torch_device(self, index: int | None) -> Any:
        import torch

        self.load_plugin()
        return torch.device(self.torch_type if index is None else f"{self.torch_type}:{index}")


DEVICES: Registry[type[DeviceKind]] = Registry("device")


class PluginDeviceKind(DeviceKind):
    """A vendor accelerator whose PyTorch plugin adds a torch.<torch_type> module with the
    usual is_available / device_count / get_device_name functions (Ascend, Cambricon, ...)."""

    def detect(self) -> list[DeviceInfo]:
        if self.load_plugin() is None:
            return []
        try:
            import torch

            module = getattr(torch, self.torch_type, None)
            if module is None or not module.is_available():
                return []
            names = getattr(module, "get_device_name", lambda i: f"{self.name}:{i}")
            return [DeviceInfo(self.name, i, str(names(i))) for i in range(module.device_count())]
        except Exception:  # a vendor runtime without a driver: nothing here
            return []
