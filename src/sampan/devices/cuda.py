"""NVIDIA GPUs through CUDA (PyTorch's own build)."""

from __future__ import annotations

from sampan.devices.base import DEVICES, DeviceInfo, DeviceKind


def torch_gpus(kind: str) -> list[DeviceInfo]:
    """GPUs torch sees as 'cuda' devices, as kind ('cuda' or 'rocm')."""
    try:
        import torch

        is_rocm = getattr(torch.version, "hip", None) is not None
        if (kind == "rocm") != is_rocm or not torch.cuda.is_available():
            return []
        found = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            capability = f"{props.major}.{props.minor}"
            found.append(
                DeviceInfo(
                    kind,
                    index,
                    props.name,
                    round(props.total_memory / 2**30, 1),
                    {"capability": capability, "bf16": torch.cuda.is_bf16_supported()},
                )
            )
        return found
    except Exception:  # no driver, a broken install: nothing of this kind here
        return []


@DEVICES.register("cuda")
class CUDA(DeviceKind):
    name = "cuda"
    description = "NVIDIA GPUs (CUDA)"
    priority = 100
    torch_type = "cuda"
    ort_providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

    def detect(self) -> list[DeviceInfo]:
        return torch_gpus("cuda")
