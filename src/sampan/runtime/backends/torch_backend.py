"""The torch backend: the package's architecture rebuilt and its safetensors weights loaded.

Eager by default; compile=True runs it through torch.compile, and amp=True runs it under
autocast (bf16 where the device has it, else fp16 on CUDA) with fp32 logits out.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from sampan.errors import PackageError
from sampan.package import Package
from sampan.runtime.engine import BACKENDS, Backend


def build_from_package(package: Package) -> Any:
    """The package's network on the CPU in eval mode, weights loaded (checksums verified)."""
    from safetensors.torch import load_model

    from sampan.models.base import ArchitectureSpec, build_network

    if not package.has_weights:
        raise PackageError(
            f"{package.ref} holds no torch weights (only an ONNX model); use "
            "backend='onnxruntime', or load its parent package for torch."
        )
    arch = package.manifest.architecture
    spec = ArchitectureSpec(arch["name"], dict(arch.get("config", {})), arch.get("preset"))
    network = build_network(spec, pretrained=None)
    try:
        load_model(network, str(package.weights_path), strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise PackageError(
            f"{package.weights_path} does not fit architecture {arch['name']} of "
            f"{package.ref}: {exc}".replace("\n", " ")
        ) from None
    return network.eval()


@BACKENDS.register("torch")
class TorchBackend(Backend):
    name = "torch"
    needs = "weights.safetensors"

    def __init__(
        self,
        package: Package,
        device: str | None = None,
        compile: bool = False,
        amp: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(package, device)
        import torch

        from sampan.devices import resolve_device

        self._torch = torch
        self._device = resolve_device(device)
        self.network = build_from_package(package).to(self._device)
        self._amp_dtype = amp_dtype(torch, self._device) if amp else None
        if compile:
            self.network = torch.compile(self.network)

    @classmethod
    def can_run(cls, package: Package) -> bool:
        return package.has_weights and importlib.util.find_spec("torch") is not None

    @property
    def device(self) -> str:
        return str(self._device)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            if isinstance(batch, dict):  # several named inputs (text: ids and mask)
                named = {
                    k: torch.from_numpy(np.ascontiguousarray(v)).to(self._device)
                    for k, v in batch.items()
                }
                with torch.autocast(
                    self._device.type, dtype=self._amp_dtype, enabled=self._amp_dtype is not None
                ):
                    return _numpy(self.network(**named))
            inputs = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device)
            if self._amp_dtype is None:
                return _numpy(self.network(inputs))
            with torch.autocast(self._device.type, dtype=self._amp_dtype):
                return _numpy(self.network(inputs))


def amp_dtype(torch: Any, device: Any) -> Any:
    """The half type autocast uses on this device: bf16 where supported, else fp16 on CUDA."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _numpy(output: Any) -> np.ndarray:
    """A network's output tensor as float32 numpy, on the CPU."""
    array: np.ndarray = output.float().cpu().numpy()
    return array
