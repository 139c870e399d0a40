"""The CPU: model name, cores and the ISA features that decide which kernels are fast."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from sampan.devices.base import DEVICES, DeviceInfo, DeviceKind

# /proc/cpuinfo flag -> the name people know it by
ISA_FLAGS = {
    "sse4_2": "SSE4.2",
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
    "asimd": "NEON",
    "asimddp": "NEON dot-product",
    "sve": "SVE",
    "sve2": "SVE2",
    "i8mm": "INT8 matmul",
    "bf16": "BF16",
}


def cpu_features(cpuinfo: str) -> tuple[str, list[str]]:
    """(model name, ISA features) parsed from /proc/cpuinfo text."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, [name for flag, name in ISA_FLAGS.items() if flag in flags]


@DEVICES.register("cpu")
class CPU(DeviceKind):
    name = "cpu"
    description = "The host CPU"
    priority = 0
    torch_type = "cpu"
    ort_providers = ("CPUExecutionProvider",)

    def detect(self) -> list[DeviceInfo]:
        text = ""
        path = Path("/proc/cpuinfo")
        if path.is_file():
            text = path.read_text(errors="replace")
        model, features = cpu_features(text)
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        memory = None
        if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
            memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        return [
            DeviceInfo(
                "cpu",
                None,
                model or platform.processor() or platform.machine(),
                memory,
                {
                    "arch": platform.machine(),
                    "cores": os.cpu_count(),
                    "usable_cores": usable,
                    "isa": features,
                },
            )
        ]

    def torch_device(self, index: int | None) -> object:
        import torch

        return torch.device("cpu")
